/* The encoder: special tokens first, then normalization, pre-tokenizer splits and BPE
 * per word (see tokenizer.c for the whole picture). */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer_impl.h"

/* ---- encoding ---- */

typedef struct sym { int32_t id; int start, len, prev, next; } sym;
typedef struct cand { double pri; int left, right; int32_t lid, rid, mid; } cand;

typedef struct enc {
    const kw_tokenizer *tk;
    int32_t *out;
    int n_out, cap_out;
    sym *syms;
    int cap_syms;
    cand *heap;
    int n_heap, cap_heap;
    char *buf; /* scratch for concatenated pieces and SentencePiece text */
    size_t cap_buf;
    pcre2_match_data *md;
    int rc;
    /* words already merged in this call: a text repeats its words, and merging is the
     * costly part; per call, so a shared tokenizer needs no lock */
    struct wc_ent { uint64_t h; int key, klen, ids, nids; } *wc;
    size_t wc_mask, wc_n;
    char *wc_keys;
    int n_keys, cap_keys;
    int32_t *wc_ids;
    int n_ids, cap_ids;
} enc;

enum { WC_MAX_WORD = 48, WC_MAX_ENTRIES = 1 << 16 };

static struct wc_ent *wc_find(enc *e, const char *w, int n, uint64_t h)
{
    if (!e->wc)
        return NULL;
    for (size_t i = h & e->wc_mask;; i = (i + 1) & e->wc_mask) {
        struct wc_ent *x = &e->wc[i];
        if (!x->klen)
            return x;
        if (x->h == h && x->klen == n && !memcmp(e->wc_keys + x->key, w, (size_t)n))
            return x;
    }
}

static int grow(void **p, int *cap, int need, size_t elt)
{
    if (need <= *cap)
        return 0;
    int c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, (size_t)c * elt);
    if (!q)
        return KW_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static char *scratch(enc *e, size_t n)
{
    if (n > e->cap_buf) {
        size_t c = n * 2 + 64;
        char *b = realloc(e->buf, c);
        if (!b) {
            e->rc = KW_ENOMEM;
            return NULL;
        }
        e->buf = b;
        e->cap_buf = c;
    }
    return e->buf;
}

static void emit(enc *e, int32_t id)
{
    if (grow((void **)&e->out, &e->cap_out, e->n_out + 1, sizeof *e->out) < 0) {
        e->rc = KW_ENOMEM;
        return;
    }
    e->out[e->n_out++] = id;
}

static int cand_less(const cand *a, const cand *b)
{
    return a->pri < b->pri || (a->pri == b->pri && a->left < b->left);
}

static void heap_push(enc *e, cand c)
{
    if (grow((void **)&e->heap, &e->cap_heap, e->n_heap + 1, sizeof *e->heap) < 0) {
        e->rc = KW_ENOMEM;
        return;
    }
    int i = e->n_heap++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&c, &e->heap[p]))
            break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = c;
}

static cand heap_pop(enc *e)
{
    cand top = e->heap[0], last = e->heap[--e->n_heap];
    int i = 0, n = e->n_heap;
    for (;;) {
        int l = 2 * i + 1, m = i;
        const cand *best = &last;
        if (l < n && cand_less(&e->heap[l], best)) { m = l; best = &e->heap[l]; }
        if (l + 1 < n && cand_less(&e->heap[l + 1], best)) m = l + 1;
        if (m == i)
            break;
        e->heap[i] = e->heap[m];
        i = m;
    }
    if (n > 0)
        e->heap[i] = last;
    return top;
}

static void try_pair(enc *e, int left, int right)
{
    const kw_tokenizer *tk = e->tk;
    int32_t a = e->syms[left].id, b = e->syms[right].id, m;
    double pri;
    if (a < 0 || b < 0)
        return;
    if (!tk->o.use_scores) {
        size_t s = pair_slot(&tk->pairs, pair_key(a, b));
        if (!tk->pairs.e[s].key)
            return;
        m = tk->pairs.e[s].id;
        pri = tk->pairs.e[s].rank;
    } else {
        size_t la = (size_t)tk->text_len[a], lb = (size_t)tk->text_len[b];
        char *c = scratch(e, la + lb);
        if (!c)
            return;
        memcpy(c, tk->text[a], la);
        memcpy(c + la, tk->text[b], lb);
        m = strmap_get(&tk->by_text, c, la + lb);
        if (m < 0)
            return;
        pri = -(double)tk->score[m];
    }
    heap_push(e, (cand){pri, left, right, a, b, m});
}

static void emit_symbol(enc *e, const char *w, const sym *s)
{
    const kw_tokenizer *tk = e->tk;
    if (s->id >= 0) {
        emit(e, s->id);
    } else if (tk->o.byte_fallback) {
        for (int i = 0; i < s->len; i++) {
            int b = tk->byte_tok[(unsigned char)w[s->start + i]];
            if (b >= 0)
                emit(e, b);
            else if (tk->unk >= 0)
                emit(e, tk->unk);
        }
    } else if (tk->unk >= 0 && !tk->o.drop_unknown) {
        emit(e, tk->unk);
    }
}

static void bpe_merge(enc *e, const char *w, int n);

static int wc_grow(enc *e)
{
    if (e->wc && (e->wc_n + 1) * 2 <= e->wc_mask + 1)
        return 0;
    size_t cap = e->wc ? (e->wc_mask + 1) * 2 : 1024;
    struct wc_ent *t = calloc(cap, sizeof *t), *old = e->wc;
    if (!t)
        return KW_ENOMEM;
    size_t oldcap = e->wc ? e->wc_mask + 1 : 0;
    e->wc = t;
    e->wc_mask = cap - 1;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].klen)
            *wc_find(e, e->wc_keys + old[i].key, old[i].klen, old[i].h) = old[i];
    free(old);
    return 0;
}

/* BPE of one word, through the per-call cache for words of 2 to WC_MAX_WORD bytes. */
static void bpe_word(enc *e, const char *w, int n)
{
    if (n < 2 || n > WC_MAX_WORD) {
        bpe_merge(e, w, n);
        return;
    }
    uint64_t h = hash_bytes(w, (size_t)n);
    struct wc_ent *x = wc_find(e, w, n, h);
    if (x && x->klen) {
        if (!x->nids)
            return;
        if (grow((void **)&e->out, &e->cap_out, e->n_out + x->nids, sizeof *e->out) < 0) {
            e->rc = KW_ENOMEM;
            return;
        }
        memcpy(e->out + e->n_out, e->wc_ids + x->ids, (size_t)x->nids * sizeof *e->out);
        e->n_out += x->nids;
        return;
    }
    int first = e->n_out;
    bpe_merge(e, w, n);
    int k = e->n_out - first;
    if (e->rc < 0 || e->wc_n >= WC_MAX_ENTRIES || wc_grow(e) < 0 ||
        grow((void **)&e->wc_keys, &e->cap_keys, e->n_keys + n, 1) < 0 ||
        grow((void **)&e->wc_ids, &e->cap_ids, e->n_ids + k, sizeof *e->wc_ids) < 0)
        return; /* no room: the word is just not cached */
    x = wc_find(e, w, n, h);
    *x = (struct wc_ent){h, e->n_keys, n, e->n_ids, k};
    memcpy(e->wc_keys + e->n_keys, w, (size_t)n);
    if (k > 0) /* a word of dropped bytes has no ids */
        memcpy(e->wc_ids + e->n_ids, e->out + first, (size_t)k * sizeof *e->wc_ids);
    e->n_keys += n;
    e->n_ids += k;
    e->wc_n++;
}

static void bpe_merge(enc *e, const char *w, int n)
{
    const kw_tokenizer *tk = e->tk;
    if (n <= 0)
        return;
    if (tk->o.ignore_merges) {
        int id = tk->o.byte_level ? strmap_get(&tk->by_dec, w, (size_t)n)
                                  : strmap_get(&tk->by_text, w, (size_t)n);
        if (id >= 0) {
            emit(e, id);
            return;
        }
    }
    if (grow((void **)&e->syms, &e->cap_syms, n, sizeof *e->syms) < 0) {
        e->rc = KW_ENOMEM;
        return;
    }
    int ns = 0;
    for (int i = 0; i < n;) {
        int l = tk->o.byte_level ? 1 : utf8_step(w + i, (size_t)(n - i));
        int32_t id = tk->o.byte_level ? tk->byte_tok[(unsigned char)w[i]]
                                      : strmap_get(&tk->by_text, w + i, (size_t)l);
        e->syms[ns] = (sym){id, i, l, ns - 1, -1};
        if (ns > 0)
            e->syms[ns - 1].next = ns;
        ns++;
        i += l;
    }
    e->n_heap = 0;
    for (int i = 0; i + 1 < ns; i++)
        try_pair(e, i, i + 1);
    while (e->n_heap > 0 && e->rc == 0) {
        cand c = heap_pop(e);
        sym *l = &e->syms[c.left], *r = &e->syms[c.right];
        if (!l->len || !r->len || l->next != c.right || l->id != c.lid || r->id != c.rid)
            continue; /* stale: one side was merged since */
        l->id = c.mid;
        l->len += r->len;
        l->next = r->next;
        r->len = 0;
        if (l->next >= 0)
            e->syms[l->next].prev = c.left;
        if (l->prev >= 0)
            try_pair(e, l->prev, c.left);
        if (l->next >= 0)
            try_pair(e, c.left, l->next);
    }
    for (int i = 0; i >= 0; i = e->syms[i].next)
        emit_symbol(e, w, &e->syms[i]);
}

/* Applies pre-tokenizer split `level` to s[0, n) and recurses into every piece. */
static void split_apply(enc *e, int level, const char *s, size_t n)
{
    const kw_tokenizer *tk = e->tk;
    if (n == 0 || e->rc < 0)
        return;
    if (level == tk->o.n_splits) {
        bpe_word(e, s, (int)n);
        return;
    }
    size_t off = 0, last = 0;
    while (off < n) {
        int rc = pcre2_match(tk->re[level], (PCRE2_SPTR)s, n, off, 0, e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) { /* a resource limit: refuse rather than split differently */
            e->rc = KW_ELIMIT;
            return;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { /* an empty match splits nothing */
            off = ms + (size_t)utf8_step(s + ms, n - ms);
            continue;
        }
        if (ms > last)
            split_apply(e, level + 1, s + last, ms - last);
        split_apply(e, level + 1, s + ms, me - ms);
        last = off = me;
    }
    if (last < n)
        split_apply(e, level + 1, s + last, n - last);
}

static void encode_segment(enc *e, const char *s, size_t n, int at_start)
{
    const kw_tokenizer *tk = e->tk;
    if (n == 0)
        return;
    char *nfc = NULL;
    if (tk->o.nfc) {
        char *tmp = strndup(s, n);
        if (tmp)
            nfc = (char *)utf8proc_NFC((const utf8proc_uint8_t *)tmp);
        free(tmp);
        if (nfc) { /* NULL for invalid UTF-8: kept as is */
            s = nfc;
            n = strlen(nfc);
        }
    }
    if (!tk->o.byte_level) {
        char *b = scratch(e, 3 * n + 3);
        if (!b) {
            free(nfc);
            return;
        }
        size_t k = 0;
        if (tk->o.add_space_prefix && (tk->o.prefix_each || at_start)) {
            memcpy(b, "\xE2\x96\x81", 3);
            k = 3;
        }
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ') { memcpy(b + k, "\xE2\x96\x81", 3); k += 3; }
            else b[k++] = s[i];
        }
        /* bpe_word reuses the scratch buffer for concatenations: move the text out */
        char *t = malloc(k ? k : 1);
        if (!t) {
            e->rc = KW_ENOMEM;
            free(nfc);
            return;
        }
        memcpy(t, b, k);
        split_apply(e, 0, t, k);
        free(t);
    } else {
        split_apply(e, 0, s, n);
    }
    free(nfc);
}

/* Leftmost, then longest added token at or after pos; n if none. Control tokens count
 * only when parse_special; user-defined ones always (as llama.cpp and HF do). */
static size_t find_special(const kw_tokenizer *tk, const char *s, size_t n, size_t pos,
                           int parse_special, int *id)
{
    for (size_t i = pos; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(tk->special_first[c >> 3] & (1u << (c & 7))))
            continue;
        for (int k = 0; k < tk->n_special; k++) {
            int t = tk->special[k];
            size_t l = (size_t)tk->text_len[t];
            if (l <= n - i && !memcmp(s + i, tk->text[t], l) &&
                (parse_special || tk->type[t] == KW_TOKT_USER)) {
                *id = t;
                return i;
            }
        }
    }
    *id = -1;
    return n;
}

int kw_tokenize(const kw_tokenizer *tk, const char *text, int parse_special, int32_t *ids,
                int cap)
{
    if (!tk || !text || cap < 0 || (cap > 0 && !ids))
        return KW_EINVAL;
    enc e = {.tk = tk};
    e.md = pcre2_match_data_create(4, NULL);
    if (!e.md)
        return KW_ENOMEM;
    size_t n = strlen(text), pos = 0;
    if (tk->add_bos) {
        int first = -1;
        size_t at = find_special(tk, text, n, 0, parse_special, &first);
        if (!(at == 0 && first == tk->bos)) /* a prompt that brings its own BOS */
            emit(&e, tk->bos);
    }
    while (pos <= n && e.rc == 0) {
        int sid = -1;
        size_t ms = tk->n_special ? find_special(tk, text, n, pos, parse_special, &sid) : n;
        encode_segment(&e, text + pos, ms - pos, pos == 0);
        if (sid < 0)
            break;
        emit(&e, sid);
        pos = ms + (size_t)tk->text_len[sid];
    }
    if (tk->add_eos)
        emit(&e, tk->eos);
    int rc = e.rc < 0 ? e.rc : e.n_out;
    if (rc > 0 && cap > 0)
        memcpy(ids, e.out, (size_t)(rc < cap ? rc : cap) * sizeof *ids);
    pcre2_match_data_free(e.md);
    free(e.out);
    free(e.syms);
    free(e.heap);
    free(e.buf);
    free(e.wc);
    free(e.wc_keys);
    free(e.wc_ids);
    return rc;
}
