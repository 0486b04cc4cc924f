/* kvweave — tensors as the model loaders hand them out.
 *
 * Shapes are row-major, outermost first, as in PyTorch: a linear weight is
 * (out_features, in_features) and rows are contiguous. (GGUF lists ne[] innermost first;
 * the GGUF reader reverses it.) Quantized types are stored in ggml's block layouts along
 * the innermost dimension.
 */
#ifndef KVWEAVE_TENSOR_H
#define KVWEAVE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kw_dtype {
    KW_DT_F32 = 0,
    KW_DT_F16,
    KW_DT_BF16,
    KW_DT_Q4_0,
    KW_DT_Q4_1,
    KW_DT_Q5_0,
    KW_DT_Q5_1,
    KW_DT_Q8_0,
    KW_DT_Q4_K,
    KW_DT_Q5_K,
    KW_DT_Q6_K,
    KW_DT_I8,
    KW_DT_I32,
    KW_DT_COUNT
} kw_dtype;

typedef struct kw_tensor {
    const char *name;   /* canonical (GGUF-style) name, e.g. "blk.3.attn_q.weight" */
    kw_dtype dtype;
    int ndim;
    int64_t shape[4];   /* outermost first */
    const void *data;   /* (transfer none) usually inside an mmap */
    size_t nbytes;
} kw_tensor;

const char *kw_dtype_name(kw_dtype t);
/* Elements per block and bytes per block (1 and sizeof(element) for plain types). */
int kw_dtype_block(kw_dtype t, size_t *block_elems, size_t *block_bytes);
int64_t kw_tensor_nelems(const kw_tensor *t);
/* Bytes needed for n elements of t; KW_EINVAL (negative) if n is not a whole number of
 * blocks. */
int64_t kw_dtype_nbytes(kw_dtype t, int64_t n);

/* Dequantizes / converts n elements of `src` (of type t) to float, exactly as ggml
 * defines each format. n must be a multiple of the block size. */
int kw_to_f32(kw_dtype t, const void *src, float *dst, int64_t n);
/* Whole tensor to a new f32 buffer (caller frees). */
int kw_tensor_to_f32(const kw_tensor *t, float **out, kw_error *err);

/* The bits a code takes in kw_split_blocks' output for type t: 4 for Q4_0, Q4_1 and
 * Q4_K, 8 for Q5_0, Q5_1, Q5_K, Q6_K and Q8_0, 0 for the types it does not split. */
int kw_split_bits(kw_dtype t);
/* The elements one scale and minimum cover there: 16 for Q6_K, 32 for the other types
 * kw_split_bits names, 0 for the rest. */
int kw_split_group(kw_dtype t);
/* Splits n elements of an array of a type kw_split_bits names (n a whole number of its
 * blocks) into codes and an f32 scale and minimum per group of kw_split_group(t)
 * elements, such that element j is (float)code * scale[j / group] + min[j / group], the
 * value kw_to_f32 gives (a zero may differ in sign). int4 codes are two a byte (16 bytes
 * per 32 elements: element j < 16 of them the low nibble of byte j, element j + 16 its
 * high nibble), int8 codes signed bytes (the 5- and 6-bit types' codes are 0..31 and
 * -32..31). codes: n * bits / 8 bytes; scale, min: n / group floats. KW_EINVAL for other
 * types. */
int kw_split_blocks(kw_dtype t, const void *src, int64_t n, uint8_t *codes, float *scale,
                    float *min);

float kw_f16_to_f32(uint16_t h);
uint16_t kw_f32_to_f16(float f);
float kw_bf16_to_f32(uint16_t h);
uint16_t kw_f32_to_bf16(float f); /* round to nearest even */

#ifdef __cplusplus
}
#endif
#endif
