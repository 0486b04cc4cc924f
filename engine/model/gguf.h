/* GGUF reader (internal to engine/model).
 *
 *   kw_gguf *g; kw_error err = {0};
 *   if (kw_gguf_open("model.gguf", &g, &err) < 0) ...        // err.msg names file + numbers
 *   const char *arch = kw_gguf_get_str(g, "general.architecture");
 *   int64_t n_layer; kw_gguf_get_int(g, "llama.block_count", &n_layer);
 *   const kw_gguf_tensor *t = kw_gguf_find_tensor(g, "token_embd.weight");
 *   g = kw_gguf_free(g);
 *
 * File layout (GGUF v2/v3, little-endian):
 *   u32 magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
 *   kv_count x { string key | u32 value_type | value }
 *   tensor_count x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
 *   padding to `general.alignment` (u32, default 32) | tensor data
 * string = u64 length + bytes (no NUL); array = u32 element_type + u64 n + n elements.
 * ne[] is innermost first; kw_gguf_tensor keeps it and also gives `shape` outermost first.
 * Every offset, size and count is checked against the file before it is used.
 */
#ifndef KW_MODEL_GGUF_H
#define KW_MODEL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvweave/tensor.h"

typedef enum kw_gguf_type {
    KW_GGUF_U8 = 0,
    KW_GGUF_I8 = 1,
    KW_GGUF_U16 = 2,
    KW_GGUF_I16 = 3,
    KW_GGUF_U32 = 4,
    KW_GGUF_I32 = 5,
    KW_GGUF_F32 = 6,
    KW_GGUF_BOOL = 7,
    KW_GGUF_STRING = 8,
    KW_GGUF_ARRAY = 9,
    KW_GGUF_U64 = 10,
    KW_GGUF_I64 = 11,
    KW_GGUF_F64 = 12,
    KW_GGUF_TYPE_COUNT
} kw_gguf_type;

/* ggml tensor type ids kvweave reads. */
enum {
    KW_GGML_F32 = 0, KW_GGML_F16 = 1, KW_GGML_Q4_0 = 2, KW_GGML_Q4_1 = 3, KW_GGML_Q5_0 = 6,
    KW_GGML_Q5_1 = 7, KW_GGML_Q8_0 = 8, KW_GGML_Q4_K = 12, KW_GGML_Q5_K = 13,
    KW_GGML_Q6_K = 14, KW_GGML_I8 = 24, KW_GGML_I32 = 26, KW_GGML_BF16 = 30,
};

typedef struct kw_gguf_value {
    kw_gguf_type type;
    union {
        uint64_t u;  /* U8, U16, U32, U64 */
        int64_t i;   /* I8, I16, I32, I64 */
        double f;    /* F32, F64 */
        bool b;      /* BOOL */
        struct { char *s; uint64_t len; } str; /* NUL-terminated copy; may hold NULs */
        struct {
            kw_gguf_type type;
            uint64_t n;
            /* numbers and bools: n packed elements of the file's width (uint8_t, int32_t,
             * float, ...); STRING: char *[n]; ARRAY: kw_gguf_value[n] */
            void *data;
        } arr;
    };
} kw_gguf_value;

typedef struct kw_gguf_tensor {
    char *name;
    uint32_t ggml_type;
    kw_dtype dtype;
    int ndim;
    uint64_t ne[4];     /* innermost first, as in the file */
    int64_t shape[4];   /* outermost first */
    uint64_t offset;    /* relative to the data section */
    size_t nbytes;
    const void *data;   /* inside the mapping */
} kw_gguf_tensor;

typedef struct kw_gguf kw_gguf;

/* Maps and parses a file. label for messages is the path. */
int kw_gguf_open(const char *path, kw_gguf **out, kw_error *err);
/* Parses a buffer that must outlive the reader; label names it in messages. */
int kw_gguf_parse(const void *buf, size_t n, const char *label, kw_gguf **out, kw_error *err);
kw_gguf *kw_gguf_free(kw_gguf *g);

uint32_t kw_gguf_version(const kw_gguf *g);
size_t kw_gguf_alignment(const kw_gguf *g);
size_t kw_gguf_data_offset(const kw_gguf *g); /* file offset of the data section */
const char *kw_gguf_label(const kw_gguf *g);

int kw_gguf_n_kv(const kw_gguf *g);
const char *kw_gguf_key_at(const kw_gguf *g, int i);
const kw_gguf_value *kw_gguf_value_at(const kw_gguf *g, int i);
/* (transfer none) NULL if absent. */
const kw_gguf_value *kw_gguf_find(const kw_gguf *g, const char *key);

/* Typed lookups: KW_ENOTFOUND if absent, KW_ETYPE if the value has another kind. Integers
 * accept every integer type and bool; floats accept F32/F64 and integers. */
int kw_gguf_get_int(const kw_gguf *g, const char *key, int64_t *out);
int kw_gguf_get_float(const kw_gguf *g, const char *key, double *out);
int kw_gguf_get_bool(const kw_gguf *g, const char *key, bool *out);
/* NULL if absent or not a string. */
const char *kw_gguf_get_str(const kw_gguf *g, const char *key);
int kw_gguf_get_arr(const kw_gguf *g, const char *key, kw_gguf_type *elem, uint64_t *n,
                    const void **data);
/* Element i of an array of any numeric type (or bool) as int64/double. */
int kw_gguf_arr_int(const kw_gguf_value *arr, uint64_t i, int64_t *out);
int kw_gguf_arr_float(const kw_gguf_value *arr, uint64_t i, double *out);

int kw_gguf_n_tensors(const kw_gguf *g);
const kw_gguf_tensor *kw_gguf_tensor_at(const kw_gguf *g, int i);
const kw_gguf_tensor *kw_gguf_find_tensor(const kw_gguf *g, const char *name);

const char *kw_gguf_type_name(kw_gguf_type t);
/* "Q4_K", "IQ2_XS", ... or "?" ; and the kvweave dtype for the supported ids. */
const char *kw_ggml_type_name(uint32_t ggml_type);
int kw_ggml_to_dtype(uint32_t ggml_type, kw_dtype *out);
int kw_dtype_to_ggml(kw_dtype t, uint32_t *out);

#endif
