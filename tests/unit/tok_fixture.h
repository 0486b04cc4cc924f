/* Test fixtures for the tokenizer tests: the default model's tokenizer read from its
 * GGUF by a minimal metadata reader (the product path goes through the GGUF loader),
 * and the committed goldens. */
#ifndef KW_TEST_TOK_FIXTURE_H
#define KW_TEST_TOK_FIXTURE_H

#include <jansson.h>

#include "kvweave/model.h"

/* $KVWEAVE_HOME (default ~/.cache/kvweave)/models/smollm2-135m-instruct.gguf; malloc'd. */
char *tokfix_model_path(void);
/* Tokenizer and chat template (malloc'd, nullable) of a GGUF; < 0 when the file cannot
 * be read. */
int tokfix_load_gguf(const char *path, kw_tokenizer **tk, char **chat_template);
/* $KVWEAVE_SRC/tests/golden/<rel>; NULL if absent. */
json_t *tokfix_golden(const char *rel);
/* $KVWEAVE_SRC/tests/golden/<rel> as a path; malloc'd. */
char *tokfix_golden_path(const char *rel);

#endif
