/* difflib.SequenceMatcher(None, a, b).ratio() over code points, as CPython 3.11's
 * difflib computes it: b2j (positions of each element of b, ascending), the autojunk
 * heuristic (for len(b) >= 200, elements occurring more than len(b)//100 + 1 times are
 * "popular" and left out of b2j, though matches may still extend over them), the
 * longest-match search with its dict of run lengths, and the recursive split around
 * each longest match. No isjunk, so there is no junk set. The ratio only needs the total
 * size of the matching blocks, which does not depend on the order the pieces are taken in
 * or on the merging of adjacent blocks. */
#include <stdlib.h>
#include <string.h>

#include "longbench_metrics.h"

typedef struct b2j_ent {
    uint32_t elt;
    uint32_t start, count; /* into pos[] */
} b2j_ent;

typedef struct smatch {
    const uint32_t *a, *b;
    size_t la, lb;
    uint32_t *pos;       /* (lb) positions of b grouped by element, ascending in a group */
    b2j_ent *ent;        /* distinct elements of b (not popular), sorted by element */
    size_t n_ent;
    uint32_t *len0, *len1; /* (lb) run lengths of the previous / current row */
    uint64_t *st0, *st1;   /* (lb) row stamps saying which entries are set */
    uint64_t row;
} smatch;

static const b2j_ent *b2j_get(const smatch *m, uint32_t elt)
{
    size_t lo = 0, hi = m->n_ent;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (m->ent[mid].elt < elt)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < m->n_ent && m->ent[lo].elt == elt ? &m->ent[lo] : NULL;
}

static int cmp_pos(const void *x, const void *y, void *ctx)
{
    const uint32_t *b = ctx;
    uint32_t i = *(const uint32_t *)x, j = *(const uint32_t *)y;
    if (b[i] != b[j])
        return b[i] < b[j] ? -1 : 1;
    return i < j ? -1 : i > j;
}

static int b2j_build(smatch *m)
{
    size_t lb = m->lb;
    m->pos = malloc((lb ? lb : 1) * sizeof *m->pos);
    m->ent = malloc((lb ? lb : 1) * sizeof *m->ent);
    if (!m->pos || !m->ent)
        return -1;
    for (size_t i = 0; i < lb; i++)
        m->pos[i] = (uint32_t)i;
    qsort_r(m->pos, lb, sizeof *m->pos, cmp_pos, (void *)m->b);
    size_t ntest = lb / 100 + 1;
    m->n_ent = 0;
    for (size_t i = 0; i < lb;) {
        size_t j = i;
        while (j < lb && m->b[m->pos[j]] == m->b[m->pos[i]])
            j++;
        if (!(lb >= 200 && j - i > ntest))
            m->ent[m->n_ent++] = (b2j_ent){m->b[m->pos[i]], (uint32_t)i, (uint32_t)(j - i)};
        i = j;
    }
    return 0;
}

/* find_longest_match(alo, ahi, blo, bhi): sets *bi, *bj, returns the size. */
static size_t longest(smatch *m, size_t alo, size_t ahi, size_t blo, size_t bhi, size_t *bi,
                      size_t *bj)
{
    const uint32_t *a = m->a, *b = m->b;
    size_t besti = alo, bestj = blo, bestsize = 0;
    m->row++; /* the "previous row" before alo is empty */
    for (size_t i = alo; i < ahi; i++) {
        uint64_t prev = m->row, cur = ++m->row;
        const b2j_ent *e = b2j_get(m, a[i]);
        if (e) {
            for (uint32_t q = 0; q < e->count; q++) {
                size_t j = m->pos[e->start + q];
                if (j < blo)
                    continue;
                if (j >= bhi)
                    break;
                size_t k = 1;
                if (j > 0 && m->st0[j - 1] == prev)
                    k = m->len0[j - 1] + 1;
                m->len1[j] = (uint32_t)k;
                m->st1[j] = cur;
                if (k > bestsize)
                    besti = i - k + 1, bestj = j - k + 1, bestsize = k;
            }
        }
        uint32_t *tl = m->len0;
        uint64_t *ts = m->st0;
        m->len0 = m->len1, m->st0 = m->st1;
        m->len1 = tl, m->st1 = ts;
    }
    while (besti > alo && bestj > blo && a[besti - 1] == b[bestj - 1])
        besti--, bestj--, bestsize++;
    while (besti + bestsize < ahi && bestj + bestsize < bhi &&
           a[besti + bestsize] == b[bestj + bestsize])
        bestsize++;
    *bi = besti, *bj = bestj;
    return bestsize;
}

double kw_seqmatch_ratio(const uint32_t *a, size_t la, const uint32_t *b, size_t lb)
{
    if (la + lb == 0)
        return 1.0;
    smatch m = {.a = a, .b = b, .la = la, .lb = lb};
    size_t cap = lb + 1;
    m.len0 = calloc(cap, sizeof *m.len0);
    m.len1 = calloc(cap, sizeof *m.len1);
    m.st0 = calloc(cap, sizeof *m.st0);
    m.st1 = calloc(cap, sizeof *m.st1);
    size_t (*stack)[4] = malloc((la + lb + 2) * sizeof *stack);
    double r = -1.0;
    if (!m.len0 || !m.len1 || !m.st0 || !m.st1 || !stack || b2j_build(&m) < 0)
        goto done;
    size_t top = 0, matches = 0;
    stack[top][0] = 0, stack[top][1] = la, stack[top][2] = 0, stack[top][3] = lb, top++;
    while (top) {
        top--;
        size_t alo = stack[top][0], ahi = stack[top][1], blo = stack[top][2],
               bhi = stack[top][3];
        size_t i, j, k = longest(&m, alo, ahi, blo, bhi, &i, &j);
        if (!k)
            continue;
        matches += k;
        if (alo < i && blo < j) {
            size_t *s = stack[top++];
            s[0] = alo, s[1] = i, s[2] = blo, s[3] = j;
        }
        if (i + k < ahi && j + k < bhi) {
            size_t *s = stack[top++];
            s[0] = i + k, s[1] = ahi, s[2] = j + k, s[3] = bhi;
        }
    }
    r = 2.0 * (double)matches / (double)(la + lb);
done:
    free(m.len0);
    free(m.len1);
    free(m.st0);
    free(m.st1);
    free(m.pos);
    free(m.ent);
    free(stack);
    return r;
}
