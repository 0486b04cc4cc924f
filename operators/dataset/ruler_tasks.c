/* RULER-style task recipes (niah, vt, cwe, fwe) over kvweave's own random streams. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/util.h"
#include "ruler_internal.h"

/* ---- random streams: splitmix64 keyed by (seed, index, stream) ---- */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r) { return kw_splitmix64(&r->s); }

static rng rng_for(uint64_t seed, int64_t index, uint64_t stream)
{
    rng r = {seed * 0xd1b54a32d192ed03ull ^ ((uint64_t)index + 1) * 0xabc98388fb8fac03ull ^
             stream * 0x8cb92ba72f3d8dd7ull};
    rng_next(&r);
    return r;
}

/* uniform integer in [0, n) */
static uint64_t rng_below(rng *r, uint64_t n)
{
    return (uint64_t)(((__uint128_t)rng_next(r) * n) >> 64);
}

static int64_t rng_int(rng *r, int64_t lo, int64_t hi) /* inclusive */
{
    return lo + (int64_t)rng_below(r, (uint64_t)(hi - lo + 1));
}

static void shuffle_ptr(rng *r, void **a, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(r, (uint64_t)i + 1);
        void *t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* k distinct values of [0, n), in draw order (Floyd's algorithm, then shuffled). */
static int *sample_range(rng *r, int n, int k)
{
    int *out = malloc(sizeof(int) * (k ? k : 1));
    char *seen = calloc((size_t)n + 1, 1);
    int m = 0;
    for (int j = n - k; j < n; j++) {
        int t = (int)rng_below(r, (uint64_t)j + 1);
        if (seen[t])
            t = j;
        seen[t] = 1;
        out[m++] = t;
    }
    free(seen);
    for (int i = k - 1; i > 0; i--) {
        int j = (int)rng_below(r, (uint64_t)i + 1), t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
    return out;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* ---- string builder ---- */

typedef struct sb {
    char *s;
    size_t n, cap;
} sb;

static void sb_add(sb *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}
static void sb_puts(sb *b, const char *s) { sb_add(b, s, strlen(s)); }
static void sb_printf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sb *b, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *t = malloc((size_t)n + 1);
    vsnprintf(t, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    sb_add(b, t, (size_t)n);
    free(t);
}
static char *sb_take(sb *b) { return b->s ? b->s : strdup(""); }

/* Replaces every occurrence of `from` in s by `to` (as Python's str.replace). */
static char *replace_all(const char *s, const char *from, const char *to)
{
    sb b = {0};
    size_t fl = strlen(from);
    for (const char *p; (p = strstr(s, from)); s = p + fl) {
        sb_add(&b, s, (size_t)(p - s));
        sb_puts(&b, to);
    }
    sb_puts(&b, s);
    return sb_take(&b);
}

/* Fills {name} placeholders from a NULL-terminated list of name/value pairs. */
static char *format(const char *tpl, ...)
{
    const char *names[8], *vals[8];
    int n = 0;
    va_list ap;
    va_start(ap, tpl);
    for (const char *k; n < 8 && (k = va_arg(ap, const char *));) {
        names[n] = k;
        vals[n++] = va_arg(ap, const char *);
    }
    va_end(ap);
    sb b = {0};
    for (const char *p = tpl; *p;) {
        int hit = 0;
        if (*p == '{')
            for (int i = 0; i < n; i++) {
                size_t l = strlen(names[i]);
                if (!strncmp(p + 1, names[i], l) && p[1 + l] == '}') {
                    sb_puts(&b, vals[i]);
                    p += l + 2;
                    hit = 1;
                    break;
                }
            }
        if (!hit)
            sb_add(&b, p++, 1);
    }
    return sb_take(&b);
}

/* ---- task table ---- */

typedef enum { H_NOISE, H_ESSAY, H_NEEDLE } haystack_t;
typedef enum { V_NUMBERS, V_WORDS, V_UUIDS } needle_t;
typedef enum { T_NIAH, T_VT, T_CWE, T_FWE } family_t;

typedef struct task {
    const char *name;
    family_t fam;
    haystack_t hay;
    needle_t k, v;
    int num_k, num_v, num_q;
} task;

static const task tasks[] = {
    {"niah_single_1", T_NIAH, H_NOISE, V_WORDS, V_NUMBERS, 1, 1, 1},
    {"niah_single_2", T_NIAH, H_ESSAY, V_WORDS, V_NUMBERS, 1, 1, 1},
    {"niah_single_3", T_NIAH, H_ESSAY, V_WORDS, V_UUIDS, 1, 1, 1},
    {"niah_multikey_1", T_NIAH, H_ESSAY, V_WORDS, V_NUMBERS, 4, 1, 1},
    {"niah_multikey_2", T_NIAH, H_NEEDLE, V_WORDS, V_NUMBERS, 1, 1, 1},
    {"niah_multikey_3", T_NIAH, H_NEEDLE, V_UUIDS, V_UUIDS, 1, 1, 1},
    {"niah_multivalue", T_NIAH, H_ESSAY, V_WORDS, V_NUMBERS, 1, 4, 1},
    {"niah_multiquery", T_NIAH, H_ESSAY, V_WORDS, V_NUMBERS, 4, 1, 4},
    {"vt", T_VT, H_NOISE, 0, 0, 1, 4, 0},
    {"cwe", T_CWE, 0, 0, 0, 0, 0, 0},
    {"fwe", T_FWE, 0, 0, 0, 0, 0, 0},
};
#define N_TASKS (int)(sizeof tasks / sizeof tasks[0])

const char *const kw_ruler_tasks[] = {
    "niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
    "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", NULL};

static const task *find_task(const char *name)
{
    for (int i = 0; i < N_TASKS; i++)
        if (!strcmp(tasks[i].name, name))
            return &tasks[i];
    return NULL;
}

int kw_ruler_task_known(const char *t) { return find_task(t) != NULL; }

int kw_ruler_default_max_new(const char *t)
{
    const task *k = find_task(t);
    if (!k)
        return 0;
    return k->fam == T_NIAH ? 128 : k->fam == T_VT ? 30 : k->fam == T_CWE ? 120 : 50;
}

static const char *const noise_sentence =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

void kw__ruler_out_clear(kw__ruler_out *o)
{
    free(o->input);
    free(o->prefix);
    for (int i = 0; i < o->n_refs; i++)
        free(o->refs[i]);
    free(o->refs);
    memset(o, 0, sizeof *o);
}

static void add_ref(kw__ruler_out *o, const char *s)
{
    o->refs = realloc(o->refs, sizeof(char *) * (o->n_refs + 1));
    o->refs[o->n_refs++] = strdup(s);
}

/* ---- niah ---- */

static char *rand_value(const kw_ruler_res *res, rng *r, needle_t t)
{
    char buf[128];
    if (t == V_NUMBERS) {
        snprintf(buf, sizeof buf, "%lld", (long long)rng_int(r, 1000000, 9999999));
    } else if (t == V_WORDS) {
        snprintf(buf, sizeof buf, "%s-%s", res->adjs.w[rng_below(r, res->adjs.n)],
                 res->nouns.w[rng_below(r, res->nouns.n)]);
    } else { /* uuid4 */
        uint64_t hi = rng_next(r), lo = rng_next(r);
        hi = (hi & ~0xf000ull) | 0x4000ull;                         /* version 4 */
        lo = (lo & ~(3ull << 62)) | (2ull << 62);                   /* RFC 4122 variant */
        snprintf(buf, sizeof buf, "%08llx-%04llx-%04llx-%04llx-%012llx",
                 (unsigned long long)(hi >> 32), (unsigned long long)((hi >> 16) & 0xffff),
                 (unsigned long long)(hi & 0xffff), (unsigned long long)(lo >> 48),
                 (unsigned long long)(lo & 0xffffffffffffull));
    }
    return strdup(buf);
}

static const char *type_name(needle_t t, int singular)
{
    static const char *pl[] = {"numbers", "words", "uuids"}, *sg[] = {"number", "word", "uuid"};
    return singular ? sg[t] : pl[t];
}

static char *needle_text(needle_t v, const char *key, const char *value)
{
    sb b = {0};
    sb_printf(&b, "One of the special magic %s for %s is: %s.", type_name(v, 0), key, value);
    return sb_take(&b);
}

static void niah_context_essay(const kw_ruler_res *res, rng *r, int units, char **needles,
                               int n_needles, sb *ctx)
{
    sb text = {0};
    for (int i = 0; i < units && i < res->n_essay; i++) {
        if (i)
            sb_add(&text, " ", 1);
        sb_puts(&text, res->essay[i]);
    }
    int *st, *ln, ns = kw_ruler_split_sentences(text.s ? text.s : "", &st, &ln);
    /* depths: np.round(np.linspace(0, 100, 40)); sampled without replacement */
    int *di = sample_range(r, 40, n_needles), *pos = malloc(sizeof(int) * (n_needles + 2));
    pos[0] = 0;
    for (int i = 0; i < n_needles; i++) {
        int depth = (int)lround(100.0 * di[i] / 39.0);
        pos[i + 1] = (int)(ns * (depth / 100.0));
    }
    qsort(pos + 1, n_needles, sizeof(int), cmp_int);
    pos[n_needles + 1] = ns;
    int first = 1;
    for (int i = 1; i <= n_needles + 1; i++) {
        /* " ".join(document_sents[last:next]) is appended even when empty */
        if (!first)
            sb_add(ctx, " ", 1);
        first = 0;
        for (int s = pos[i - 1]; s < pos[i]; s++) {
            if (s > pos[i - 1])
                sb_add(ctx, " ", 1);
            sb_add(ctx, text.s + st[s], (size_t)ln[s]);
        }
        if (i - 1 < n_needles) {
            sb_add(ctx, " ", 1);
            sb_puts(ctx, needles[i - 1]);
        }
    }
    free(di), free(pos), free(st), free(ln), free(text.s);
}

static void niah_context_lines(const kw_ruler_res *res, const task *t, rng *r, int units,
                               char **needles, int n_needles, sb *ctx)
{
    int total = units + n_needles;
    char **lines = malloc(sizeof(char *) * total);
    for (int i = 0; i < units; i++) {
        if (t->hay == H_NOISE) {
            lines[i] = strdup(noise_sentence);
        } else {
            char *k = rand_value(res, r, t->k), *v = rand_value(res, r, t->v);
            lines[i] = needle_text(t->v, k, v);
            free(k), free(v);
        }
    }
    /* insert needles at sorted(sample(range(units), n), reverse=True) */
    int *idx = sample_range(r, units, n_needles);
    qsort(idx, n_needles, sizeof(int), cmp_int);
    int n = units;
    for (int j = n_needles - 1, e = 0; j >= 0; j--, e++) {
        int at = idx[j];
        memmove(lines + at + 1, lines + at, sizeof(char *) * (n - at));
        lines[at] = strdup(needles[e]);
        n++;
    }
    for (int i = 0; i < n; i++) {
        if (i)
            sb_add(ctx, "\n", 1);
        sb_puts(ctx, lines[i]);
        free(lines[i]);
    }
    free(lines), free(idx);
}

static void gen_niah(const kw_ruler_res *res, const task *t, rng *r, int units, kw__ruler_out *o)
{
    int nk = t->num_k > t->num_q ? t->num_k : t->num_q, nn = nk * t->num_v;
    char **keys = malloc(sizeof(char *) * nk), **vals = malloc(sizeof(char *) * nn);
    char **needles = malloc(sizeof(char *) * nn);
    for (int i = 0; i < nk; i++) {
        keys[i] = rand_value(res, r, t->k);
        for (int j = 0; j < t->num_v; j++) {
            vals[i * t->num_v + j] = rand_value(res, r, t->v);
            needles[i * t->num_v + j] = needle_text(t->v, keys[i], vals[i * t->num_v + j]);
        }
    }
    shuffle_ptr(r, (void **)needles, nn);
    sb ctx = {0};
    if (t->hay == H_ESSAY)
        niah_context_essay(res, r, units, needles, nn, &ctx);
    else
        niah_context_lines(res, t, r, units, needles, nn, &ctx);
    int *qi = sample_range(r, nk, t->num_q);
    sb query = {0};
    for (int i = 0; i < t->num_q; i++) {
        if (i)
            sb_puts(&query, i == t->num_q - 1 ? ", and " : ", ");
        sb_puts(&query, keys[qi[i]]);
        for (int j = 0; j < t->num_v; j++)
            add_ref(o, vals[qi[i] * t->num_v + j]);
    }
    const char *tpl = "Some special magic {type_needle_v} are hidden within the following "
                      "text. Make sure to memorize it. I will quiz you about the "
                      "{type_needle_v} afterwards.\n{context}\nWhat are all the special "
                      "magic {type_needle_v} for {query} mentioned in the provided text?";
    const char *ap = " The special magic {type_needle_v} for {query} mentioned in the "
                     "provided text are";
    int single = t->num_q * t->num_v == 1;
    char *tp = strdup(tpl), *pp = strdup(ap);
    if (single) { /* RULER's replacements, in its order */
        static const char *rep[][2] = {{"Some", "A"}, {"are all", "is"}, {"are", "is"},
                                       {"answers", "answer"}};
        for (int i = 0; i < 4; i++) {
            char *a = replace_all(tp, rep[i][0], rep[i][1]), *b = replace_all(pp, rep[i][0], rep[i][1]);
            free(tp), free(pp);
            tp = a, pp = b;
        }
    }
    const char *tn = type_name(t->v, single);
    o->input = format(tp, "type_needle_v", tn, "context", ctx.s ? ctx.s : "", "query",
                      query.s, (char *)NULL);
    o->prefix = format(pp, "type_needle_v", tn, "query", query.s, (char *)NULL);
    free(tp), free(pp), free(ctx.s), free(query.s), free(qi);
    for (int i = 0; i < nk; i++)
        free(keys[i]);
    for (int i = 0; i < nn; i++)
        free(vals[i]), free(needles[i]);
    free(keys), free(vals), free(needles);
}

/* ---- variable tracking ---- */

static const char *const vt_tpl =
    "Memorize and track the chain(s) of variable assignment hidden in the following "
    "text.\n\n{context}\nQuestion: Find all variables that are assigned the value {query} "
    "in the text above.";
static const char *const vt_ap =
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} "
    "variables are assigned the value {query}, they are: ";

static void gen_vt_one(rng *r, int units, int hops, int icl, kw__ruler_out *o)
{
    int k = icl ? 3 : 5, nv = hops + 1;
    char (*vars)[8] = calloc((size_t)nv, sizeof *vars);
    for (int i = 0; i < nv; i++) {
        int dup;
        do { /* distinct names (RULER may reuse one; kvweave does not) */
            for (int c = 0; c < k; c++)
                vars[i][c] = (char)('A' + rng_below(r, 26));
            dup = 0;
            for (int j = 0; j < i; j++)
                dup |= !strcmp(vars[i], vars[j]);
        } while (dup);
    }
    char value[16];
    snprintf(value, sizeof value, "%lld", (long long)rng_int(r, 10000, 99998));
    int n = units + nv;
    char **lines = malloc(sizeof(char *) * n);
    for (int i = 0; i < units; i++)
        lines[i] = strdup("The grass is green. The sky is blue. The sun is yellow. Here we go. "
                          "There and back again.\n");
    int *pos = sample_range(r, units, nv);
    qsort(pos, nv, sizeof(int), cmp_int);
    int cur = units;
    for (int j = 0; j < nv; j++) {
        sb s = {0};
        if (j == 0)
            sb_printf(&s, "VAR %s = %s", vars[0], value);
        else
            sb_printf(&s, "VAR %s = VAR %s ", vars[j], vars[j - 1]);
        int at = pos[j] + j;
        memmove(lines + at + 1, lines + at, sizeof(char *) * (cur - at));
        lines[at] = s.s;
        cur++;
    }
    sb ctx = {0};
    for (int i = 0; i < n; i++) {
        if (i)
            sb_add(&ctx, " ", 1);
        sb_puts(&ctx, lines[i]);
        free(lines[i]);
    }
    char *c2 = replace_all(ctx.s, ". \n", ".\n"), nvs[8];
    snprintf(nvs, sizeof nvs, "%d", nv);
    o->input = format(vt_tpl, "context", c2, "query", value, (char *)NULL);
    o->prefix = format(vt_ap, "num_v", nvs, "query", value, (char *)NULL);
    for (int i = 0; i < nv; i++)
        add_ref(o, vars[i]);
    free(c2), free(ctx.s), free(lines), free(pos), free(vars);
}

/* ---- common words ---- */

static const char *const cwe_tpl =
    "Below is a numbered list of words. In these words, some appear more often than "
    "others. Memorize the ones that appear most often.\n{context}\nQuestion: What are the "
    "10 most common words in the above list?";
static const char *const cwe_ap =
    " Answer: The top 10 words that appear most often in the list are:";

/* context "1. w 2. w ..." of num_words distinct words: the first 10 repeated cr times,
 * the others ur times, shuffled; refs = the 10 common words. */
static char *cwe_example(const kw_ruler_res *res, rng *r, int num_words, int cr, int ur,
                         char ***common)
{
    if (num_words > res->cwe.n)
        num_words = res->cwe.n;
    int *pick = sample_range(r, res->cwe.n, num_words);
    int total = 10 * cr + (num_words - 10) * ur;
    const char **list = malloc(sizeof(char *) * (total ? total : 1));
    int m = 0;
    for (int i = 0; i < num_words; i++)
        for (int k = 0; k < (i < 10 ? cr : ur); k++)
            list[m++] = res->cwe.w[pick[i]];
    shuffle_ptr(r, (void **)list, m);
    sb b = {0};
    for (int i = 0; i < m; i++)
        sb_printf(&b, i ? " %d. %s" : "%d. %s", i + 1, list[i]);
    *common = malloc(sizeof(char *) * 10);
    for (int i = 0; i < 10; i++)
        (*common)[i] = res->cwe.w[pick[i]];
    free(pick), free(list);
    return sb_take(&b);
}

static void gen_cwe(const kw_ruler_res *res, rng *r, int units, int length, kw__ruler_out *o)
{
    int small = length < 4096;
    char **ex_common, **common;
    char *ex = cwe_example(res, r, small ? 20 : 40, small ? 3 : 10, small ? 1 : 3, &ex_common);
    char *ctx = cwe_example(res, r, units < 11 ? 11 : units, small ? 6 : 30, small ? 1 : 3,
                            &common);
    sb b = {0};
    char *t1 = format(cwe_tpl, "context", ex, (char *)NULL);
    sb_puts(&b, t1);
    sb_puts(&b, cwe_ap);
    for (int i = 0; i < 10; i++)
        sb_printf(&b, " %d. %s", i + 1, ex_common[i]);
    sb_puts(&b, "\n");
    char *t2 = format(cwe_tpl, "context", ctx, (char *)NULL);
    sb_puts(&b, t2);
    o->input = sb_take(&b);
    o->prefix = strdup(cwe_ap);
    for (int i = 0; i < 10; i++)
        add_ref(o, common[i]);
    free(t1), free(t2), free(ex), free(ctx), free(ex_common), free(common);
}

/* ---- frequent words ---- */

static const char *const fwe_tpl =
    "Read the following coded text and track the frequency of each coded word. Find the "
    "three most frequently appeared coded words. {context}\nQuestion: Do not provide any "
    "explanation. Please ignore the dots '....'. What are the three most frequently "
    "appeared words in the above coded text?";
static const char *const fwe_ap =
    " Answer: According to the coded text above, the three most frequently appeared words "
    "are:";

static void gen_fwe(rng *r, int num_words, int vocab_size, kw__ruler_out *o)
{
    if (vocab_size < 4)
        vocab_size = 4;
    char **vocab = malloc(sizeof(char *) * vocab_size);
    for (int i = 0; i < vocab_size; i++) {
        int dup;
        vocab[i] = malloc(7);
        do {
            for (int c = 0; c < 6; c++)
                vocab[i][c] = (char)('a' + rng_below(r, 26));
            vocab[i][6] = '\0';
            dup = 0;
            for (int j = 0; j < i; j++)
                dup |= !strcmp(vocab[i], vocab[j]);
        } while (dup);
    }
    strcpy(vocab[0], "..."); /* the top rank is noise */
    const double zeta2 = M_PI * M_PI / 6; /* alpha = 2 */
    int total = 0, *cnt = malloc(sizeof(int) * vocab_size);
    for (int k = 0; k < vocab_size; k++)
        total += cnt[k] = (int)(num_words * pow(k + 1.0, -2.0) / zeta2);
    const char **words = malloc(sizeof(char *) * (total ? total : 1));
    int m = 0;
    for (int k = 0; k < vocab_size; k++)
        for (int j = 0; j < cnt[k]; j++)
            words[m++] = vocab[k];
    shuffle_ptr(r, (void **)words, m);
    sb ctx = {0};
    for (int i = 0; i < m; i++) {
        if (i)
            sb_add(&ctx, " ", 1);
        sb_puts(&ctx, words[i]);
    }
    o->input = format(fwe_tpl, "context", ctx.s ? ctx.s : "", (char *)NULL);
    o->prefix = strdup(fwe_ap);
    for (int k = 1; k < 4; k++)
        add_ref(o, vocab[k]);
    for (int i = 0; i < vocab_size; i++)
        free(vocab[i]);
    free(vocab), free(cnt), free(words), free(ctx.s);
}

/* ---- one record for a haystack size ---- */

int kw__ruler_count(const kw_ruler_gen *g, const kw__ruler_out *o)
{
    size_t a = strlen(o->input), b = strlen(o->prefix);
    char *s = malloc(a + b + 1);
    memcpy(s, o->input, a);
    memcpy(s + a, o->prefix, b + 1);
    int n = g->count(g->ud, s);
    free(s);
    return n;
}

int kw__ruler_max_new(const kw_ruler_gen *g)
{
    return g->max_new > 0 ? g->max_new : kw_ruler_default_max_new(g->task);
}

/* The variable-tracking in-context example: the largest noise (in steps of 5) whose
 * example fits 500 tokens, as RULER sizes it. */
static int vt_icl(const kw_ruler_gen *g, int64_t index, char **out)
{
    int best = 5;
    for (int u = 5; u <= 200; u += 5) {
        rng r = rng_for(g->seed, index, 2);
        kw__ruler_out o = {0};
        gen_vt_one(&r, u, 4, 1, &o);
        int n = kw__ruler_count(g, &o);
        kw__ruler_out_clear(&o);
        if (n < 0)
            return n;
        if (n + 30 > 500)
            break;
        best = u;
    }
    rng r = rng_for(g->seed, index, 2);
    kw__ruler_out o = {0};
    gen_vt_one(&r, best, 4, 1, &o);
    sb b = {0};
    sb_puts(&b, o.input);
    sb_puts(&b, o.prefix);
    for (int i = 0; i < o.n_refs; i++)
        sb_printf(&b, " %s", o.refs[i]);
    sb_puts(&b, "\n\n");
    kw__ruler_out_clear(&o);
    *out = sb_take(&b);
    return KW_OK;
}

int kw__ruler_generate(const kw_ruler_gen *g, int64_t index, int units, kw__ruler_out *o)
{
    const task *t = find_task(g->task);
    if (!t)
        return KW_ENOTFOUND;
    rng r = rng_for(g->seed, index, 1);
    switch (t->fam) {
    case T_NIAH:
        gen_niah(g->res, t, &r, units, o);
        return KW_OK;
    case T_VT: {
        char *icl;
        int rc = vt_icl(g, index, &icl);
        if (rc < 0)
            return rc;
        kw__ruler_out main = {0};
        gen_vt_one(&r, units, 4, 0, &main);
        sb b = {0};
        sb_puts(&b, " ");
        sb_puts(&b, icl);
        sb_puts(&b, "\n\n");
        sb_puts(&b, main.input);
        free(icl);
        char *old = main.input;
        *o = main;
        o->input = sb_take(&b);
        free(old);
        return KW_OK;
    }
    case T_CWE:
        gen_cwe(g->res, &r, units, g->length, o);
        return KW_OK;
    case T_FWE:
        gen_fwe(&r, units, (g->length - kw__ruler_max_new(g)) / 50, o);
        return KW_OK;
    }
    return KW_EINTERNAL;
}

void kw__ruler_units_range(const kw_ruler_gen *g, int *lo, int *hi, int *source_limit,
                           const char **source)
{
    const task *t = find_task(g->task);
    /* every unit is at least one token, so `length` units always overflow */
    *hi = g->length;
    *source_limit = 0;
    *source = "";
    if (!t) {
        *lo = 1;
        return;
    }
    switch (t->fam) {
    case T_NIAH:
        *lo = (t->num_k > t->num_q ? t->num_k : t->num_q) * t->num_v;
        if (t->hay == H_ESSAY) {
            *source_limit = g->res->n_essay;
            *source = "essay haystack (in words)";
        }
        break;
    case T_VT:
        *lo = 5;
        break;
    case T_CWE:
        *lo = 11;
        *source_limit = g->res->cwe.n;
        *source = "word lists (in words)";
        break;
    case T_FWE:
        *lo = 4;
        *hi = 2 * g->length;
        break;
    }
    if (*source_limit > 0 && *hi > *source_limit)
        *hi = *source_limit;
}
