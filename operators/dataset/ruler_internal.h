/* Internal to the RULER generator: shared by ruler_gen.c (resources, sizing, scores)
 * and ruler_tasks.c (the task recipes). */
#ifndef KW_RULER_INTERNAL_H
#define KW_RULER_INTERNAL_H

#include "ruler_gen.h"

typedef struct wordlist {
    char **w;
    int n;
} wordlist;

struct kw_ruler_res {
    char *essay_buf;   /* the essay, whitespace runs collapsed, split in place */
    char **essay;      /* words */
    int n_essay;
    wordlist nouns, adjs, verbs;
    wordlist cwe;      /* sorted unique nouns + adjectives + verbs */
};

/* A generated prompt: input text, answer prefix, references. */
typedef struct kw__ruler_out {
    char *input, *prefix;
    char **refs;
    int n_refs;
} kw__ruler_out;

void kw__ruler_out_clear(kw__ruler_out *o);
/* The record `index` of g's task with a haystack of `units`. */
int kw__ruler_generate(const kw_ruler_gen *g, int64_t index, int units, kw__ruler_out *o);
/* Tokens of input + answer prefix. */
int kw__ruler_count(const kw_ruler_gen *g, const kw__ruler_out *o);
int kw__ruler_max_new(const kw_ruler_gen *g);
/* Haystack sizes worth trying; *source_limit > 0 when the haystack source (essay words,
 * word lists) caps the size, with *source naming it. */
void kw__ruler_units_range(const kw_ruler_gen *g, int *lo, int *hi, int *source_limit,
                           const char **source);

#endif
