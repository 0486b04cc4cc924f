/* A small GGUF writer for tests: metadata of every value type, tensor infos, alignment.
 * It writes what it is told, so tests can also build broken files with it.
 *
 *   kw_gw *w = kw_gw_new(3);
 *   kw_gw_str(w, "general.architecture", "llama");
 *   kw_gw_u32(w, "llama.block_count", 2);
 *   kw_gw_tensor(w, "token_embd.weight", KW_GGML_F32, 2, (uint64_t[]){64, 300}, data, nbytes);
 *   kw_gw_write(w, "tiny.gguf", &err);
 *   w = kw_gw_free(w);
 */
#ifndef KW_TEST_GGUF_WRITER_H
#define KW_TEST_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvweave/status.h"

typedef struct kw_gw kw_gw;

kw_gw *kw_gw_new(uint32_t version);
kw_gw *kw_gw_free(kw_gw *w);
/* The alignment used to lay out tensor data (does not write general.alignment). */
void kw_gw_set_alignment(kw_gw *w, uint32_t alignment);

/* One metadata entry of GGUF value type `type` whose value bytes (little-endian, as in
 * the file) are given raw. */
void kw_gw_raw(kw_gw *w, const char *key, uint32_t type, const void *bytes, size_t n);
void kw_gw_u8(kw_gw *w, const char *key, uint8_t v);
void kw_gw_i8(kw_gw *w, const char *key, int8_t v);
void kw_gw_u16(kw_gw *w, const char *key, uint16_t v);
void kw_gw_i16(kw_gw *w, const char *key, int16_t v);
void kw_gw_u32(kw_gw *w, const char *key, uint32_t v);
void kw_gw_i32(kw_gw *w, const char *key, int32_t v);
void kw_gw_f32(kw_gw *w, const char *key, float v);
void kw_gw_bool(kw_gw *w, const char *key, bool v);
void kw_gw_str(kw_gw *w, const char *key, const char *s);
void kw_gw_u64(kw_gw *w, const char *key, uint64_t v);
void kw_gw_i64(kw_gw *w, const char *key, int64_t v);
void kw_gw_f64(kw_gw *w, const char *key, double v);
/* Array of n numeric elements of GGUF type elem, packed as in the file. */
void kw_gw_arr(kw_gw *w, const char *key, uint32_t elem, uint64_t n, const void *data);
void kw_gw_arr_str(kw_gw *w, const char *key, uint64_t n, const char *const *strs);

/* ne innermost first, as GGUF stores it. data is copied. */
void kw_gw_tensor(kw_gw *w, const char *name, uint32_t ggml_type, int ndim, const uint64_t *ne,
                  const void *data, size_t nbytes);

/* The whole file in a malloc'd buffer, or written to path. */
int kw_gw_bytes(kw_gw *w, uint8_t **out, size_t *n);
int kw_gw_write(kw_gw *w, const char *path, kw_error *err);

#endif
