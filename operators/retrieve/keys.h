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

/* The keys attention read for (layer, kvh) in a step, for hooks that index them after
 * attention (ClusterKV; KVStar's selection): the pool's tokens of the table (as
 * kw__keys_as_read reads them) merged by position with the temporary pool's tokens of
 * w's row for kvh (its first query head's row when w is per query head), which a
 * MATERIALIZE hook (DeltaKV) rebuilt from what it holds outside the pool; a token in
 * both is taken from the pool. Only positions > after. Scratch grows as needed; free it
 * with kw__keys_read_free. */
typedef struct kw_keys_read {
    float *rows;   /* (n, head_dim) by increasing position */
    int32_t *pos;  /* (n) */
    float *trows;  /* scratch: the temporary pool's rows */
    int32_t *tpos, *ord;
    int64_t cap, tcap;
} kw_keys_read;

/* At most how many tokens kw__keys_read would return (no copy). */
int kw__keys_read_count(const kw_kvseq *kv, const kw_kvmem *mem, const kw_view *w, int layer,
                        int kvh, int32_t after, int n_kv);
/* Fills r; returns the count, or a status. w may be NULL (the pool's tokens only). */
int kw__keys_read(const kw_kvseq *kv, const kw_kvmem *mem, const kw_view *w, int layer,
                  int kvh, int32_t after, const float *inv_freq, const kw_model_config *cfg,
                  kw_keys_read *r);
void kw__keys_read_free(kw_keys_read *r);

/* For a selection by position (kvpool.h's want lists): row r of w reads position p of
 * (layer, kvh), from the pool when its table holds it (pos: the table's n positions,
 * increasing; *j the walk's place, positions asked in increasing order), else p goes to
 * row r's wants (a MATERIALIZE hook that holds it rebuilds it). */
int kw__view_choose(kw_view *w, int r, const kw_kvseq *kv, int layer, int kvh,
                    const int32_t *pos, int n, int *j, int32_t p);

#endif
