/* Tokenizer: byte-level BPE (GPT-2 / Llama-3 / Qwen2) and SentencePiece-style BPE with
 * byte fallback.
 *
 * Encoding: special tokens are cut out first (leftmost, longest); each segment between
 * them is NFC-normalized when asked, SentencePiece segments get "▁" for spaces, then the
 * pre-tokenizer regexes split it into words (each regex splits every piece of the
 * previous one into its matches and the gaps between them; a lookahead never sees past
 * its piece, as in the Hugging Face tokenizers), and every word is merged by BPE: a
 * linked list of symbols and a binary heap of candidate pairs ordered by merge rank (or
 * by negated token score), ties to the left, so a word of n bytes costs O(n log n).
 */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer_impl.h"

/* ---- GPT-2 byte map ---- */

static int byte_is_printable(unsigned b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

uint32_t kw__tok_byte_cp(uint8_t b)
{
    if (byte_is_printable(b))
        return b;
    uint32_t k = 0;
    for (unsigned c = 0; c < b; c++)
        k += !byte_is_printable(c);
    return 256 + k;
}

/* ---- UTF-8 ---- */

static int utf8_put(uint32_t cp, char *o)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
}

/* ---- string -> id map (open addressing over the tokenizer's own strings) ---- */

static int strmap_init(strmap *m, int n, char **keys, int *klen)
{
    size_t cap = 16;
    while (cap < (size_t)n * 2 + 2)
        cap <<= 1;
    m->slot = calloc(cap, sizeof *m->slot);
    m->mask = cap - 1;
    m->keys = keys;
    m->klen = klen;
    return m->slot ? 0 : KW_ENOMEM;
}

/* Keeps the first id of a duplicated key. */
static void strmap_put(strmap *m, int id)
{
    const char *s = m->keys[id];
    size_t n = (size_t)m->klen[id];
    for (size_t i = hash_bytes(s, n) & m->mask;; i = (i + 1) & m->mask) {
        uint32_t v = m->slot[i];
        if (!v) {
            m->slot[i] = (uint32_t)id + 1;
            return;
        }
        int o = (int)v - 1;
        if ((size_t)m->klen[o] == n && memcmp(m->keys[o], s, n) == 0)
            return;
    }
}

/* ---- (left id, right id) -> (rank, merged id) ---- */

/* ---- the tokenizer ---- */

static const char k_gpt2_re[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char k_llama3_re[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char k_qwen2_re[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

int kw__tok_pre_by_name(const char *pre, kw__tok_opts *o, kw_error *err)
{
    if (!pre || !*pre || !strcmp(pre, "gpt2") || !strcmp(pre, "default")) {
        o->splits[0] = k_gpt2_re;
        o->n_splits = 1;
    } else if (!strcmp(pre, "smollm")) {
        /* SmolLM2: Digits(individual_digits) then the byte-level regex */
        o->splits[0] = "\\p{N}";
        o->splits[1] = k_gpt2_re;
        o->n_splits = 2;
    } else if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3")) {
        o->splits[0] = k_llama3_re;
        o->n_splits = 1;
        o->ignore_merges = true;
    } else if (!strcmp(pre, "qwen2")) {
        o->splits[0] = k_qwen2_re;
        o->n_splits = 1;
        o->nfc = true;
    } else {
        return kw_error_set(err, KW_EINVAL,
                            "unknown pre-tokenizer '%s' (known: gpt2, default, smollm, "
                            "llama-bpe, llama3, qwen2)", pre);
    }
    return 0;
}

kw_tokenizer *kw_tokenizer_free(kw_tokenizer *tk)
{
    if (!tk)
        return NULL;
    for (int i = 0; i < tk->n; i++) {
        if (tk->dec && tk->dec[i] != tk->text[i])
            free(tk->dec[i]);
        if (tk->text)
            free(tk->text[i]);
    }
    for (int i = 0; i < KW_TOK_MAX_SPLITS; i++)
        pcre2_code_free(tk->re[i]);
    free(tk->text);
    free(tk->text_len);
    free(tk->dec);
    free(tk->dec_len);
    free(tk->type);
    free(tk->score);
    free(tk->by_text.slot);
    free(tk->by_dec.slot);
    free(tk->pairs.e);
    free(tk->special);
    free(tk);
    return NULL;
}

/* Bytes a token stands for: byte-level tokens are mapped back through the byte map
 * (characters outside it are kept as UTF-8, as special tokens are); SentencePiece "▁"
 * is a space and "<0xXX>" a raw byte. */
static char *token_bytes(const kw_tokenizer *tk, int id, const int16_t rev[512], int *len)
{
    const char *s = tk->text[id];
    int n = tk->text_len[id], k = 0;
    char *o = malloc((size_t)n + 1);
    if (!o)
        return NULL;
    if (tk->type[id] == KW_TOKT_CONTROL || tk->type[id] == KW_TOKT_USER) {
        memcpy(o, s, (size_t)n);
        k = n;
    } else if (tk->o.byte_level) {
        for (int i = 0; i < n;) {
            int l = utf8_step(s + i, (size_t)(n - i));
            utf8proc_int32_t cp = -1;
            if (l > 1 || (unsigned char)s[i] < 0x80)
                utf8proc_iterate((const utf8proc_uint8_t *)s + i, l, &cp);
            if (cp >= 0 && cp < 512 && rev[cp] >= 0)
                o[k++] = (char)rev[cp];
            else
                for (int j = 0; j < l; j++) o[k++] = s[i + j];
            i += l;
        }
    } else if (tk->type[id] == KW_TOKT_BYTE && n == 6 && !strncmp(s, "<0x", 3)) {
        o[k++] = (char)strtol(s + 3, NULL, 16);
    } else {
        for (int i = 0; i < n; i++) {
            if (i + 2 < n && !memcmp(s + i, "\xE2\x96\x81", 3)) {
                o[k++] = ' ';
                i += 2;
            } else {
                o[k++] = s[i];
            }
        }
    }
    *len = k;
    return o;
}

static int build_tokens(kw_tokenizer *tk, const kw_tokenizer_spec *sp, kw_error *err)
{
    int n = tk->n;
    tk->text = calloc((size_t)n, sizeof *tk->text);
    tk->text_len = calloc((size_t)n, sizeof *tk->text_len);
    tk->dec = calloc((size_t)n, sizeof *tk->dec);
    tk->dec_len = calloc((size_t)n, sizeof *tk->dec_len);
    tk->type = calloc((size_t)n, sizeof *tk->type);
    if (sp->scores)
        tk->score = malloc((size_t)n * sizeof *tk->score);
    if (!tk->text || !tk->text_len || !tk->dec || !tk->dec_len || !tk->type ||
        (sp->scores && !tk->score))
        return kw_error_set(err, KW_ENOMEM, "out of memory for %d tokens", n);
    int16_t rev[512]; /* byte-map code point -> byte */
    for (int i = 0; i < 512; i++)
        rev[i] = -1;
    for (int b = 0; b < 256; b++)
        rev[kw__tok_byte_cp((uint8_t)b)] = (int16_t)b;
    for (int i = 0; i < n; i++) {
        const char *s = sp->tokens[i] ? sp->tokens[i] : "";
        tk->text_len[i] = (int)strlen(s);
        tk->text[i] = strdup(s);
        tk->type[i] = sp->types ? sp->types[i] : KW_TOKT_NORMAL;
        if (sp->scores)
            tk->score[i] = sp->scores[i];
        if (!tk->text[i])
            return kw_error_set(err, KW_ENOMEM, "out of memory for token %d", i);
        tk->dec[i] = token_bytes(tk, i, rev, &tk->dec_len[i]);
        if (!tk->dec[i])
            return kw_error_set(err, KW_ENOMEM, "out of memory for token %d", i);
    }
    if (strmap_init(&tk->by_text, n, tk->text, tk->text_len) < 0 ||
        (tk->o.byte_level && strmap_init(&tk->by_dec, n, tk->dec, tk->dec_len) < 0))
        return kw_error_set(err, KW_ENOMEM, "out of memory for the vocabulary map");
    for (int i = 0; i < n; i++) {
        if (tk->type[i] != KW_TOKT_UNUSED)
            strmap_put(&tk->by_text, i);
        if (tk->o.byte_level && tk->type[i] != KW_TOKT_UNUSED)
            strmap_put(&tk->by_dec, i);
    }
    for (int b = 0; b < 256; b++) {
        char buf[8];
        if (tk->o.byte_level) {
            int l = utf8_put(kw__tok_byte_cp((uint8_t)b), buf);
            tk->byte_tok[b] = strmap_get(&tk->by_text, buf, (size_t)l);
        } else {
            tk->byte_tok[b] = -1;
        }
    }
    if (!tk->o.byte_level)
        for (int i = 0; i < n; i++)
            if (tk->type[i] == KW_TOKT_BYTE && tk->dec_len[i] == 1)
                tk->byte_tok[(unsigned char)tk->dec[i][0]] = i;
    return 0;
}

static int build_merges(kw_tokenizer *tk, const kw_tokenizer_spec *sp,
                        const kw__tok_opts *o, kw_error *err)
{
    size_t cap = 16;
    while (cap < (size_t)sp->n_merges * 2 + 2)
        cap <<= 1;
    tk->pairs.e = calloc(cap, sizeof *tk->pairs.e);
    tk->pairs.mask = cap - 1;
    if (!tk->pairs.e)
        return kw_error_set(err, KW_ENOMEM, "out of memory for %d merges", sp->n_merges);
    char *cat = NULL;
    size_t catcap = 0;
    for (int r = 0; r < sp->n_merges; r++) {
        const char *a = o->merge_left[r], *b = o->merge_right[r];
        size_t la = strlen(a), lb = strlen(b);
        int ia = strmap_get(&tk->by_text, a, la), ib = strmap_get(&tk->by_text, b, lb);
        if (la + lb > catcap) {
            catcap = (la + lb) * 2;
            char *c = realloc(cat, catcap);
            if (!c) { free(cat); return kw_error_set(err, KW_ENOMEM, "out of memory"); }
            cat = c;
        }
        memcpy(cat, a, la);
        memcpy(cat + la, b, lb);
        int im = strmap_get(&tk->by_text, cat, la + lb);
        if (ia < 0 || ib < 0 || im < 0)
            continue; /* a merge whose parts or result are not tokens can never apply */
        size_t s = pair_slot(&tk->pairs, pair_key(ia, ib));
        if (!tk->pairs.e[s].key)
            tk->pairs.e[s] = (pair_ent){pair_key(ia, ib), r, im};
    }
    free(cat);
    return 0;
}

static int cmp_special(const void *a, const void *b, void *tkp)
{
    const kw_tokenizer *tk = tkp;
    int x = *(const int *)a, y = *(const int *)b;
    if (tk->text_len[x] != tk->text_len[y])
        return tk->text_len[y] - tk->text_len[x];
    return x - y;
}

static int build_specials(kw_tokenizer *tk, kw_error *err)
{
    tk->special = malloc(((size_t)tk->n + 1) * sizeof *tk->special);
    if (!tk->special)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    for (int i = 0; i < tk->n; i++)
        if ((tk->type[i] == KW_TOKT_CONTROL || tk->type[i] == KW_TOKT_USER) &&
            tk->text_len[i] > 0) {
            tk->special[tk->n_special++] = i;
            unsigned char c = (unsigned char)tk->text[i][0];
            tk->special_first[c >> 3] |= (uint8_t)(1u << (c & 7));
        }
    qsort_r(tk->special, (size_t)tk->n_special, sizeof *tk->special, cmp_special, tk);
    return 0;
}

/* The Unicode White_Space property, which \s means in the Hugging Face tokenizers
 * (Oniguruma). PCRE2's \s also takes U+180E (in its \h list) and would keep "\r\n"
 * before a U+180E together where the reference splits it. */
#define WS_SET "\\t\\n\\x0B\\f\\r\\x{85}\\p{Z}"

/* pattern with \s and \S spelled as White_Space classes; malloc'd. */
static char *rewrite_ws(const char *p)
{
    size_t n = strlen(p), k = 0;
    char *o = malloc(n * (sizeof WS_SET + 4) + 1);
    if (!o)
        return NULL;
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' && i + 1 < n) {
            char c = p[i + 1];
            const char *rep = NULL;
            if (c == 's')
                rep = in_class ? WS_SET : "[" WS_SET "]";
            else if (c == 'S' && !in_class)
                rep = "[^" WS_SET "]";
            if (rep) {
                memcpy(o + k, rep, strlen(rep));
                k += strlen(rep);
            } else {
                o[k++] = p[i];
                o[k++] = c;
            }
            i++;
            continue;
        }
        if (p[i] == '[' && !in_class) {
            in_class = 1;
            o[k++] = p[i];
            if (i + 1 < n && p[i + 1] == '^') o[k++] = p[++i];
            if (i + 1 < n && p[i + 1] == ']') o[k++] = p[++i]; /* a leading ']' is literal */
            continue;
        }
        if (p[i] == ']' && in_class)
            in_class = 0;
        o[k++] = p[i];
    }
    o[k] = '\0';
    return o;
}

static int build_regexes(kw_tokenizer *tk, const kw__tok_opts *o, kw_error *err)
{
    for (int i = 0; i < o->n_splits; i++) {
        int ec;
        PCRE2_SIZE eo;
        char *pat = rewrite_ws(o->splits[i]);
        if (!pat)
            return kw_error_set(err, KW_ENOMEM, "out of memory");
        tk->re[i] = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ec, &eo,
                                  NULL);
        free(pat);
        if (!tk->re[i]) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(ec, msg, sizeof msg);
            return kw_error_set(err, KW_EINVAL,
                                "pre-tokenizer regex %d '%s': %s at offset %zu", i,
                                o->splits[i], (const char *)msg, (size_t)eo);
        }
        pcre2_jit_compile(tk->re[i], PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    }
    return 0;
}

static int check_id(int id, int n, const char *what, kw_error *err)
{
    if (id < -1 || id >= n)
        return kw_error_set(err, KW_ERANGE, "tokenizer %s id %d is outside the vocabulary "
                            "of %d tokens", what, id, n);
    return 0;
}

int kw__tokenizer_build(const kw_tokenizer_spec *sp, const kw__tok_opts *o,
                        kw_tokenizer **out, kw_error *err)
{
    *out = NULL;
    if (sp->n_vocab <= 0 || !sp->tokens)
        return kw_error_set(err, KW_EINVAL, "tokenizer has no tokens (n_vocab %d)",
                            sp->n_vocab);
    if (sp->n_merges < 0 || (sp->n_merges > 0 && (!o->merge_left || !o->merge_right)))
        return kw_error_set(err, KW_EINVAL, "tokenizer merges are missing (n_merges %d)",
                            sp->n_merges);
    int rc;
    if ((rc = check_id(sp->bos_id, sp->n_vocab, "bos", err)) < 0 ||
        (rc = check_id(sp->eos_id, sp->n_vocab, "eos", err)) < 0 ||
        (rc = check_id(sp->unk_id, sp->n_vocab, "unknown", err)) < 0)
        return rc;
    if (sp->add_bos && sp->bos_id < 0)
        return kw_error_set(err, KW_EINVAL, "tokenizer adds BOS but has no bos id");
    kw_tokenizer *tk = calloc(1, sizeof *tk);
    if (!tk)
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    tk->o = *o;
    tk->o.merge_left = tk->o.merge_right = NULL;
    for (int i = 0; i < KW_TOK_MAX_SPLITS; i++)
        tk->o.splits[i] = NULL;
    tk->o.use_scores = o->use_scores || (!o->byte_level && sp->n_merges == 0 && sp->scores);
    tk->n = sp->n_vocab;
    tk->bos = sp->bos_id;
    tk->eos = sp->eos_id;
    tk->unk = sp->unk_id;
    tk->add_bos = sp->add_bos;
    tk->add_eos = sp->add_eos && sp->eos_id >= 0;
    if ((rc = build_tokens(tk, sp, err)) < 0 || (rc = build_merges(tk, sp, o, err)) < 0 ||
        (rc = build_specials(tk, err)) < 0 || (rc = build_regexes(tk, o, err)) < 0) {
        kw_tokenizer_free(tk);
        return rc;
    }
    /* a byte-level vocabulary may lack bytes (SmolLM2 has no 0x04, 0xC0, 0xF5-0xFF,
     * ...): such a byte is dropped, as llama.cpp and an HF BPE without unk_token do */
    *out = tk;
    return 0;
}

int kw_tokenizer_new(const kw_tokenizer_spec *sp, kw_tokenizer **out, kw_error *err)
{
    *out = NULL;
    kw__tok_opts o = {0};
    const char *model = sp->model ? sp->model : "gpt2";
    if (!strcmp(model, "gpt2")) {
        o.byte_level = true;
        o.drop_unknown = true;
        int rc = kw__tok_pre_by_name(sp->pre, &o, err);
        if (rc < 0)
            return rc;
    } else if (!strcmp(model, "llama")) {
        o.byte_fallback = true;
        o.add_space_prefix = !sp->no_space_prefix;
    } else {
        return kw_error_set(err, KW_EINVAL, "unknown tokenizer model '%s' (known: gpt2, "
                            "llama)", model);
    }
    char **l = NULL, **r = NULL;
    if (sp->n_merges > 0) {
        l = calloc((size_t)sp->n_merges, sizeof *l);
        r = calloc((size_t)sp->n_merges, sizeof *r);
        if (!l || !r) {
            free(l); free(r);
            return kw_error_set(err, KW_ENOMEM, "out of memory for %d merges", sp->n_merges);
        }
    }
    int rc = 0;
    for (int i = 0; i < sp->n_merges && rc == 0; i++) {
        const char *m = sp->merges[i] ? sp->merges[i] : "";
        const char *sp1 = strchr(m, ' ');
        if (!sp1 || sp1 == m || !sp1[1] || strchr(sp1 + 1, ' ')) {
            rc = kw_error_set(err, KW_EFORMAT, "merge %d '%.64s' is not two tokens "
                              "separated by one space", i, m);
            break;
        }
        l[i] = strndup(m, (size_t)(sp1 - m));
        r[i] = strdup(sp1 + 1);
        if (!l[i] || !r[i])
            rc = kw_error_set(err, KW_ENOMEM, "out of memory");
    }
    if (rc == 0) {
        o.merge_left = (const char *const *)l;
        o.merge_right = (const char *const *)r;
        rc = kw__tokenizer_build(sp, &o, out, err);
    }
    for (int i = 0; i < sp->n_merges; i++) {
        free(l[i]);
        free(r[i]);
    }
    free(l);
    free(r);
    return rc;
}

int kw_tokenizer_n_vocab(const kw_tokenizer *tk) { return tk ? tk->n : 0; }

int kw_tokenizer_find(const kw_tokenizer *tk, const char *piece)
{
    if (!tk || !piece)
        return -1;
    size_t n = strlen(piece);
    int id = strmap_get(&tk->by_text, piece, n);
    if (id < 0 && tk->o.byte_level)
        id = strmap_get(&tk->by_dec, piece, n);
    return id;
}
