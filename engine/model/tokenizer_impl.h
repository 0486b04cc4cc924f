/* Tokenizer internals shared by tokenizer.c (the encoder and decoder) and
 * tokenizer_hf.c (the tokenizer.json loader). Not a public contract. */
#ifndef KW_MODEL_TOKENIZER_IMPL_H
#define KW_MODEL_TOKENIZER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer.h"

#define KW_TOK_MAX_SPLITS 4

/* GGUF token types (tokenizer.ggml.token_type). */
enum {
    KW_TOKT_NORMAL = 1,
    KW_TOKT_UNKNOWN = 2,
    KW_TOKT_CONTROL = 3,
    KW_TOKT_USER = 4,
    KW_TOKT_UNUSED = 5,
    KW_TOKT_BYTE = 6,
};

/* How text becomes words before BPE, and how BPE treats them. */
typedef struct kw__tok_opts {
    bool byte_level;         /* GPT-2 byte-to-unicode vocabulary; else SentencePiece-style */
    int n_splits;            /* pre-tokenizer: regexes applied in order, each splitting
                                every piece into matches and the gaps between them */
    const char *splits[KW_TOK_MAX_SPLITS];
    bool nfc;                /* NFC-normalize text between special tokens */
    bool ignore_merges;      /* a word that is a whole token is taken as is (Llama-3) */
    bool byte_fallback;      /* unknown characters become <0xXX> tokens */
    bool add_space_prefix;   /* SentencePiece: "▁" before the text */
    bool prefix_each;        /* ... before every segment between special tokens (HF) */
    bool use_scores;         /* SentencePiece without merges: merge by token score */
    bool drop_unknown;       /* a byte or character without a token is dropped, not the
                                unknown token (llama.cpp's and HF's byte-level BPE without
                                an unk_token) */
    const char *const *merge_left;  /* (n_merges) the merge pairs as separate strings */
    const char *const *merge_right;
} kw__tok_opts;

/* string -> id map (open addressing over the tokenizer's own strings) */
typedef struct strmap {
    uint32_t *slot; /* id + 1; 0 empty */
    size_t mask;
    char **keys;    /* borrowed: key bytes per id */
    int *klen;
} strmap;

typedef struct pair_ent { uint64_t key; int32_t rank, id; } pair_ent;
typedef struct pairmap { pair_ent *e; size_t mask; } pairmap;

struct kw_tokenizer {
    kw__tok_opts o;         /* splits/merges pointers are not kept */
    int n;
    char **text;            /* (n) stored form */
    int *text_len;
    char **dec;             /* (n) bytes the token stands for */
    int *dec_len;
    int32_t *type;          /* (n) KW_TOKT_* */
    float *score;           /* (n) nullable */
    strmap by_text, by_dec; /* by_dec: byte-level only */
    pairmap pairs;
    int byte_tok[256];      /* token of a lone byte (byte-level) or <0xXX> (SentencePiece) */
    int *special;           /* ids matched first, longest first */
    int n_special;
    uint8_t special_first[32];
    pcre2_code *re[KW_TOK_MAX_SPLITS];
    int bos, eos, unk;
    bool add_bos, add_eos;
};


/* ---- helpers shared by the builder and the encoder ---- */

static inline int utf8_len(unsigned char c)
{
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0; /* continuation or invalid lead */
}

/* Length of the (possibly invalid) character at s: 1 for a broken sequence. */
static inline int utf8_step(const char *s, size_t n)
{
    int l = utf8_len((unsigned char)s[0]);
    if (l <= 1 || (size_t)l > n)
        return 1;
    for (int i = 1; i < l; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            return 1;
    return l;
}

static inline uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static inline int strmap_get(const strmap *m, const char *s, size_t n)
{
    for (size_t i = hash_bytes(s, n) & m->mask;; i = (i + 1) & m->mask) {
        uint32_t v = m->slot[i];
        if (!v)
            return -1;
        int id = (int)v - 1;
        if ((size_t)m->klen[id] == n && memcmp(m->keys[id], s, n) == 0)
            return id;
    }
}

static inline uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)a << 32 | (uint32_t)b) + 1; }

static inline size_t pair_slot(const pairmap *m, uint64_t k)
{
    uint64_t h = k * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 17) & m->mask;
    while (m->e[i].key && m->e[i].key != k)
        i = (i + 1) & m->mask;
    return i;
}

/* Regex of a pre-tokenizer name ("gpt2", "smollm", "llama-bpe", "qwen2", ...) into o;
 * KW_EINVAL for an unknown name. */
int kw__tok_pre_by_name(const char *pre, kw__tok_opts *o, kw_error *err);
/* Builds a tokenizer from a spec (tokens, types, ids) and the options (merges in
 * o->merge_left/right, spec->n_merges of them). */
int kw__tokenizer_build(const kw_tokenizer_spec *spec, const kw__tok_opts *o,
                        kw_tokenizer **out, kw_error *err);

/* A tokenizer.json held in memory (no tokenizer_config.json); name is for messages. */
int kw__tokenizer_from_hf_json(const char *data, size_t n, const char *name,
                               kw_tokenizer **out, kw_error *err);

/* The GPT-2 byte-to-unicode map: the code point standing for byte b. */
uint32_t kw__tok_byte_cp(uint8_t b);

#endif
