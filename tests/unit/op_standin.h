/* A minimal stand-in for the engine side of op.h, for harness tests of operators that
 * run outside a pipeline: params from a JSON object (else the operator's defaults),
 * provenance records, tasks with input and output values, and an optional device
 * engine. Asking for a parameter the operator does not declare fails the test. Single-threaded except kw_task_complete, which may come from the engine's
 * thread (it signals a condition variable that st_wait waits on). */
#ifndef KW_TEST_OP_STANDIN_H
#define KW_TEST_OP_STANDIN_H

#include <pthread.h>
#include <stdbool.h>

#include "kvweave/engine.h"
#include "kvweave/op.h"

struct kw_opctx {
    const kw_op *op;
    json_t *params;  /* set by the test (nullable: defaults) */
    json_t *records; /* kw_ctx_record */
    kw_engine *engine;
};

#define ST_MAX_IN 4
#define ST_MAX_OUT 4
struct kw_task {
    int64_t sample;
    kw_value *in[ST_MAX_IN][8];
    int n_in[ST_MAX_IN];
    kw_value *out[ST_MAX_OUT];
    char msg[2048];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool completed;
    int rc;
};

void st_task_init(kw_task *t, int64_t sample);
/* Appends `v` (transfer full, nullable: nothing) to input port `port`. */
void st_task_set_in(kw_task *t, int port, kw_value *v);
/* Drops the task's values and its sync objects. */
void st_task_clear(kw_task *t);
/* Waits for kw_task_complete when run returned KW_PENDING; returns the final rc. */
int st_wait(kw_task *t, int run_rc);

/* A model that is only a byte-level tokenizer (op_standin_bytes.c), for operators that
 * tokenize without weights: kw_tokenize gives BOS 256 then one id per byte,
 * kw_detokenize drops the ids >= 256 (the special ones), and kw_engine_model of
 * st_bytes_engine() is st_bytes_model(). Its cfg is the test's to set. */
kw_model *st_bytes_model(void);  /* (transfer none) */
kw_engine *st_bytes_engine(void); /* (transfer none) for kw_opctx.engine */

#endif
