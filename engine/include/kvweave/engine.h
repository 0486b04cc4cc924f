/* kvweave — the device engine: one per device per run, persistent across samples. It
 * owns the model's weights on the device, the paged KV pool, and the running batch;
 * decode operators submit sequences to it and are completed when they finish.
 * (The full API is in engine/runtime; this is the part the control plane uses.) */
#ifndef KVWEAVE_ENGINE_H
#define KVWEAVE_ENGINE_H

#include "model.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kw_engine kw_engine;

/* model_spec: a registered name, a GGUF path or an HF directory. device: "cpu" or
 * "cuda[:N]" (KW_ENOSYS in a build without CUDA). */
int kw_engine_open(const char *model_spec, const char *device, kw_engine **out,
                   kw_error *err);
/* Waits for submitted work, frees everything; accepts NULL, returns NULL. */
kw_engine *kw_engine_close(kw_engine *e);
const kw_model *kw_engine_model(const kw_engine *e);

#ifdef __cplusplus
}
#endif
#endif
