/* Every built-in operator, in one table. Add a line per new operator. */
#include "builtin.h"

/* template */
extern const kw_op kw_op_template_upper;

/* dataset, score */
extern const kw_op kw_op_dataset_jsonl;
extern const kw_op kw_op_dataset_longbench;
extern const kw_op kw_op_score_longbench;

/* RULER */
extern const kw_op kw_op_dataset_ruler, kw_op_score_ruler;

/* perplexity and fidelity to full attention */
extern const kw_op kw_op_dataset_text, kw_op_tokenize_ids, kw_op_decode_fidelity;
extern const kw_op kw_op_score_ppl, kw_op_score_fidelity;

/* tokenize */
extern const kw_op kw_op_tokenize_chat;
extern const kw_op kw_op_tokenize_raw;

/* decode */
extern const kw_op kw_op_decode_greedy;
extern const kw_op kw_op_decode_sample;
extern const kw_op kw_op_decode_teacher_forced;

/* compress: eviction */
extern const kw_op kw_op_compress_streaming, kw_op_compress_h2o, kw_op_compress_snapkv,
    kw_op_compress_pyramidkv;
extern const kw_op kw_op_compress_deltakv, kw_op_compress_deltakv_fit,
    kw_op_compress_deltakv_load;

/* query-aware selection, XKV calibration and layer budgets (issue 6) */
extern const kw_op kw_op_retrieve_quest;
extern const kw_op kw_op_retrieve_clusterkv;
extern const kw_op kw_op_retrieve_kvstar;
extern const kw_op kw_op_retrieve_kvstar_select;
extern const kw_op kw_op_retrieve_omnikv;
extern const kw_op kw_op_layer_budget_xkv, kw_op_layer_budget_uniform, kw_op_layer_budget_pyramid;
extern const kw_op kw_op_mini_prefill_snap;

const kw_op *const kw_builtin_ops[] = {
    /* template */
    &kw_op_template_upper,
    /* dataset, score */
    &kw_op_dataset_jsonl,
    &kw_op_dataset_longbench,
    &kw_op_score_longbench,

    /* RULER */
    &kw_op_dataset_ruler,
    &kw_op_score_ruler,
    /* perplexity and fidelity to full attention */
    &kw_op_dataset_text,
    &kw_op_tokenize_ids,
    &kw_op_decode_fidelity,
    &kw_op_score_ppl,
    &kw_op_score_fidelity,
    /* tokenize */
    &kw_op_tokenize_chat,
    &kw_op_tokenize_raw,

    /* decode */
    &kw_op_decode_greedy,
    &kw_op_decode_sample,
    &kw_op_decode_teacher_forced,

    /* compress: eviction */
    &kw_op_compress_streaming,
    &kw_op_compress_h2o,
    &kw_op_compress_snapkv,
    &kw_op_compress_pyramidkv,
    &kw_op_compress_deltakv_fit,
    &kw_op_compress_deltakv_load,
    &kw_op_compress_deltakv,

    /* query-aware selection, XKV calibration and layer budgets (issue 6) */
    &kw_op_retrieve_quest,
    &kw_op_retrieve_clusterkv,
    &kw_op_retrieve_kvstar,
    &kw_op_retrieve_kvstar_select,
    &kw_op_retrieve_omnikv,
    &kw_op_layer_budget_xkv,
    &kw_op_layer_budget_uniform,
    &kw_op_layer_budget_pyramid,
    &kw_op_mini_prefill_snap,
    NULL,
};
