/* K rows as attention reads them (keys.h). */
#include "keys.h"

#include "kernels.h"

int32_t kw__key_pos(const kw_kvseq *kv, const kw_kvmem *mem, int layer, int kvh, int j)
{
    int npg;
    const int32_t *pages = kw_kvseq_pages(kv, layer, kvh, &npg);
    return mem->pos[KW_POOL_MAIN][(int64_t)pages[j / mem->page_tokens] * mem->page_tokens
                                  + j % mem->page_tokens];
}

int kw__keys_as_read(const kw_kvseq *kv, const kw_kvmem *mem, int layer, int kvh, int j0,
                     int n, const float *inv_freq, kw_rope_layout layout, int head_dim,
                     float *rows, int32_t *pos)
{
    if (n <= 0)
        return 0;
    int rc = kw_kvseq_rows_f32(kv, layer, kvh, j0, n, 0, rows);
    if (rc < 0)
        return rc;
    for (int r = 0; r < n; r++)
        pos[r] = kw__key_pos(kv, mem, layer, kvh, j0 + r);
    if (mem->pre_rope)
        rc = kw_k_rope(KW_BK_CPU, NULL, rows, pos, n, 1, head_dim, inv_freq, layout);
    return rc < 0 ? rc : 0;
}
