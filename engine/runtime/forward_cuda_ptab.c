/* Page lists kept on the device between dense steps. Each (sequence, layer, KV head)
 * list has a region of the device table c->d_ptab with room to grow; a step sends only
 * what changed since the list was last sent: the pages appended (one per table every
 * page_tokens decode steps), or the whole list when it is new, was edited other than by
 * appends (kw_kvseq_pages_edits: copy on write, compaction) or outgrew its region. Until
 * then each step sent every list whole (2 MB at batch 1 and 32k tokens, 17 MB at batch
 * 8), built on the host while the device waited. Regions come from a bump allocator;
 * when it runs out, every list is sent again into a table at least twice the step's
 * need. Only built with CUDA. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "forward_cuda.h"
#include "kw_config.h"

#if KW_HAVE_CUDA
#include "forward_cuda_internal.h"

/* Room a region of a list of np pages gets: 1/8 more, at least 16, a multiple of 16. */
static int32_t region_for(int np)
{
    int64_t r = (int64_t)np + (np / 8 > 16 ? np / 8 : 16);
    r = (r + 15) & ~(int64_t)15;
    return r > INT32_MAX ? INT32_MAX : (int32_t)r;
}

/* The mirror of sequence uid: the one it had, else the one least recently used by a
 * step before this one (cleared). */
static kw_pmir *mirror_of(kw_cfwd *c, uint64_t uid)
{
    kw_pmir *m = NULL;
    for (int j = 0; j < KW_CF_MIRRORS; j++) {
        kw_pmir *x = &c->mir[j];
        if (x->uid == uid)
            return x;
        if (x->used_at != c->step_no && (!m || x->used_at < m->used_at))
            m = x;
    }
    const int nt = c->cfg.n_layer * c->cfg.n_head_kv;
    if (!m) /* more sequences in a step than KW_CF_MIRRORS / 2: not reached */
        return NULL;
    if (!m->off) {
        m->off = malloc(sizeof(int32_t) * 3 * (size_t)nt);
        m->ed = malloc(sizeof(uint32_t) * (size_t)nt);
        if (!m->off || !m->ed) {
            free(m->off), free(m->ed);
            m->off = NULL, m->ed = NULL;
            return NULL;
        }
        m->cap = m->off + nt, m->n = m->cap + nt;
    }
    m->uid = uid;
    for (int t = 0; t < nt; t++)
        m->off[t] = -1, m->cap[t] = 0, m->n[t] = 0;
    return m;
}

/* Forgets every list on the device (the next step sends them whole). */
static void forget_all(kw_cfwd *c)
{
    for (int j = 0; j < KW_CF_MIRRORS; j++)
        c->mir[j].uid = 0, c->mir[j].used_at = -1;
    c->ptab_used = 0;
}

static int grow_runs(kw_cfwd *c, int need, kw_error *err)
{
    if (need <= c->prun_cap)
        return 0;
    int cap = c->prun_cap ? 2 * c->prun_cap : 1024;
    while (cap < need)
        cap *= 2;
    kw_prun *r = realloc(c->prun, sizeof *r * (size_t)cap);
    int32_t *st = r ? realloc(c->pstart, sizeof *st * (size_t)cap) : NULL;
    if (r)
        c->prun = r;
    if (!st)
        return kw_error_set(err, KW_ENOMEM, "cuda: out of memory (page table patches)");
    c->pstart = st, c->prun_cap = cap;
    return 0;
}

int kw__cf_ptab_plan(kw_cfwd *c, kw_seq *const *seqs, int ns, int64_t *patch_ints,
                     kw_error *err)
{
    const int L = c->cfg.n_layer, nkv = c->cfg.n_head_kv, nt = L * nkv;
    c->step_no++;
    int rc = grow_runs(c, ns * nt, err);
    if (rc < 0)
        return rc;
    int32_t *start = c->pstart;
    for (int attempt = 0;; attempt++) {
        int64_t ints = 0;
        bool full = false;
        c->n_prun = 0;
        for (int i = 0; i < ns && !full; i++) {
            const kw_kvseq *kv = seqs[i]->kv;
            kw_pmir *m = mirror_of(c, kw_kvseq_uid(kv));
            if (!m)
                return kw_error_set(err, KW_ENOMEM, "cuda: out of memory (page table mirror)");
            m->used_at = c->step_no;
            for (int t = 0; t < nt; t++) {
                const int l = t / nkv, h = t % nkv;
                int np;
                kw_kvseq_pages(kv, l, h, &np);
                const uint32_t ed = kw_kvseq_pages_edits(kv, l, h);
                int from = m->n[t];
                if (m->off[t] < 0 || m->ed[t] != ed || np > m->cap[t]) {
                    const int32_t r = region_for(np);
                    if (c->ptab_used + r > c->ptab_cap) {
                        full = true;
                        break;
                    }
                    m->off[t] = (int32_t)c->ptab_used, m->cap[t] = r, m->ed[t] = ed;
                    c->ptab_used += r;
                    from = 0;
                }
                if (np > from) {
                    c->prun[c->n_prun++] = (kw_prun){i, t, from, np - from, m->off[t] + from};
                    ints += np - from;
                }
                m->n[t] = np;
                start[(size_t)i * nt + t] = m->off[t];
            }
        }
        if (!full) {
            *patch_ints = ints;
            return 0;
        }
        /* out of room: every list is sent whole again, into a table that holds this
         * step's lists at least twice (a new one once the device is done with the old) */
        if (attempt > 0)
            return kw_error_set(err, KW_ELIMIT, "cuda: page table: no room after a reset");
        int64_t total = 0;
        for (int i = 0; i < ns; i++)
            for (int t = 0; t < nt; t++) {
                int np;
                kw_kvseq_pages(seqs[i]->kv, t / nkv, t % nkv, &np);
                total += region_for(np);
            }
        forget_all(c);
        c->ptab_resets += c->ptab_cap > 0;
        if (2 * total > c->ptab_cap) {
            int64_t cap = c->ptab_min > 0 ? c->ptab_min : (int64_t)1 << 20;
            while (cap < 2 * total)
                cap *= 2;
            if (cap > INT32_MAX)
                return kw_error_set(err, KW_ELIMIT, "cuda: page lists of %lld pages exceed "
                                    "the device table's int32 offsets", (long long)total);
            CU(cudaStreamSynchronize(c->st), "page table");
            cudaFree(c->d_ptab);
            c->d_ptab = NULL, c->ptab_cap = 0;
            CU(cudaMalloc((void **)&c->d_ptab, sizeof(int32_t) * (size_t)cap), "page table");
            c->ptab_cap = cap;
        }
    }
}

int kw__cf_ptab_write(const kw_cfwd *c, kw_seq *const *seqs, int32_t *runs, int32_t *data)
{
    const int nkv = c->cfg.n_head_kv;
    int64_t k = 0;
    for (int r = 0; r < c->n_prun; r++) {
        const kw_prun *p = &c->prun[r];
        int np;
        const int32_t *pg = kw_kvseq_pages(seqs[p->seq]->kv, p->tab / nkv, p->tab % nkv, &np);
        memcpy(data + k, pg + p->from, sizeof(int32_t) * (size_t)p->count);
        runs[3 * r] = p->dst, runs[3 * r + 1] = (int32_t)k, runs[3 * r + 2] = p->count;
        k += p->count;
    }
    return c->n_prun;
}

int64_t kw__cfwd_ptab(kw_cfwd *c, int64_t min_ints)
{
    if (min_ints > 0)
        c->ptab_min = min_ints;
    return c->ptab_resets;
}

void kw__cf_ptab_free(kw_cfwd *c)
{
    cudaFree(c->d_ptab);
    for (int j = 0; j < KW_CF_MIRRORS; j++)
        free(c->mir[j].off), free(c->mir[j].ed);
    free(c->prun), free(c->pstart);
}

#endif
