/* safetensors reader (internal to engine/model).
 *
 *   kw_st *st; kw_error err = {0};
 *   if (kw_st_open("model.safetensors", &st, &err) < 0) ...
 *   const kw_st_tensor *t = kw_st_find(st, "model.embed_tokens.weight");
 *   st = kw_st_free(st);
 *
 * File layout: u64 N (little-endian) | N bytes of a UTF-8 JSON object | data.
 * The object maps each tensor name to {"dtype": "F32"|"F16"|"BF16"|"I8"|"I32",
 * "shape": [d0, ...] (outermost first), "data_offsets": [begin, end]} with offsets
 * relative to the start of the data; an optional "__metadata__" maps strings to strings.
 * Offsets, sizes and shapes are checked against the file and each other.
 */
#ifndef KW_MODEL_SAFETENSORS_H
#define KW_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "kvweave/tensor.h"

typedef struct kw_st_tensor {
    char *name;
    kw_dtype dtype;
    int ndim;           /* 0 for a scalar */
    int64_t shape[4];   /* outermost first */
    uint64_t begin;     /* data_offsets, relative to the data section */
    size_t nbytes;
    const void *data;   /* inside the mapping */
} kw_st_tensor;

typedef struct kw_st kw_st;

int kw_st_open(const char *path, kw_st **out, kw_error *err);
/* Parses a buffer that must outlive the reader; label names it in messages. */
int kw_st_parse(const void *buf, size_t n, const char *label, kw_st **out, kw_error *err);
kw_st *kw_st_free(kw_st *st);

int kw_st_n_tensors(const kw_st *st);
const kw_st_tensor *kw_st_tensor_at(const kw_st *st, int i);
const kw_st_tensor *kw_st_find(const kw_st *st, const char *name);
/* A "__metadata__" string, NULL if absent. */
const char *kw_st_metadata(const kw_st *st, const char *key);
const char *kw_st_label(const kw_st *st);

#endif
