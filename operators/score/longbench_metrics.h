/* LongBench v1 metrics, reproduced from the official metrics.py and eval.py.
 *
 * Every metric returns exactly the float the official Python returns (quirks included:
 * classification_score's removal while iterating, pltrdy rouge's distinct-word ROUGE-L
 * and its failure cases, fuzzywuzzy's ratio computed by difflib without
 * python-Levenshtein). Strings are UTF-8 and are handled as Python handles str: as code
 * points (lower() with Unicode case mapping, split() on Unicode white space, \d and \b
 * Unicode-aware).
 *
 *   kw_lb_metric m;
 *   kw_lb_task_metric("multifieldqa_zh", &m);               // KW_LB_QA_F1_ZH
 *   const char *ans[] = {"北京"};
 *   double s;
 *   kw_lb_sample_score("multifieldqa_zh", jb, "在北京。", ans, 1, NULL, 0, &s, &err);
 *   ... collect s over the samples, then
 *   double task = kw_lb_task_score(scores, n);               // 100*mean, 2 decimals
 *
 * The Chinese metrics (qa_f1_zh, rouge_zh) need a kw_jieba (jieba.h); the others accept
 * NULL.
 */
#ifndef KW_OPERATORS_SCORE_LONGBENCH_METRICS_H
#define KW_OPERATORS_SCORE_LONGBENCH_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jieba.h"
#include "kvweave/status.h"

typedef enum kw_lb_metric {
    KW_LB_QA_F1,
    KW_LB_QA_F1_ZH,
    KW_LB_ROUGE,
    KW_LB_ROUGE_ZH,
    KW_LB_CLASSIFICATION,
    KW_LB_RETRIEVAL,
    KW_LB_RETRIEVAL_ZH,
    KW_LB_COUNT,
    KW_LB_CODE_SIM,
} kw_lb_metric;

/* "qa_f1", "qa_f1_zh", "rouge", "rouge_zh", "classification", "retrieval",
 * "retrieval_zh", "count", "code_sim"; KW_ENOTFOUND otherwise. */
int kw_lb_metric_by_name(const char *name, kw_lb_metric *out);
const char *kw_lb_metric_name(kw_lb_metric m);
/* The metric of a LongBench v1 task (eval.py's dataset2metric); KW_ENOTFOUND for an
 * unknown task. */
int kw_lb_task_metric(const char *task, kw_lb_metric *out);
/* The names of the 21 tasks, NULL-terminated. */
extern const char *const kw_lb_tasks[];
/* trec, triviaqa, samsum, lsht: the prediction is cut to its first line before scoring. */
bool kw_lb_task_first_line(const char *task);
/* trec, triviaqa, samsum, lsht, lcc, repobench-p: prompts without a chat template. */
bool kw_lb_task_no_chat(const char *task);

/* One prediction against one answer. all_classes is used by classification only.
 * KW_EINVAL: invalid UTF-8, a retrieval answer without its paragraph number (the
 * official script raises there), or a Chinese metric without jieba. */
int kw_lb_metric_score(kw_lb_metric m, const kw_jieba *jb, const char *pred,
                       const char *answer, const char *const *all_classes, int n_classes,
                       double *out, kw_error *err);

/* eval.py's per-sample score: first-line cut where the task asks for it, then the max
 * over the answers (starting from 0). */
int kw_lb_sample_score(const char *task, const kw_jieba *jb, const char *pred,
                       const char *const *answers, int n_answers,
                       const char *const *all_classes, int n_classes, double *out,
                       kw_error *err);

/* round(100 * sum / n, 2), summing in order as eval.py does; 0 for n == 0. */
double kw_lb_task_score(const double *scores, size_t n);

/* ---- parts, exposed for the tests ---- */

/* ROUGE-L F of pltrdy rouge 1.0.1's get_scores([hyp], [ref], avg=True)["rouge-l"]["f"].
 * Returns 0 and sets *f, or 1 when the package raises (an empty side; its recursive LCS
 * walk going deeper than depth_budget calls: Python's recursion limit less the frames
 * of the caller), where the official scorer uses 0.0. */
int kw_rouge_l(const char *hyp, const char *ref, int depth_budget, double *f, kw_error *err);
/* The recursion budget of _recon under LongBench's eval.py run by CPython 3.11 (limit
 * 1000): rouge_score called from the scorer (rouge), or through rouge_zh_score (one
 * frame less). Measured with the official call chain; tests/eval/compare_metrics.py
 * checks both edges. */
#define KW_ROUGE_DEPTH_BUDGET 991

/* difflib.SequenceMatcher(None, a, b).ratio() over code points (autojunk on). */
double kw_seqmatch_ratio(const uint32_t *a, size_t la, const uint32_t *b, size_t lb);
/* fuzzywuzzy fuzz.ratio(a, b) without python-Levenshtein: 100 when equal, 0 when one is
 * empty, else round-half-even(100 * ratio). */
int kw_fuzz_ratio(const char *a, const char *b, kw_error *err);

/* Python's str.isspace() / the white space of str.split() and of re's \s. */
static inline int kw_py_isspace(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* UTF-8 -> code points (malloc'd, *n set); NULL with err on invalid UTF-8 or OOM. */
uint32_t *kw_lb_decode(const char *s, size_t len, size_t *n, kw_error *err);

#endif
