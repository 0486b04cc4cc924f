/* kvweave — values that flow on pipeline edges.
 *
 * A value is reference counted and immutable once published. It carries a type name
 * (the port type: "sample", "tokens", "generation", "metrics", "budget", "stats",
 * "kvmethod", ...) and a payload owned by the value. Types that can be cached or hashed
 * register a kw_type with serialize/deserialize; JSON-shaped types (sample, generation,
 * metrics) share one implementation.
 *
 *   json_t *rec = json_pack("{s:s}", "input", "hello");
 *   kw_value *v = kw_value_json("sample", rec);      // takes the reference to rec
 *   ...
 *   v = kw_value_unref(v);                           // NULL
 */
#ifndef KVWEAVE_VALUE_H
#define KVWEAVE_VALUE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Port type names of the built-in types. */
#define KW_T_SAMPLE     "sample"     /* json object: one data set record (+ "id", "index") */
#define KW_T_TOKENS     "tokens"     /* kw_tokens */
#define KW_T_STATS      "stats"      /* per-layer/per-head importance (method issues) */
#define KW_T_BUDGET     "budget"     /* per-layer (per-head) token budgets */
#define KW_T_KVMETHOD   "kvmethod"   /* a configured KV hook (kvhook.h) */
#define KW_T_COMPRESSOR "compressor"
#define KW_T_GENERATION "generation" /* json object: "text", "tokens", timings, memory */
#define KW_T_METRICS    "metrics"    /* json object of numbers; recorded per sample */

/* A value type. serialize must produce canonical bytes: equal payloads give equal bytes
 * (they are what content hashes and the stage cache use). */
typedef struct kw_type {
    const char *name;
    void (*free)(void *payload);
    int (*serialize)(const void *payload, void **buf, size_t *n);     /* nullable */
    int (*deserialize)(const void *buf, size_t n, void **payload, kw_error *err); /* nullable */
} kw_type;

typedef struct kw_value kw_value;

/* New value of a registered or ad-hoc type. `type` must outlive the value (static). The
 * payload is owned by the value from here on (transfer full). */
kw_value *kw_value_new(const kw_type *type, void *payload);
/* A JSON-shaped value; `type_name` is static; takes the reference to `obj`. */
kw_value *kw_value_json(const char *type_name, json_t *obj);

kw_value *kw_value_ref(kw_value *v);
/* Drops a reference; returns NULL. Accepts NULL. */
kw_value *kw_value_unref(kw_value *v);

const char *kw_value_type(const kw_value *v);
const kw_type *kw_value_vt(const kw_value *v);
void *kw_value_data(const kw_value *v);           /* (transfer none) */
json_t *kw_value_jsonobj(const kw_value *v);      /* (transfer none); NULL if not JSON */

/* sha256 of the type name and the canonical bytes; KW_ENOSYS if the type cannot
 * serialize. */
int kw_value_hash(const kw_value *v, uint8_t out[32]);

/* Types that can come back from bytes by name (the executor's cache of once values):
 * the built-in serializable types (tokens, budget, stats) and those registered. JSON-
 * shaped values need no entry. register: KW_EINVAL for a name already taken by another
 * type, KW_ELIMIT past 64 registered types. find: NULL when unknown. */
int kw_type_register(const kw_type *t);
const kw_type *kw_type_find(const char *name);

/* The JSON type vtable (shared by sample, generation, metrics). */
extern const kw_type kw_type_json;

/* Tokenized prompt: the output of tokenize.* and the input of decode.*. */
typedef struct kw_tokens {
    int32_t *ids;        /* (n) prompt token ids */
    int n;
    int max_new;         /* generation length asked for by the data set; 0 = operator's */
    json_t *sample;      /* the record these came from (owned reference; nullable) */
    json_t *extra;       /* e.g. a continuation for teacher forcing (owned; nullable) */
} kw_tokens;
extern const kw_type kw_type_tokens;
kw_value *kw_value_tokens(kw_tokens *t);          /* takes ownership of t and its arrays */

#ifdef __cplusplus
}
#endif
#endif
