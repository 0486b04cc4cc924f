/* dataset.text — windows of a long UTF-8 text for teacher-forced evaluation (perplexity,
 * fidelity to full attention). The whole file is tokenized once with the model's
 * tokenizer; sample i is the window of `prefill` P + `steps` T tokens at offset o_i, as
 * a record
 *
 *   {"id", "index", "offset" (o_i, in the text's tokens), "prefill", "steps", "path",
 *    "ids": the P prompt tokens (BOS first when the tokenizer adds one),
 *    "continuation": the next T tokens, "max_new": T}
 *
 * tokenize.ids turns it into tokens (prompt ids, extra.continuation, max_new = T): what
 * decode.teacher_forced and decode.fidelity take without further params. (One output:
 * the executor carries a data set's first output only.)
 *
 * Offsets are evenly spaced over the text (first window at 0, last one at the end; the
 * default) or drawn uniformly from a seeded counter-based generator (`offsets: random`).
 *
 * newlines: lf (default) drops every CR, so CRLF (and the CR CR LF of some PG-19 files)
 * become LF; keep leaves the text as it is. The file's path and sha256 and the text's
 * token count go to the run's provenance. Errors at init: a missing, empty or non-UTF-8
 * file (with the byte offset), a text shorter than one window. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "kvweave/engine.h"
#include "kvweave/op.h"
#include "kvweave/util.h"

static const kw_port outs[] = {
    {"samples", KW_T_SAMPLE, KW_EACH, 0,
     "id, index, offset, prefill, steps, path, ids (P), continuation (T), max_new (T)"},
};
static const kw_param_spec params[] = {
    {"path", KW_PARAM_STRING, NULL, 0, 0, NULL,
     "a UTF-8 text file, e.g. ${KVWEAVE_DATA}/text/pg19_frank_merriwell_down_south.txt"},
    {"n", KW_PARAM_INT, "4", 1, 1000000, NULL, "windows (samples)"},
    {"prefill", KW_PARAM_INT, "1024", 1, 1 << 24, NULL, "P: prompt tokens per window"},
    {"steps", KW_PARAM_INT, "64", 1, 1 << 24, NULL, "T: teacher-forced tokens per window"},
    {"offsets", KW_PARAM_ENUM, "even", 0, 0, "even|random",
     "even: spread over the whole text; random: seeded uniform offsets"},
    {"seed", KW_PARAM_INT, "0", 0, 0, NULL, "with offsets: random"},
    {"newlines", KW_PARAM_ENUM, "lf", 0, 0, "lf|keep", "lf: drop every CR; keep: as is"},
};

typedef struct state {
    int32_t *ids; /* the text's tokens, without a leading BOS */
    int n_ids;
    int bos;      /* >= 0: prepended to every window */
    int64_t next;
    char path[4096];
} state;

/* The first byte offset that does not start a valid UTF-8 sequence, or n. */
static size_t utf8_bad_at(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i,
                                              (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0)
            return i;
        i += (size_t)k;
    }
    return n;
}

static int load_text(const char *path, bool lf, char **out, kw_error *err)
{
    char *txt = NULL;
    size_t n = 0;
    int rc = kw_read_file(path, &txt, &n, err);
    if (rc < 0)
        return rc;
    if (n == 0 || strlen(txt) != n) {
        free(txt);
        return n == 0 ? kw_error_set(err, KW_EINVAL, "dataset.text: '%s' is empty", path)
                      : kw_error_set(err, KW_EFORMAT, "dataset.text: '%s' has a NUL byte at "
                                     "offset %zu", path, strlen(txt));
    }
    size_t bad = utf8_bad_at(txt, n);
    if (bad < n) {
        rc = kw_error_set(err, KW_EFORMAT, "dataset.text: '%s' is not UTF-8: byte 0x%02x at "
                          "offset %zu", path, (unsigned char)txt[bad], bad);
        free(txt);
        return rc;
    }
    if (lf) {
        size_t w = 0;
        for (size_t i = 0; i < n; i++)
            if (txt[i] != '\r')
                txt[w++] = txt[i];
        txt[w] = '\0';
    }
    *out = txt;
    return 0;
}

static int tokenize_text(state *st, const kw_model *m, const char *text, kw_error *err)
{
    int n = kw_tokenize(m->tok, text, 0, NULL, 0);
    if (n < 0)
        return kw_error_set(err, n, "dataset.text: tokenizing '%s' failed", st->path);
    st->ids = malloc(sizeof(int32_t) * ((size_t)n + 1));
    if (!st->ids)
        return kw_error_set(err, KW_ENOMEM, "dataset.text: out of memory for %d tokens", n);
    st->n_ids = kw_tokenize(m->tok, text, 0, st->ids, n);
    if (st->n_ids < 0)
        return kw_error_set(err, st->n_ids, "dataset.text: tokenizing '%s' failed", st->path);
    st->bos = -1;
    if (m->cfg.add_bos && m->cfg.bos_id >= 0 && st->n_ids > 0 && st->ids[0] == m->cfg.bos_id) {
        st->bos = m->cfg.bos_id;
        memmove(st->ids, st->ids + 1, sizeof(int32_t) * (size_t)--st->n_ids);
    }
    return 0;
}

static int init(kw_opctx *c, void *vst, kw_error *err)
{
    state *st = vst;
    const char *path = kw_param_str(c, "path");
    snprintf(st->path, sizeof st->path, "%s", path);
    char *text = NULL, sha[65];
    int rc = load_text(path, !strcmp(kw_param_str(c, "newlines"), "lf"), &text, err);
    if (rc < 0)
        return rc;
    if ((rc = kw_sha256_file(path, sha, err)) < 0) {
        free(text);
        return rc;
    }
    struct kw_engine *e = kw_ctx_engine(c);
    const kw_model *m = e ? kw_engine_model(e) : NULL;
    if (!m || !m->tok)
        rc = kw_error_set(err, KW_EINVAL, "dataset.text needs the model's tokenizer, and no "
                          "model is loaded");
    else
        rc = tokenize_text(st, m, text, err);
    free(text);
    if (rc < 0)
        return rc;
    int64_t P = kw_param_int(c, "prefill"), T = kw_param_int(c, "steps");
    int64_t need = P - (st->bos >= 0) + T;
    if (need > st->n_ids)
        return kw_error_set(err, KW_ERANGE, "dataset.text: '%s' has %d tokens, fewer than one "
                            "window of prefill %lld + steps %lld", path, st->n_ids,
                            (long long)P, (long long)T);
    char num[32];
    kw_ctx_record(c, "dataset.path", path);
    kw_ctx_record(c, "dataset.sha256", sha);
    snprintf(num, sizeof num, "%d", st->n_ids);
    kw_ctx_record(c, "dataset.tokens", num);
    return 0;
}

/* Offset of window i among n over `span` + 1 possible starts. */
static int64_t window_at(kw_opctx *c, int64_t i, int64_t n, int64_t span)
{
    if (!strcmp(kw_param_str(c, "offsets"), "random")) {
        uint64_t s = (uint64_t)kw_param_int(c, "seed") * 0x100000001b3ULL + (uint64_t)i;
        kw_splitmix64(&s);
        return (int64_t)(kw_splitmix64(&s) % (uint64_t)(span + 1));
    }
    return n > 1 ? (int64_t)llround((double)i * (double)span / (double)(n - 1)) : 0;
}

static json_t *id_array(const int32_t *v, int n, int32_t first)
{
    json_t *a = json_array();
    if (a && first >= 0)
        json_array_append_new(a, json_integer(first));
    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, json_integer(v[i]));
    return a;
}

static int run(kw_opctx *c, void *vst, kw_task *t)
{
    state *st = vst;
    int64_t n = kw_param_int(c, "n");
    if (st->next >= n)
        return KW_END;
    int64_t i = st->next++;
    int P = (int)kw_param_int(c, "prefill"), T = (int)kw_param_int(c, "steps");
    int body = P - (st->bos >= 0);
    int64_t off = window_at(c, i, n, st->n_ids - (int64_t)body - T);
    char id[64];
    snprintf(id, sizeof id, "text-%lld", (long long)i);
    json_t *rec = json_pack("{s:s,s:I,s:I,s:i,s:i,s:s,s:o,s:o,s:i}", "id", id, "index",
                            (json_int_t)i, "offset", (json_int_t)off, "prefill", P, "steps", T,
                            "path", st->path, "ids", id_array(st->ids + off, body, st->bos),
                            "continuation", id_array(st->ids + off + body, T, -1), "max_new", T);
    if (!rec)
        return kw_task_fail(t, KW_ENOMEM, "out of memory");
    return kw_task_out(t, 0, kw_value_json(KW_T_SAMPLE, rec));
}

static void fini(kw_opctx *c, void *vst)
{
    (void)c;
    state *st = vst;
    free(st->ids);
}

const kw_op kw_op_dataset_text = {
    .size = sizeof(kw_op),
    .abi = KW_OP_ABI,
    .name = "dataset.text",
    .version = 1,
    .doc = "windows of prefill + steps tokens of a UTF-8 text file (evenly spaced or seeded "
           "random offsets) as records with the token ids (ids: P prompt tokens, "
           "continuation: T more); tokenize.ids makes them tokens for teacher forcing",
    .lanes = KW_LANE_CPU,
    .flags = KW_OP_SOURCE | KW_OP_SERIAL | KW_OP_NEEDS_MODEL,
    .outputs = outs,
    .n_outputs = 1,
    .params = params,
    .n_params = sizeof params / sizeof params[0],
    .state_size = sizeof(state),
    .init = init,
    .run = run,
    .fini = fini,
};
