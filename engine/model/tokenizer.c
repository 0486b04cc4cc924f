/* placeholder: the tokenizer is filled in by its owner. Until then every entry point
 * answers KW_ENOSYS. */
#include <stdlib.h>

#include "tokenizer.h"

int kw_tokenizer_new(const kw_tokenizer_spec *spec, kw_tokenizer **out, kw_error *err)
{
    (void)spec;
    *out = NULL;
    return kw_error_set(err, KW_ENOSYS, "the tokenizer is not built yet");
}

int kw_tokenizer_from_hf_dir(const char *dir, kw_tokenizer **out, kw_error *err)
{
    *out = NULL;
    return kw_error_set(err, KW_ENOSYS, "%s: the tokenizer is not built yet", dir);
}

kw_tokenizer *kw_tokenizer_free(kw_tokenizer *tk) { (void)tk; return NULL; }

int kw_tokenize(const kw_tokenizer *tk, const char *text, int parse_special, int32_t *ids,
                int cap)
{
    (void)tk, (void)text, (void)parse_special, (void)ids, (void)cap;
    return KW_ENOSYS;
}

int kw_token_piece(const kw_tokenizer *tk, int32_t id, char *out, int cap)
{
    (void)tk, (void)id, (void)out, (void)cap;
    return KW_ENOSYS;
}

char *kw_detokenize(const kw_tokenizer *tk, const int32_t *ids, int n, int skip_special)
{
    (void)tk, (void)ids, (void)n, (void)skip_special;
    return NULL;
}

int kw_tokenizer_n_vocab(const kw_tokenizer *tk) { (void)tk; return 0; }
int kw_tokenizer_find(const kw_tokenizer *tk, const char *piece) { (void)tk, (void)piece; return -1; }
