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
