/* Once values: the calibration phase, and once values (calibration outputs, cacheable
 * config stages) as content-hashed artifacts and in the stage-output cache, keyed by
 * everything upstream. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvweave/util.h"
#include "run_internal.h"

/* Whether a calibration stage is upstream of stage si. */
bool kwr_upstream_calib(const kw_exec *x, int si)
{
    const kw_gstage *gs = &x->g->stages[si];
    if (gs->phase == KW_PHASE_CALIB)
        return true;
    for (int i = 0; i < gs->n_in; i++)
        if (kwr_upstream_calib(x, gs->in[i].from))
            return true;
    return false;
}

/* Cache key of a stage's once outputs: everything upstream that shapes them. */
void kwr_stage_key(kw_exec *x, int si, char out[65])
{
    const kw_graph *g = x->g;
    const kw_gstage *gs = &g->stages[si];
    char *params = kw_gstage_params_text(gs);
    size_t cap = 1024 + (params ? strlen(params) : 0) + (size_t)gs->n_in * 80;
    char *buf = malloc(cap);
    if (!buf) {
        memset(out, '0', 64);
        out[64] = 0;
        free(params);
        return;
    }
    int n = snprintf(buf, cap, "op=%s@%d;params=%s;", gs->op->name, gs->op->version,
                     params ? params : "");
    free(params);
    if (gs->op->flags & KW_OP_NEEDS_MODEL) {
        const char *sha = x->engine && x->o->env && x->o->env->engine_model_sha256
                              ? x->o->env->engine_model_sha256(x->engine)
                              : g->model;
        n += snprintf(buf + n, cap - (size_t)n, "model=%s;", sha ? sha : "");
    }
    if (si == g->source || gs->is_reduce)
        n += snprintf(buf + n, cap - (size_t)n, "limit=%" PRId64 ";calib=%.17g/%" PRId64
                      "/%" PRIu64 ";", g->limit, g->calib.sample_ratio, g->calib.n,
                      g->calib.seed);
    for (int i = 0; i < gs->n_in && (size_t)n + 80 < cap; i++) {
        char up[65];
        kwr_stage_key(x, gs->in[i].from, up);
        n += snprintf(buf + n, cap - (size_t)n, "in%d=%s.%d;", gs->in[i].port, up,
                      gs->in[i].from_port);
    }
    kw_sha256_hex(buf, (size_t)n, out);
    free(buf);
}

/* ---- once values as bytes: artifacts and the cache ----
 *
 * A JSON-shaped value is stored as {"kwtype": TYPE, "value": ...} (a plug-in may make
 * a JSON-shaped value of a type name that also has a registered binary form); a value
 * of a registered type (kw_type_find: tokens, budget, stats, plug-ins' types) as its
 * type's canonical bytes. The type of a cached value is its port's. */
static int value_bytes(kw_value *v, void **buf, size_t *n)
{
    *buf = NULL;
    *n = 0;
    json_t *jo = kw_value_vt(v) == &kw_type_json ? kw_value_jsonobj(v) : NULL;
    if (jo) {
        json_t *w = json_pack("{s:s,s:O}", "kwtype", kw_value_type(v), "value", jo);
        *buf = w ? json_dumps(w, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        *n = *buf ? strlen(*buf) : 0;
        json_decref(w);
        return *buf ? 0 : KW_ENOMEM;
    }
    const kw_type *vt = kw_value_vt(v);
    if (!vt || !vt->serialize || !kw_type_find(vt->name))
        return KW_ENOSYS;
    return vt->serialize(kw_value_data(v), buf, n) < 0 ? KW_EINTERNAL : 0;
}

static kw_value *value_from_bytes(const char *type, const void *buf, size_t n)
{
    static const char wrap[] = "{\"kwtype\":";
    bool json = n >= sizeof wrap - 1 && !memcmp(buf, wrap, sizeof wrap - 1);
    const kw_type *t = json ? NULL : kw_type_find(type);
    if (t && t->deserialize) {
        void *payload = NULL;
        kw_error e = {0};
        return t->deserialize(buf, n, &payload, &e) < 0 ? NULL : kw_value_new(t, payload);
    }
    json_error_t je;
    json_t *j = json_loadb(buf, n, 0, &je);
    const char *kt = json_string_value(json_object_get(j, "kwtype"));
    json_t *payload = json_object_get(j, "value");
    kw_value *v = kt && !strcmp(kt, type) && payload
                      ? kw_value_json(type, json_incref(payload)) : NULL;
    json_decref(j);
    return v;
}

static void port_key(const char key[65], int p, char out[65])
{
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s.%d", key, p);
    kw_sha256_hex(tmp, strlen(tmp), out);
}

/* Every once output of stage si from the cache: true when all came back; they are then
 * recorded for this run as artifacts like computed ones. */
bool kwr_cache_load(kw_exec *x, int si, const char *prefix)
{
    const kw_gstage *gs = &x->g->stages[si];
    if (x->o->no_cache || gs->op->n_outputs == 0)
        return false;
    char key[65];
    kwr_stage_key(x, si, key);
    kw_value *got[MAX_OUT] = {0};
    bool all = true;
    for (int p = 0; p < gs->op->n_outputs && p < MAX_OUT && all; p++) {
        if (gs->op->outputs[p].card != KW_ONCE)
            continue;
        char pk[65];
        port_key(key, p, pk);
        void *buf = NULL;
        size_t nb = 0;
        kw_error e2 = {0};
        all = kw_cache_get(x->db, pk, &buf, &nb, &e2) == 1 &&
              (got[p] = value_from_bytes(gs->op->outputs[p].type, buf, nb)) != NULL;
        if (all) {
            char name[256], sha[65];
            snprintf(name, sizeof name, "%s/%s.%s", prefix, gs->id, gs->op->outputs[p].name);
            if (kw_db_artifact_put(x->db, x->uuid, name, buf, nb, sha, &e2) >= 0)
                kw_db_param(x->db, x->uuid, name, sha, &e2);
        }
        free(buf);
    }
    for (int p = 0; p < gs->op->n_outputs && p < MAX_OUT; p++) {
        if (all && got[p]) {
            kw_value_unref(*oval(x, si, p));
            *oval(x, si, p) = got[p];
        } else {
            kw_value_unref(got[p]);
        }
    }
    return all;
}

/* Records stage si's once outputs as artifacts ("<prefix>/<stage>.<port>", with their
 * sha256 as a param) and puts them in the cache. A type that cannot serialize is
 * neither (it is recomputed next time). */
void kwr_cache_store(kw_exec *x, int si, const char *prefix)
{
    const kw_gstage *gs = &x->g->stages[si];
    char key[65];
    kwr_stage_key(x, si, key);
    for (int p = 0; p < gs->op->n_outputs && p < MAX_OUT; p++) {
        kw_value *v = *oval(x, si, p);
        void *buf = NULL;
        size_t nb = 0;
        if (!v || gs->op->outputs[p].card != KW_ONCE || value_bytes(v, &buf, &nb) < 0)
            continue;
        char name[256], sha[65], pk[65];
        snprintf(name, sizeof name, "%s/%s.%s", prefix, gs->id, gs->op->outputs[p].name);
        kw_error e2 = {0};
        if (kw_db_artifact_put(x->db, x->uuid, name, buf, nb, sha, &e2) >= 0)
            kw_db_param(x->db, x->uuid, name, sha, &e2);
        port_key(key, p, pk);
        kw_cache_put(x->db, pk, name, buf, nb, &e2);
        free(buf);
    }
}

/* The calibration outputs (reduce stages' once values): from the cache when every one
 * is there, else computed by running the calibration phase. Recorded as artifacts. */
int kwr_calibrate(kw_exec *x, kw_error *err)
{
    const kw_graph *g = x->g;
    int n_red = 0, hits = 0;
    for (int si = 0; si < g->n_stages; si++) {
        if (!g->stages[si].is_reduce)
            continue;
        n_red++;
        hits += kwr_cache_load(x, si, "calib");
    }
    if (n_red == 0)
        return 0;
    if (hits == n_red) {
        kw_db_param(x->db, x->uuid, "calibration", "cached", err);
        if (x->o->progress)
            fprintf(stderr, "calibration: every output from the cache\n");
        return 0;
    }
    int rc = kwr_phase_setup(x, KW_PHASE_CALIB, err);
    if (rc >= 0)
        rc = kwr_run_configs(x, err);
    if (rc >= 0) {
        if (x->o->progress)
            fprintf(stderr, "calibration phase: %s\n",
                    g->calib.n > 0 ? "seeded subset of n samples" : "seeded fraction of samples");
        rc = kwr_stream(x, err);
    }
    if (rc >= 0 && x->fatal)
        rc = x->fatal, *err = x->fatal_err;
    for (int k = 0; rc >= 0 && k < g->n_stages; k++) {
        int si = g->topo[k];
        if (!g->stages[si].is_reduce)
            continue;
        if ((rc = kwr_run_once(x, si, true, err)) < 0)
            break;
        kwr_cache_store(x, si, "calib");
    }
    if (rc >= 0)
        kwr_progress(x, true); /* the phase's count and time, once it is done */
    char num[32];
    snprintf(num, sizeof num, "%" PRId64, x->calib_done);
    kw_error e3 = {0};
    kw_db_param(x->db, x->uuid, "calibration.samples", num, &e3);
    return rc;
}
