/* Output of the result commands (cmd_results.c): aligned tables, CSV, JSON and Markdown
 * rows, durations and sizes. Only the CLI prints. */
#ifndef KW_CLI_RESULTS_FMT_H
#define KW_CLI_RESULTS_FMT_H

#include <stdbool.h>
#include <stdio.h>

/* An aligned text table: columns of numbers are right-aligned, others left; cells are
 * cut at max_cell display characters (0: no limit) and control characters shown as
 * spaces. Copies everything it is given. */
typedef struct kw_table {
    int ncol, nrows, cap, max_cell;
    char **head;
    char **cells; /* nrows * ncol, row-major; NULL for SQL NULL */
} kw_table;

int kw__table_init(kw_table *t, int ncol, const char *const *head, int max_cell);
int kw__table_add(kw_table *t, const char *const *vals);
/* color: the header bold; status words (FINISHED, FAILED, RUNNING, KILLED) colored. */
void kw__table_print(const kw_table *t, FILE *f, bool color, const char *indent);
void kw__table_clear(kw_table *t);

/* One record in the chosen format. types: KW_DB_T_* per column (nullable: all text). */
typedef enum { KW_FMT_TABLE, KW_FMT_CSV, KW_FMT_JSON, KW_FMT_MD, KW_FMT_JSONL } kw_fmt;
int kw__fmt_parse(const char *s, kw_fmt *out);
void kw__csv_row(FILE *f, int ncol, const char *const *vals);
void kw__md_row(FILE *f, int ncol, const char *const *vals);
void kw__md_rule(FILE *f, int ncol);
/* A JSON object from names/vals/types; json_columns (nullable) marks text columns that
 * hold JSON to embed as such when they parse. first: no leading ",\n". */
void kw__json_row(FILE *f, int ncol, const char *const *names, const char *const *vals,
                 const int *types, const bool *json_columns, bool first);
/* The same object on a line of its own (JSON Lines). */
void kw__jsonl_row(FILE *f, int ncol, const char *const *names, const char *const *vals,
                   const int *types, const bool *json_columns);

/* "12.3s", "4m05s", "2h03m"; "-" for negative. */
void kw__fmt_duration(double s, char *buf, size_t n);
/* "512 B", "12.5 KiB", "3.2 GiB". */
void kw__fmt_bytes(double b, char *buf, size_t n);
/* Seconds since the epoch as "YYYY-MM-DD HH:MM:SS" (UTC). */
void kw__fmt_time(double t, char *buf, size_t n);
/* A number as "%.6g" (text kept when it does not parse). */
void kw__fmt_num(const char *v, char *buf, size_t n);

#endif
