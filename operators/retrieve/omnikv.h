/* retrieve.omnikv's hook, for the operator and its tests: token selection by
 * observation layers (METHODS.md, OmniKV) as a SELECT kvmethod. */
#ifndef KW_OPS_RETRIEVE_OMNIKV_H
#define KW_OPS_RETRIEVE_OMNIKV_H

#include <stdint.h>

#include "kvweave/kvhook.h"

typedef struct kw_omnikv_opts {
    int keep_tokens; /* tokens chosen between the sink and the recent ones */
    int sink;        /* the first tokens: always read */
    int recent;      /* the last tokens (the current one among them): always read */
    int kernel;      /* max-pooling width of the scores */
    double ratio;    /* > 0: each sequence's keep_tokens is round(ratio x its prompt
                        tokens), at least 1; in [0, 1] */
} kw_omnikv_opts;

/* "0,1,2,8,18" into *out (transfer full), *n entries: increasing layer numbers. */
int kw__omnikv_parse_layers(const char *text, int32_t **out, int *n, kw_error *err);

/* A new kvmethod (transfer full) for o with the observation layers given as text. */
int kw__omnikv_method(const kw_omnikv_opts *o, const char *layers, kw_kvmethod **out,
                      kw_error *err);
extern const kw_kvhook kw__omnikv_hook;

#endif
