/* kvweave — token budgets per layer and per KV head: the payload of a "budget" value.
 *
 * A budget says how many tokens of the prompt an EVICT method keeps in each (layer, KV
 * head). Producers (layer_budget.*) make one, consumers (compress.*) read it:
 *
 *   kw_budget *b = kw_budget_new(cfg->n_layer, cfg->n_head_kv, false);
 *   for (int l = 0; l < b->n_layer; l++)
 *       kw_budget_set_layer(b, l, 512);              // every head of layer l
 *   kw_value *v = kw_value_budget(b);                // takes b
 *   ...
 *   int32_t n = kw_budget_at(kw_value_data(v), layer, kvh);
 *
 * What a budget counts: the prompt tokens kept in that (layer, KV head) after the prompt
 * is processed, everything kept included (attention sinks, the observation window, the
 * selected tokens); tokens generated later are not counted. A method that needs more
 * (its window alone is larger than the budget) keeps its minimum and says so.
 *
 * Canonical bytes (serialize, for hashes and the stage cache): the JSON object
 *   {"n_kv_head":Hk,"n_layer":L,"per_head":false,"tokens":[t(0,0),t(0,1),...]}
 * with sorted keys and no spaces; tokens in (layer, head) order, always n_layer *
 * n_kv_head values (a per-layer budget repeats its value over the heads).
 */
#ifndef KVWEAVE_BUDGET_H
#define KVWEAVE_BUDGET_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "status.h"
#include "value.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kw_budget {
    int n_layer;
    int n_kv_head;
    bool per_head;   /* false: every head of a layer has the same budget */
    int32_t *tokens; /* (n_layer, n_kv_head) kept prompt tokens, >= 0 */
} kw_budget;

/* All zeros; NULL on bad sizes (< 1 or a product over INT32_MAX) or out of memory. */
kw_budget *kw_budget_new(int n_layer, int n_kv_head, bool per_head);
/* Accepts NULL; returns NULL. */
kw_budget *kw_budget_free(kw_budget *b);
static inline int32_t kw_budget_at(const kw_budget *b, int layer, int kvh)
{
    return b->tokens[(int64_t)layer * b->n_kv_head + kvh];
}
void kw_budget_set_layer(kw_budget *b, int layer, int32_t tokens);
int64_t kw_budget_total(const kw_budget *b);
/* Checks the budget against a model's shape; KW_EINVAL with the numbers. */
int kw_budget_check(const kw_budget *b, int n_layer, int n_kv_head, kw_error *err);

/* JSON form (see the top of this file). to_json: a new reference. */
json_t *kw_budget_to_json(const kw_budget *b);
int kw_budget_from_json(const json_t *j, kw_budget **out, kw_error *err);

extern const kw_type kw_type_budget;
/* (transfer full) of b. */
kw_value *kw_value_budget(kw_budget *b);

#ifdef __cplusplus
}
#endif
#endif
