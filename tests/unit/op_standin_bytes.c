/* See op_standin.h: a model that is only a byte-level tokenizer. It links in place of
 * the tokenizer and of kw_engine_model, so a test takes it or a real engine, not both. */
#include <stdlib.h>
#include <string.h>

#include "op_standin.h"

static int bytes_tok; /* its address is the tokenizer */
static kw_model bytes_model = {.tok = (kw_tokenizer *)&bytes_tok};

kw_model *st_bytes_model(void) { return &bytes_model; }
kw_engine *st_bytes_engine(void) { return (kw_engine *)&bytes_model; }

const kw_model *kw_engine_model(const kw_engine *e) { return (const kw_model *)e; }

int kw_tokenize(const kw_tokenizer *tk, const char *text, int parse_special, int32_t *ids,
                int cap)
{
    (void)tk, (void)parse_special;
    int n = (int)strlen(text) + 1;
    for (int i = 0; i < n && i < cap; i++)
        ids[i] = i == 0 ? 256 : (unsigned char)text[i - 1];
    return n;
}

char *kw_detokenize(const kw_tokenizer *tk, const int32_t *ids, int n, int skip_special)
{
    (void)tk, (void)skip_special;
    char *s = malloc((size_t)n + 1), *w = s;
    for (int i = 0; i < n; i++)
        if (ids[i] < 256)
            *w++ = (char)ids[i];
    *w = '\0';
    return s;
}
