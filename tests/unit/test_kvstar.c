/* retrieve.kvstar: the vote kernel against a plain double reference on random shapes; the
 * block representation against a brute force; and the hook on a small pool: what stays
 * in the pool at the prompt's end (the windows and the blocks a reference vote picks),
 * the block files (layout, sizes and bytes), the swap two strides after the decode
 * queries (the blocks a reference vote picks, read back bit for bit, only the changed
 * ones counted as loaded), files removed at close or kept and shared with `persist`, a
 * broken store failing the sequence with the file's name, and the refusals. */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "kernels.h"
#include "kvstore.h"
#include "kvweave/tensor.h"
#include "retrieve/kvstar.h"
#include "hook_fixture.h"
#include "runtime_support.h"

static float rnd(uint64_t *rs) { return (float)(2 * rt_rand01(rs) - 1); }

/* ---- the vote and the representation ---- */

static void ref_vote(const float *q, int nq, int H, int Hk, int hd, const int32_t *chan,
                     int dk, const uint16_t *sub, int n_sub, int per, double *score)
{
    for (int b = 0; b < n_sub / per; b++)
        score[b] = 0;
    double *lg = malloc(sizeof(double) * (size_t)n_sub);
    for (int t = 0; t < nq; t++)
        for (int h = 0; h < H; h++) {
            int kvh = h / (H / Hk);
            double mx = -INFINITY, z = 0;
            for (int s = 0; s < n_sub; s++) {
                double a = 0;
                for (int c = 0; c < dk; c++)
                    a += (double)q[((size_t)t * H + h) * hd + chan[kvh * dk + c]]
                         * kw_f16_to_f32(sub[((size_t)kvh * n_sub + s) * dk + c]);
                lg[s] = a;
                mx = fmax(mx, a);
            }
            for (int s = 0; s < n_sub; s++)
                z += exp(lg[s] - mx);
            for (int s = 0; s < n_sub; s++)
                score[s / per] += exp(lg[s] - mx) / z;
        }
    free(lg);
}

static void test_vote_against_reference(void **state)
{
    (void)state;
    uint64_t rs = 0x5a1;
    const int shapes[][6] = {/* nq, H, Hk, hd, per, blocks */
                             {1, 6, 2, 8, 4, 3}, {8, 8, 8, 16, 2, 17}, {3, 4, 1, 64, 64, 5},
                             {8, 32, 8, 128, 64, 40}, {5, 9, 3, 64, 1, 1}, {2, 6, 2, 8, 8, 33}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        int nq = shapes[i][0], H = shapes[i][1], Hk = shapes[i][2], hd = shapes[i][3];
        int per = shapes[i][4], nb = shapes[i][5], n_sub = per * nb;
        int dk = 1 + (int)(rt_rand01(&rs) * hd);
        float *q = malloc(sizeof(float) * (size_t)nq * H * hd);
        int32_t *chan = malloc(sizeof(int32_t) * (size_t)Hk * dk);
        uint16_t *sub = malloc(sizeof(uint16_t) * (size_t)Hk * n_sub * dk);
        float *got = malloc(sizeof(float) * (size_t)nb);
        double *want = malloc(sizeof(double) * (size_t)nb);
        for (int j = 0; j < nq * H * hd; j++)
            q[j] = 3 * rnd(&rs);
        for (int h = 0; h < Hk; h++) /* dk distinct channels, increasing */
            for (int c = 0, n = 0; c < hd && n < dk; c++)
                if (rt_rand01(&rs) < (double)(dk - n) / (hd - c))
                    chan[h * dk + n++] = c;
        for (int j = 0; j < Hk * n_sub * dk; j++)
            sub[j] = kw_f32_to_f16(rnd(&rs));
        memset(got, 0xff, sizeof(float) * (size_t)nb); /* poisoned */
        assert_int_equal(kw_k_kvstar_vote(q, nq, H, Hk, hd, chan, dk, sub, n_sub, per, got), 0);
        ref_vote(q, nq, H, Hk, hd, chan, dk, sub, n_sub, per, want);
        double sum = 0;
        for (int b = 0; b < nb; b++) {
            sum += got[b];
            if (fabs(got[b] - want[b]) > 1e-5 * nq * H)
                fail_msg("shape %zu block %d: %.7g, want %.7g", i, b, got[b], want[b]);
        }
        assert_true(fabs(sum - nq * H) < 1e-4 * nq * H); /* every query and head: mass 1 */
        free(q), free(chan), free(sub), free(got), free(want);
    }
    float s[2];
    int32_t ch = 0;
    uint16_t sb[3] = {0};
    assert_int_equal(kw_k_kvstar_vote(s, 1, 6, 4, 8, &ch, 1, sb, 3, 1, s), KW_EINVAL);
    assert_int_equal(kw_k_kvstar_vote(s, 1, 6, 2, 8, &ch, 1, sb, 3, 2, s), KW_EINVAL);
}

static void test_representation_against_brute_force(void **state)
{
    (void)state;
    uint64_t rs = 0x77;
    int n = 24, hd = 8, dk = 3, merge = 2;
    float k[24 * 8];
    for (int i = 0; i < n * hd; i++)
        k[i] = rnd(&rs);
    for (int t = 0; t < n; t++) /* channels 1 and 5: the same |K|, the largest */
        k[t * hd + 1] = 2.5f * (t % 2 ? 1 : -1), k[t * hd + 5] = 2.5f;
    int32_t chan[3];
    uint16_t sub[12 * 3];
    kw__kvstar_represent(k, n, hd, dk, merge, chan, sub);
    double imp[8] = {0};
    for (int t = 0; t < n; t++)
        for (int c = 0; c < hd; c++)
            imp[c] += fabs(k[t * hd + c]);
    int third = -1; /* the largest after 1 and 5 */
    for (int c = 0; c < hd; c++)
        if (c != 1 && c != 5 && (third < 0 || imp[c] > imp[third]))
            third = c;
    int want[3] = {1, 5, third};
    for (int a = 0; a < 3; a++) /* increasing */
        for (int b = a + 1; b < 3; b++)
            if (want[b] < want[a]) {
                int x = want[a];
                want[a] = want[b], want[b] = x;
            }
    for (int c = 0; c < 3; c++)
        assert_int_equal(chan[c], want[c]);
    for (int s = 0; s < n / merge; s++)
        for (int c = 0; c < dk; c++) {
            float m = (k[(2 * s) * hd + chan[c]] + k[(2 * s + 1) * hd + chan[c]]) / 2;
            assert_int_equal(sub[s * dk + c], kw_f32_to_f16(m));
        }
    /* a tie between channels 2 and 6 for the last place: the lower one */
    float t2[4 * 8] = {0};
    for (int t = 0; t < 4; t++)
        t2[t * 8 + 0] = 3, t2[t * 8 + 2] = -1, t2[t * 8 + 6] = 1;
    kw__kvstar_represent(t2, 4, 8, 2, 2, chan, sub);
    assert_int_equal(chan[0], 0);
    assert_int_equal(chan[1], 2);
}

static void test_block_counts(void **state)
{
    (void)state;
    kw_kvstar_opts o = kw__kvstar_defaults();
    int nf, nm, k;
    kw__kvstar_blocks(&o, 2048, &nf, &nm, &k);
    assert_int_equal(nf, 16), assert_int_equal(nm, 13), assert_int_equal(k, 4);
    kw__kvstar_blocks(&o, 4095, &nf, &nm, &k); /* 31 whole blocks */
    assert_int_equal(nf, 31), assert_int_equal(nm, 28), assert_int_equal(k, 7);
    kw__kvstar_blocks(&o, 383, &nf, &nm, &k);
    assert_int_equal(nf, 2), assert_int_equal(nm, 0), assert_int_equal(k, 0);
}

/* ---- the hook ---- */

enum { BLK = 8, NP = 83, STRIDE = 2 }; /* 10 whole blocks, 8 middle ones, k = 2 */

typedef struct kfx {
    hook_fx fx;
    char root[64];
    float *k, *v; /* (L, NP + 16, Hk, hd) what was appended */
    int n;        /* tokens stored per layer */
} kfx;

static kw_kvstar_opts small_opts(const char *root, int threads, bool persist)
{
    kw_kvstar_opts o = kw__kvstar_defaults();
    o.block = BLK, o.init_window = 1, o.local_window = 1, o.dim_prune_ratio = 0.5;
    o.retrieval_stride = STRIDE, o.threads = threads, o.store = root, o.persist = persist;
    return o;
}

static int64_t row_off(const kfx *f, int l, int p)
{
    int kd = f->fx.cfg.n_head_kv * f->fx.cfg.head_dim;
    return ((int64_t)l * (NP + 16) + p) * kd;
}

/* The pool kfx_open makes: an arena pool, or one whose pages sit behind a device (the
 * CUDA engine's kind; a host mirror stands in for the device), where KVStar must do the
 * same. */
static bool on_device;
/* kfx_open makes retrieve.kvstar_select's hook instead (no store) */
static bool select_only;

static void kfx_open(kfx *f, const kw_kvstar_opts *o, uint64_t seed, bool pre_rope)
{
    kw_model_config cfg = rt_tiny_config(0, KW_ROPE_HALF);
    kw_kvmethod *m;
    kw_error err = {0};
    if (select_only)
        assert_int_equal(kw__kvstar_select_method(o, &m, &err), 0);
    else
        assert_int_equal(kw__kvstar_method(o, &m, &err), 0);
    memset(f, 0, sizeof *f);
    hfx_open_on(&f->fx, &cfg, 16, 2048, m, 0, NP, on_device && !pre_rope);
    if (pre_rope) { /* a second pool, made to store K before RoPE */
        kw_kvseq_free(f->fx.seq.kv);
        kw_kvpool_free(f->fx.pool);
        kw_kvpool_opts po = kw_kvpool_defaults();
        po.n_pages = 2048, po.pre_rope = true;
        assert_int_equal(kw_kvpool_new(&f->fx.cfg, &po, &f->fx.pool, &err), 0);
        f->fx.seq.kv = kw_kvseq_new(f->fx.pool);
    }
    int kd = cfg.n_head_kv * cfg.head_dim;
    size_t sz = sizeof(float) * (size_t)cfg.n_layer * (NP + 16) * kd;
    f->k = malloc(sz), f->v = malloc(sz);
    uint64_t rs = seed;
    for (size_t i = 0; i < sz / sizeof(float); i++)
        f->k[i] = rnd(&rs), f->v[i] = rnd(&rs);
    int32_t pos[NP];
    for (int t = 0; t < NP; t++)
        pos[t] = t;
    for (int l = 0; l < cfg.n_layer; l++)
        assert_int_equal(kw_kvseq_append(f->fx.seq.kv, l, f->k + row_off(f, l, 0),
                                         f->v + row_off(f, l, 0), pos, NP), 0);
    f->n = NP;
}

/* The hook's select for one token at position p (q: n_head x head_dim). */
static int kfx_select(kfx *f, int l, int p, const float *q)
{
    hfx_batch hb;
    hfx_batch_init(&f->fx, &hb, l, p < NP);
    hb.pos = p;
    assert_int_equal(kw_view_dense(f->fx.w, f->fx.seq.kv, l, false), 0);
    kw_view *out[1] = {f->fx.w};
    return f->fx.m->hook->select(f->fx.st, &hb.lc, &hb.b, q, out);
}

static int kfx_prefill_end(kfx *f, int l)
{
    hfx_batch hb;
    hfx_batch_init(&f->fx, &hb, l, true);
    hb.last = true;
    return f->fx.m->hook->on_prefill_end(f->fx.st, &hb.lc, &hb.b);
}

/* Appends the decode token at position p to every layer. */
static void kfx_append(kfx *f, int p)
{
    for (int l = 0; l < f->fx.cfg.n_layer; l++)
        assert_int_equal(kw_kvseq_append(f->fx.seq.kv, l, f->k + row_off(f, l, p),
                                         f->v + row_off(f, l, p), &p, 1), 0);
}

/* The middle blocks (indices from 0) a reference vote of queries q (nq) picks in layer
 * l, from the prompt's K as appended; want: (8) flags. */
static void ref_pick(const kfx *f, int l, const float *q, int nq, char *want)
{
    const kw_model_config *c = &f->fx.cfg;
    int Hk = c->n_head_kv, hd = c->head_dim, dk = hd / 2, nt = 8 * BLK, per = BLK / 2;
    int32_t chan[2 * 4];
    uint16_t sub[2 * 32 * 4];
    float rows[64 * 8];
    for (int h = 0; h < Hk; h++) {
        for (int t = 0; t < nt; t++)
            memcpy(rows + t * hd, f->k + row_off(f, l, BLK + t) + h * hd, sizeof(float) * hd);
        kw__kvstar_represent(rows, nt, hd, dk, 2, chan + h * dk, sub + h * 32 * dk);
    }
    double score[8];
    ref_vote(q, nq, c->n_head, Hk, hd, chan, dk, sub, 32, per, score);
    for (int m = 0; m < 8; m++) { /* top 2, ties to the earlier block */
        int before = 0;
        for (int x = 0; x < 8; x++)
            before += score[x] > score[m] || (score[x] == score[m] && x < m);
        want[m] = before < 2;
    }
}

/* The positions stored in (l, h) must be the windows, the tail, the generated tokens
 * below `gen_end` and the picked middle blocks; each row bit for bit as appended. */
static void check_pool(const kfx *f, int l, const char *picked, int gen_end)
{
    const kw_model_config *c = &f->fx.cfg;
    for (int h = 0; h < c->n_head_kv; h++) {
        int n = kw_kvseq_len(f->fx.seq.kv, l, h);
        char seen[NP + 16] = {0};
        for (int j = 0; j < n; j++) {
            float k[8], v[8];
            int32_t p;
            assert_int_equal(kw_kvseq_token_f32(f->fx.seq.kv, l, h, j, k, v, &p), 0);
            assert_true(p >= 0 && p < gen_end);
            assert_int_equal(seen[p], 0);
            seen[p] = 1;
            assert_memory_equal(k, f->k + row_off(f, l, p) + h * c->head_dim, sizeof k);
            assert_memory_equal(v, f->v + row_off(f, l, p) + h * c->head_dim, sizeof v);
        }
        for (int p = 0; p < gen_end; p++) {
            int b = p / BLK;
            bool want = p >= NP || b == 0 || b >= 9 || picked[b - 1];
            if (seen[p] != want)
                fail_msg("layer %d head %d position %d: stored %d, want %d", l, h, p, seen[p],
                         want);
        }
    }
}

/* .dat files under root/data (recursively one level). */
static int count_files(const char *root, const char *ext, int64_t want_size)
{
    char d[256], e[600];
    snprintf(d, sizeof d, "%s/data", root);
    DIR *top = opendir(d);
    if (!top)
        return 0;
    int n = 0;
    struct dirent *a;
    while ((a = readdir(top))) {
        if (a->d_name[0] == '.')
            continue;
        snprintf(e, sizeof e, "%s/%s", d, a->d_name);
        DIR *in = opendir(e);
        struct dirent *b;
        while (in && (b = readdir(in))) {
            const char *dot = strrchr(b->d_name, '.');
            if (!dot || strcmp(dot + 1, ext))
                continue;
            char fp[900];
            struct stat st;
            snprintf(fp, sizeof fp, "%s/%s", e, b->d_name);
            assert_int_equal(stat(fp, &st), 0);
            if (want_size >= 0)
                assert_int_equal(st.st_size, want_size);
            n++;
        }
        if (in)
            closedir(in);
    }
    closedir(top);
    return n;
}

static void mkroot(char *root)
{
    const char *td = getenv("TMPDIR");
    snprintf(root, 64, "%s/kw_kvstar_XXXXXX", td && *td ? td : "/tmp");
    assert_non_null(mkdtemp(root));
}

/* Prompt queries for the last STRIDE positions into qp (STRIDE, n_head, head_dim), the
 * prompt's end; checks the pool against a reference vote. */
static void prefill(kfx *f, float *qp, uint64_t *rs, char picked[][8])
{
    const kw_model_config *c = &f->fx.cfg;
    int qn = c->n_head * c->head_dim;
    for (int l = 0; l < c->n_layer; l++) {
        for (int t = 0; t < STRIDE; t++) {
            for (int i = 0; i < qn; i++)
                qp[(l * STRIDE + t) * qn + i] = 3 * rnd(rs);
            assert_int_equal(kfx_select(f, l, NP - STRIDE + t, qp + (l * STRIDE + t) * qn), 0);
        }
        assert_int_equal(kfx_prefill_end(f, l), 0);
        ref_pick(f, l, qp + l * STRIDE * qn, STRIDE, picked[l]);
        check_pool(f, l, picked[l], NP);
    }
}

/* Decode steps 1 .. steps with queries aligned with the keys of middle block `aim`
 * (nullable: random) in the first stride; checks the pool after step 2 STRIDE + 1. */
static int decode(kfx *f, int steps, int aim, uint64_t *rs, char picked[][8])
{
    const kw_model_config *c = &f->fx.cfg;
    int qn = c->n_head * c->head_dim, g = c->n_head / c->n_head_kv;
    float *qd = malloc(sizeof(float) * (size_t)c->n_layer * STRIDE * qn);
    int rc = 0;
    for (int d = 1; d <= steps && rc == 0; d++) {
        int p = NP + d - 1;
        kfx_append(f, p);
        for (int l = 0; l < c->n_layer && rc == 0; l++) {
            float q[6 * 8];
            for (int h = 0; h < c->n_head; h++)
                for (int i = 0; i < c->head_dim; i++)
                    q[h * c->head_dim + i] =
                        aim >= 0 ? 4 * f->k[row_off(f, l, (1 + aim) * BLK + 2 * d) +
                                            (h / g) * c->head_dim + i]
                                 : 3 * rnd(rs);
            if (d <= STRIDE)
                memcpy(qd + (l * STRIDE + d - 1) * qn, q, sizeof q);
            rc = kfx_select(f, l, p, q);
            if (rc == 0 && d == 2 * STRIDE + 1) {
                ref_pick(f, l, qd + l * STRIDE * qn, STRIDE, picked[l]);
                check_pool(f, l, picked[l], p + 1);
                /* the view is the dense view of what the pool holds */
                assert_int_equal(kw_view_tokens(f->fx.w), kw_kvseq_tokens_stored(f->fx.seq.kv)
                                 / c->n_layer);
            }
        }
    }
    free(qd);
    return rc;
}

static void kfx_close(kfx *f)
{
    hfx_close(&f->fx);
    free(f->k), free(f->v);
}

static void test_prefill_keeps_the_windows_and_the_voted_blocks(void **state)
{
    (void)state;
    for (int run = 0; run < 4; run++) {
        int threads = run % 2 * 2;
        on_device = run >= 2;
        kfx f;
        char root[64];
        mkroot(root);
        kw_kvstar_opts o = small_opts(root, threads, false);
        kfx_open(&f, &o, 0x100 + threads, false);
        const kw_model_config *c = &f.fx.cfg;
        int64_t slab = 2 * BLK * c->n_head_kv * c->head_dim * (int64_t)sizeof(float);
        float qp[3 * STRIDE * 6 * 8];
        char before[3][8], after[3][8];
        uint64_t rs = 0x9;
        prefill(&f, qp, &rs, before);
        /* every whole block in the store, each file a slab per layer */
        assert_int_equal(count_files(root, "dat", c->n_layer * slab), 10);
        assert_int_equal(count_files(root, "act", -1), 0);
        assert_int_equal(f.fx.seq.store_bytes, 10 * c->n_layer * slab);
        assert_true(f.fx.seq.meta_bytes > 0);
        /* a pool page count below the whole prompt's */
        assert_true(kw_kvseq_tokens_stored(f.fx.seq.kv) < (int64_t)NP * c->n_layer * c->n_head_kv);
        /* decode: queries aimed at a block the prompt's vote left out, so some change */
        int aim = -1;
        for (int m = 0; m < 8 && aim < 0; m++)
            if (!before[0][m])
                aim = m;
        int writes = f.fx.dev ? f.fx.dev->n_write : 0;
        assert_int_equal(decode(&f, 2 * STRIDE + 1, aim, &rs, after), 0);
        int64_t added = 0;
        for (int l = 0; l < c->n_layer; l++)
            for (int m = 0; m < 8; m++)
                added += after[l][m] && !before[l][m];
        assert_true(added > 0);
        if (f.fx.dev) { /* the decode tokens and each loaded block went to the device */
            assert_int_equal(f.fx.dev->n_write - writes, (2 * STRIDE + 1) * c->n_layer + added);
            assert_true(f.fx.dev->n_compact > 0 && f.fx.dev->n_read > 0);
        }
        assert_int_equal(f.fx.seq.load_bytes, added * slab);
        assert_int_equal(f.fx.seq.load_bytes_full, (int64_t)c->n_layer * 2 * slab);
        kfx_close(&f);
        /* closed: its files are gone, and the directories with them */
        assert_int_equal(count_files(root, "dat", -1), 0);
        char d[80];
        snprintf(d, sizeof d, "%s/data", root);
        rmdir(d);
        assert_int_equal(rmdir(root), 0);
    }
    on_device = false;
}

static void test_block_file_layout(void **state)
{
    (void)state;
    kfx f;
    char root[64];
    mkroot(root);
    kw_kvstar_opts o = small_opts(root, 1, true);
    kfx_open(&f, &o, 0x200, false);
    const kw_model_config *c = &f.fx.cfg;
    int kd = c->n_head_kv * c->head_dim;
    int64_t slab = 2 * BLK * kd * (int64_t)sizeof(float);
    float qp[3 * STRIDE * 6 * 8];
    char picked[3][8];
    uint64_t rs = 0x31;
    prefill(&f, qp, &rs, picked);
    /* each block's file, found by its contents: [L0 K][L0 V][L1 K]..., each (block, Hk,
     * hd) */
    kw_kvstore *s;
    kw_error err = {0};
    assert_int_equal(kw_kvstore_open(root, c->n_layer * slab, &s, &err), 0);
    char d[80];
    snprintf(d, sizeof d, "%s/data", root);
    DIR *top = opendir(d);
    struct dirent *a;
    int found[10] = {0};
    float *buf = malloc((size_t)(c->n_layer * slab));
    while (top && (a = readdir(top))) {
        if (a->d_name[0] == '.')
            continue;
        char sd[200];
        snprintf(sd, sizeof sd, "%s/%s", d, a->d_name);
        DIR *in = opendir(sd);
        struct dirent *b;
        while ((b = readdir(in))) {
            if (b->d_name[0] == '.')
                continue;
            assert_int_equal(strlen(a->d_name), 16);
            assert_int_equal(strlen(b->d_name), 20); /* 16 hex + ".dat" */
            char hex[33];
            snprintf(hex, sizeof hex, "%s%.16s", a->d_name, b->d_name);
            kw_blockid id = kw_blockid_from_hex(hex);
            assert_int_equal(kw_kvstore_read(s, id, 0, buf, c->n_layer * slab, &err), 0);
            int blk = 0; /* which whole block, by its layer-0 K rows */
            while (blk < 10 && memcmp(buf, f.k + row_off(&f, 0, blk * BLK),
                                      sizeof(float) * BLK * kd))
                blk++;
            assert_true(blk < 10);
            found[blk]++;
            for (int l = 0; l < c->n_layer; l++) {
                assert_memory_equal(buf + l * slab / 4, f.k + row_off(&f, l, blk * BLK),
                                    sizeof(float) * BLK * kd);
                assert_memory_equal(buf + l * slab / 4 + BLK * kd,
                                    f.v + row_off(&f, l, blk * BLK), sizeof(float) * BLK * kd);
            }
        }
        closedir(in);
    }
    closedir(top);
    for (int b = 0; b < 10; b++) /* every whole block once, blocks read 8 at a time */
        assert_int_equal(found[b], 1);
    free(buf);
    kfx_close(&f);
    /* persist: the files stay; a second sequence of the same prompt writes nothing and
     * reads them */
    assert_int_equal(count_files(root, "dat", c->n_layer * slab), 10);
    kfx_open(&f, &o, 0x200, false);
    rs = 0x31;
    prefill(&f, qp, &rs, picked);
    assert_int_equal(f.fx.seq.store_bytes, 0);
    char after[3][8];
    int aim = -1;
    for (int m = 0; m < 8 && aim < 0; m++)
        if (!picked[0][m])
            aim = m;
    assert_int_equal(decode(&f, 2 * STRIDE + 1, aim, &rs, after), 0);
    assert_true(f.fx.seq.load_bytes > 0);
    kfx_close(&f);
    assert_int_equal(count_files(root, "dat", -1), 10);
    kw_kvstore_free(s);
    char cmd[120];
    snprintf(cmd, sizeof cmd, "rm -r '%s'", root);
    assert_int_equal(system(cmd), 0);
}

/* Positions row h of the view reads, into seen (NP + 16), and its wants into wanted;
 * checks they are disjoint. */
static void view_positions(const kfx *f, int h, char *seen, char *wanted)
{
    const kw_view *w = f->fx.w;
    kw_kvmem mem = kw_kvpool_mem(f->fx.pool);
    memset(seen, 0, NP + 16), memset(wanted, 0, NP + 16);
    for (int x = w->row_ptr[h]; x < w->row_ptr[h + 1]; x++) {
        const kw_span *sp = &w->spans[x];
        assert_int_equal(sp->pool, KW_POOL_MAIN);
        for (int i = sp->first; i < sp->first + sp->n; i++) {
            int32_t p = mem.pos[KW_POOL_MAIN][(int64_t)sp->page * mem.page_tokens + i];
            assert_int_equal(seen[p], 0);
            seen[p] = 1;
        }
    }
    int a, b;
    kw_view_wanted(w, h, &a, &b);
    for (int x = a; x < b; x++) {
        assert_int_equal(seen[w->want_pos[x]], 0);
        wanted[w->want_pos[x]] = 1;
    }
}

/* retrieve.kvstar_select (no store): at the prompt's end nothing leaves the pool; the
 * prompt's vote (after the last chunk's attention, from the keys attention read) picks
 * what a reference vote picks, and each decode step reads the windows, the picked
 * blocks and the rest; the decode queries of steps 1 .. STRIDE vote after step STRIDE
 * and their pick holds from step STRIDE + 1. Tokens an EVICT hook took out of the pool
 * are wanted instead of read. */
static void test_selection_without_a_store(void **state)
{
    (void)state;
    select_only = true;
    kfx f;
    kw_kvstar_opts o = small_opts("", 0, false);
    kfx_open(&f, &o, 0x300, false);
    const kw_model_config *c = &f.fx.cfg;
    int qn = c->n_head * c->head_dim, L = c->n_layer, Hk = c->n_head_kv;
    float qp[3 * STRIDE * 6 * 8], qd[3 * STRIDE * 6 * 8];
    char picked[3][8], seen[NP + 16], wanted[NP + 16];
    uint64_t rs = 0x31;
    for (int l = 0; l < L; l++) {
        for (int t = 0; t < STRIDE; t++) {
            for (int i = 0; i < qn; i++)
                qp[(l * STRIDE + t) * qn + i] = 3 * rnd(&rs);
            assert_int_equal(kfx_select(&f, l, NP - STRIDE + t, qp + (l * STRIDE + t) * qn), 0);
        }
        hfx_batch hb;
        hfx_batch_init(&f.fx, &hb, l, true);
        hb.last = true;
        assert_int_equal(kw_view_dense(f.fx.w, f.fx.seq.kv, l, false), 0);
        const kw_view *vw[1] = {f.fx.w};
        kw_attn_stats a = {.n_head = c->n_head, .views = vw};
        assert_int_equal(f.fx.m->hook->after_attn(f.fx.st, &hb.lc, &hb.b, &a), 0);
        ref_pick(&f, l, qp + l * STRIDE * qn, STRIDE, picked[l]);
        assert_int_equal(kw_kvseq_len(f.fx.seq.kv, l, 0), NP); /* nothing left the pool */
    }
    assert_true(f.fx.seq.meta_bytes > 0);
    for (int d = 1; d <= STRIDE + 1; d++) {
        int p = NP + d - 1;
        kfx_append(&f, p);
        for (int l = 0; l < L; l++) {
            float q[6 * 8];
            for (int i = 0; i < qn; i++)
                q[i] = 3 * rnd(&rs);
            if (d <= STRIDE)
                memcpy(qd + (l * STRIDE + d - 1) * qn, q, sizeof q);
            assert_int_equal(kfx_select(&f, l, p, q), 0);
            assert_false(f.fx.w->per_qhead);
            assert_int_equal(f.fx.w->n_want, 0);
            for (int h = 0; h < Hk; h++) {
                view_positions(&f, h, seen, wanted);
                for (int x = 0; x <= p; x++) {
                    int b = x / BLK;
                    bool want = x >= 9 * BLK || b == 0 || picked[l][b - 1];
                    if (seen[x] != want)
                        fail_msg("step %d layer %d head %d position %d: read %d, want %d", d,
                                 l, h, x, seen[x], want);
                }
            }
            if (d == STRIDE) /* the decode queries' vote, for the steps after */
                ref_pick(&f, l, qd + l * STRIDE * qn, STRIDE, picked[l]);
        }
    }
    /* an EVICT hook took a picked block's first 3 tokens out of KV head 0 of layer 1 */
    int m = 0;
    while (!picked[1][m])
        m++;
    int n = kw_kvseq_len(f.fx.seq.kv, 1, 0), nk = 0;
    int32_t keep[NP + 16];
    for (int j = 0; j < n; j++)
        if (j < (1 + m) * BLK || j >= (1 + m) * BLK + 3)
            keep[nk++] = j;
    assert_int_equal(kw_kvseq_keep(f.fx.seq.kv, 1, 0, keep, nk), 0);
    float q[6 * 8];
    for (int i = 0; i < qn; i++)
        q[i] = 3 * rnd(&rs);
    assert_int_equal(kfx_select(&f, 1, NP + STRIDE, q), 0);
    view_positions(&f, 0, seen, wanted);
    for (int x = 0; x < NP + 16; x++)
        assert_int_equal(wanted[x], x >= (1 + m) * BLK && x < (1 + m) * BLK + 3);
    view_positions(&f, 1, seen, wanted);
    for (int x = 0; x < NP + 16; x++)
        assert_int_equal(wanted[x], 0);
    kfx_close(&f);
    select_only = false;
    /* bad options are refused, naming the operator and the option */
    kw_kvmethod *meth = NULL;
    kw_error err = {0};
    o.inner_token_merge = 3; /* does not divide the block of 8 */
    assert_int_equal(kw__kvstar_select_method(&o, &meth, &err), KW_EINVAL);
    assert_null(meth);
    assert_non_null(strstr(err.msg, "retrieve.kvstar_select: inner_token_merge"));
}

static void test_a_broken_store_fails_the_sequence(void **state)
{
    (void)state;
    kfx f;
    char root[64];
    mkroot(root);
    kw_kvstar_opts o = small_opts(root, 2, true);
    kfx_open(&f, &o, 0x300, false);
    float qp[3 * STRIDE * 6 * 8];
    char picked[3][8], after[3][8];
    uint64_t rs = 0x41;
    prefill(&f, qp, &rs, picked);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "find '%s/data' -name '*.dat' -exec truncate -s 100 {} +", root);
    assert_int_equal(system(cmd), 0);
    int aim = -1;
    for (int m = 0; m < 8 && aim < 0; m++)
        if (!picked[0][m])
            aim = m;
    assert_true(decode(&f, 2 * STRIDE + 1, aim, &rs, after) < 0);
    assert_non_null(strstr(f.fx.seq.error, ".dat ends at offset"));
    assert_non_null(strstr(f.fx.seq.error, root));
    kfx_close(&f);
    snprintf(cmd, sizeof cmd, "rm -r '%s'", root);
    assert_int_equal(system(cmd), 0);
}

static void test_refusals_and_short_prompts(void **state)
{
    (void)state;
    kw_kvstar_opts o = kw__kvstar_defaults();
    kw_kvmethod *m;
    kw_error err = {0};
    o.inner_token_merge = 3;
    assert_int_equal(kw__kvstar_method(&o, &m, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "inner_token_merge: want a divisor of block (block 128, inner_token_merge 3"));
    o = kw__kvstar_defaults();
    o.sparse_ratio = 0;
    assert_int_equal(kw__kvstar_method(&o, &m, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "sparse_ratio: want a value in (0, 1]"));
    /* a pool that stores K before RoPE */
    char root[64];
    mkroot(root);
    kfx f;
    o = small_opts(root, 0, false);
    kfx_open(&f, &o, 0x400, true);
    assert_true(kfx_prefill_end(&f, 0) < 0);
    assert_non_null(strstr(f.fx.seq.error, "before RoPE"));
    kfx_close(&f);
    /* a prompt without middle blocks is left whole, and nothing is written */
    o.block = 64;
    kfx_open(&f, &o, 0x500, false);
    for (int l = 0; l < f.fx.cfg.n_layer; l++)
        assert_int_equal(kfx_prefill_end(&f, l), 0);
    assert_int_equal(kw_kvseq_tokens_stored(f.fx.seq.kv),
                     (int64_t)NP * f.fx.cfg.n_layer * f.fx.cfg.n_head_kv);
    assert_int_equal(count_files(root, "dat", -1), 0);
    kfx_close(&f);
    char cmd[120];
    snprintf(cmd, sizeof cmd, "rm -r '%s'", root);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vote_against_reference),
        cmocka_unit_test(test_representation_against_brute_force),
        cmocka_unit_test(test_block_counts),
        cmocka_unit_test(test_prefill_keeps_the_windows_and_the_voted_blocks),
        cmocka_unit_test(test_block_file_layout),
        cmocka_unit_test(test_selection_without_a_store),
        cmocka_unit_test(test_a_broken_store_fails_the_sequence),
        cmocka_unit_test(test_refusals_and_short_prompts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
