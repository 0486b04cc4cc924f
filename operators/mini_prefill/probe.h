/* A calibration reduce's prefill (mini_prefill.snap, compress.deltakv_fit): the prompt of
 * a task's tokens input run on the device engine with no new tokens, under a probe hook
 * stack that gathers what the operator reduces. */
#ifndef KW_OPS_MINI_PREFILL_PROBE_H
#define KW_OPS_MINI_PREFILL_PROBE_H

#include "kvweave/kvhook.h"
#include "kvweave/op.h"

/* *cfg: the model's config of the run's engine; 0, or the task's failure (no engine). */
int kw__probe_model(kw_opctx *c, kw_task *t, const char *op, const kw_model_config **cfg);

/* Submits the prompt of t's input 0 with the probe stack hs; t completes when the
 * engine is done with it (failed, with the engine's error, if the prefill failed).
 * Returns KW_PENDING, or the task's failure (an empty prompt, a refused submission). */
int kw__probe_prefill(kw_opctx *c, kw_task *t, kw_hookstack *hs, const char *op);

#endif
