/* Engine internals shared by batch.c and engine_open.c. */
#ifndef KW_RUNTIME_ENGINE_INTERNAL_H
#define KW_RUNTIME_ENGINE_INTERNAL_H

#include "kvweave/engine.h"

/* Makes the engine own m: freed with free_model at close. */
void kw__engine_own_model(kw_engine *e, kw_model *m, kw_model *(*free_model)(kw_model *));

#endif
