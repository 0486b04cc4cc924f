/* Pipelines: the YAML tree (yamltree.c) -> kw_pdesc (pdesc.h), which knows only names
 * and raw values with their places. Also --set overrides, sweep cells and `plugins:`.
 * Typing against operator schemas is graph.c's job. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "kvweave/util.h"
#include "pdesc.h"
#include "registry.h"

static const char *const top_keys[] = {"name", "model", "dataset", "plugins", "run",
                                       "calibration", "stages", "sweep"};
static const char *const run_keys[] = {"device", "limit", "seed", "db", "pool_mb", "max_batch",
                                        "chunk", "kv_pages", "page_tokens", "kv_residual"};
static const char *const calib_keys[] = {"sample_ratio", "n", "seed"};
static const char *const stage_keys[] = {"id", "op", "in", "with"};
#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

typedef struct pctx {
    kw_pdesc *d;
    kw_error *err;
} pctx;

static int oom(kw_error *err) { return kw_error_set(err, KW_ENOMEM, "out of memory"); }

static int at(pctx *c, int code, const kw_ynode *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int at(pctx *c, int code, const kw_ynode *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kw_error_vset(c->err, code, c->d->file, n ? n->line : 0, n ? n->col : 0, fmt, ap);
    va_end(ap);
    return code;
}

static const char *kind_name(const kw_ynode *n)
{
    return n->kind == KW_Y_MAP ? "a mapping" : n->kind == KW_Y_SEQ ? "a list" : "a value";
}

/* A plain `~`, `null` or nothing: YAML's null, taken as "not given" or "empty". */
static bool is_null(const kw_ynode *n)
{
    return n->kind == KW_Y_SCALAR && !n->quoted &&
           (!n->text || !*n->text || !strcmp(n->text, "~") || !strcmp(n->text, "null") ||
            !strcmp(n->text, "Null") || !strcmp(n->text, "NULL"));
}

static int want(pctx *c, const kw_ynode *n, kw_ykind kind, const char *what)
{
    if (n->kind == kind)
        return KW_OK;
    static const char *const names[] = {"a value", "a list", "a mapping"};
    return at(c, KW_ETYPE, n, "%s must be %s, got %s", what, names[kind], kind_name(n));
}

static int unknown_key(pctx *c, const kw_ynode *k, const char *where,
                       const char *const *names, int n)
{
    const char *near = kw__nearest(k->text, names, n);
    if (near)
        return at(c, KW_ENOTFOUND, k, "unknown key '%s' in %s (did you mean '%s'?)", k->text,
                  where, near);
    return at(c, KW_ENOTFOUND, k, "unknown key '%s' in %s", k->text, where);
}

static int key_index(const char *key, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(key, names[i]))
            return i;
    return -1;
}

/* Moves the string of a scalar node out. */
static int take_str(pctx *c, kw_ynode *n, const char *what, char **out, int *line, int *col)
{
    int rc = want(c, n, KW_Y_SCALAR, what);
    if (rc < 0)
        return rc;
    *out = n->text;
    n->text = NULL;
    if (line) {
        *line = n->line;
        *col = n->col;
    }
    return KW_OK;
}

static void pkv_clear(kw_pkv *kv)
{
    free(kv->key);
    kw__ynode_free(kv->val);
    free(kv->origin);
    memset(kv, 0, sizeof *kv);
}

/* A mapping of scalar keys to raw values (run:, calibration:, with:). Values are moved. */
static int take_kvs(pctx *c, kw_ynode *m, const char *what, const char *const *names, int nn,
                    kw_pkv **out, int *n_out)
{
    if (is_null(m)) {
        *n_out = 0;
        *out = calloc(1, sizeof **out);
        return *out ? KW_OK : oom(c->err);
    }
    int rc = want(c, m, KW_Y_MAP, what);
    if (rc < 0)
        return rc;
    kw_pkv *kv = calloc((size_t)m->n / 2 + 1, sizeof *kv);
    if (!kv)
        return oom(c->err);
    *out = kv;
    *n_out = 0;
    for (int i = 0; i < m->n; i += 2) {
        kw_ynode *k = m->items[i];
        if (names && key_index(k->text, names, nn) < 0)
            return unknown_key(c, k, what, names, nn);
        kw_pkv *e = &kv[(*n_out)++];
        e->line = k->line;
        e->col = k->col;
        e->key = k->text;
        k->text = NULL;
        e->val = m->items[i + 1];
        m->items[i + 1] = NULL;
    }
    return KW_OK;
}

static bool valid_id(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-'))
            return false;
    return true;
}

static int take_refs(pctx *c, kw_ynode *n, const char *what, kw_pref **out, int *n_out)
{
    int cnt = n->kind == KW_Y_SEQ ? n->n : is_null(n) ? 0 : 1;
    if (n->kind == KW_Y_MAP)
        return want(c, n, KW_Y_SEQ, what);
    kw_pref *r = calloc((size_t)cnt + 1, sizeof *r);
    if (!r)
        return oom(c->err);
    *out = r;
    *n_out = 0;
    for (int i = 0; i < cnt; i++) {
        kw_ynode *x = n->kind == KW_Y_SEQ ? n->items[i] : n;
        int rc = take_str(c, x, what, &r[i].text, &r[i].line, &r[i].col);
        if (rc < 0)
            return rc;
        (*n_out)++;
    }
    return KW_OK;
}

static int stage_fields(pctx *c, kw_ynode *m, kw_pstage *s, bool dataset)
{
    static const char *const ds_keys[] = {"op", "with"};
    const char *const *names = dataset ? ds_keys : stage_keys;
    int nn = dataset ? 2 : N_OF(stage_keys), rc;
    const char *what = dataset ? "dataset" : "a stage";
    for (int i = 0; i < m->n; i += 2) {
        kw_ynode *k = m->items[i], *v = m->items[i + 1];
        switch (key_index(k->text, names, nn) < 0 ? -1 : key_index(k->text, stage_keys, 4)) {
        case 0:
            if ((rc = take_str(c, v, "a stage id", &s->id, NULL, NULL)) < 0)
                return rc;
            if (!valid_id(s->id))
                return at(c, KW_EINVAL, v, "stage id '%s' may only hold letters, digits, "
                          "'_' and '-'", s->id);
            break;
        case 1:
            rc = take_str(c, v, "an operator name", &s->op, &s->op_line, &s->op_col);
            break;
        case 2:
            s->has_in = true;
            rc = take_refs(c, v, "`in:`", &s->in, &s->n_in);
            break;
        case 3:
            rc = take_kvs(c, v, "`with:`", NULL, 0, &s->with, &s->n_with);
            break;
        default:
            return unknown_key(c, k, what, names, nn);
        }
        if (rc < 0)
            return rc;
    }
    if (!s->op)
        return at(c, KW_EINVAL, m, "%s needs `op:`", dataset ? "dataset" : "the stage");
    return KW_OK;
}

static int add_stage(pctx *c, kw_ynode *m, bool dataset)
{
    kw_pdesc *d = c->d;
    int rc = want(c, m, KW_Y_MAP, dataset ? "dataset" : "a stage");
    if (rc < 0)
        return rc;
    if (d->n_stages >= KW_PIPELINE_MAX_STAGES)
        return at(c, KW_ELIMIT, m, "too many stages: the limit is %d", KW_PIPELINE_MAX_STAGES);
    kw_pstage *s = &d->stages[d->n_stages++];
    s->line = m->line;
    s->col = m->col;
    if ((rc = stage_fields(c, m, s, dataset)) < 0)
        return rc;
    if (dataset && !(s->id = strdup("dataset")))
        return oom(c->err);
    if (!s->id)
        return at(c, KW_EINVAL, m, "the stage needs `id:`");
    for (int i = 0; i < d->n_stages - 1; i++)
        if (!strcmp(d->stages[i].id, s->id))
            return at(c, KW_EINVAL, m, "duplicate stage id '%s' (first at line %d)", s->id,
                      d->stages[i].line);
    return KW_OK;
}

static int take_stages(pctx *c, kw_ynode *ds, kw_ynode *st)
{
    if (st && is_null(st))
        st = NULL;
    int n = (ds ? 1 : 0) + (st && st->kind == KW_Y_SEQ ? st->n : 0);
    if (st && st->kind != KW_Y_SEQ)
        return want(c, st, KW_Y_SEQ, "`stages:`");
    if (!(c->d->stages = calloc((size_t)n + 1, sizeof *c->d->stages)))
        return oom(c->err);
    int rc;
    if (ds && (rc = add_stage(c, ds, true)) < 0)
        return rc;
    c->d->has_dataset = ds != NULL;
    for (int i = 0; st && i < st->n; i++)
        if ((rc = add_stage(c, st->items[i], false)) < 0)
            return rc;
    if (c->d->n_stages == 0)
        return at(c, KW_EINVAL, NULL, "the pipeline has no stages (`dataset:` or `stages:`)");
    return KW_OK;
}

/* A settable key: "model", "run.K", "calibration.K" or "stage.param". */
static int check_key(const kw_pdesc *d, const char *key, const char **why)
{
    if (!strcmp(key, "model"))
        return KW_OK;
    const char *dot = strchr(key, '.');
    if (!dot || dot == key || !dot[1] || strchr(dot + 1, '.')) {
        *why = "expected stage.param, run.KEY, calibration.KEY or model";
        return KW_EINVAL;
    }
    size_t n = (size_t)(dot - key);
    if (n == 3 && !strncmp(key, "run", 3)) {
        *why = "unknown run setting (device, limit, seed, db, pool_mb, max_batch, chunk, "
               "kv_pages, page_tokens, kv_residual)";
        return key_index(dot + 1, run_keys, N_OF(run_keys)) < 0 ? KW_ENOTFOUND : KW_OK;
    }
    if (n == 11 && !strncmp(key, "calibration", 11)) {
        *why = "unknown calibration setting (sample_ratio, n, seed)";
        return key_index(dot + 1, calib_keys, N_OF(calib_keys)) < 0 ? KW_ENOTFOUND : KW_OK;
    }
    for (int i = 0; i < d->n_stages; i++)
        if (strlen(d->stages[i].id) == n && !strncmp(d->stages[i].id, key, n))
            return KW_OK;
    *why = "no stage has this id";
    return KW_ENOTFOUND;
}

static int take_sweep(pctx *c, kw_ynode *m)
{
    int rc = want(c, m, KW_Y_MAP, "`sweep:`");
    if (rc < 0)
        return rc;
    kw_pdesc *d = c->d;
    if (!(d->sweep = calloc((size_t)m->n / 2 + 1, sizeof *d->sweep)))
        return oom(c->err);
    long cells = 1;
    for (int i = 0; i < m->n; i += 2) {
        kw_ynode *k = m->items[i], *v = m->items[i + 1];
        const char *why = NULL;
        if (check_key(d, k->text, &why) < 0)
            return at(c, KW_ENOTFOUND, k, "sweep key '%s': %s", k->text, why);
        kw_paxis *a = &d->sweep[d->n_sweep++];
        a->key = k->text;
        k->text = NULL;
        a->line = k->line;
        a->col = k->col;
        if (v->kind != KW_Y_SEQ) { /* a single value is an axis of one */
            kw_ynode *s = calloc(1, sizeof *s);
            if (!s || !(s->items = calloc(1, sizeof *s->items))) {
                free(s);
                return oom(c->err);
            }
            s->kind = KW_Y_SEQ;
            s->line = v->line;
            s->col = v->col;
            s->items[0] = v;
            s->n = 1;
            v = s;
        }
        m->items[i + 1] = NULL;
        a->vals = v;
        if (v->n == 0)
            return at(c, KW_EINVAL, v, "sweep axis '%s' has no values", a->key);
        cells *= v->n;
        if (cells > KW_PIPELINE_MAX_CELLS)
            return at(c, KW_ELIMIT, v, "sweep grid too large: more than %d cells",
                      KW_PIPELINE_MAX_CELLS);
    }
    return KW_OK;
}

static int take_top(pctx *c, kw_ynode *root)
{
    kw_pdesc *d = c->d;
    if (!root)
        return kw_error_at(c->err, KW_EPARSE, d->file, 0, 0, "empty pipeline");
    int rc = want(c, root, KW_Y_MAP, "the pipeline");
    if (rc < 0)
        return rc;
    kw_ynode *v[N_OF(top_keys)] = {0};
    for (int i = 0; i < root->n; i += 2) {
        int k = key_index(root->items[i]->text, top_keys, N_OF(top_keys));
        if (k < 0)
            return unknown_key(c, root->items[i], "the pipeline", top_keys, N_OF(top_keys));
        v[k] = root->items[i + 1];
    }
    if (!v[0])
        return at(c, KW_EINVAL, root, "the pipeline needs `name:`");
    if ((rc = take_str(c, v[0], "`name:`", &d->name, &d->name_line, &d->name_col)) < 0)
        return rc;
    if (v[1] && !is_null(v[1])) {
        if ((rc = want(c, v[1], KW_Y_SCALAR, "`model:`")) < 0)
            return rc;
        if (!(d->model.key = strdup("model")))
            return oom(c->err);
        d->model.val = v[1];
        d->model.line = v[1]->line;
        d->model.col = v[1]->col;
        for (int i = 1; i < root->n; i += 2)
            if (root->items[i] == v[1])
                root->items[i] = NULL;
    }
    if ((rc = take_stages(c, v[2], v[6])) < 0)
        return rc;
    if (v[3] && (rc = take_refs(c, v[3], "`plugins:`", &d->plugins, &d->n_plugins)) < 0)
        return rc;
    if (v[4] && (rc = take_kvs(c, v[4], "`run:`", run_keys, N_OF(run_keys), &d->run,
                               &d->n_run)) < 0)
        return rc;
    if (v[5] && (rc = take_kvs(c, v[5], "`calibration:`", calib_keys, N_OF(calib_keys),
                               &d->calib, &d->n_calib)) < 0)
        return rc;
    if (v[7] && !is_null(v[7]) && (rc = take_sweep(c, v[7])) < 0)
        return rc;
    return KW_OK;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

int kw_pipeline_parse(const char *name, const char *text, size_t n, kw_pdesc **out,
                      kw_error *err)
{
    *out = NULL;
    kw_pdesc *d = calloc(1, sizeof *d);
    if (!d)
        return oom(err);
    d->file = strdup(name ? name : "<pipeline>");
    d->dir = d->file ? dir_of(d->file) : NULL;
    d->text = n <= KW_PIPELINE_MAX_BYTES ? malloc(n + 1) : strdup("");
    d->cell_label = strdup("");
    if (!d->file || !d->dir || !d->text || !d->cell_label) {
        kw_pdesc_free(d);
        return oom(err);
    }
    if (n <= KW_PIPELINE_MAX_BYTES) {
        memcpy(d->text, text, n);
        d->text[n] = '\0';
        d->n_text = n;
    }
    kw_ynode *root = NULL;
    int rc = kw__yaml_tree(d->file, text, n, &root, err);
    pctx c = {d, err};
    if (rc >= 0)
        rc = take_top(&c, root);
    kw__ynode_free(root);
    if (rc < 0) {
        kw_pdesc_free(d);
        return rc;
    }
    *out = d;
    return KW_OK;
}

int kw_pipeline_load(const char *path, kw_pdesc **out, kw_error *err)
{
    char *text;
    size_t n;
    *out = NULL;
    int rc = kw_read_file(path, &text, &n, err);
    if (rc < 0)
        return rc;
    rc = kw_pipeline_parse(path, text, n, out, err);
    free(text);
    return rc;
}

static void stage_clear(kw_pstage *s)
{
    free(s->id);
    free(s->op);
    for (int i = 0; i < s->n_in; i++)
        free(s->in[i].text);
    free(s->in);
    for (int i = 0; i < s->n_with; i++)
        pkv_clear(&s->with[i]);
    free(s->with);
}

kw_pdesc *kw_pdesc_free(kw_pdesc *d)
{
    if (!d)
        return NULL;
    free(d->file);
    free(d->dir);
    free(d->text);
    free(d->name);
    pkv_clear(&d->model);
    for (int i = 0; i < d->n_run; i++)
        pkv_clear(&d->run[i]);
    free(d->run);
    for (int i = 0; i < d->n_calib; i++)
        pkv_clear(&d->calib[i]);
    free(d->calib);
    for (int i = 0; i < d->n_plugins; i++)
        free(d->plugins[i].text);
    free(d->plugins);
    for (int i = 0; i < d->n_stages; i++)
        stage_clear(&d->stages[i]);
    free(d->stages);
    for (int i = 0; i < d->n_sweep; i++) {
        free(d->sweep[i].key);
        kw__ynode_free(d->sweep[i].vals);
    }
    free(d->sweep);
    free(d->label);
    free(d->cell_label);
    free(d);
    return NULL;
}

const kw_pkv *kw__pkv_find(const kw_pkv *kv, int n, const char *key)
{
    for (int i = n - 1; i >= 0; i--)
        if (kv[i].key && !strcmp(kv[i].key, key))
            return &kv[i];
    return NULL;
}

/* Replaces (or adds) key in a kv array; takes val and origin. */
static int kvs_put(kw_pkv **kv, int *n, const char *key, kw_ynode *val, char *origin)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp((*kv)[i].key, key)) {
            kw__ynode_free((*kv)[i].val);
            free((*kv)[i].origin);
            (*kv)[i].val = val;
            (*kv)[i].origin = origin;
            (*kv)[i].line = val->line;
            (*kv)[i].col = val->col;
            return KW_OK;
        }
    kw_pkv *nk = realloc(*kv, (size_t)(*n + 1) * sizeof *nk);
    if (!nk)
        return KW_ENOMEM;
    *kv = nk;
    kw_pkv *e = &nk[*n];
    if (!(e->key = strdup(key)))
        return KW_ENOMEM;
    e->val = val;
    e->origin = origin;
    e->line = val->line;
    e->col = val->col;
    (*n)++;
    return KW_OK;
}

/* Applies one override; takes val and origin (freed on failure). */
static int set_node(kw_pdesc *d, const char *key, kw_ynode *val, char *origin, kw_error *err)
{
    const char *why = NULL;
    int rc = check_key(d, key, &why);
    if (rc >= 0 && !strcmp(key, "model") && val->kind != KW_Y_SCALAR) {
        why = "the model must be a value";
        rc = KW_ETYPE;
    }
    if (rc < 0) {
        kw__ynode_free(val);
        free(origin);
        const char *near = NULL, *dot = strchr(key, '.');
        if (rc == KW_ENOTFOUND && dot && d->n_stages <= KW_PIPELINE_MAX_STAGES) {
            const char *ids[KW_PIPELINE_MAX_STAGES];
            char stage[256];
            snprintf(stage, sizeof stage, "%.*s", (int)(dot - key), key);
            for (int i = 0; i < d->n_stages; i++)
                ids[i] = d->stages[i].id;
            near = kw__nearest(stage, ids, d->n_stages);
        }
        if (near)
            return kw_error_set(err, rc, "cannot set '%s': %s (did you mean '%s'?)", key, why,
                                near);
        return kw_error_set(err, rc, "cannot set '%s': %s", key, why);
    }
    const char *dot = strchr(key, '.');
    if (!dot) {
        pkv_clear(&d->model);
        d->model = (kw_pkv){.key = strdup("model"), .val = val, .origin = origin,
                            .line = val->line, .col = val->col};
        return d->model.key ? KW_OK : oom(err);
    }
    size_t n = (size_t)(dot - key);
    if (n == 3 && !strncmp(key, "run", 3))
        rc = kvs_put(&d->run, &d->n_run, dot + 1, val, origin);
    else if (n == 11 && !strncmp(key, "calibration", 11))
        rc = kvs_put(&d->calib, &d->n_calib, dot + 1, val, origin);
    else
        for (int i = 0; i < d->n_stages; i++)
            if (strlen(d->stages[i].id) == n && !strncmp(d->stages[i].id, key, n)) {
                kw_pstage *s = &d->stages[i];
                rc = kvs_put(&s->with, &s->n_with, dot + 1, val, origin);
            }
    if (rc < 0) {
        kw__ynode_free(val);
        free(origin);
        return oom(err);
    }
    return KW_OK;
}

int kw_pdesc_set(kw_pdesc *d, const char *key, const char *value, kw_error *err)
{
    char origin[512];
    snprintf(origin, sizeof origin, "--set %s", key);
    kw_ynode *val;
    int rc = kw__ynode_parse_value(origin, value, &val, err);
    if (rc < 0)
        return rc;
    char *o = strdup(origin);
    if (!o) {
        kw__ynode_free(val);
        return oom(err);
    }
    if ((rc = set_node(d, key, val, o, err)) < 0)
        return rc;
    for (int i = 0; i < d->n_sweep; i++) /* the command line wins over a sweep axis */
        if (!strcmp(d->sweep[i].key, key)) {
            free(d->sweep[i].key);
            kw__ynode_free(d->sweep[i].vals);
            d->sweep[i--] = d->sweep[--d->n_sweep];
        }
    return KW_OK;
}

int kw_pdesc_sweep_cells(const kw_pdesc *d)
{
    int cells = 1;
    for (int i = 0; i < d->n_sweep; i++)
        cells *= d->sweep[i].vals->n;
    return cells;
}

/* The value index of axis a in cell i: the last axis varies fastest. */
static int cell_index(const kw_pdesc *d, int i, int a)
{
    for (int b = d->n_sweep - 1; b > a; b--)
        i /= d->sweep[b].vals->n;
    return i % d->sweep[a].vals->n;
}

static char *make_label(const kw_pdesc *d, int i)
{
    int na = d->n_sweep;
    size_t cap = 1, len = 0;
    char *s = calloc(1, 1);
    for (int a = 0; s && a < na; a++) {
        const kw_ynode *v = d->sweep[a].vals->items[cell_index(d, i, a)];
        char *vt = v->kind == KW_Y_SCALAR ? strdup(v->text) : kw__ynode_text(v);
        size_t need = len + strlen(d->sweep[a].key) + (vt ? strlen(vt) : 0) + 3;
        char *ns = vt && need > cap ? realloc(s, need) : s;
        if (!vt || !ns) {
            free(vt);
            free(ns);
            s = NULL;
            break;
        }
        s = ns;
        cap = need > cap ? need : cap;
        len += (size_t)sprintf(s + len, "%s%s=%s", a ? "," : "", d->sweep[a].key, vt);
        free(vt);
    }
    return s;
}

const char *kw_pdesc_cell_label(const kw_pdesc *d, int i)
{
    kw_pdesc *m = (kw_pdesc *)d; /* the label buffer is a cache */
    free(m->label);
    m->label = i >= 0 && i < kw_pdesc_sweep_cells(d) ? make_label(d, i) : NULL;
    return m->label ? m->label : "";
}

const char *kw_pdesc_name(const kw_pdesc *d) { return d->name; }

/* ---- copies (sweep cells) ---- */

static char *dup_or(const char *s, bool *bad)
{
    char *r = s ? strdup(s) : NULL;
    if (s && !r)
        *bad = true;
    return r;
}

static void kv_copy(kw_pkv *dst, const kw_pkv *src, bool *bad)
{
    dst->key = dup_or(src->key, bad);
    dst->origin = dup_or(src->origin, bad);
    dst->val = kw__ynode_copy(src->val);
    if (src->val && !dst->val)
        *bad = true;
    dst->line = src->line;
    dst->col = src->col;
}

static kw_pkv *kvs_copy(const kw_pkv *src, int n, bool *bad)
{
    kw_pkv *kv = calloc((size_t)n + 1, sizeof *kv);
    if (!kv) {
        *bad = true;
        return NULL;
    }
    for (int i = 0; i < n; i++)
        kv_copy(&kv[i], &src[i], bad);
    return kv;
}

static kw_pref *refs_copy(const kw_pref *src, int n, bool *bad)
{
    kw_pref *r = calloc((size_t)n + 1, sizeof *r);
    if (!r) {
        *bad = true;
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        r[i] = src[i];
        r[i].text = dup_or(src[i].text, bad);
    }
    return r;
}

/* A deep copy of d without its sweep. */
static kw_pdesc *pdesc_copy(const kw_pdesc *d)
{
    kw_pdesc *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    bool bad = false;
    *c = *d;
    c->sweep = NULL;
    c->n_sweep = 0;
    c->label = NULL;
    c->file = dup_or(d->file, &bad);
    c->dir = dup_or(d->dir, &bad);
    c->text = dup_or(d->text, &bad);
    c->name = dup_or(d->name, &bad);
    c->cell_label = dup_or(d->cell_label, &bad);
    kv_copy(&c->model, &d->model, &bad);
    c->run = kvs_copy(d->run, d->n_run, &bad);
    c->calib = kvs_copy(d->calib, d->n_calib, &bad);
    c->plugins = refs_copy(d->plugins, d->n_plugins, &bad);
    c->stages = calloc((size_t)d->n_stages + 1, sizeof *c->stages);
    if (!c->stages) {
        c->n_stages = 0;
        bad = true;
    }
    for (int i = 0; c->stages && i < d->n_stages; i++) {
        const kw_pstage *s = &d->stages[i];
        kw_pstage *t = &c->stages[i];
        *t = *s;
        t->id = dup_or(s->id, &bad);
        t->op = dup_or(s->op, &bad);
        t->in = refs_copy(s->in, s->n_in, &bad);
        t->with = kvs_copy(s->with, s->n_with, &bad);
    }
    return bad ? kw_pdesc_free(c) : c;
}

int kw_pdesc_sweep_cell(const kw_pdesc *d, int i, kw_pdesc **out, kw_error *err)
{
    *out = NULL;
    int cells = kw_pdesc_sweep_cells(d);
    if (i < 0 || i >= cells)
        return kw_error_set(err, KW_ERANGE, "sweep cell %d does not exist (%d cells)", i, cells);
    kw_pdesc *c = pdesc_copy(d);
    if (!c)
        return oom(err);
    free(c->cell_label);
    c->cell_label = make_label(d, i);
    if (!c->cell_label) {
        kw_pdesc_free(c);
        return oom(err);
    }
    for (int a = 0; a < d->n_sweep; a++) {
        kw_ynode *v = kw__ynode_copy(d->sweep[a].vals->items[cell_index(d, i, a)]);
        if (!v) {
            kw_pdesc_free(c);
            return oom(err);
        }
        int rc = set_node(c, d->sweep[a].key, v, NULL, err);
        if (rc < 0) {
            kw_pdesc_free(c);
            return rc;
        }
    }
    *out = c;
    return KW_OK;
}

int kw_pdesc_load_plugins(const kw_pdesc *d, kw_registry *r, kw_error *err)
{
    for (int i = 0; i < d->n_plugins; i++) {
        const kw_pref *p = &d->plugins[i];
        char path[4096];
        if (p->text[0] == '/')
            snprintf(path, sizeof path, "%s", p->text);
        else
            snprintf(path, sizeof path, "%s/%s", d->dir, p->text);
        int rc = kw_registry_load_plugin(r, path, err);
        if (rc < 0) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
            return kw_error_at(err, rc, d->file, p->line, p->col, "plug-in '%s': %s", p->text,
                               msg);
        }
    }
    return KW_OK;
}
