/* Attention over KV views (kernels.h: kw_k_attn_view) and its plain reference.
 *
 * Work is cut into items (a tile of consecutive query tokens of one sequence, a row, a
 * span range): each K and V row read serves every query vector of the tile (the tile's
 * tokens times the g query heads the row serves, at most MAX_V vectors). Rows longer
 * than SPLIT_MIN tokens are split into parts when there are too few items to fill every
 * core (decode); each part keeps its own online-softmax state (max, sum, accumulator)
 * per vector and the parts are merged at the end.
 *
 * An item takes its keys CH at a time; four vectors at a time (VB) share each load of a
 * K or V row in 8-float vectors (scores4, pv4), and the softmax step runs 8 keys at a
 * time with a polynomial exponential (exp8). Decode over quantized pages reads the codes
 * in place, converting them as they are read and taking the scales out of the sums
 * (int8 rows: scale . (q . codes); per-channel K: (q * scale) . codes + q . min, the
 * query's product taken once a page), and asks for the next page ahead. Measured with
 * `kvweave bench cpu` (2 cores, SmolLM2-135M's shape, one layer at context 2048):
 * prefill of 512 tokens 17-18 ms (116-124 GFLOP/s) against 30 ms when the softmax step
 * ran one key at a time, and 64 ms for the kernel that scored and accumulated one vector
 * and one key at a time with libm's expf; decode at batch 8 1.05-1.14 ms against
 * 1.26-1.30; decode at batch 1 over int8 pages 0.113-0.116 ms against 0.167-0.183 when
 * rows were dequantized into a buffer first. The x86-64-v3 clone is compiled with fused
 * multiply-adds (kernels/meson.build). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "cpu/kernels_cpu.h"
#include "cpu/vec8.h"
#include "kernels.h"

/* run_item is compiled twice, for x86-64-v3 and the baseline (KW_CLONES). */
#define SPLIT_MIN 256
#define MAX_V 64 /* query vectors per item */
#define CH 64    /* keys per chunk */

typedef struct item {
    int t, nt, row, s0, s1; /* tokens [t, t + nt) */
    int part;               /* index of the partial state */
} item;

static void rope_one(float *k, int32_t pos, int hd, const float *inv_freq,
                     kw_rope_layout layout)
{
    for (int i = 0; i < hd / 2; i++) {
        float a = (float)pos * inv_freq[i], c = cosf(a), s = sinf(a);
        int i0 = layout == KW_ROPE_INTERLEAVED ? 2 * i : i;
        int i1 = layout == KW_ROPE_INTERLEAVED ? 2 * i + 1 : i + hd / 2;
        float x0 = k[i0], x1 = k[i1];
        k[i0] = x0 * c - x1 * s;
        k[i1] = x0 * s + x1 * c;
    }
}

/* Four query vectors at a time (VB), in 8-float vectors (cpu/vec8.h). */
#define VB 4

/* One vector's online-softmax step over a chunk (state s: max, sum, acc[hd]): its m
 * scores sc become weights, 0 for the keys past its position kp[c] > qp. sc and kp
 * have room for m rounded up to 8 (CH is a multiple of 8); the entries past m become
 * 0 whatever they held. */
static inline void softmax_chunk(float *sc, int m, const int32_t *kp, int32_t qp,
                                 float scale, float *s, int hd)
{
    const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
    const int mr = (m + 7) & ~7;
    v8 vmx = (v8){0} - INFINITY;
    for (int c = 0; c < mr; c += 8) {
        v8i off = (*(const v8iu *)(kp + c) > qp) | (lane + c >= m);
        v8 x = sel8(off, (v8){0} - INFINITY, *(v8u *)(sc + c) * scale);
        *(v8u *)(sc + c) = x;
        vmx = sel8(x > vmx, x, vmx);
    }
    float mx = hmax8(vmx), *acc = s + 2;
    if (mx == -INFINITY) { /* no key of the chunk is visible: no weight */
        memset(sc, 0, (size_t)mr * sizeof(float));
        return;
    }
    if (mx > s[0]) {
        float rs = expf(s[0] - mx);
        s[1] *= rs;
        for (int i = 0; i < hd; i++)
            acc[i] *= rs;
        s[0] = mx;
    }
    v8 l = (v8){0};
    for (int c = 0; c < mr; c += 8) {
        v8 e = exp8(*(v8u *)(sc + c) - s[0]);
        *(v8u *)(sc + c) = e;
        l += e;
    }
    s[1] += hsum8(l);
}

/* s[r][c] = q[r] . K_c for the CH keys of kt (hd x CH, K transposed), r < VB. */
static inline void scores4(const float *const q[VB], const float *kt, int hd, float s[VB][CH])
{
    for (int cb = 0; cb < CH; cb += 16) {
        v8 a[VB][2];
        for (int r = 0; r < VB; r++)
            a[r][0] = a[r][1] = (v8){0};
        for (int i = 0; i < hd; i++) {
            const float *ki = kt + (size_t)i * CH + cb;
            const v8 k0 = *(const v8u *)ki, k1 = *(const v8u *)(ki + 8);
            for (int r = 0; r < VB; r++) {
                const float x = q[r][i];
                a[r][0] += x * k0;
                a[r][1] += x * k1;
            }
        }
        for (int r = 0; r < VB; r++) {
            *(v8u *)(s[r] + cb) = a[r][0];
            *(v8u *)(s[r] + cb + 8) = a[r][1];
        }
    }
}

/* Eight int8 codes as floats. */
static inline v8 i8x8(const int8_t *c)
{
    v8i t;
    for (int i = 0; i < 8; i++)
        t[i] = c[i];
    return __builtin_convertvector(t, v8);
}

/* Floats i .. i + 7 (row8) or i (row1) of a K or V row: f32, or int8 codes (i8, KW_KV_I8
 * pages read in place, the row's scale applied by the caller). */
static inline v8 row8(const void *row, int i, bool i8)
{
    return i8 ? i8x8((const int8_t *)row + i) : *(const v8u *)((const float *)row + i);
}

static inline float row1(const void *row, int i, bool i8)
{
    return i8 ? (float)((const int8_t *)row)[i] : ((const float *)row)[i];
}

/* s[r][c] = q[r] . K_c for the m rows kr[c] of K (decode: K read in pool order), r < VB:
 * each 8 floats of a row serve the four vectors. ks: NULL for f32 rows, else the int8
 * rows' scales (s = scale . (q . codes)). */
static inline void scores4_rows(const float *const q[VB], const void *const *kr,
                                const float *ks, int m, int hd, float s[VB][CH])
{
    const bool i8 = ks != NULL;
    for (int c = 0; c < m; c++) {
        const void *k = kr[c];
        v8 a[VB];
        for (int r = 0; r < VB; r++)
            a[r] = (v8){0};
        int i = 0;
        for (; i + 8 <= hd; i += 8) {
            const v8 kv = row8(k, i, i8);
            for (int r = 0; r < VB; r++)
                a[r] += *(const v8u *)(q[r] + i) * kv;
        }
        for (int r = 0; r < VB; r++) {
            float d = hsum8(a[r]);
            for (int j = i; j < hd; j++)
                d += q[r][j] * row1(k, j, i8);
            s[r][c] = i8 ? d * ks[c] : d;
        }
    }
}

/* acc[r][0 .. hd) += sum over c < m of p[r][c] V_c (the rows vr[c]), r < VB. vs: NULL for
 * f32 rows, else the int8 rows' scales (taken into p). */
static inline void pv4(float *const acc[VB], const float p[VB][CH], const void *const *vr,
                       const float *vs, int m, int hd)
{
    const bool i8 = vs != NULL;
    float ps[VB][CH];
    for (int r = 0; r < VB && i8; r++)
        for (int c = 0; c < m; c++)
            ps[r][c] = p[r][c] * vs[c];
    const float(*w)[CH] = i8 ? (const float(*)[CH])ps : p;
    int h = 0;
    for (; h + 16 <= hd; h += 16) {
        v8 a[VB][2];
        for (int r = 0; r < VB; r++)
            a[r][0] = *(const v8u *)(acc[r] + h), a[r][1] = *(const v8u *)(acc[r] + h + 8);
        for (int c = 0; c < m; c++) {
            const v8 x0 = row8(vr[c], h, i8), x1 = row8(vr[c], h + 8, i8);
            for (int r = 0; r < VB; r++) {
                a[r][0] += w[r][c] * x0;
                a[r][1] += w[r][c] * x1;
            }
        }
        for (int r = 0; r < VB; r++)
            *(v8u *)(acc[r] + h) = a[r][0], *(v8u *)(acc[r] + h + 8) = a[r][1];
    }
    for (; h < hd; h++)
        for (int r = 0; r < VB; r++) {
            float x = acc[r][h];
            for (int c = 0; c < m; c++)
                x += w[r][c] * row1(vr[c], h, i8);
            acc[r][h] = x;
        }
}

/* Eight unsigned codes as floats: bytes (bits 8) or the nibbles at `shift` (bits 4). */
static inline v8 ux8(const uint8_t *c, int bits, int shift)
{
    v8i t;
    for (int i = 0; i < 8; i++) /* a plain widening loop (vpmovzxbd; with the nibble */
        t[i] = c[i];            /* taken inside it, GCC inserted elements one by one) */
    if (bits == 4)
        t = (t >> shift) & 15;
    return __builtin_convertvector(t, v8);
}

/* A query for per-channel-K pages: qs = q * scale (int4: deinterleaved, the even
 * channels, then the odd ones), returns q . min. */
static inline float kchan_query(const float *q, const float *sc, const float *mn, int bits,
                                int hd, float *qs)
{
    const int n = bits == 4 ? hd / 2 : hd;
    v8 b = (v8){0};
    int i = 0;
    for (; i + 16 <= hd; i += 16) {
        const v8 q0 = *(const v8u *)(q + i), q1 = *(const v8u *)(q + i + 8);
        const v8 s0 = q0 * *(const v8u *)(sc + i), s1 = q1 * *(const v8u *)(sc + i + 8);
        b += q0 * *(const v8u *)(mn + i) + q1 * *(const v8u *)(mn + i + 8);
        if (bits == 4) {
            *(v8u *)(qs + i / 2) = __builtin_shufflevector(s0, s1, 0, 2, 4, 6, 8, 10, 12, 14);
            *(v8u *)(qs + n + i / 2) =
                __builtin_shufflevector(s0, s1, 1, 3, 5, 7, 9, 11, 13, 15);
        } else {
            *(v8u *)(qs + i) = s0, *(v8u *)(qs + i + 8) = s1;
        }
    }
    float bs = hsum8(b);
    for (; i < hd; i++) {
        qs[bits == 4 ? (i % 2) * n + i / 2 : i] = q[i] * sc[i];
        bs += q[i] * mn[i];
    }
    return bs;
}

/* Scores over per-channel-K pages (KW_KV_I8K, KW_KV_I4K: unsigned codes, K = scale_i
 * code_i + min_i per channel i): s = q' . codes + base with q' = q * scale and base =
 * q . min taken once per page (qs, base); for int4, where byte j holds channels 2j (low
 * nibble) and 2j + 1, qs is deinterleaved: the even channels' hd / 2 entries, then the
 * odd ones'. */
static inline void scores4_kchan(const float *const qs[VB], const float *base,
                                 const uint8_t *const *kr, int bits, int m, int hd,
                                 float s[VB][CH])
{
    const int n = bits == 4 ? hd / 2 : hd;
    for (int c = 0; c < m; c++) {
        const uint8_t *k = kr[c];
        v8 a[VB];
        for (int r = 0; r < VB; r++)
            a[r] = (v8){0};
        int j = 0;
        for (; j + 8 <= n; j += 8) {
            const v8 k0 = ux8(k + j, bits, 0), k1 = bits == 4 ? ux8(k + j, 4, 4) : (v8){0};
            for (int r = 0; r < VB; r++) {
                a[r] += *(const v8u *)(qs[r] + j) * k0;
                if (bits == 4)
                    a[r] += *(const v8u *)(qs[r] + n + j) * k1;
            }
        }
        for (int r = 0; r < VB; r++) {
            float d = hsum8(a[r]);
            for (int i = j; i < n; i++)
                d += bits == 4 ? qs[r][i] * (float)(k[i] & 15) + qs[r][n + i] * (float)(k[i] >> 4)
                               : qs[r][i] * (float)k[i];
            s[r][c] = d + base[r];
        }
    }
}

/* pv4 over per-channel-K pages' V rows (V = scale code + min per row): acc += (p scale)
 * codes + (p min); for int4 the channels of 8 bytes are summed deinterleaved, then put
 * back in order. */
static inline void pv4_kchan(float *const acc[VB], const float p[VB][CH],
                             const uint8_t *const *vr, const float *vs, const float *vm,
                             int bits, int m, int hd)
{
    float ps[VB][CH], pm[VB];
    for (int r = 0; r < VB; r++) {
        pm[r] = 0.f;
        for (int c = 0; c < m; c++)
            ps[r][c] = p[r][c] * vs[c], pm[r] += p[r][c] * vm[c];
    }
    const int n = bits == 4 ? hd / 2 : hd; /* bytes a row */
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        v8 a[VB][2];
        for (int r = 0; r < VB; r++)
            a[r][0] = a[r][1] = (v8){0} + pm[r];
        for (int c = 0; c < m; c++) {
            const v8 x0 = ux8(vr[c] + j, bits, 0), x1 = bits == 4 ? ux8(vr[c] + j, 4, 4) : (v8){0};
            for (int r = 0; r < VB; r++) {
                a[r][0] += ps[r][c] * x0;
                if (bits == 4)
                    a[r][1] += ps[r][c] * x1;
            }
        }
        for (int r = 0; r < VB; r++) {
            if (bits == 4) { /* channels 2 (j + i) and 2 (j + i) + 1 back in order */
                *(v8u *)(acc[r] + 2 * j) += __builtin_shufflevector(a[r][0], a[r][1], 0, 8, 1,
                                                                    9, 2, 10, 3, 11);
                *(v8u *)(acc[r] + 2 * j + 8) += __builtin_shufflevector(a[r][0], a[r][1], 4,
                                                                        12, 5, 13, 6, 14, 7,
                                                                        15);
            } else {
                *(v8u *)(acc[r] + j) += a[r][0];
            }
        }
    }
    for (; j < n; j++)
        for (int r = 0; r < VB; r++) {
            float x0 = pm[r], x1 = pm[r];
            for (int c = 0; c < m; c++) {
                const uint8_t b = vr[c][j];
                x0 += ps[r][c] * (bits == 4 ? (float)(b & 15) : (float)b);
                x1 += ps[r][c] * (float)(b >> 4);
            }
            if (bits == 4)
                acc[r][2 * j] += x0, acc[r][2 * j + 1] += x1;
            else
                acc[r][j] += x0;
        }
}

/* Runs one item: query heads h0..h0+ng-1 of tokens t..t+nt-1 over spans [s0, s1) of a
 * view. st: per vector v = ti * ng + j, (m, l, acc[hd]). The row's keys are taken CH at
 * a time across spans (those no vector of the item may see are skipped); with 8 vectors
 * or more, K is transposed into kt (hd x CH) so that a vector's CH scores are one
 * vectorized loop, else (decode) each score is a dot product with K's row. Then for each
 * vector its online-softmax update, and P V from the chunk's V rows for four vectors at
 * once (VB). buf: (2 CH + 3) hd + 2 floats. */
KW_CLONES
static void run_item(const kw_attn_args *a, const kw_view *w, const item *it, int h0, int ng,
                     float *st, float *buf)
{
    const int hd = a->mem.head_dim, P = a->mem.page_tokens, nv = it->nt * ng;
    const float *qv[MAX_V];
    int32_t qp[MAX_V], qmax = INT32_MIN;
    for (int v = 0; v < nv; v++) {
        int t = it->t + v / ng;
        qv[v] = a->q + ((int64_t)t * a->n_head + h0 + v % ng) * hd;
        qp[v] = a->q_pos[t];
        qmax = qp[v] > qmax ? qp[v] : qmax;
        st[v * (hd + 2)] = -INFINITY;
        st[v * (hd + 2) + 1] = 0.f;
        memset(st + v * (hd + 2) + 2, 0, (size_t)hd * sizeof(float));
    }
    /* few vectors (decode): dot products from K's rows; else K transposed into kt */
    const bool rows = nv < 8;
    float *kt = buf, *vb = kt + (size_t)hd * CH, *kb = vb + (size_t)hd * CH;
    float *zero = kb + hd, *scratch = zero + hd; /* hd zeros; a state of hd + 2 */
    memset(zero, 0, (size_t)(2 * hd + 2) * sizeof(float));
    scratch[0] = -INFINITY;
    const float *kr[CH], *vr[CH];
    /* quantized pages read in place (decode): code rows, per-row scales (and V minima) */
    const int8_t *kq[CH], *vq[CH];
    float ksc[CH], vsc[CH], vmn[CH];
    const float *csc = NULL, *cmn = NULL; /* a per-channel-K page's K scales and minima */
    int32_t kp[CH];
    int si = it->s0, off = 0; /* the next key: slot off of span si */
    for (;;) {
        /* the next CH keys some vector may see */
        int m = 0, kbits = 0; /* kbits: the chunk's per-channel-K codes (8 or 4), else 0 */
        bool i8 = false;
        for (; si < it->s1 && m < CH; off = 0, si++) {
            const kw_span *sp = &w->spans[si];
            const int32_t *pp = a->mem.pos[sp->pool] + (int64_t)sp->page * P;
            /* decode over quantized pages: a chunk is one span, its rows read in place
             * (not K before RoPE, nor a per-channel-K page still open: f32 K rows) */
            const kw_kvdtype dt = a->mem.dtype[sp->pool];
            const bool fuse = rows && !a->inv_freq;
            i8 = fuse && dt == KW_KV_I8;
            kbits = fuse && kw_kvdtype_kchan(dt) && !a->mem.stage[sp->page]
                        ? (dt == KW_KV_I4K ? 4 : 8)
                        : 0;
            /* the page's layout: kvpool.h, kw_kvmem_params */
            const uint8_t *pg = kw_kvmem_page(&a->mem, sp->pool, sp->page);
            const int64_t cb = kw_kvmem_code_bytes(&a->mem, sp->pool), rb = cb / P;
            const float *prm = kw_kvmem_params(&a->mem, sp->pool, pg);
            if (kbits)
                csc = prm, cmn = prm + hd;
            for (; (i8 || kbits) && off < sp->n && m < CH; off++) {
                int slot = sp->first + off;
                if (pp[slot] > qmax)
                    continue;
                kq[m] = (const int8_t *)pg + slot * rb;
                vq[m] = (const int8_t *)pg + cb + slot * rb;
                if (i8)
                    ksc[m] = prm[slot], vsc[m] = prm[P + slot];
                else
                    vsc[m] = prm[2 * hd + slot], vmn[m] = prm[2 * hd + P + slot];
                kp[m++] = pp[slot];
            }
            for (; !i8 && !kbits && off < sp->n && m < CH; off++) {
                int slot = sp->first + off;
                if (pp[slot] > qmax)
                    continue;
                float *kc = rows ? kt + (size_t)m * hd : kb; /* K's row when not f32 */
                const float *k = kw_kvmem_row(&a->mem, sp->pool, sp->page, slot, 0, kc);
                if (a->inv_freq) {
                    if (k != kc)
                        memcpy(kc, k, (size_t)hd * sizeof(float));
                    rope_one(kc, pp[slot], hd, a->inv_freq, a->layout);
                    k = kc;
                }
                if (rows)
                    kr[m] = k;
                else
                    for (int i = 0; i < hd; i++)
                        kt[(size_t)i * CH + m] = k[i];
                vr[m] = kw_kvmem_row(&a->mem, sp->pool, sp->page, slot, 1, vb + (size_t)m * hd);
                kp[m++] = pp[slot];
            }
            if (m == CH && off < sp->n)
                break; /* the span goes on in the next chunk */
            if (rows && m > 0) {
                off = 0, si++; /* decode reads a span's K rows then its V rows: in pool
                                  order, which the prefetcher follows */
                if ((i8 || kbits) && si < it->s1) {
                    /* quantized pages read in place start at the scales past the codes:
                     * ask for the next span's page now */
                    const kw_span *nx = &w->spans[si];
                    const char *np = (const char *)a->mem.base[nx->pool]
                                     + (int64_t)nx->page * a->mem.page_bytes[nx->pool];
                    for (int64_t b = 0; b < a->mem.page_bytes[nx->pool]; b += 64)
                        __builtin_prefetch(np + b);
                }
                break;
            }
        }
        if (m == 0)
            break;
        for (int i = 0; !rows && i < hd && m < CH; i++)
            memset(kt + (size_t)i * CH + m, 0, (size_t)(CH - m) * sizeof(float));
        for (int v0 = 0; v0 < nv; v0 += VB) {
            /* vectors v0 .. v0 + VB - 1 (past nv: a zero query into a scratch state) */
            const float *q4[VB];
            float *s4[VB], sc[VB][CH];
            for (int r = 0; r < VB; r++) {
                q4[r] = v0 + r < nv ? qv[v0 + r] : zero;
                s4[r] = v0 + r < nv ? st + (v0 + r) * (hd + 2) : scratch;
            }
            float base[VB];
            const float *qs[VB];
            for (int r = 0; kbits && r < VB; r++) {
                qs[r] = kt + (size_t)r * hd;
                base[r] = kbits == 4 ? kchan_query(q4[r], csc, cmn, 4, hd, kt + (size_t)r * hd)
                                     : kchan_query(q4[r], csc, cmn, 8, hd, kt + (size_t)r * hd);
            }
            if (kbits == 4) /* constant bits: one copy each */
                scores4_kchan(qs, base, (const uint8_t *const *)kq, 4, m, hd, sc);
            else if (kbits)
                scores4_kchan(qs, base, (const uint8_t *const *)kq, 8, m, hd, sc);
            else if (i8)
                scores4_rows(q4, (const void *const *)kq, ksc, m, hd, sc);
            else if (rows)
                scores4_rows(q4, (const void *const *)kr, NULL, m, hd, sc);
            else
                scores4(q4, kt, hd, sc);
            for (int r = 0; r < VB; r++) {
                float *s = s4[r];
                if (v0 + r >= nv) { /* no vector: no weight */
                    memset(sc[r], 0, (size_t)m * sizeof(float));
                    continue;
                }
                softmax_chunk(sc[r], m, kp, qp[v0 + r], a->scale, s, hd);
            }
            float *acc4[VB];
            for (int r = 0; r < VB; r++)
                acc4[r] = s4[r] + 2;
            if (kbits == 4)
                pv4_kchan(acc4, sc, (const uint8_t *const *)vq, vsc, vmn, 4, m, hd);
            else if (kbits)
                pv4_kchan(acc4, sc, (const uint8_t *const *)vq, vsc, vmn, 8, m, hd);
            else if (i8)
                pv4(acc4, sc, (const void *const *)vq, vsc, m, hd);
            else
                pv4(acc4, sc, (const void *const *)vr, NULL, m, hd);
        }
    }
}

static int tile_tokens(const kw_attn_args *a, const kw_view *w)
{
    int ng = w->per_qhead ? 1 : a->n_head / a->n_kv;
    return MAX_V / ng;
}

/* Cuts each (tile, row) into parts of about equal token counts; the parts of one
 * (tile, row) are consecutive items. */
static int plan_items(const kw_attn_args *a, item **out, int *n_items)
{
    int nth = omp_get_max_threads();
    int64_t cap = 0;
    for (int i = 0; i < a->n_seq; i++) {
        const kw_view *w = a->views[i];
        int nq = a->tok_off[i + 1] - a->tok_off[i], qt = tile_tokens(a, w);
        cap += (int64_t)((nq + qt - 1) / qt) * (w->row_ptr[w->n_rows] + w->n_rows);
    }
    item *it = malloc((size_t)(cap + 1) * sizeof *it);
    if (!it)
        return KW_ENOMEM;
    int n = 0;
    for (int i = 0; i < a->n_seq; i++) {
        const kw_view *w = a->views[i];
        int nq = a->tok_off[i + 1] - a->tok_off[i], qt = tile_tokens(a, w);
        int units = (nq + qt - 1) / qt * w->n_rows;
        int want = units >= 4 * nth ? 1 : (4 * nth + units - 1) / (units > 0 ? units : 1);
        for (int t = a->tok_off[i]; t < a->tok_off[i + 1]; t += qt) {
            int nt = a->tok_off[i + 1] - t < qt ? a->tok_off[i + 1] - t : qt;
            for (int r = 0; r < w->n_rows; r++) {
                int b = w->row_ptr[r], e = w->row_ptr[r + 1];
                int len = kw_view_row_tokens(w, r);
                int parts = len >= SPLIT_MIN ? want : 1;
                int per = (len + parts - 1) / parts, acc = 0, s0 = b;
                for (int si = b; si < e; si++) {
                    acc += w->spans[si].n;
                    if (acc >= per && si + 1 < e) {
                        it[n] = (item){.t = t, .nt = nt, .row = r, .s0 = s0, .s1 = si + 1,
                                       .part = n};
                        n++;
                        s0 = si + 1;
                        acc = 0;
                    }
                }
                it[n] = (item){.t = t, .nt = nt, .row = r, .s0 = s0, .s1 = e, .part = n};
                n++;
            }
        }
    }
    *out = it;
    *n_items = n;
    return 0;
}

static void merge(const kw_attn_args *a, const item *it, int n, const float *parts)
{
    const int hd = a->mem.head_dim, g = a->n_head / a->n_kv;
#pragma omp parallel for schedule(static)
    for (int k = 0; k < n; k++) {
        if (k > 0 && it[k - 1].t == it[k].t && it[k - 1].row == it[k].row)
            continue; /* the first part of a (tile, row) merges all of them */
        int e = k + 1;
        while (e < n && it[e].t == it[k].t && it[e].row == it[k].row)
            e++;
        const kw_view *w = NULL;
        for (int i = 0; i < a->n_seq; i++)
            if (it[k].t < a->tok_off[i + 1]) {
                w = a->views[i];
                break;
            }
        int h0 = w->per_qhead ? it[k].row : it[k].row * g, ng = w->per_qhead ? 1 : g;
        for (int v = 0; v < it[k].nt * ng; v++) {
            int t = it[k].t + v / ng, j = v % ng;
            float M = -INFINITY;
            for (int p = k; p < e; p++) {
                float m = parts[((int64_t)p * MAX_V + v) * (hd + 2)];
                M = m > M ? m : M;
            }
            float *o = a->out + ((int64_t)t * a->n_head + h0 + j) * hd;
            memset(o, 0, (size_t)hd * sizeof(float));
            double l = 0;
            if (M != -INFINITY)
                for (int p = k; p < e; p++) {
                    const float *s = parts + ((int64_t)p * MAX_V + v) * (hd + 2);
                    if (s[0] == -INFINITY)
                        continue;
                    float r = expf(s[0] - M);
                    l += (double)s[1] * r;
                    for (int i = 0; i < hd; i++)
                        o[i] += r * s[2 + i];
                }
            if (l > 0)
                for (int i = 0; i < hd; i++)
                    o[i] = (float)(o[i] / l);
            if (a->lse)
                a->lse[(int64_t)t * a->n_head + h0 + j] =
                    l > 0 ? M + (float)log(l) : -INFINITY;
        }
    }
}

int kw_k_attn_view(kw_backend bk, void *stream, const kw_attn_args *a)
{
    (void)stream;
    if (bk != KW_BK_CPU)
        return KW_ENOSYS;
    const int hd = a->mem.head_dim;
    if (a->n_kv < 1 || a->n_head % a->n_kv || a->n_head / a->n_kv > MAX_V || hd < 2 || hd % 2)
        return KW_EINVAL;
    for (int i = 0; i < a->n_seq; i++) {
        const kw_view *w = a->views[i];
        if (w->n_rows != (w->per_qhead ? a->n_head : a->n_kv))
            return KW_EINVAL;
    }
    item *it;
    int n;
    int rc = plan_items(a, &it, &n);
    if (rc < 0)
        return rc;
    float *parts = malloc((size_t)n * MAX_V * (hd + 2) * sizeof(float));
    int nth = omp_get_max_threads();
    const size_t per = (size_t)(2 * CH + 3) * hd + 2; /* run_item's buffer */
    float *kb = malloc((size_t)nth * per * sizeof(float));
    if (!parts || !kb) {
        free(it), free(parts), free(kb);
        return KW_ENOMEM;
    }
#pragma omp parallel for schedule(dynamic, 4)
    for (int k = 0; k < n; k++) {
        const kw_view *w = NULL;
        for (int i = 0; i < a->n_seq; i++)
            if (it[k].t < a->tok_off[i + 1]) {
                w = a->views[i];
                break;
            }
        int g = a->n_head / a->n_kv;
        int h0 = w->per_qhead ? it[k].row : it[k].row * g, ng = w->per_qhead ? 1 : g;
        run_item(a, w, &it[k], h0, ng, parts + (int64_t)it[k].part * MAX_V * (hd + 2),
                 kb + (size_t)omp_get_thread_num() * per);
    }
    merge(a, it, n, parts);
    free(it), free(parts), free(kb);
    return 0;
}

void kw_ref_attn_view(const kw_attn_args *a)
{
    const int hd = a->mem.head_dim, P = a->mem.page_tokens, g = a->n_head / a->n_kv;
    float *kb = malloc((size_t)hd * sizeof(float)), *vb = malloc((size_t)hd * sizeof(float));
    for (int i = 0; i < a->n_seq; i++) {
        const kw_view *w = a->views[i];
        for (int t = a->tok_off[i]; t < a->tok_off[i + 1]; t++)
            for (int h = 0; h < a->n_head; h++) {
                int r = w->per_qhead ? h : h / g;
                const float *q = a->q + ((int64_t)t * a->n_head + h) * hd;
                double mx = -INFINITY, l = 0, *o = calloc((size_t)hd, sizeof(double));
                for (int pass = 0; pass < 2; pass++)
                    for (int si = w->row_ptr[r]; si < w->row_ptr[r + 1]; si++) {
                        const kw_span *sp = &w->spans[si];
                        for (int c = sp->first; c < sp->first + sp->n; c++) {
                            int32_t pos = a->mem.pos[sp->pool][(int64_t)sp->page * P + c];
                            if (pos > a->q_pos[t])
                                continue;
                            const float *kr = kw_kvmem_row(&a->mem, sp->pool, sp->page, c, 0, kb);
                            if (kr != kb)
                                memcpy(kb, kr, (size_t)hd * sizeof(float));
                            if (a->inv_freq)
                                rope_one(kb, pos, hd, a->inv_freq, a->layout);
                            double d = 0;
                            for (int x = 0; x < hd; x++)
                                d += (double)q[x] * kb[x];
                            d *= a->scale;
                            if (pass == 0) {
                                mx = d > mx ? d : mx;
                                continue;
                            }
                            double p = exp(d - mx);
                            l += p;
                            const float *vr = kw_kvmem_row(&a->mem, sp->pool, sp->page, c, 1, vb);
                            for (int x = 0; x < hd; x++)
                                o[x] += p * vr[x];
                        }
                    }
                float *out = a->out + ((int64_t)t * a->n_head + h) * hd;
                for (int x = 0; x < hd; x++)
                    out[x] = l > 0 ? (float)(o[x] / l) : 0.f;
                if (a->lse)
                    a->lse[(int64_t)t * a->n_head + h] = l > 0 ? (float)(mx + log(l)) : -INFINITY;
                free(o);
            }
    }
    free(kb);
    free(vb);
}
