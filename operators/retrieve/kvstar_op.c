/* retrieve.kvstar, the operator: its params make the hook's options (kvstar.c). */
#include "kvstar.h"
#include "kvweave/op.h"

static const kw_port outs[] = {
    {"kvmethod", KW_T_KVMETHOD, KW_ONCE, 0, "the KVStar EVICT + STORE hook"},
};
static const kw_param_spec params[] = {
    {"block", KW_PARAM_INT, "128", 1, 65535, NULL, "tokens per block (the unit of storage, "
     "voting and transfer)"},
    {"init_window", KW_PARAM_INT, "1", 0, 1 << 20, NULL, "first blocks always in the pool"},
    {"local_window", KW_PARAM_INT, "2", 0, 1 << 20, NULL,
     "last whole prompt blocks always in the pool (the partial last block and generated "
     "tokens stay too)"},
    {"sparse_ratio", KW_PARAM_FLOAT, "0.25", 1e-6, 1, NULL,
     "fraction of the middle blocks in the pool: k = ceil(middle blocks x sparse_ratio)"},
    {"dim_prune_ratio", KW_PARAM_FLOAT, "0.25", 1e-6, 1, NULL,
     "channels kept per KV head for the vote: round(head_dim x dim_prune_ratio), those of "
     "largest mean |K|"},
    {"inner_token_merge", KW_PARAM_INT, "2", 1, 65535, NULL,
     "consecutive tokens averaged into one sub-vector (divides block)"},
    {"retrieval_stride", KW_PARAM_INT, "8", 1, 1 << 16, NULL,
     "queries per vote and decode steps between votes; a vote acts about two strides "
     "after its queries"},
    {"threads", KW_PARAM_INT, "2", 0, KW_KVSTAR_MAX_THREADS, NULL,
     "host threads for votes and block reads; 0: on the engine thread"},
    {"store", KW_PARAM_STRING, "", 0, 0, NULL,
     "block store root (files <store>/data/<hi>/<lo>.dat); empty: a new directory under "
     "$TMPDIR, removed at the end"},
    {"persist", KW_PARAM_BOOL, "false", 0, 0, NULL,
     "keep the block files when their sequences close (a later run of the same model "
     "reads them instead of writing)"},
};

void kw__kvstar_params(kw_opctx *c, kw_kvstar_opts *o)
{
    o->block = (int)kw_param_int(c, "block");
    o->init_window = (int)kw_param_int(c, "init_window");
    o->local_window = (int)kw_param_int(c, "local_window");
    o->sparse_ratio = kw_param_float(c, "sparse_ratio");
    o->dim_prune_ratio = kw_param_float(c, "dim_prune_ratio");
    o->inner_token_merge = (int)kw_param_int(c, "inner_token_merge");
    o->retrieval_stride = (int)kw_param_int(c, "retrieval_stride");
}

static int run(kw_opctx *c, void *st, kw_task *t)
{
    (void)st;
    kw_kvstar_opts o = kw__kvstar_defaults();
    kw__kvstar_params(c, &o);
    o.threads = (int)kw_param_int(c, "threads");
    o.store = kw_param_str(c, "store");
    o.persist = kw_param_bool(c, "persist");
    kw_kvmethod *m;
    kw_error err = {0};
    int rc = kw__kvstar_method(&o, &m, &err);
    if (rc < 0)
        return kw_task_fail(t, rc, "%s", err.msg);
    kw_ctx_record(c, "kv_memory", "offloaded: middle blocks leave the pool for a block store "
                  "and come back when picked");
    return kw_task_out(t, 0, kw_value_kvmethod(m));
}

const kw_op kw_op_retrieve_kvstar = {
    .size = sizeof(kw_op), .abi = KW_OP_ABI, .name = "retrieve.kvstar", .version = 1,
    .doc = "KVStar multi-step sparse retrieval with offloading (EVICT + STORE; CPU and CUDA engines): "
           "at the prompt's end every whole block of `block` tokens is written to a block "
           "store, the middle blocks (between the first init_window and the last "
           "local_window) get a representation (the channels of largest mean |K|, pairs of "
           "tokens averaged, fp16), and only the ceil(sparse_ratio x middle) blocks the "
           "prompt's last retrieval_stride queries vote for stay in the pool. In decoding, "
           "each retrieval_stride steps' queries vote on host threads; the blocks a vote "
           "adds are read from the store (only those not in the pool) and swapped in two "
           "strides after its queries. Saves KV memory (the pool holds the windows, the "
           "picked blocks and generated tokens); load_bytes and load_bytes_full measure "
           "the transfer.",
    .lanes = KW_LANE_CPU, .outputs = outs, .n_outputs = 1, .params = params,
    .n_params = sizeof params / sizeof *params, .run = run,
    .kv_roles = KW_ROLE_EVICT | KW_ROLE_STORE,
};
