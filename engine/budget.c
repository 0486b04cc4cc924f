/* Token budgets per layer and KV head, and the "budget" value type (budget.h). */
#include <stdlib.h>
#include <string.h>

#include "kvweave/budget.h"

kw_budget *kw_budget_new(int n_layer, int n_kv_head, bool per_head)
{
    if (n_layer < 1 || n_kv_head < 1 || (int64_t)n_layer * n_kv_head > INT32_MAX)
        return NULL;
    kw_budget *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->tokens = calloc((size_t)n_layer * (size_t)n_kv_head, sizeof *b->tokens);
    if (!b->tokens) {
        free(b);
        return NULL;
    }
    b->n_layer = n_layer;
    b->n_kv_head = n_kv_head;
    b->per_head = per_head;
    return b;
}

kw_budget *kw_budget_free(kw_budget *b)
{
    if (b) {
        free(b->tokens);
        free(b);
    }
    return NULL;
}

void kw_budget_set_layer(kw_budget *b, int layer, int32_t tokens)
{
    for (int h = 0; h < b->n_kv_head; h++)
        b->tokens[(int64_t)layer * b->n_kv_head + h] = tokens;
}

int64_t kw_budget_total(const kw_budget *b)
{
    int64_t n = 0;
    for (int64_t i = 0; i < (int64_t)b->n_layer * b->n_kv_head; i++)
        n += b->tokens[i];
    return n;
}

int kw_budget_check(const kw_budget *b, int n_layer, int n_kv_head, kw_error *err)
{
    if (b->n_layer != n_layer || b->n_kv_head != n_kv_head)
        return kw_error_set(err, KW_EINVAL, "budget: made for %d layers x %d KV heads, the "
                            "model has %d x %d", b->n_layer, b->n_kv_head, n_layer, n_kv_head);
    for (int64_t i = 0; i < (int64_t)n_layer * n_kv_head; i++)
        if (b->tokens[i] < 0)
            return kw_error_set(err, KW_EINVAL, "budget: layer %lld head %lld has %d tokens",
                                (long long)(i / n_kv_head), (long long)(i % n_kv_head),
                                b->tokens[i]);
    return 0;
}

json_t *kw_budget_to_json(const kw_budget *b)
{
    json_t *t = json_array();
    for (int64_t i = 0; t && i < (int64_t)b->n_layer * b->n_kv_head; i++)
        json_array_append_new(t, json_integer(b->tokens[i]));
    return json_pack("{s:i,s:i,s:b,s:o}", "n_layer", b->n_layer, "n_kv_head", b->n_kv_head,
                     "per_head", b->per_head, "tokens", t);
}

int kw_budget_from_json(const json_t *j, kw_budget **out, kw_error *err)
{
    *out = NULL;
    json_t *t = json_object_get(j, "tokens");
    json_t *jl = json_object_get(j, "n_layer"), *jh = json_object_get(j, "n_kv_head");
    if (!json_is_integer(jl) || !json_is_integer(jh) || !json_is_array(t))
        return kw_error_set(err, KW_EFORMAT, "budget: needs integer \"n_layer\", "
                            "\"n_kv_head\" and a \"tokens\" array");
    json_int_t L = json_integer_value(jl), H = json_integer_value(jh);
    if (L < 1 || H < 1 || L > INT32_MAX / H || json_array_size(t) != (size_t)(L * H))
        return kw_error_set(err, KW_EFORMAT, "budget: %lld layers x %lld heads with %zu "
                            "token counts", (long long)L, (long long)H, json_array_size(t));
    kw_budget *b = kw_budget_new((int)L, (int)H, json_is_true(json_object_get(j, "per_head")));
    if (!b)
        return kw_error_set(err, KW_ENOMEM, "budget: out of memory");
    for (size_t i = 0; i < json_array_size(t); i++) {
        json_t *x = json_array_get(t, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0
            || json_integer_value(x) > INT32_MAX) {
            kw_budget_free(b);
            return kw_error_set(err, KW_EFORMAT, "budget: token count %zu is not an integer "
                                "in [0, %d]", i, INT32_MAX);
        }
        b->tokens[i] = (int32_t)json_integer_value(x);
    }
    *out = b;
    return 0;
}

static void budget_free(void *p) { kw_budget_free(p); }

static int budget_ser(const void *p, void **buf, size_t *n)
{
    json_t *o = kw_budget_to_json(p);
    char *s = o ? json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s)
        return KW_ENOMEM;
    *buf = s;
    *n = strlen(s);
    return KW_OK;
}

static int budget_deser(const void *buf, size_t n, void **p, kw_error *err)
{
    json_error_t je;
    json_t *o = json_loadb(buf, n, 0, &je);
    if (!o)
        return kw_error_set(err, KW_EFORMAT, "cached budget: %s (line %d)", je.text, je.line);
    kw_budget *b = NULL;
    int rc = kw_budget_from_json(o, &b, err);
    json_decref(o);
    *p = b;
    return rc;
}

const kw_type kw_type_budget = {KW_T_BUDGET, budget_free, budget_ser, budget_deser};

kw_value *kw_value_budget(kw_budget *b) { return kw_value_new(&kw_type_budget, b); }
