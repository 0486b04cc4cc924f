/* What a run records: each finished sample (row, metrics, generation figures), params
 * and provenance, stage and lane figures, run-level means; and the progress lines. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "kvweave/util.h"
#include "run_internal.h"

static void agg_add(kw_exec *x, const char *key, double v)
{
    for (int i = 0; i < x->n_aggs; i++)
        if (!strcmp(x->aggs[i].key, key)) {
            x->aggs[i].sum += v;
            x->aggs[i].n++;
            return;
        }
    if (x->n_aggs == x->cap_aggs) {
        int cap = x->cap_aggs ? 2 * x->cap_aggs : 32;
        agg *a = realloc(x->aggs, sizeof *a * (size_t)cap);
        if (!a)
            return;
        x->aggs = a;
        x->cap_aggs = cap;
    }
    x->aggs[x->n_aggs++] = (agg){strdup(key), v, 1};
}

/* Numbers of a JSON object as metrics "<prefix><key>"; nested objects with "<key>/". */
static void put_numbers(kw_exec *x, ksample *s, const char *prefix, json_t *obj, kw_error *err,
                        int depth)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        char key[256];
        snprintf(key, sizeof key, "%s%s", prefix, k);
        if (json_is_number(v)) {
            double d = json_number_value(v);
            kw_db_metric(x->db, x->uuid, s->idx, key, d, 0, err);
            pthread_mutex_lock(&x->mu);
            agg_add(x, key, d);
            pthread_mutex_unlock(&x->mu);
        } else if (json_is_boolean(v) && depth > 0) {
            continue;
        } else if (json_is_object(v) && depth < 2) {
            char p[256];
            snprintf(p, sizeof p, "%s/", key);
            put_numbers(x, s, p, v, err, depth + 1);
        }
    }
}

static char *dump(json_t *j)
{
    return j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
}

/* A generation's figures as metrics "<pre>gen/<field>" and "<pre>mem/<key>". */
static void record_generation(kw_exec *x, ksample *s, const char *pre, json_t *gen,
                              kw_error *err)
{
    static const char *const fields[] = {"n_prompt", "n_gen", "ttft_s", "decode_s_per_token",
                                         "decode_s_p50", "decode_s_p90", "decode_tok_per_s",
                                         "prefill_tok_per_s", "queue_s", "nll_mean",
                                         "prefill_shared_tokens", "hook_wait_s"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        json_t *v = json_object_get(gen, fields[i]);
        if (json_is_number(v)) {
            char key[256];
            snprintf(key, sizeof key, "%sgen/%s", pre, fields[i]);
            kw_db_metric(x->db, x->uuid, s->idx, key, json_number_value(v), 0, err);
            pthread_mutex_lock(&x->mu);
            agg_add(x, key, json_number_value(v));
            pthread_mutex_unlock(&x->mu);
        }
    }
    json_t *mem = json_object_get(gen, "memory");
    char mp[192];
    snprintf(mp, sizeof mp, "%smem/", pre);
    if (json_is_object(mem))
        put_numbers(x, s, mp, mem, err, 1);
}

/* Records a finished sample of the main phase (its row and metrics, one transaction). */
void kwr_record_sample(kw_exec *x, ksample *s)
{
    const kw_graph *g = x->g;
    json_t *smp = x->g->source >= 0 ? kw_value_jsonobj(*sval(x, s, g->source, 0)) : NULL;
    json_t *gen = NULL;
    for (int si = 0; si < g->n_stages && !gen; si++)
        if (x->is_ps[si])
            for (int p = 0; p < g->stages[si].op->n_outputs && p < MAX_OUT; p++) {
                kw_value *v = *sval(x, s, si, p);
                if (v && !strcmp(kw_value_type(v), KW_T_GENERATION)) {
                    gen = kw_value_jsonobj(v);
                    break;
                }
            }
    char idbuf[32], hash[65] = "";
    snprintf(idbuf, sizeof idbuf, "%" PRId64, s->idx);
    json_t *jid = json_object_get(smp, "id");
    const char *sid = json_is_string(jid) ? json_string_value(jid) : idbuf;
    char *stext = dump(smp);
    if (stext)
        kw_sha256_hex(stext, strlen(stext), hash);
    free(stext);
    json_t *ans = json_object_get(smp, "outputs");
    if (!ans)
        ans = json_object_get(smp, "answers");
    char *answers = dump(ans);
    const char *pred = json_string_value(json_object_get(gen, "text"));
    kw_error err = {0};
    kw_db_begin(x->db, &err);
    kw_db_sample(x->db, x->uuid, s->idx, sid, hash, pred, answers,
                 s->failed ? "FAILED" : "FINISHED", s->failed ? s->err : NULL, &err);
    free(answers);
    if (!s->failed) {
        for (int si = 0; si < g->n_stages; si++) {
            if (!x->is_ps[si])
                continue;
            for (int p = 0; p < g->stages[si].op->n_outputs && p < MAX_OUT; p++) {
                kw_value *v = *sval(x, s, si, p);
                if (v && !strcmp(kw_value_type(v), KW_T_METRICS)) {
                    /* several scorers of one kind (one per method branch): their keys
                     * are "<stage>/<key>" */
                    char pre[160] = "";
                    if (x->metric_shared[si])
                        snprintf(pre, sizeof pre, "%s/", g->stages[si].id);
                    put_numbers(x, s, pre, kw_value_jsonobj(v), &err, 1);
                }
            }
        }
        /* every decode stage's figures: "gen/..." and "mem/..." for the only one;
         * with several (one per method branch of a sweep) "<stage>/gen/..." and
         * "<stage>/mem/..." */
        int n_gen = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int si = 0; si < g->n_stages; si++) {
                if (!x->is_ps[si])
                    continue;
                for (int p = 0; p < g->stages[si].op->n_outputs && p < MAX_OUT; p++) {
                    kw_value *v = *sval(x, s, si, p);
                    if (!v || strcmp(kw_value_type(v), KW_T_GENERATION) != 0)
                        continue;
                    if (pass == 0) {
                        n_gen++;
                        continue;
                    }
                    char pre[160] = "";
                    if (n_gen > 1)
                        snprintf(pre, sizeof pre, "%s/", g->stages[si].id);
                    record_generation(x, s, pre, kw_value_jsonobj(v), &err);
                }
            }
    }
    if (kw_db_commit(x->db, &err) < 0)
        kwr_set_fatal(x, err.code ? err.code : KW_EDB, "recording sample %" PRId64 ": %s", s->idx,
                  err.msg);
}

/* --------------------------------------------------------------- progress ---- */

void kwr_progress(kw_exec *x, bool final)
{
    if (!x->o->progress)
        return;
    double now = kw_now();
    pthread_mutex_lock(&x->mu);
    double every = x->o->progress == 2 ? 0.25 : 10.0;
    if (!final && now - x->last_progress < every) {
        pthread_mutex_unlock(&x->mu);
        return;
    }
    x->last_progress = now;
    double el = now - x->t0;
    int64_t done = x->ok + x->failed, total = x->o->total_hint;
    char eta[64] = "";
    if (total > 0 && done > 0 && done < total)
        snprintf(eta, sizeof eta, ", ETA %.0f s", el / (double)done * (double)(total - done));
    char tot[32] = "";
    if (total > 0)
        snprintf(tot, sizeof tot, "/%" PRId64, total);
    if (x->phase == KW_PHASE_CALIB)
        fprintf(stderr, "%scalibration: %" PRId64 " samples, %.1f s%s", x->o->progress == 2 ? "\r" : "",
                x->calib_done, el, x->o->progress == 2 && !final ? "" : "\n");
    else
        fprintf(stderr, "%s%s: %" PRId64 "%s samples (%" PRId64 " failed, %" PRId64
                " in flight), %.1f s, %.2f samples/s%s%s",
                x->o->progress == 2 ? "\r\033[K" : "", x->g->name, done, tot, x->failed,
                x->inflight, el, el > 0 ? (double)done / el : 0.0, eta,
                x->o->progress == 2 && !final ? "" : "\n");
    x->progress_line_open = x->o->progress == 2 && !final;
    fflush(stderr);
    pthread_mutex_unlock(&x->mu);
}

static void pval_text(const kw_pval *v, char *buf, size_t n)
{
    switch (v->kind) {
    case KW_PARAM_INT:
        snprintf(buf, n, "%" PRId64, v->i);
        break;
    case KW_PARAM_BOOL:
        snprintf(buf, n, "%s", v->i ? "true" : "false");
        break;
    case KW_PARAM_FLOAT:
        snprintf(buf, n, "%.17g", v->f);
        break;
    case KW_PARAM_INTLIST: {
        size_t k = (size_t)snprintf(buf, n, "[");
        for (int i = 0; i < v->n_ints && k < n; i++)
            k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? ", " : "", v->ints[i]);
        if (k < n)
            snprintf(buf + k, n - k, "]");
        break;
    }
    default:
        snprintf(buf, n, "%s", v->s ? v->s : "");
    }
}

int kwr_record_params(kw_exec *x, kw_error *err)
{
    const kw_graph *g = x->g;
    char buf[4096], key[512];
    int rc = 0;
    for (int si = 0; si < g->n_stages && rc >= 0; si++) {
        const kw_gstage *gs = &g->stages[si];
        snprintf(key, sizeof key, "%s.op", gs->id);
        snprintf(buf, sizeof buf, "%s@%d", gs->op->name, gs->op->version);
        rc = kw_db_param(x->db, x->uuid, key, buf, err);
        for (int i = 0; i < gs->op->n_params && rc >= 0; i++) {
            snprintf(key, sizeof key, "%s.%s", gs->id, gs->op->params[i].name);
            pval_text(&gs->params[i], buf, sizeof buf);
            rc = kw_db_param(x->db, x->uuid, key, buf, err);
        }
    }
    snprintf(buf, sizeof buf, "%" PRId64, g->limit);
    if (rc >= 0)
        rc = kw_db_param(x->db, x->uuid, "run.limit", buf, err);
    const struct { const char *key; int64_t v; } eng[] = {
        {"run.pool_mb", g->engine.pool_mb}, {"run.max_batch", g->engine.max_batch},
        {"run.chunk", g->engine.chunk}, {"run.page_tokens", g->engine.page_tokens},
        {"run.kv_residual", g->engine.kv_residual}};
    for (size_t i = 0; rc >= 0 && i < sizeof eng / sizeof *eng; i++)
        if (eng[i].v > 0) {
            snprintf(buf, sizeof buf, "%" PRId64, eng[i].v);
            rc = kw_db_param(x->db, x->uuid, eng[i].key, buf, err);
        }
    static const char *const kv_pages[] = {"float", "int8", "int8_kchan", "int4_kchan"};
    if (rc >= 0 && g->engine.kv_dtype > 0 && g->engine.kv_dtype < 4)
        rc = kw_db_param(x->db, x->uuid, "run.kv_pages", kv_pages[g->engine.kv_dtype], err);
    if (rc >= 0 && g->model && g->model[0])
        rc = kw_db_param(x->db, x->uuid, "model", g->model, err);
    for (int i = 0; rc >= 0 && i < x->n_recs; i++)
        rc = kw_db_param(x->db, x->uuid, x->recs[i].key, x->recs[i].value, err);
    for (int i = 0; rc >= 0 && i < x->n_recs; i++) { /* data set identity */
        const char *k = x->recs[i].key, *dot = strrchr(k, '.');
        size_t n = g->source >= 0 ? strlen(g->stages[g->source].id) : 0;
        if (g->source < 0 || strncmp(k, g->stages[g->source].id, n) || k[n] != '.' || !dot)
            continue;
        if (!strcmp(dot, ".sha256"))
            kw_db_run_set(x->db, x->uuid, "dataset_sha256", x->recs[i].value, err);
        else if (!strcmp(dot, ".path"))
            kw_db_run_set(x->db, x->uuid, "dataset_id", x->recs[i].value, err);
    }
    return rc;
}

void kwr_record_figures(kw_exec *x, double wall)
{
    const kw_graph *g = x->g;
    kw_error err = {0};
    double lane_busy[KW_N_LANES] = {0};
    int64_t lane_tasks[KW_N_LANES] = {0};
    double lane_wait[KW_N_LANES] = {0};
    for (int si = 0; si < g->n_stages; si++) {
        kw_opctx *c = &x->ctx[si];
        kw_db_stage(x->db, x->uuid, g->stages[si].id, kw_lane_name(c->lane), c->tasks, c->busy,
                    c->wait, 0, &err);
        lane_tasks[c->lane] += c->tasks;
        lane_wait[c->lane] += c->wait;
    }
    /* Lane totals: the time the lanes' threads spent in jobs (the source runs on the
     * feeding thread and counts for its lane); the gpu lane is the engine's busy time
     * (decode tasks only hand sequences over). */
    for (int l = 0; l < KW_N_LANES; l++)
        lane_busy[l] = x->lanes ? kw_lanes_busy(x->lanes, l) : 0;
    if (g->source >= 0)
        lane_busy[x->ctx[g->source].lane] += x->ctx[g->source].busy;
    if (x->engine && x->o->env && x->o->env->engine_busy_s)
        lane_busy[KW_LI_GPU] = x->o->env->engine_busy_s(x->engine);
    double sum = 0;
    for (int l = 0; l < KW_N_LANES; l++) {
        if (lane_tasks[l] == 0 && lane_busy[l] == 0)
            continue;
        kw_db_stage(x->db, x->uuid, KW_DB_LANE_TOTAL, kw_lane_name(l), lane_tasks[l],
                    lane_busy[l], lane_wait[l], 0, &err);
        sum += lane_busy[l];
    }
    kw_db_metric(x->db, x->uuid, -1, "wall_s", wall, 0, &err);
    if (x->engine && x->o->env && x->o->env->engine_io_bytes) {
        int64_t h2d = 0, d2h = 0; /* host <-> device copies of the engine's steps */
        x->o->env->engine_io_bytes(x->engine, &h2d, &d2h);
        kw_db_metric(x->db, x->uuid, -1, "h2d_bytes", (double)h2d, 0, &err);
        kw_db_metric(x->db, x->uuid, -1, "d2h_bytes", (double)d2h, 0, &err);
    }
    int64_t dev = x->engine && x->o->env && x->o->env->engine_device_used
                      ? x->o->env->engine_device_used(x->engine) : -1;
    if (dev >= 0) /* the GPU's memory in use at the end: the engine's peak (engine.h) */
        kw_db_metric(x->db, x->uuid, -1, "device_used_bytes", (double)dev, 0, &err);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) /* the process's peak resident set (kB on Linux) */
        kw_db_metric(x->db, x->uuid, -1, "peak_rss_bytes", (double)ru.ru_maxrss * 1024.0, 0, &err);
    if (wall > 0)
        kw_db_metric(x->db, x->uuid, -1, "overlap", sum / wall, 0, &err);
    kw_db_metric(x->db, x->uuid, -1, "samples_ok", (double)x->ok, 0, &err);
    kw_db_metric(x->db, x->uuid, -1, "samples_failed", (double)x->failed, 0, &err);
    if (wall > 0)
        kw_db_metric(x->db, x->uuid, -1, "samples_per_s", (double)x->ok / wall, 0, &err);
    for (int i = 0; i < x->n_aggs; i++)
        if (x->aggs[i].n > 0)
            kw_db_metric(x->db, x->uuid, -1, x->aggs[i].key, x->aggs[i].sum / (double)x->aggs[i].n,
                         0, &err);
}

/* On resume, the aggregates include the samples finished before. */
int kwr_load_previous(void *ud, int ncol, const char *const *names, const char *const *vals,
                         const int *types)
{
    (void)ncol, (void)names, (void)types;
    kw_exec *x = ud;
    if (!vals)
        return 0;
    if (vals[0] && vals[1])
        agg_add(x, vals[0], strtod(vals[1], NULL));
    return 0;
}
