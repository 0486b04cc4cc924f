/* K rows as attention reads them, for the selection hooks (retrieve.*). */
#ifndef KW_OPS_RETRIEVE_KEYS_H
#define KW_OPS_RETRIEVE_KEYS_H

#include <stdint.h>

#include "kvweave/kvpool.h"
#include "kvweave/model.h"

/* Stored position of token j of (layer, kvh), from the pool's position array. */
int32_t kw__key_pos(const kw_kvseq *kv, const kw_kvmem *mem, int layer, int kvh, int j);

/* K of tokens [j0, j0 + n) of (layer, kvh) into rows (n, head_dim) and their positions
 * into pos (n): after RoPE, as attention reads them (a pre-RoPE pool's rows are rotated
 * from their stored positions with inv_freq, the model's plain frequencies). One read
 * per pool page (a device pool copies them to the host). */
int kw__keys_as_read(const kw_kvseq *kv, const kw_kvmem *mem, int layer, int kvh, int j0,
                     int n, const float *inv_freq, kw_rope_layout layout, int head_dim,
                     float *rows, int32_t *pos);

#endif
