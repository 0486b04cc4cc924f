/* Operator registry: the built-in table plus plug-ins (registry.h).
 *
 * A plug-in is dlopen()ed with RTLD_NOW | RTLD_LOCAL and must export
 *   const uint32_t kw_plugin_abi = KW_OP_ABI;
 *   const kw_op *const kw_plugin_ops[] = { &op1, ..., NULL };
 * Its operators are checked like built-ins (abi, size, a name, unique) before any is
 * added, so a refused plug-in leaves the registry as it was. */
#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "registry.h"

struct kw_registry {
    const kw_op **ops;
    int n, cap;
    struct { void *handle; char *path; } *libs;
    int n_libs;
};

static int oom(kw_error *err) { return kw_error_set(err, KW_ENOMEM, "out of memory"); }

static int check_op(const kw_registry *r, const kw_op *op, const char *from, kw_error *err)
{
    if (op->abi != KW_OP_ABI)
        return kw_error_set(err, KW_EABI,
                            "operator '%s' from %s was built for operator ABI %u, this "
                            "kvweave has ABI %u", op->name ? op->name : "?", from,
                            (unsigned)op->abi, (unsigned)KW_OP_ABI);
    if (op->size < KW_OP_MIN_SIZE)
        return kw_error_set(err, KW_EABI,
                            "operator '%s' from %s has a kw_op of %u bytes, this kvweave "
                            "needs at least %zu", op->name ? op->name : "?", from,
                            (unsigned)op->size, (size_t)KW_OP_MIN_SIZE);
    if (!op->name || !*op->name || !op->run)
        return kw_error_set(err, KW_EINVAL, "an operator from %s has no name or no run", from);
    if (op->n_inputs < 0 || op->n_outputs < 0 || op->n_params < 0 ||
        (op->n_inputs && !op->inputs) || (op->n_outputs && !op->outputs) ||
        (op->n_params && !op->params))
        return kw_error_set(err, KW_EINVAL, "operator '%s' from %s has bad port or param "
                            "tables", op->name, from);
    uint32_t roles = kw_op_kv_roles(op);
    bool kv_out = false;
    for (int o = 0; o < op->n_outputs; o++)
        kv_out |= op->outputs[o].type && !strcmp(op->outputs[o].type, KW_T_KVMETHOD);
    if (roles & ~(uint32_t)KW_ROLES_ALL || (roles && !kv_out))
        return kw_error_set(err, KW_EINVAL, "operator '%s' from %s declares kv_roles 0x%x: "
                            "%s", op->name, from, (unsigned)roles,
                            kv_out ? "unknown role bits" : "it has no kvmethod output");
    if (kw_registry_find(r, op->name))
        return kw_error_set(err, KW_EINVAL, "operator '%s' from %s is already registered",
                            op->name, from);
    return KW_OK;
}

static int add_ops(kw_registry *r, const kw_op *const *ops, const char *from, kw_error *err)
{
    int n = 0;
    while (ops[n])
        n++;
    if (r->n + n > r->cap) {
        int cap = r->cap ? r->cap : 32;
        while (cap < r->n + n)
            cap *= 2;
        const kw_op **o = realloc(r->ops, (size_t)cap * sizeof *o);
        if (!o)
            return oom(err);
        r->ops = o;
        r->cap = cap;
    }
    int base = r->n;
    for (int i = 0; i < n; i++) {
        int rc = check_op(r, ops[i], from, err);
        if (rc < 0) {
            r->n = base; /* all or nothing */
            return rc;
        }
        r->ops[r->n++] = ops[i];
    }
    return KW_OK;
}

uint32_t kw_op_kv_roles(const kw_op *op)
{
    return op && op->size >= offsetof(kw_op, kv_roles) + sizeof op->kv_roles ? op->kv_roles : 0;
}

int kw_registry_new(const kw_op *const *builtins, kw_registry **out, kw_error *err)
{
    *out = NULL;
    kw_registry *r = calloc(1, sizeof *r);
    if (!r)
        return oom(err);
    static const kw_op *const none[] = {NULL};
    int rc = add_ops(r, builtins ? builtins : none, "the built-in table", err);
    if (rc < 0) {
        kw_registry_free(r);
        return rc;
    }
    *out = r;
    return KW_OK;
}

kw_registry *kw_registry_free(kw_registry *r)
{
    if (!r)
        return NULL;
    free(r->ops);
    for (int i = 0; i < r->n_libs; i++) {
        dlclose(r->libs[i].handle);
        free(r->libs[i].path);
    }
    free(r->libs);
    free(r);
    return NULL;
}

int kw_registry_load_plugin(kw_registry *r, const char *path, kw_error *err)
{
    char real[PATH_MAX];
    if (!realpath(path, real))
        return kw_error_set(err, KW_ENOTFOUND, "cannot find plug-in '%s'", path);
    for (int i = 0; i < r->n_libs; i++)
        if (!strcmp(r->libs[i].path, real))
            return KW_OK;
    void *h = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        return kw_error_set(err, KW_EFORMAT, "cannot load plug-in '%s': %s", path,
                            e ? e : "unknown error");
    }
    const uint32_t *abi = dlsym(h, "kw_plugin_abi");
    const kw_op *const *ops = dlsym(h, "kw_plugin_ops");
    int rc, base = r->n;
    if (!abi || !ops)
        rc = kw_error_set(err, KW_EFORMAT, "'%s' is not a kvweave plug-in: it does not export "
                          "%s", path, !abi ? "kw_plugin_abi" : "kw_plugin_ops");
    else if (*abi != KW_OP_ABI)
        rc = kw_error_set(err, KW_EABI, "plug-in '%s' was built for operator ABI %u, this "
                          "kvweave has ABI %u", path, (unsigned)*abi, (unsigned)KW_OP_ABI);
    else
        rc = add_ops(r, ops, path, err);
    if (rc >= 0) {
        void *libs = realloc(r->libs, (size_t)(r->n_libs + 1) * sizeof *r->libs);
        char *p = libs ? strdup(real) : NULL;
        if (libs)
            r->libs = libs;
        if (!p)
            rc = oom(err);
        else {
            r->libs[r->n_libs].handle = h;
            r->libs[r->n_libs++].path = p;
        }
    }
    if (rc < 0) {
        r->n = base; /* keep no operator of a library that is closed */
        dlclose(h);
    }
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool ends_with_so(const char *s)
{
    size_t n = strlen(s);
    return n > 3 && !strcmp(s + n - 3, ".so");
}

/* Every *.so of a directory, in name order (so the load order is reproducible). */
static int load_dir(kw_registry *r, const char *dir, kw_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return kw_error_set(err, KW_ENOTFOUND, "cannot open plug-in directory '%s'", dir);
    char **names = NULL;
    int n = 0, rc = KW_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!ends_with_so(e->d_name))
            continue;
        char **nn = realloc(names, (size_t)(n + 1) * sizeof *nn);
        if (!nn || !(nn[n] = strdup(e->d_name))) {
            names = nn ? nn : names;
            rc = oom(err);
            break;
        }
        names = nn;
        n++;
    }
    closedir(d);
    if (rc >= 0)
        qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        if (rc >= 0) {
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            rc = kw_registry_load_plugin(r, path, err);
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int kw_registry_load_env(kw_registry *r, kw_error *err)
{
    const char *env = getenv("KVWEAVE_PLUGIN_PATH");
    if (!env || !*env)
        return KW_OK;
    char *list = strdup(env);
    if (!list)
        return oom(err);
    int rc = KW_OK;
    char *save = NULL;
    for (char *p = strtok_r(list, ":", &save); p && rc >= 0; p = strtok_r(NULL, ":", &save)) {
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rc = load_dir(r, p, err);
        else
            rc = kw_registry_load_plugin(r, p, err);
    }
    if (rc < 0)
        kw_error_prefix(err, "KVWEAVE_PLUGIN_PATH");
    free(list);
    return rc;
}

const kw_op *kw_registry_find(const kw_registry *r, const char *name)
{
    for (int i = 0; name && i < r->n; i++)
        if (!strcmp(r->ops[i]->name, name))
            return r->ops[i];
    return NULL;
}

static int edit_distance(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na > 256 || nb > 256)
        return 1 << 20;
    int row[257];
    for (size_t j = 0; j <= nb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= na; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= nb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

const char *kw__nearest(const char *name, const char *const *names, int n)
{
    int limit = (int)strlen(name) / 3;
    if (limit < 2)
        limit = 2;
    const char *best = NULL;
    int bd = limit + 1;
    for (int i = 0; i < n; i++) {
        int dist = edit_distance(name, names[i]);
        if (dist < bd) {
            bd = dist;
            best = names[i];
        }
    }
    return best;
}

const char *kw_registry_suggest(const kw_registry *r, const char *name)
{
    const char **names = malloc((size_t)(r->n + 1) * sizeof *names);
    if (!names)
        return NULL;
    for (int i = 0; i < r->n; i++)
        names[i] = r->ops[i]->name;
    const char *s = kw__nearest(name, names, r->n);
    free(names);
    return s;
}

int kw_registry_count(const kw_registry *r) { return r->n; }

const kw_op *kw_registry_at(const kw_registry *r, int i)
{
    return i >= 0 && i < r->n ? r->ops[i] : NULL;
}
