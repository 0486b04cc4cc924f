/* LongBench v1 data: record checks, the per-task prompt template and generation length.
 * (The middle truncation of over-long prompts is in jsonl.c: it needs the model.)
 *
 *   kw_lb_tables tb;
 *   kw_lb_tables_load("…/dataset2prompt.json", "…/dataset2maxlen.json", "qasper", &tb, &err);
 *   char *prompt;
 *   kw_lb_prompt_fill(tb.prompt, rec, &prompt, &err);         // "{context}", "{input}"
 *   kw_lb_tables_clear(&tb);
 */
#ifndef KW_OPERATORS_DATASET_LONGBENCH_DATA_H
#define KW_OPERATORS_DATASET_LONGBENCH_DATA_H

#include <stddef.h>
#include <jansson.h>

#include "kvweave/status.h"

/* A kw_jsonl_check_fn for LongBench v1 records: input, context (strings), answers (array
 * of strings), length (integer), dataset, language, _id (strings), all_classes (null or
 * array of strings). arg is unused. */
int kw_lb_record_check(const json_t *rec, void *arg, char *why, size_t cap);

typedef struct kw_lb_tables {
    char *prompt;  /* the task's template (malloc'd) */
    int max_new;   /* the task's max new tokens */
} kw_lb_tables;

/* Reads both JSON files and picks the task's entries; names the file and the task when
 * something is missing or of the wrong type. */
int kw_lb_tables_load(const char *prompts_path, const char *maxlen_path, const char *task,
                      kw_lb_tables *out, kw_error *err);
void kw_lb_tables_clear(kw_lb_tables *t);

/* Python's template.format(**rec) for templates of plain {name} fields and {{ }}
 * escapes; a field must be a string (numbers are written as Python would). *out is
 * malloc'd. */
int kw_lb_prompt_fill(const char *tmpl, const json_t *rec, char **out, kw_error *err);

/* The task named by a data file: its base name without ".jsonl" (malloc'd). */
char *kw_lb_task_from_path(const char *path);

#endif
