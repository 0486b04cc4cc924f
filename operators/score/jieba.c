/* jieba precise mode in C (see jieba.h for what is reproduced and where data comes from).
 *
 * The dictionary is one open-addressing hash table whose keys are byte ranges of the
 * loaded dict.txt buffer: whole words with their frequency and, for every word, each of
 * its code-point prefixes with frequency 0 unless the prefix is a word itself. Keys are
 * hashed with 64-bit FNV-1a, which extends one byte at a time, so the DAG walk hashes each
 * growing fragment incrementally. */
#include "jieba.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/util.h"
#include "kw_jieba_config.h"

#define MIN_FLOAT (-3.14e100)
#define FNV_OFF 1469598103934665603ull
#define FNV_PRIME 1099511628211ull

typedef struct dent {
    uint32_t h32; /* high bits of the hash; 0 marks an empty slot (hashes are forced != 0) */
    uint32_t off; /* key = dict[off .. off+len) */
    uint32_t len;
    int32_t freq;
} dent;

typedef struct hent { /* an HMM emission row, per character */
    uint32_t cp;      /* 0 = empty slot (U+0000 never has an emission) */
    double emit[4];   /* B M E S; MIN_FLOAT where the table has no entry */
} hent;

struct kw_jieba {
    char *dict;
    size_t dict_n;
    dent *tab;
    size_t mask;
    int64_t total;
    double logtotal;
    double start[4];
    double trans[4][4];
    hent *emit;
    size_t emask;
    char dir[512];
};

enum { ST_B = 0, ST_M = 1, ST_E = 2, ST_S = 3 };
static const char st_name[4] = {'B', 'M', 'E', 'S'};

/* ---- UTF-8 ---- */

int kw_utf8_next(const char *s, size_t n, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0)
        return 0;
    if (u[0] < 0x80) {
        *cp = u[0];
        return 1;
    }
    int len;
    uint32_t c, min;
    if ((u[0] & 0xE0) == 0xC0) {
        len = 2, c = u[0] & 0x1F, min = 0x80;
    } else if ((u[0] & 0xF0) == 0xE0) {
        len = 3, c = u[0] & 0x0F, min = 0x800;
    } else if ((u[0] & 0xF8) == 0xF0) {
        len = 4, c = u[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if ((size_t)len > n)
        return 0;
    for (int i = 1; i < len; i++) {
        if ((u[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (u[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

/* ---- dictionary hash table ---- */

static uint64_t fnv_step(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= FNV_PRIME;
    }
    return h;
}

static uint32_t h32_of(uint64_t h)
{
    uint32_t v = (uint32_t)(h >> 32);
    return v ? v : 1;
}

/* The slot holding key (h, s, n), or the empty slot where it would go. */
static dent *dict_slot(const kw_jieba *jb, uint64_t h, const char *s, size_t n)
{
    uint32_t hh = h32_of(h);
    for (size_t i = (size_t)h & jb->mask;; i = (i + 1) & jb->mask) {
        dent *e = &jb->tab[i];
        if (!e->h32)
            return e;
        if (e->h32 == hh && e->len == n && memcmp(jb->dict + e->off, s, n) == 0)
            return e;
    }
}

int64_t kw_jieba_freq(const kw_jieba *jb, const char *word, size_t n)
{
    const dent *e = dict_slot(jb, fnv_step(FNV_OFF, word, n), word, n);
    return e->h32 ? e->freq : -1;
}

static void dict_put(kw_jieba *jb, uint64_t h, size_t off, size_t n, int32_t freq,
                     int only_if_absent)
{
    dent *e = dict_slot(jb, h, jb->dict + off, n);
    if (e->h32 && only_if_absent)
        return;
    e->h32 = h32_of(h);
    e->off = (uint32_t)off;
    e->len = (uint32_t)n;
    e->freq = freq;
}

static int is_space_byte(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* One dict.txt line [a, b): "word freq [tag]"; bytes.strip() first, as jieba does. */
static int dict_line(kw_jieba *jb, const char *path, int lineno, size_t a, size_t b,
                     kw_error *err)
{
    const char *d = jb->dict;
    while (a < b && is_space_byte(d[a]))
        a++;
    while (b > a && is_space_byte(d[b - 1]))
        b--;
    size_t sp = a;
    while (sp < b && d[sp] != ' ')
        sp++;
    size_t fe = sp + 1;
    while (fe < b && d[fe] != ' ')
        fe++;
    if (sp >= b || fe == sp + 1 || fe - sp > 11)
        return kw_error_at(err, KW_EFORMAT, path, lineno, 0,
                           "invalid dictionary entry (want 'word freq [tag]')");
    long long f = 0;
    for (size_t i = sp + 1; i < fe; i++) {
        if (d[i] < '0' || d[i] > '9')
            return kw_error_at(err, KW_EFORMAT, path, lineno, (int)(i - a) + 1,
                               "invalid frequency in dictionary entry");
        f = f * 10 + (d[i] - '0');
    }
    if (f > INT32_MAX)
        return kw_error_at(err, KW_EFORMAT, path, lineno, 0, "frequency %lld too large", f);
    size_t n = sp - a;
    uint64_t h = FNV_OFF;
    size_t i = a;
    while (i < sp) { /* every code-point prefix, the word itself last */
        uint32_t cp;
        int l = kw_utf8_next(d + i, sp - i, &cp);
        if (!l)
            return kw_error_at(err, KW_EFORMAT, path, lineno, (int)(i - a) + 1,
                               "dictionary word is not valid UTF-8");
        h = fnv_step(h, d + i, (size_t)l);
        i += (size_t)l;
        if (i < sp)
            dict_put(jb, h, a, i - a, 0, 1);
    }
    dict_put(jb, h, a, n, (int32_t)f, 0);
    jb->total += f;
    return 0;
}

static int dict_load(kw_jieba *jb, const char *path, kw_error *err)
{
    int rc = kw_read_file(path, &jb->dict, &jb->dict_n, err);
    if (rc < 0)
        return rc;
    if (jb->dict_n >= UINT32_MAX)
        return kw_error_at(err, KW_ELIMIT, path, 0, 0, "dictionary of %zu bytes is too large",
                           jb->dict_n);
    size_t lines = 1;
    for (size_t i = 0; i < jb->dict_n; i++)
        lines += jb->dict[i] == '\n';
    size_t cap = 1024;
    while (cap < lines * 4) /* words + prefixes stay under half full */
        cap <<= 1;
    jb->tab = calloc(cap, sizeof *jb->tab);
    if (!jb->tab)
        return kw_error_set(err, KW_ENOMEM, "out of memory for a %zu-slot dictionary", cap);
    jb->mask = cap - 1;
    size_t a = 0;
    int lineno = 0;
    while (a < jb->dict_n) {
        const char *nl = memchr(jb->dict + a, '\n', jb->dict_n - a);
        size_t b = nl ? (size_t)(nl - jb->dict) : jb->dict_n;
        lineno++;
        if ((rc = dict_line(jb, path, lineno, a, b, err)) < 0)
            return rc;
        a = b + 1;
    }
    if (jb->total <= 0)
        return kw_error_at(err, KW_EFORMAT, path, 0, 0, "dictionary has no word frequencies");
    jb->logtotal = log((double)jb->total);
    return 0;
}

/* ---- HMM tables ---- */

static int st_index(char c)
{
    for (int i = 0; i < 4; i++)
        if (st_name[i] == c)
            return i;
    return -1;
}

static hent *emit_slot(const kw_jieba *jb, uint32_t cp)
{
    for (size_t i = (cp * 2654435761u) & jb->emask;; i = (i + 1) & jb->emask)
        if (jb->emit[i].cp == cp || jb->emit[i].cp == 0)
            return &jb->emit[i];
}

/* "start S logp" | "trans S T logp" | "emit S hex logp" */
static int hmm_line(kw_jieba *jb, char *s, const char *path, int lineno, kw_error *err)
{
    char a[4] = "", b[4] = "";
    unsigned cp = 0;
    int pos = 0, kind;
    if (sscanf(s, " %n", &pos) >= 0 && s[pos] == '\0')
        return 0; /* blank */
    pos = 0;
    if (sscanf(s, "start %3s %n", a, &pos) == 1 && pos > 0)
        kind = 0;
    else if (sscanf(s, "trans %3s %3s %n", a, b, &pos) == 2 && pos > 0)
        kind = 1;
    else if (sscanf(s, "emit %3s %x %n", a, &cp, &pos) == 2 && pos > 0)
        kind = 2;
    else
        kind = -1;
    int sa = st_index(a[0]), sb = st_index(b[0]);
    if (kind < 0 || a[1] || sa < 0 || (kind == 1 && (b[1] || sb < 0)) ||
        (kind == 2 && (cp == 0 || cp > 0x10FFFF)))
        return kw_error_at(err, KW_EFORMAT, path, lineno, 1,
                           "unrecognised HMM table line (want start|trans|emit ...)");
    char *end;
    errno = 0;
    double v = strtod(s + pos, &end);
    if (end == s + pos || errno == ERANGE)
        return kw_error_at(err, KW_EFORMAT, path, lineno, pos + 1, "bad number");
    if (kind == 0) {
        jb->start[sa] = v;
    } else if (kind == 1) {
        jb->trans[sa][sb] = v;
    } else {
        hent *e = emit_slot(jb, cp);
        if (!e->cp) {
            e->cp = cp;
            for (int k = 0; k < 4; k++)
                e->emit[k] = MIN_FLOAT;
        }
        e->emit[sa] = v;
    }
    return 0;
}

static int hmm_load(kw_jieba *jb, const char *path, kw_error *err)
{
    char *buf = NULL;
    size_t n = 0;
    int rc = kw_read_file(path, &buf, &n, err);
    if (rc < 0)
        return rc;
    for (int i = 0; i < 4; i++) {
        jb->start[i] = MIN_FLOAT;
        for (int k = 0; k < 4; k++)
            jb->trans[i][k] = MIN_FLOAT;
    }
    size_t cap = 1024;
    while (cap < n / 8) /* lines are > 16 bytes: at most n/16 entries, half full */
        cap <<= 1;
    jb->emit = calloc(cap, sizeof *jb->emit);
    jb->emask = cap - 1;
    if (!jb->emit) {
        free(buf);
        return kw_error_set(err, KW_ENOMEM, "out of memory for the HMM tables");
    }
    int lineno = 0;
    for (char *s = buf; s && *s && rc == 0;) {
        char *nl = strchr(s, '\n');
        if (nl)
            *nl = '\0';
        rc = hmm_line(jb, s, path, ++lineno, err);
        s = nl ? nl + 1 : NULL;
    }
    free(buf);
    return rc;
}

/* ---- open / free ---- */

static int dir_has_data(const char *dir)
{
    char p[600];
    snprintf(p, sizeof p, "%s/dict.txt", dir);
    FILE *f = fopen(p, "rb");
    if (!f)
        return 0;
    fclose(f);
    return 1;
}

static const char *find_dir(char *buf, size_t cap)
{
    const char *e = getenv("KVWEAVE_JIEBA");
    if (e && *e)
        return e;
#ifdef KW_JIEBA_BUILD_DIR
    if (dir_has_data(KW_JIEBA_BUILD_DIR))
        return KW_JIEBA_BUILD_DIR;
#endif
    snprintf(buf, cap, "%s/jieba", kw_home());
    return dir_has_data(buf) ? buf : NULL;
}

int kw_jieba_open(const char *dir, kw_jieba **out, kw_error *err)
{
    char home[560];
    *out = NULL;
    if (!dir && !(dir = find_dir(home, sizeof home)))
        return kw_error_set(err, KW_ENOTFOUND,
                            "no jieba data: set KVWEAVE_JIEBA, or write %s/jieba with "
                            "operators/score/jieba_data.py (needs python3-jieba)",
                            kw_home());
    kw_jieba *jb = calloc(1, sizeof *jb);
    if (!jb)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    snprintf(jb->dir, sizeof jb->dir, "%s", dir);
    char p[600];
    snprintf(p, sizeof p, "%s/dict.txt", dir);
    int rc = dict_load(jb, p, err);
    if (rc >= 0) {
        snprintf(p, sizeof p, "%s/hmm.tsv", dir);
        rc = hmm_load(jb, p, err);
    }
    if (rc < 0) {
        kw_jieba_free(jb);
        return rc;
    }
    *out = jb;
    return 0;
}

kw_jieba *kw_jieba_free(kw_jieba *jb)
{
    if (jb) {
        free(jb->dict);
        free(jb->tab);
        free(jb->emit);
        free(jb);
    }
    return NULL;
}

const char *kw_jieba_dir(const kw_jieba *jb) { return jb->dir; }

void kw_jieba_spans_clear(kw_jieba_spans *s)
{
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

/* ---- cutting ---- */

typedef struct cutter {
    const kw_jieba *jb;
    const char *text;
    const uint32_t *cp;   /* (N) code points of the text */
    const size_t *boff;   /* (N+1) byte offset of each code point */
    kw_jieba_spans *out;
    double *rp;           /* route log-probability, scratch (N+1) */
    int32_t *rx;          /* route end index, scratch (N+1) */
    int8_t *bp;           /* Viterbi back pointers, scratch (4*N) */
    int oom;
} cutter;

static void emit_tok(cutter *c, size_t i, size_t j) /* code points [i, j) */
{
    kw_jieba_spans *o = c->out;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        kw_jieba_span *v = realloc(o->v, cap * sizeof *v);
        if (!v) {
            c->oom = 1;
            return;
        }
        o->v = v, o->cap = cap;
    }
    o->v[o->n].off = c->boff[i];
    o->v[o->n].len = c->boff[j] - c->boff[i];
    o->n++;
}

static int is_han(uint32_t u) { return u >= 0x4E00 && u <= 0x9FD5; }
static int is_alnum_ascii(uint32_t u)
{
    return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9');
}
static int is_han_default(uint32_t u)
{
    return is_han(u) || is_alnum_ascii(u) || u == '+' || u == '#' || u == '&' || u == '.' ||
           u == '_' || u == '%' || u == '-';
}

/* finalseg's Viterbi over the han run [s, e) and its B/E/S output. */
static void hmm_cut_han(cutter *c, size_t s, size_t e)
{
    const kw_jieba *jb = c->jb;
    static const int prev[4][2] = {{ST_E, ST_S}, {ST_M, ST_B}, {ST_B, ST_M}, {ST_S, ST_E}};
    double v[4], nv[4];
    size_t n = e - s;
    for (int y = 0; y < 4; y++) {
        hent *h = emit_slot(jb, c->cp[s]);
        v[y] = jb->start[y] + (h->cp ? h->emit[y] : MIN_FLOAT);
    }
    for (size_t t = 1; t < n; t++) {
        hent *h = emit_slot(jb, c->cp[s + t]);
        for (int y = 0; y < 4; y++) {
            double em = h->cp ? h->emit[y] : MIN_FLOAT;
            int best = -1;
            double bestp = 0;
            for (int k = 0; k < 2; k++) { /* max over (prob, state letter) tuples */
                int y0 = prev[y][k];
                double p = v[y0] + jb->trans[y0][y] + em;
                if (best < 0 || p > bestp || (p == bestp && st_name[y0] > st_name[best]))
                    best = y0, bestp = p;
            }
            nv[y] = bestp;
            c->bp[4 * t + (size_t)y] = (int8_t)best;
        }
        memcpy(v, nv, sizeof v);
    }
    int st = (v[ST_S] >= v[ST_E]) ? ST_S : ST_E; /* max((V,'E'), (V,'S')) */
    const int8_t *path = c->bp;
    int8_t *pos = malloc(n);
    if (!pos) {
        c->oom = 1;
        return;
    }
    for (size_t t = n; t-- > 0;) {
        pos[t] = (int8_t)st;
        if (t > 0)
            st = path[4 * t + (size_t)st];
    }
    size_t begin = 0, nexti = 0;
    for (size_t i = 0; i < n; i++) {
        if (pos[i] == ST_B) {
            begin = i;
        } else if (pos[i] == ST_E) {
            emit_tok(c, s + begin, s + i + 1);
            nexti = i + 1;
        } else if (pos[i] == ST_S) {
            emit_tok(c, s + i, s + i + 1);
            nexti = i + 1;
        }
    }
    if (nexti < n)
        emit_tok(c, s + nexti, e);
    free(pos);
}

/* finalseg.cut over [s, e): han runs by Viterbi; the rest split on
 * ([a-zA-Z0-9]+(?:\.\d+)?%?) with the matches and the non-empty gaps as tokens. */
static void hmm_cut(cutter *c, size_t s, size_t e)
{
    const uint32_t *cp = c->cp;
    size_t i = s;
    while (i < e) {
        size_t j = i;
        if (is_han(cp[i])) {
            while (j < e && is_han(cp[j]))
                j++;
            hmm_cut_han(c, i, j);
            i = j;
            continue;
        }
        while (j < e && !is_han(cp[j]))
            j++;
        size_t gap = i;
        for (size_t k = i; k < j;) { /* the non-han block [i, j) */
            if (!is_alnum_ascii(cp[k])) {
                k++;
                continue;
            }
            size_t m = k;
            while (m < j && is_alnum_ascii(cp[m]))
                m++;
            if (m + 1 < j && cp[m] == '.' && cp[m + 1] >= '0' && cp[m + 1] <= '9') {
                m += 2;
                while (m < j && cp[m] >= '0' && cp[m] <= '9')
                    m++;
            }
            if (m < j && cp[m] == '%')
                m++;
            if (gap < k)
                emit_tok(c, gap, k);
            emit_tok(c, k, m);
            gap = k = m;
        }
        if (gap < j)
            emit_tok(c, gap, j);
        i = j;
    }
}

static int64_t freq_of(const cutter *c, size_t i, size_t j)
{
    return kw_jieba_freq(c->jb, c->text + c->boff[i], c->boff[j] - c->boff[i]);
}

/* The buffered single characters [s, e): one char as is; a dictionary word char by
 * char; otherwise the HMM. */
static void flush_buf(cutter *c, size_t s, size_t e)
{
    if (e - s == 1) {
        emit_tok(c, s, e);
    } else if (freq_of(c, s, e) <= 0) {
        hmm_cut(c, s, e);
    } else {
        for (size_t k = s; k < e; k++)
            emit_tok(c, k, k + 1);
    }
}

/* __cut_DAG over the block [s, e). */
static void dag_cut(cutter *c, size_t s, size_t e)
{
    const kw_jieba *jb = c->jb;
    size_t n = e - s;
    double *rp = c->rp;
    int32_t *rx = c->rx;
    rp[n] = 0, rx[n] = 0;
    for (size_t k = n; k-- > 0;) {
        uint64_t h = FNV_OFF;
        int have = 0;
        double best = 0;
        int32_t bx = 0;
        for (size_t i = k; i < n; i++) {
            const char *p = c->text + c->boff[s + i];
            size_t l = c->boff[s + i + 1] - c->boff[s + i];
            h = fnv_step(h, p, l);
            const char *w = c->text + c->boff[s + k];
            const dent *d = dict_slot(jb, h, w, c->boff[s + i + 1] - c->boff[s + k]);
            if (!d->h32)
                break;
            if (d->freq) {
                double v = log((double)d->freq) - jb->logtotal + rp[i + 1];
                if (!have || v > best || (v == best && (int32_t)i > bx))
                    best = v, bx = (int32_t)i, have = 1;
            }
        }
        if (!have) /* DAG[k] = [k]; FREQ.get(char) or 1 is 1 here */
            best = log(1.0) - jb->logtotal + rp[k + 1], bx = (int32_t)k;
        rp[k] = best, rx[k] = bx;
    }
    size_t x = 0, buf = SIZE_MAX;
    while (x < n) {
        size_t y = (size_t)rx[x] + 1;
        if (y - x == 1) {
            if (buf == SIZE_MAX)
                buf = x;
        } else {
            if (buf != SIZE_MAX)
                flush_buf(c, s + buf, s + x);
            buf = SIZE_MAX;
            emit_tok(c, s + x, s + y);
        }
        x = y;
    }
    if (buf != SIZE_MAX)
        flush_buf(c, s + buf, s + n);
}

int kw_jieba_cut(const kw_jieba *jb, const char *text, size_t n, kw_jieba_spans *out,
                 kw_error *err)
{
    uint32_t *cp = malloc((n + 1) * sizeof *cp);
    size_t *boff = malloc((n + 2) * sizeof *boff);
    double *rp = malloc((n + 2) * sizeof *rp);
    int32_t *rx = malloc((n + 2) * sizeof *rx);
    int8_t *bp = malloc(4 * (n + 1));
    int rc = 0;
    if (!cp || !boff || !rp || !rx || !bp) {
        rc = kw_error_set(err, KW_ENOMEM, "out of memory cutting %zu bytes", n);
        goto done;
    }
    size_t N = 0;
    for (size_t i = 0; i < n;) {
        int l = kw_utf8_next(text + i, n - i, &cp[N]);
        if (!l) {
            rc = kw_error_set(err, KW_EINVAL, "text is not valid UTF-8 at byte %zu", i);
            goto done;
        }
        boff[N++] = i;
        i += (size_t)l;
    }
    boff[N] = n;
    cutter c = {jb, text, cp, boff, out, rp, rx, bp, 0};
    for (size_t i = 0; i < N && !c.oom;) {
        size_t j = i;
        if (is_han_default(cp[i])) {
            while (j < N && is_han_default(cp[j]))
                j++;
            dag_cut(&c, i, j);
        } else if (cp[i] == '\r' && i + 1 < N && cp[i + 1] == '\n') {
            j = i + 2;
            emit_tok(&c, i, j);
        } else {
            j = i + 1;
            emit_tok(&c, i, j);
        }
        i = j;
    }
    if (c.oom)
        rc = kw_error_set(err, KW_ENOMEM, "out of memory for the tokens of %zu bytes", n);
done:
    free(cp);
    free(boff);
    free(rp);
    free(rx);
    free(bp);
    return rc;
}
