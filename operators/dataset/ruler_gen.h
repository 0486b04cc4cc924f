/* RULER-style synthetic long-context tasks (EVAL.md), generated deterministically from
 * a seed and sized to a target length in the model's own tokens.
 *
 *   kw_ruler_res *res;
 *   kw_ruler_res_load(dir, &res, &err);      // PaulGrahamEssays.json + word lists
 *   kw_ruler_gen g = {.res = res, .task = "niah_single_1", .length = 4096, .seed = 1,
 *                     .count = my_token_count, .ud = tok};
 *   kw_ruler_fit(&g, &err);                  // binary search of the haystack size
 *   json_t *rec; kw_ruler_make(&g, 0, &rec, &err);   // {"input", "answer_prefix",
 *                                                    //  "outputs", "length", ...}
 *
 * Recipes follow RULER's generators (niah, variable_tracking, common_words_extraction,
 * freq_words_extraction); the random streams are kvweave's own (splitmix64 keyed by
 * seed and sample index), so records are reproducible here but not byte-identical to
 * RULER's Python output. Essays are cut into sentences by kw_ruler_split_sentences, a
 * Punkt-like rule: a sentence ends at '.', '!' or '?' (plus closing quotes/brackets)
 * followed by whitespace, unless the word ending there is a known abbreviation or a
 * single letter; NLTK's Punkt also learns abbreviations, which this does not.
 */
#ifndef KW_RULER_GEN_H
#define KW_RULER_GEN_H

#include <jansson.h>
#include <stdint.h>

#include "kvweave/status.h"

typedef struct kw_ruler_res kw_ruler_res;

/* dir holds PaulGrahamEssays.json ({"text": ...}), nounlist.txt, adjectivelist.txt,
 * verblist.txt. Errors name the file. */
int kw_ruler_res_load(const char *dir, kw_ruler_res **out, kw_error *err);
kw_ruler_res *kw_ruler_res_free(kw_ruler_res *r);

/* Token counter: number of tokens of text, or < 0 on error. */
typedef int (*kw_ruler_count_fn)(void *ud, const char *text);

typedef struct kw_ruler_gen {
    const kw_ruler_res *res;
    const char *task;       /* niah_single_1..3, niah_multikey_1..3, niah_multivalue,
                               niah_multiquery, vt, cwe, fwe */
    int length;             /* target: prompt tokens + max_new <= length */
    int max_new;            /* 0: the task's default (niah 128, vt 30, cwe 120, fwe 50) */
    uint64_t seed;
    kw_ruler_count_fn count;
    void *ud;
    int units;              /* haystack size found by kw_ruler_fit */
} kw_ruler_gen;

/* The task names, NULL-terminated. */
extern const char *const kw_ruler_tasks[];
int kw_ruler_task_known(const char *task);
int kw_ruler_default_max_new(const char *task);

/* Finds the largest haystack (in the task's units) whose sample 0 fits the length.
 * KW_ERANGE when even the smallest haystack does not fit, or when the haystack source is
 * too short for the length (with both numbers). */
int kw_ruler_fit(kw_ruler_gen *g, kw_error *err);
/* Record `index` (transfer full). Shrinks the haystack for this record if it does not
 * fit (as RULER does). */
int kw_ruler_make(const kw_ruler_gen *g, int64_t index, json_t **out, kw_error *err);

/* Splits text into sentences (see above). Returns the count; the starts and
 * lens arrays are malloc'd. */
int kw_ruler_split_sentences(const char *text, int **starts, int **lens);

/* RULER's scores for one prediction: fraction of references contained
 * (case-insensitive) — string_match_all — or 1 if any is — string_match_part. The
 * prediction is first cleaned as RULER does (control characters to newlines, trimmed). */
double kw_ruler_match_all(const char *pred, const char *const *refs, int n);
double kw_ruler_match_part(const char *pred, const char *const *refs, int n);

#endif
