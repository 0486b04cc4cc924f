/* Token ids back to text: single pieces, whole sequences and a streaming decoder that
 * never cuts a UTF-8 character between two outputs. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_impl.h"

/* SentencePiece tokenizers prepend a space when encoding; decoding drops it again. */
static int strips_prefix(const kw_tokenizer *tk)
{
    return !tk->o.byte_level && tk->o.add_space_prefix;
}

int kw_token_piece(const kw_tokenizer *tk, int32_t id, char *out, int cap)
{
    if (!tk || id < 0 || id >= tk->n || cap < 0 || (cap > 0 && !out))
        return KW_EINVAL;
    int n = tk->dec_len[id];
    if (n > cap)
        return KW_ERANGE;
    memcpy(out, tk->dec[id], (size_t)n);
    return n;
}

char *kw_detokenize(const kw_tokenizer *tk, const int32_t *ids, int n, int skip_special)
{
    if (!tk || n < 0 || (n > 0 && !ids))
        return NULL;
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tk->n)
            return NULL;
        len += (size_t)tk->dec_len[ids[i]];
    }
    char *s = malloc(len + 1);
    if (!s)
        return NULL;
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        int id = ids[i];
        if (skip_special && tk->type[id] == KW_TOKT_CONTROL)
            continue;
        int l = tk->dec_len[id];
        const char *p = tk->dec[id];
        if (k == 0 && l > 0 && p[0] == ' ' && strips_prefix(tk)) {
            p++;
            l--;
        }
        memcpy(s + k, p, (size_t)l);
        k += (size_t)l;
    }
    s[k] = '\0';
    return s;
}

static int lead_len(unsigned char c)
{
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

/* Bytes at the end of b[0, n) that start a character still missing its continuation
 * bytes; 0 when the end is complete (or broken beyond repair). */
static int incomplete_tail(const unsigned char *b, int n)
{
    for (int back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = b[n - back];
        if ((c & 0xC0) == 0x80)
            continue; /* a continuation byte: look further back */
        int need = lead_len(c);
        return need > back ? back : 0;
    }
    return 0;
}

int kw_detok_stream_push(const kw_tokenizer *tk, kw_detok_stream *s, int32_t id, char *out,
                         int cap)
{
    if (!tk || !s || id < 0 || id >= tk->n || cap < 0 || (cap > 0 && !out))
        return KW_EINVAL;
    if (s->skip_special && tk->type[id] == KW_TOKT_CONTROL)
        return 0;
    const char *p = tk->dec[id];
    int l = tk->dec_len[id];
    if (s->n_out == 0 && s->n_pend == 0 && l > 0 && p[0] == ' ' && strips_prefix(tk)) {
        p++;
        l--;
    }
    int total = s->n_pend + l;
    if (total + 1 > cap)
        return KW_ERANGE;
    memcpy(out, s->pend, (size_t)s->n_pend);
    memcpy(out + s->n_pend, p, (size_t)l);
    int keep = incomplete_tail((const unsigned char *)out, total);
    s->n_pend = keep;
    memcpy(s->pend, out + total - keep, (size_t)keep);
    int k = total - keep;
    out[k] = '\0';
    s->n_out += k;
    return k;
}

int kw_detok_stream_flush(kw_detok_stream *s, char *out, int cap)
{
    if (!s || cap < 0 || (cap > 0 && !out))
        return KW_EINVAL;
    if (s->n_pend + 1 > cap)
        return KW_ERANGE;
    int k = s->n_pend;
    memcpy(out, s->pend, (size_t)k);
    out[k] = '\0';
    s->n_pend = 0;
    s->n_out += k;
    return k;
}
