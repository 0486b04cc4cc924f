/* ROUGE-L of the pltrdy `rouge` package (1.0.1), as LongBench's rouge_score calls it:
 * Rouge().get_scores([hyp], [ref], avg=True)["rouge-l"]["f"].
 *
 * What the package does: each side is split on "." into sentences, empty pieces dropped,
 * each piece's white space collapsed (" ".join(piece.split())) and split on " " into
 * words (a piece of only white space becomes the one word ""). With no sentence on a side
 * rouge-1 raises before rouge-l runs. Summary-level ROUGE-L with exclusive=True works on
 * sets: m and n are the numbers of distinct words of the reference and the hypothesis;
 * for every (reference sentence, hypothesis sentence) pair the LCS is reconstructed
 * (recursively, ties going left: table[i-1][j] > table[i][j-1] moves up) and its words
 * join one running set; llcs is the size of that set. r = llcs/m, p = llcs/n,
 * f = 2*((p*r)/(p+r+1e-8)). The reconstruction recurses once per step, so a path longer
 * than Python's recursion limit raises RecursionError, which the scorer turns into 0. */
#include <stdlib.h>
#include <string.h>

#include "longbench_metrics.h"

typedef struct tok {
    const char *s;
    size_t n;
    uint32_t id;
    uint32_t idx; /* position in the flat token list */
} tok;

typedef struct side { /* sentences as ranges of the flat token list */
    size_t *sent_start, *sent_len;
    size_t n_sent;
} side;

typedef struct toks {
    tok *v;
    size_t n, cap;
} toks;

static int toks_push(toks *t, const char *s, size_t n)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 256;
        tok *v = realloc(t->v, cap * sizeof *v);
        if (!v)
            return -1;
        t->v = v, t->cap = cap;
    }
    t->v[t->n] = (tok){s, n, 0, (uint32_t)t->n};
    t->n++;
    return 0;
}

/* Splits text into sentences of words; appends the words to t. */
static int split_side(const char *s, size_t len, toks *t, side *sd, kw_error *err)
{
    size_t cap = 1;
    for (size_t i = 0; i < len; i++)
        cap += s[i] == '.';
    sd->sent_start = malloc(cap * sizeof(size_t));
    sd->sent_len = malloc(cap * sizeof(size_t));
    if (!sd->sent_start || !sd->sent_len)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    size_t a = 0;
    while (a <= len) {
        const char *dot = memchr(s + a, '.', len - a);
        size_t b = dot ? (size_t)(dot - s) : len;
        if (b > a) { /* a non-empty piece: its white-space separated words */
            size_t before = t->n;
            size_t i = a;
            while (i < b) {
                uint32_t cp;
                int l = kw_utf8_next(s + i, b - i, &cp);
                if (!l)
                    return kw_error_set(err, KW_EINVAL, "text is not valid UTF-8 at byte %zu",
                                        i);
                if (kw_py_isspace(cp)) {
                    i += (size_t)l;
                    continue;
                }
                size_t w = i;
                while (i < b && (l = kw_utf8_next(s + i, b - i, &cp)) && !kw_py_isspace(cp))
                    i += (size_t)l;
                if (i < b && !l)
                    return kw_error_set(err, KW_EINVAL, "text is not valid UTF-8 at byte %zu",
                                        i);
                if (toks_push(t, s + w, i - w) < 0)
                    return kw_error_set(err, KW_ENOMEM, "out of memory");
            }
            if (t->n == before && toks_push(t, "", 0) < 0)
                return kw_error_set(err, KW_ENOMEM, "out of memory");
            sd->sent_start[sd->n_sent] = before;
            sd->sent_len[sd->n_sent] = t->n - before;
            sd->n_sent++;
        }
        if (!dot)
            break;
        a = b + 1;
    }
    return 0;
}

static int cmp_tok(const void *x, const void *y)
{
    const tok *a = x, *b = y;
    size_t n = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->s, b->s, n);
    if (c)
        return c;
    return a->n < b->n ? -1 : a->n > b->n;
}

static int cmp_idx(const void *x, const void *y)
{
    const tok *a = x, *b = y;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Assigns equal words equal ids; returns the number of distinct words. */
static size_t intern(toks *t)
{
    qsort(t->v, t->n, sizeof *t->v, cmp_tok);
    size_t id = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (i > 0 && cmp_tok(&t->v[i - 1], &t->v[i]) != 0)
            id++;
        t->v[i].id = (uint32_t)id;
    }
    qsort(t->v, t->n, sizeof *t->v, cmp_idx);
    return t->n ? id + 1 : 0;
}

static size_t count_distinct(const toks *t, size_t from, size_t to, unsigned char *seen)
{
    size_t n = 0;
    for (size_t i = from; i < to; i++)
        if (!seen[t->v[i].id]++)
            n++;
    return n;
}

/* _recon_lcs(x = ref words, y = hyp words) joined into the union set; returns -1 when
 * the recursion would pass depth_budget calls, -2 on OOM. */
static int recon_union(const tok *x, size_t nx, const tok *y, size_t ny, int depth_budget,
                       unsigned char *in_union, size_t *n_union)
{
    size_t minlen = nx < ny ? nx : ny;
    if (minlen + 1 > (size_t)depth_budget)
        return -1;
    size_t w = ny + 1;
    uint16_t *tb = calloc((nx + 1) * w, sizeof *tb);
    if (!tb)
        return -2;
    for (size_t i = 1; i <= nx; i++)
        for (size_t j = 1; j <= ny; j++) {
            uint16_t up = tb[(i - 1) * w + j], left = tb[i * w + j - 1];
            tb[i * w + j] = x[i - 1].id == y[j - 1].id ? (uint16_t)(tb[(i - 1) * w + j - 1] + 1)
                                                       : (up > left ? up : left);
        }
    size_t i = nx, j = ny, calls = 1;
    while (i > 0 && j > 0) {
        calls++;
        if (x[i - 1].id == y[j - 1].id) {
            if (!in_union[x[i - 1].id]++)
                (*n_union)++;
            i--, j--;
        } else if (tb[(i - 1) * w + j] > tb[i * w + j - 1]) {
            i--;
        } else {
            j--;
        }
    }
    free(tb);
    return calls > (size_t)depth_budget ? -1 : 0;
}

int kw_rouge_l(const char *hyp, const char *ref, int depth_budget, double *f, kw_error *err)
{
    toks t = {0};
    side h = {0}, r = {0};
    unsigned char *seen = NULL, *in_union = NULL;
    *f = 0.0;
    int rc = split_side(hyp, strlen(hyp), &t, &h, err);
    size_t ref_first = t.n;
    if (rc >= 0)
        rc = split_side(ref, strlen(ref), &t, &r, err);
    if (rc < 0)
        goto done;
    if (h.n_sent == 0 || r.n_sent == 0) {
        rc = 1; /* "Hypothesis is empty." / "Reference is empty." */
        goto done;
    }
    size_t nd = intern(&t);
    seen = calloc(nd + 1, 1);
    in_union = calloc(nd + 1, 1);
    if (!seen || !in_union) {
        rc = kw_error_set(err, KW_ENOMEM, "out of memory");
        goto done;
    }
    size_t n = count_distinct(&t, 0, ref_first, seen);
    memset(seen, 0, nd + 1);
    size_t m = count_distinct(&t, ref_first, t.n, seen);
    size_t llcs = 0;
    for (size_t a = 0; a < r.n_sent && rc == 0; a++) {
        const tok *x = &t.v[r.sent_start[a]];
        for (size_t b = 0; b < h.n_sent; b++) {
            int q = recon_union(x, r.sent_len[a], &t.v[h.sent_start[b]], h.sent_len[b],
                                depth_budget, in_union, &llcs);
            if (q == -2) {
                rc = kw_error_set(err, KW_ENOMEM, "out of memory for an LCS table");
                break;
            }
            if (q < 0) {
                rc = 1; /* RecursionError */
                break;
            }
        }
    }
    if (rc == 0) {
        double rl = (double)llcs / (double)m, pl = (double)llcs / (double)n;
        *f = 2.0 * ((pl * rl) / (pl + rl + 1e-8));
    }
done:
    free(t.v);
    free(h.sent_start);
    free(h.sent_len);
    free(r.sent_start);
    free(r.sent_len);
    free(seen);
    free(in_union);
    return rc;
}
