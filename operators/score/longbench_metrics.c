/* LongBench v1 metrics (see longbench_metrics.h). Text is decoded to code points so that
 * lower(), split(), \b, \d and len() mean what they mean on a Python str. */
#include "longbench_metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- tasks ---- */

static const struct {
    const char *task;
    kw_lb_metric m;
} task_metric[] = {
    {"narrativeqa", KW_LB_QA_F1},         {"qasper", KW_LB_QA_F1},
    {"multifieldqa_en", KW_LB_QA_F1},     {"multifieldqa_zh", KW_LB_QA_F1_ZH},
    {"hotpotqa", KW_LB_QA_F1},            {"2wikimqa", KW_LB_QA_F1},
    {"musique", KW_LB_QA_F1},             {"dureader", KW_LB_ROUGE_ZH},
    {"gov_report", KW_LB_ROUGE},          {"qmsum", KW_LB_ROUGE},
    {"multi_news", KW_LB_ROUGE},          {"vcsum", KW_LB_ROUGE_ZH},
    {"trec", KW_LB_CLASSIFICATION},       {"triviaqa", KW_LB_QA_F1},
    {"samsum", KW_LB_ROUGE},              {"lsht", KW_LB_CLASSIFICATION},
    {"passage_retrieval_en", KW_LB_RETRIEVAL}, {"passage_count", KW_LB_COUNT},
    {"passage_retrieval_zh", KW_LB_RETRIEVAL_ZH}, {"lcc", KW_LB_CODE_SIM},
    {"repobench-p", KW_LB_CODE_SIM},
};
#define N_TASKS (sizeof task_metric / sizeof task_metric[0])

const char *const kw_lb_tasks[] = {
    "narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh", "hotpotqa", "2wikimqa",
    "musique", "dureader", "gov_report", "qmsum", "multi_news", "vcsum", "trec", "triviaqa",
    "samsum", "lsht", "passage_retrieval_en", "passage_count", "passage_retrieval_zh", "lcc",
    "repobench-p", NULL,
};

static const char *const metric_names[] = {
    "qa_f1", "qa_f1_zh", "rouge", "rouge_zh", "classification", "retrieval", "retrieval_zh",
    "count", "code_sim",
};

int kw_lb_metric_by_name(const char *name, kw_lb_metric *out)
{
    for (size_t i = 0; i < sizeof metric_names / sizeof *metric_names; i++)
        if (!strcmp(name, metric_names[i])) {
            *out = (kw_lb_metric)i;
            return 0;
        }
    return KW_ENOTFOUND;
}

const char *kw_lb_metric_name(kw_lb_metric m) { return metric_names[m]; }

int kw_lb_task_metric(const char *task, kw_lb_metric *out)
{
    for (size_t i = 0; i < N_TASKS; i++)
        if (!strcmp(task, task_metric[i].task)) {
            *out = task_metric[i].m;
            return 0;
        }
    return KW_ENOTFOUND;
}

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(s, *list))
            return true;
    return false;
}

bool kw_lb_task_first_line(const char *task)
{
    static const char *const l[] = {"trec", "triviaqa", "samsum", "lsht", NULL};
    return in_list(task, l);
}

bool kw_lb_task_no_chat(const char *task)
{
    static const char *const l[] = {"trec", "triviaqa", "samsum", "lsht", "lcc",
                                    "repobench-p", NULL};
    return in_list(task, l);
}

/* ---- code points ---- */

uint32_t *kw_lb_decode(const char *s, size_t len, size_t *n, kw_error *err)
{
    uint32_t *v = malloc((len + 1) * sizeof *v);
    if (!v) {
        kw_error_set(err, KW_ENOMEM, "out of memory");
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        int l = kw_utf8_next(s + i, len - i, &v[k]);
        if (!l) {
            free(v);
            kw_error_set(err, KW_EINVAL, "text is not valid UTF-8 at byte %zu", i);
            return NULL;
        }
        k++;
        i += (size_t)l;
    }
    *n = k;
    return v;
}

static bool is_cased(uint32_t c)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT;
}

static bool is_case_ignorable(uint32_t c)
{
    switch (c) { /* Word_Break MidLetter, MidNumLet, Single_Quote */
    case '\'': case '.': case ':': case 0xB7: case 0x387: case 0x5F4: case 0x2018:
    case 0x2019: case 0x2024: case 0x2027: case 0xFE13: case 0xFE52: case 0xFE55:
    case 0xFF07: case 0xFF0E: case 0xFF1A:
        return true;
    }
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_ME ||
           k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_LM ||
           k == UTF8PROC_CATEGORY_SK;
}

/* Unicode's Final_Sigma condition at in[i]: a cased letter before, none after (skipping
 * case-ignorable characters both ways). */
static bool final_sigma(const uint32_t *in, size_t n, size_t i)
{
    size_t j = i;
    while (j > 0 && is_case_ignorable(in[j - 1]))
        j--;
    if (j == 0 || !is_cased(in[j - 1]))
        return false;
    j = i + 1;
    while (j < n && is_case_ignorable(in[j]))
        j++;
    return j == n || !is_cased(in[j]);
}

/* str.lower(): the simple mapping, plus U+0130's full mapping "i\u0307" and the final
 * sigma rule for U+03A3. Out may be 2n long. */
static size_t py_lower(const uint32_t *in, size_t n, uint32_t *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == 0x130) {
            out[k++] = 'i';
            out[k++] = 0x307;
        } else if (in[i] == 0x3A3) {
            out[k++] = final_sigma(in, n, i) ? 0x3C2 : 0x3C3;
        } else {
            out[k++] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)in[i]);
        }
    }
    return k;
}

static bool is_ascii_punct(uint32_t c) /* string.punctuation */
{
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
}

static bool is_cn_punct(uint32_t c) /* normalize_zh_answer's cn_punctuation */
{
    static const uint32_t p[] = {
        0xff01, 0xff1f, 0xff61, 0x3002, 0xff02, 0xff03, 0xff04, 0xff05, 0xff06, 0xff07,
        0xff08, 0xff09, 0xff0a, 0xff0b, 0xff0c, 0xff0d, 0xff0f, 0xff1a, 0xff1b, 0xff1c,
        0xff1d, 0xff1e, 0xff20, 0xff3b, 0xff3c, 0xff3d, 0xff3e, 0xff3f, 0xff40, 0xff5b,
        0xff5c, 0xff5d, 0xff5e, 0xff5f, 0xff60, 0xff62, 0xff63, 0xff64, 0x3001, 0x3003,
        0x300b, 0x300c, 0x300d, 0x300e, 0x300f, 0x3010, 0x3011, 0x3014, 0x3015, 0x3016,
        0x3017, 0x3018, 0x3019, 0x301a, 0x301b, 0x301c, 0x301d, 0x301e, 0x301f, 0x3030,
        0x303e, 0x303f, 0x2013, 0x2014, 0x2018, 0x2019, 0x201b, 0x201c, 0x201d, 0x201e,
        0x201f, 0x2026, 0x2027, 0xfe4f, '.',
    };
    for (size_t i = 0; i < sizeof p / sizeof *p; i++)
        if (p[i] == c)
            return true;
    return false;
}

static bool is_word(uint32_t c) /* re's \w on str: isalnum() or '_' */
{
    if (c == '_')
        return true;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return true;
    default:
        return false;
    }
}

static bool is_decimal(uint32_t c) /* re's \d on str */
{
    return utf8proc_category((utf8proc_int32_t)c) == UTF8PROC_CATEGORY_ND;
}

/* ---- token multisets and F1 ---- */

typedef struct span32 {
    const uint32_t *p;
    size_t n;
} span32;

typedef struct tokv {
    span32 *v;
    size_t n, cap;
    int oom;
} tokv;

static void tokv_push(tokv *t, const uint32_t *p, size_t n)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        span32 *v = realloc(t->v, cap * sizeof *v);
        if (!v) {
            t->oom = 1;
            return;
        }
        t->v = v, t->cap = cap;
    }
    t->v[t->n++] = (span32){p, n};
}

static int cmp_span(const void *x, const void *y)
{
    const span32 *a = x, *b = y;
    size_t n = a->n < b->n ? a->n : b->n;
    for (size_t i = 0; i < n; i++)
        if (a->p[i] != b->p[i])
            return a->p[i] < b->p[i] ? -1 : 1;
    return a->n < b->n ? -1 : a->n > b->n;
}

/* f1_score(prediction_tokens, ground_truth_tokens) over Counter overlap. */
static double f1_tokens(tokv *pr, tokv *gt)
{
    if (pr->n) /* an empty list may have no array: qsort's is declared nonnull */
        qsort(pr->v, pr->n, sizeof *pr->v, cmp_span);
    if (gt->n)
        qsort(gt->v, gt->n, sizeof *gt->v, cmp_span);
    size_t same = 0, i = 0, j = 0;
    while (i < pr->n && j < gt->n) {
        int c = cmp_span(&pr->v[i], &gt->v[j]);
        if (c == 0)
            same++, i++, j++;
        else if (c < 0)
            i++;
        else
            j++;
    }
    if (same == 0)
        return 0.0;
    double precision = 1.0 * (double)same / (double)pr->n;
    double recall = 1.0 * (double)same / (double)gt->n;
    return (2 * precision * recall) / (precision + recall);
}

/* normalize_answer(s).split(): lower, drop ASCII punctuation, words a/an/the become a
 * space, split on white space. Tokens point into *buf (caller frees). */
static int en_tokens(const char *s, tokv *t, uint32_t **buf, kw_error *err)
{
    size_t n;
    uint32_t *cp = kw_lb_decode(s, strlen(s), &n, err);
    if (!cp)
        return err ? err->code : KW_EINVAL;
    uint32_t *lo = malloc((2 * n + 1) * sizeof *lo);
    if (!lo) {
        free(cp);
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    }
    size_t m = py_lower(cp, n, lo), k = 0;
    free(cp);
    for (size_t i = 0; i < m; i++)
        if (!is_ascii_punct(lo[i]))
            lo[k++] = lo[i];
    m = k;
    static const uint32_t art[3][3] = {{'a'}, {'a', 'n'}, {'t', 'h', 'e'}};
    for (size_t i = 0; i < m;) { /* \b(a|an|the)\b -> " " */
        if (!is_word(lo[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < m && is_word(lo[j]))
            j++;
        for (int a = 0; a < 3; a++) {
            size_t al = (size_t)a + 1;
            if (j - i == al && !memcmp(&lo[i], art[a], al * sizeof *lo)) {
                for (size_t q = i; q < j; q++)
                    lo[q] = ' ';
            }
        }
        i = j;
    }
    for (size_t i = 0; i < m;) {
        if (kw_py_isspace(lo[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < m && !kw_py_isspace(lo[j]))
            j++;
        tokv_push(t, &lo[i], j - i);
        i = j;
    }
    *buf = lo;
    return t->oom ? kw_error_set(err, KW_ENOMEM, "out of memory") : 0;
}

/* jieba.cut, then normalize_zh_answer per token, empty tokens dropped. */
static int zh_tokens(const kw_jieba *jb, const char *s, tokv *t, uint32_t **buf,
                     kw_error *err)
{
    if (!jb)
        return kw_error_set(err, KW_EINVAL, "the Chinese metrics need the jieba segmenter");
    kw_jieba_spans sp = {0};
    size_t len = strlen(s), n;
    int rc = kw_jieba_cut(jb, s, len, &sp, err);
    if (rc < 0)
        return rc;
    uint32_t *cp = kw_lb_decode(s, len, &n, err);
    uint32_t *lo = malloc((2 * n + 1) * sizeof *lo); /* never moves: tokens point in */
    if (!cp || !lo) {
        free(cp), free(lo);
        kw_jieba_spans_clear(&sp);
        return cp ? kw_error_set(err, KW_ENOMEM, "out of memory") : KW_EINVAL;
    }
    size_t k = 0, ci = 0, bo = 0;
    for (size_t i = 0; i < sp.n; i++) {
        size_t end = sp.v[i].off + sp.v[i].len, first = ci;
        while (bo < end) { /* the code points of this token */
            uint32_t c;
            bo += (size_t)kw_utf8_next(s + bo, len - bo, &c);
            ci++;
        }
        size_t tk = k;
        uint32_t tmp[2];
        for (size_t q = first; q < ci; q++) {
            size_t tn = py_lower(&cp[q], 1, tmp);
            for (size_t r = 0; r < tn; r++)
                if (!is_ascii_punct(tmp[r]) && !is_cn_punct(tmp[r]) && !kw_py_isspace(tmp[r]))
                    lo[k++] = tmp[r];
        }
        if (k > tk)
            tokv_push(t, &lo[tk], k - tk);
    }
    free(cp);
    kw_jieba_spans_clear(&sp);
    *buf = lo;
    return t->oom ? kw_error_set(err, KW_ENOMEM, "out of memory") : 0;
}

static int qa_f1(const kw_jieba *jb, bool zh, const char *pred, const char *ans, double *out,
                 kw_error *err)
{
    tokv a = {0}, b = {0};
    uint32_t *ba = NULL, *bb = NULL;
    int rc = zh ? zh_tokens(jb, pred, &a, &ba, err) : en_tokens(pred, &a, &ba, err);
    if (rc >= 0)
        rc = zh ? zh_tokens(jb, ans, &b, &bb, err) : en_tokens(ans, &b, &bb, err);
    if (rc >= 0)
        *out = f1_tokens(&a, &b);
    free(a.v), free(b.v), free(ba), free(bb);
    return rc;
}

/* ---- rouge_zh: jieba-cut both sides, join with spaces ---- */

static char *cut_join(const kw_jieba *jb, const char *s, kw_error *err)
{
    if (!jb) {
        kw_error_set(err, KW_EINVAL, "the Chinese metrics need the jieba segmenter");
        return NULL;
    }
    kw_jieba_spans sp = {0};
    size_t len = strlen(s);
    if (kw_jieba_cut(jb, s, len, &sp, err) < 0)
        return NULL;
    char *o = malloc(len + sp.n + 1), *w = o;
    if (!o) {
        kw_jieba_spans_clear(&sp);
        kw_error_set(err, KW_ENOMEM, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < sp.n; i++) {
        if (i)
            *w++ = ' ';
        memcpy(w, s + sp.v[i].off, sp.v[i].len);
        w += sp.v[i].len;
    }
    *w = '\0';
    kw_jieba_spans_clear(&sp);
    return o;
}

static int rouge_metric(const kw_jieba *jb, bool zh, const char *pred, const char *ans,
                        double *out, kw_error *err)
{
    if (!zh) {
        int rc = kw_rouge_l(pred, ans, KW_ROUGE_DEPTH_BUDGET, out, err);
        if (rc > 0)
            *out = 0.0;
        return rc < 0 ? rc : 0;
    }
    char *p = cut_join(jb, pred, err), *a = p ? cut_join(jb, ans, err) : NULL;
    int rc = a ? kw_rouge_l(p, a, KW_ROUGE_DEPTH_BUDGET - 1, out, err) : KW_EINVAL;
    if (rc > 0)
        *out = 0.0;
    if (!a && err && err->code)
        rc = err->code;
    free(p), free(a);
    return rc < 0 ? rc : 0;
}

/* ---- classification, retrieval, count ---- */

static double classification(const char *pred, const char *gt, const char *const *cls,
                             int n_cls)
{
    const char **em = malloc(((size_t)n_cls + 1) * sizeof *em);
    if (!em)
        return -1.0;
    int n = 0;
    for (int i = 0; i < n_cls; i++)
        if (strstr(pred, cls[i]))
            em[n++] = cls[i];
    /* for match_term in em_match_list: ... em_match_list.remove(match_term): the list
     * iterator keeps its index, so the element after a removed one is skipped */
    for (int idx = 0; idx < n; idx++) {
        const char *term = em[idx];
        if (strstr(gt, term) && strcmp(term, gt) != 0) {
            int first = 0;
            while (strcmp(em[first], term) != 0)
                first++;
            memmove(&em[first], &em[first + 1], (size_t)(n - first - 1) * sizeof *em);
            n--;
        }
    }
    double score = 0.0;
    for (int i = 0; i < n; i++)
        if (!strcmp(em[i], gt)) {
            score = 1.0 / n;
            break;
        }
    free(em);
    return score;
}

/* re.findall(r"\d+", s) compared with want: (#equal / #numbers) or 0.0. */
static int numbers_score(const char *s, const char *want, size_t want_n, double *out,
                         kw_error *err)
{
    size_t len = strlen(s), total = 0, right = 0;
    for (size_t i = 0; i < len;) {
        uint32_t c;
        int l = kw_utf8_next(s + i, len - i, &c);
        if (!l)
            return kw_error_set(err, KW_EINVAL, "prediction is not valid UTF-8 at byte %zu", i);
        if (!is_decimal(c)) {
            i += (size_t)l;
            continue;
        }
        size_t j = i;
        while (j < len && (l = kw_utf8_next(s + j, len - j, &c)) && is_decimal(c))
            j += (size_t)l;
        total++;
        right += (j - i == want_n && !memcmp(s + i, want, want_n));
        i = j;
    }
    *out = total ? (double)right / (double)total : 0.0;
    return 0;
}

/* The digits of the first "<prefix>\d+" in gt. */
static int paragraph_id(const char *gt, const char *prefix, const char **id, size_t *n,
                        kw_error *err)
{
    size_t pl = strlen(prefix), len = strlen(gt);
    for (const char *p = strstr(gt, prefix); p; p = strstr(p + 1, prefix)) {
        size_t i = (size_t)(p - gt) + pl, j = i;
        uint32_t c;
        int l;
        while (j < len && (l = kw_utf8_next(gt + j, len - j, &c)) && is_decimal(c))
            j += (size_t)l;
        if (j > i) {
            *id = gt + i, *n = j - i;
            return 0;
        }
    }
    return kw_error_set(err, KW_EINVAL, "answer '%.80s' has no '%s<number>'", gt, prefix);
}

/* ---- code_sim ---- */

int kw_fuzz_ratio(const char *a, const char *b, kw_error *err)
{
    if (!strcmp(a, b))
        return 100;
    if (!*a || !*b)
        return 0;
    size_t na, nb;
    uint32_t *ca = kw_lb_decode(a, strlen(a), &na, err);
    uint32_t *cb = ca ? kw_lb_decode(b, strlen(b), &nb, err) : NULL;
    int r = KW_EINVAL;
    if (ca && cb) {
        double q = kw_seqmatch_ratio(ca, na, cb, nb);
        r = q < 0 ? kw_error_set(err, KW_ENOMEM, "out of memory") : (int)nearbyint(100 * q);
    }
    free(ca), free(cb);
    return r;
}

static int code_sim(const char *pred, const char *gt, double *out, kw_error *err)
{
    while (*pred == '\n')
        pred++;
    const char *line = "", *p = pred;
    size_t ln = 0;
    for (;;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        bool bad = memchr(p, '`', n) || memchr(p, '#', n);
        for (size_t i = 0; !bad && i + 1 < n; i++)
            bad = p[i] == '/' && p[i + 1] == '/';
        if (!bad) {
            line = p, ln = n;
            break;
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    char *l = strndup(line, ln);
    if (!l)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    int r = kw_fuzz_ratio(l, gt, err);
    free(l);
    if (r < 0)
        return r;
    *out = r / 100.0;
    return 0;
}

/* ---- dispatch ---- */

int kw_lb_metric_score(kw_lb_metric m, const kw_jieba *jb, const char *pred,
                       const char *answer, const char *const *all_classes, int n_classes,
                       double *out, kw_error *err)
{
    const char *id = "";
    size_t n = 0;
    int rc;
    *out = 0.0;
    switch (m) {
    case KW_LB_QA_F1:
        return qa_f1(jb, false, pred, answer, out, err);
    case KW_LB_QA_F1_ZH:
        return qa_f1(jb, true, pred, answer, out, err);
    case KW_LB_ROUGE:
        return rouge_metric(jb, false, pred, answer, out, err);
    case KW_LB_ROUGE_ZH:
        return rouge_metric(jb, true, pred, answer, out, err);
    case KW_LB_CLASSIFICATION:
        if (!all_classes) /* the official code fails on a sample without classes */
            return kw_error_set(err, KW_EINVAL, "classification needs the sample's all_classes");
        *out = classification(pred, answer, all_classes, n_classes);
        return *out < 0 ? kw_error_set(err, KW_ENOMEM, "out of memory") : 0;
    case KW_LB_RETRIEVAL:
    case KW_LB_RETRIEVAL_ZH:
        rc = paragraph_id(answer, m == KW_LB_RETRIEVAL ? "Paragraph " : "\xe6\xae\xb5\xe8\x90\xbd",
                          &id, &n, err);
        return rc < 0 ? rc : numbers_score(pred, id, n, out, err);
    case KW_LB_COUNT:
        return numbers_score(pred, answer, strlen(answer), out, err);
    case KW_LB_CODE_SIM:
        return code_sim(pred, answer, out, err);
    }
    return kw_error_set(err, KW_EINVAL, "unknown metric %d", (int)m);
}

int kw_lb_sample_score(const char *task, const kw_jieba *jb, const char *pred,
                       const char *const *answers, int n_answers,
                       const char *const *all_classes, int n_classes, double *out,
                       kw_error *err)
{
    kw_lb_metric m;
    if (kw_lb_task_metric(task, &m) < 0)
        return kw_error_set(err, KW_ENOTFOUND, "unknown LongBench task '%s'", task);
    char *cut = NULL;
    if (kw_lb_task_first_line(task)) { /* prediction.lstrip('\n').split('\n')[0] */
        while (*pred == '\n')
            pred++;
        cut = strndup(pred, strcspn(pred, "\n"));
        if (!cut)
            return kw_error_set(err, KW_ENOMEM, "out of memory");
        pred = cut;
    }
    double best = 0.0;
    int rc = 0;
    for (int i = 0; i < n_answers && rc >= 0; i++) {
        double s;
        rc = kw_lb_metric_score(m, jb, pred, answers[i], all_classes, n_classes, &s, err);
        if (rc >= 0 && s > best)
            best = s;
    }
    free(cut);
    if (rc < 0)
        return rc;
    *out = best;
    return 0;
}

double kw_lb_task_score(const double *scores, size_t n)
{
    if (n == 0)
        return 0.0;
    double total = 0.0;
    for (size_t i = 0; i < n; i++)
        total += scores[i];
    char buf[64];
    snprintf(buf, sizeof buf, "%.2f", 100 * total / (double)n); /* round(x, 2) */
    return strtod(buf, NULL);
}
