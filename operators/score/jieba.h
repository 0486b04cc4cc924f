/* jieba precise-mode Chinese word segmentation, in C.
 *
 * Reproduces `jieba.cut(s, cut_all=False, HMM=True)` of jieba 0.42 token for token:
 * the text is split into blocks of [\u4E00-\u9FD5a-zA-Z0-9+#&._%-]; each block is cut by
 * the prefix-dictionary DAG and the route of maximal log-probability (ties go to the
 * longer word, as Python's max over (logp, end) tuples does); runs of single characters
 * that the dictionary does not know are cut by the finalseg HMM (Viterbi over BMES).
 * Characters outside the blocks come out one by one ("\r\n" as one token).
 *
 *   kw_jieba *jb = NULL;
 *   kw_error err = {0};
 *   if (kw_jieba_open(NULL, &jb, &err) < 0) ...           // finds its data, see below
 *   kw_jieba_spans sp = {0};
 *   kw_jieba_cut(jb, text, strlen(text), &sp, &err);
 *   for (size_t i = 0; i < sp.n; i++) printf("%.*s|", (int)sp.v[i].len, text + sp.v[i].off);
 *   kw_jieba_spans_clear(&sp);
 *   jb = kw_jieba_free(jb);
 *
 * Data: jieba's dict.txt and hmm.tsv (the finalseg tables as text), written by
 * operators/score/jieba_data.py from the installed python3-jieba package (nothing of
 * jieba is in kvweave's sources). The build writes them into <build>/operators/score and
 * setup.sh into $KVWEAVE_HOME/jieba. kw_jieba_open(NULL) looks in $KVWEAVE_JIEBA (a
 * directory), then the build directory compiled in, then $KVWEAVE_HOME/jieba (default
 * ~/.cache/kvweave/jieba). A loaded kw_jieba is read-only: one may serve many threads.
 */
#ifndef KW_OPERATORS_SCORE_JIEBA_H
#define KW_OPERATORS_SCORE_JIEBA_H

#include <stddef.h>
#include <stdint.h>

#include "kvweave/status.h"

typedef struct kw_jieba kw_jieba;

/* A token: byte offset and byte length inside the text that was cut. */
typedef struct kw_jieba_span {
    size_t off, len;
} kw_jieba_span;

typedef struct kw_jieba_spans {
    kw_jieba_span *v;
    size_t n, cap;
} kw_jieba_spans;

/* dir (nullable): a directory with dict.txt and hmm.tsv; NULL searches the places above.
 * KW_ENOTFOUND when no data is found, KW_EFORMAT for a broken file (file:line named). */
int kw_jieba_open(const char *dir, kw_jieba **out, kw_error *err);
/* Accepts NULL; returns NULL. */
kw_jieba *kw_jieba_free(kw_jieba *jb);
/* The directory the data came from (transfer none). */
const char *kw_jieba_dir(const kw_jieba *jb);

/* Appends the tokens of text[0..n) to out (out->n is not reset). Returns 0, KW_EINVAL
 * for text that is not valid UTF-8 (the byte offset is named), KW_ENOMEM. */
int kw_jieba_cut(const kw_jieba *jb, const char *text, size_t n, kw_jieba_spans *out,
                 kw_error *err);
/* Frees the array; leaves an empty, reusable struct. */
void kw_jieba_spans_clear(kw_jieba_spans *s);

/* Dictionary frequency of a word (0 for a prefix-only entry, -1 when absent). */
int64_t kw_jieba_freq(const kw_jieba *jb, const char *word, size_t n);

/* UTF-8 decoding shared with the metrics: decodes one code point at s[0..n), sets *cp and
 * returns its byte length, or 0 for an invalid sequence (overlong, surrogate, > U+10FFFF,
 * truncated). */
int kw_utf8_next(const char *s, size_t n, uint32_t *cp);

#endif
