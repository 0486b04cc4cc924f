/* Reference-counted values on pipeline edges (value.h). */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/budget.h"
#include "kvweave/stats.h"
#include "kvweave/value.h"

struct kw_value {
    atomic_int refs;
    const kw_type *type;
    const char *type_name; /* differs from type->name for JSON-shaped types */
    void *payload;
};

kw_value *kw_value_new(const kw_type *type, void *payload)
{
    kw_value *v = calloc(1, sizeof *v);
    if (!v) {
        if (type && type->free)
            type->free(payload);
        return NULL;
    }
    atomic_init(&v->refs, 1);
    v->type = type;
    v->type_name = type->name;
    v->payload = payload;
    return v;
}

kw_value *kw_value_json(const char *type_name, json_t *obj)
{
    if (!obj)
        return NULL;
    kw_value *v = kw_value_new(&kw_type_json, obj);
    if (v)
        v->type_name = type_name;
    return v;
}

kw_value *kw_value_ref(kw_value *v)
{
    if (v)
        atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    return v;
}

kw_value *kw_value_unref(kw_value *v)
{
    if (v && atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1) {
        if (v->type->free)
            v->type->free(v->payload);
        free(v);
    }
    return NULL;
}

const char *kw_value_type(const kw_value *v) { return v ? v->type_name : NULL; }
const kw_type *kw_value_vt(const kw_value *v) { return v ? v->type : NULL; }
void *kw_value_data(const kw_value *v) { return v ? v->payload : NULL; }

json_t *kw_value_jsonobj(const kw_value *v)
{
    return v && v->type == &kw_type_json ? v->payload : NULL;
}

int kw_value_hash(const kw_value *v, uint8_t out[32])
{
    if (!v || !v->type->serialize)
        return KW_ENOSYS;
    void *buf = NULL;
    size_t n = 0;
    int rc = v->type->serialize(v->payload, &buf, &n);
    if (rc < 0)
        return rc;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned len = 32;
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(md, v->type_name, strlen(v->type_name) + 1) &&
             EVP_DigestUpdate(md, buf, n) && EVP_DigestFinal_ex(md, out, &len);
    EVP_MD_CTX_free(md);
    free(buf);
    return ok ? KW_OK : KW_EINTERNAL;
}

/* ---- JSON-shaped types ---- */

static void json_free(void *p) { json_decref(p); }

static int json_ser(const void *p, void **buf, size_t *n)
{
    char *s = json_dumps(p, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s)
        return KW_ENOMEM;
    *buf = s;
    *n = strlen(s);
    return KW_OK;
}

static int json_deser(const void *buf, size_t n, void **p, kw_error *err)
{
    json_error_t je;
    json_t *j = json_loadb(buf, n, JSON_DECODE_ANY, &je);
    if (!j)
        return kw_error_set(err, KW_EFORMAT, "cached JSON value: %s (line %d)", je.text,
                            je.line);
    *p = j;
    return KW_OK;
}

const kw_type kw_type_json = {"json", json_free, json_ser, json_deser};

/* ---- tokens ---- */

static void tokens_free(void *p)
{
    kw_tokens *t = p;
    if (!t)
        return;
    free(t->ids);
    json_decref(t->sample);
    json_decref(t->extra);
    free(t);
}

/* Canonical form: JSON {ids, max_new, extra}; the sample is identified by its own hash
 * upstream, so it is left out. */
static int tokens_ser(const void *p, void **buf, size_t *n)
{
    const kw_tokens *t = p;
    json_t *ids = json_array();
    for (int i = 0; i < t->n; i++)
        json_array_append_new(ids, json_integer(t->ids[i]));
    json_t *o = json_pack("{s:o,s:i,s:O?}", "ids", ids, "max_new", t->max_new, "extra",
                          t->extra);
    if (!o)
        return KW_ENOMEM;
    int rc = json_ser(o, buf, n);
    json_decref(o);
    return rc;
}

static int tokens_deser(const void *buf, size_t n, void **p, kw_error *err)
{
    json_t *o = NULL;
    int rc = json_deser(buf, n, (void **)&o, err);
    if (rc < 0)
        return rc;
    json_t *ids = json_object_get(o, "ids");
    kw_tokens *t = calloc(1, sizeof *t);
    if (!t || !json_is_array(ids)) {
        free(t);
        json_decref(o);
        return kw_error_set(err, KW_EFORMAT, "cached tokens value has no \"ids\" array");
    }
    t->n = (int)json_array_size(ids);
    t->ids = malloc(sizeof *t->ids * (size_t)(t->n ? t->n : 1));
    for (int i = 0; i < t->n; i++)
        t->ids[i] = (int32_t)json_integer_value(json_array_get(ids, (size_t)i));
    t->max_new = (int)json_integer_value(json_object_get(o, "max_new"));
    json_t *extra = json_object_get(o, "extra");
    t->extra = json_is_null(extra) ? NULL : json_incref(extra);
    json_decref(o);
    *p = t;
    return KW_OK;
}

const kw_type kw_type_tokens = {KW_T_TOKENS, tokens_free, tokens_ser, tokens_deser};

kw_value *kw_value_tokens(kw_tokens *t) { return kw_value_new(&kw_type_tokens, t); }

/* ---- types by name ---- */

static pthread_mutex_t types_mu = PTHREAD_MUTEX_INITIALIZER;
static const kw_type *registered[64];
static int n_registered;

const kw_type *kw_type_find(const char *name)
{
    const kw_type *const builtin[] = {&kw_type_tokens, &kw_type_budget, &kw_type_stats};
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
        if (!strcmp(builtin[i]->name, name))
            return builtin[i];
    const kw_type *t = NULL;
    pthread_mutex_lock(&types_mu);
    for (int i = 0; i < n_registered && !t; i++)
        if (!strcmp(registered[i]->name, name))
            t = registered[i];
    pthread_mutex_unlock(&types_mu);
    return t;
}

int kw_type_register(const kw_type *t)
{
    if (!t || !t->name)
        return KW_EINVAL;
    const kw_type *have = kw_type_find(t->name);
    if (have)
        return have == t ? 0 : KW_EINVAL;
    pthread_mutex_lock(&types_mu);
    int rc = n_registered < 64 ? (registered[n_registered++] = t, 0) : KW_ELIMIT;
    pthread_mutex_unlock(&types_mu);
    return rc;
}
