/* The method branches of one run (branches.h): which stage recorded each key, which
 * decode stage each keyed stage hangs from, the branches' names and the keys' columns. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "branches.h"

static int find_stage(const kw_bstage *st, int n, const char *id, size_t len)
{
    for (int i = 0; i < n; i++)
        if (strlen(st[i].id) == len && !strncmp(st[i].id, id, len))
            return i;
    return -1;
}

static bool op_shared(const kw_bstage *st, int n, int s)
{
    for (int i = 0; st[s].op && i < n; i++)
        if (i != s && st[i].op && !strcmp(st[i].op, st[s].op))
            return true;
    return false;
}

static bool decode_key(const char *rest)
{
    return !strncmp(rest, "gen/", 4) || !strncmp(rest, "mem/", 4);
}

/* The stage that recorded key, or -1 for a key not keyed by stage; *rest: past "<A>/". */
static int key_stage(const kw_bstage *st, int n, const char *key, const char **rest)
{
    const char *slash = strchr(key, '/');
    if (!slash || !slash[1])
        return -1;
    int s = find_stage(st, n, key, (size_t)(slash - key));
    if (s < 0 || !(decode_key(slash + 1) || op_shared(st, n, s)))
        return -1;
    *rest = slash + 1;
    return s;
}

/* Marks in found[] the roots upstream of stage s, not looking past a root. */
static void roots_upstream(const kw_bstage *st, int n, const bool *root, int s, bool *seen,
                           bool *found)
{
    for (int i = 0; i < st[s].n_in && st[s].in; i++) {
        const char *ref = st[s].in[i], *dot = strchr(ref, '.');
        int u = find_stage(st, n, ref, dot ? (size_t)(dot - ref) : strlen(ref));
        if (u < 0 || seen[u])
            continue;
        seen[u] = true;
        if (root[u])
            found[u] = true;
        else
            roots_upstream(st, n, root, u, seen, found);
    }
}

static bool contains(const char *hay, const char *s, size_t w)
{
    for (; strlen(hay) >= w; hay++)
        if (!strncmp(hay, s, w))
            return true;
    return false;
}

/* The longest substring of a[0] found in every a[i] (malloc'd; "" when none). */
static char *common_substring(const char *const *a, int n)
{
    size_t len = strlen(a[0]);
    for (size_t w = len; w > 0; w--)
        for (size_t off = 0; off + w <= len; off++) {
            bool all = true;
            for (int i = 1; i < n && all; i++)
                all = contains(a[i], a[0] + off, w);
            if (all)
                return strndup(a[0] + off, w);
        }
    return strdup("");
}

static char *trim_separators(char *s)
{
    size_t n = strlen(s), i = 0;
    while (i < n && (s[i] == '_' || s[i] == '-'))
        i++;
    while (n > i && (s[n - 1] == '_' || s[n - 1] == '-'))
        n--;
    memmove(s, s + i, n - i);
    s[n - i] = '\0';
    return s;
}

static char *branch_name(const kw_branch *br, const kw_bstage *st)
{
    const char *ids[64];
    int n = 0;
    for (int i = 0; i < br->n_stages && n < 64; i++)
        ids[n++] = st[br->stages[i]].id;
    char *name = common_substring(ids, n);
    if (name && strlen(trim_separators(name)) < 2) {
        free(name);
        name = strdup(ids[0]);
    }
    return name;
}

/* The stage id less the branch name, '_' and '-' trimmed ("" for the stage named as
 * its branch); the id when it does not hold the name. */
static char *role(const char *id, const char *branch)
{
    const char *at = strstr(id, branch);
    char *r = NULL;
    if (!at)
        return strdup(id);
    if (asprintf(&r, "%.*s%s", (int)(at - id), id, at + strlen(branch)) < 0)
        return NULL;
    return trim_separators(r);
}

static int add_branch(kw_branches *b, int root)
{
    kw_branch *v = realloc(b->v, sizeof *v * (size_t)(b->n + 1));
    if (!v)
        return KW_ENOMEM;
    b->v = v;
    v[b->n++] = (kw_branch){.root = root};
    return 0;
}

/* branch_of[s]: the branch of each stage (-1 for a stage without keys). One branch per
 * root and per keyed stage that hangs from no root or from several, in pipeline order of
 * their first stage. */
static int group(kw_branches *b, const kw_bstage *st, int n, const bool *keyed,
                 const bool *root, int *branch_of)
{
    bool *seen = calloc((size_t)n + 1, sizeof *seen), *found = calloc((size_t)n + 1, 1);
    int *owner = calloc((size_t)n + 1, sizeof *owner);
    int rc = seen && found && owner ? 0 : KW_ENOMEM;
    for (int s = 0; rc == 0 && s < n; s++) {
        owner[s] = s;
        branch_of[s] = -1;
        if (!keyed[s] || root[s])
            continue;
        memset(seen, 0, (size_t)n * sizeof *seen);
        memset(found, 0, (size_t)n * sizeof *found);
        roots_upstream(st, n, root, s, seen, found);
        int nf = 0;
        for (int u = 0; u < n; u++)
            if (found[u] && nf++ == 0)
                owner[s] = u;
        if (nf != 1)
            owner[s] = s;
    }
    for (int s = 0; rc == 0 && s < n; s++) {
        if (!keyed[s])
            continue;
        int o = owner[s];
        if (branch_of[o] < 0 && (rc = add_branch(b, root[o] ? o : -1)) == 0)
            branch_of[o] = b->n - 1;
        branch_of[s] = branch_of[o];
    }
    for (int s = 0; rc == 0 && s < n; s++) { /* stages: the root first, then in order */
        if (branch_of[s] < 0)
            continue;
        kw_branch *br = &b->v[branch_of[s]];
        int *v = realloc(br->stages, sizeof *v * (size_t)(br->n_stages + 1));
        if (!v) {
            rc = KW_ENOMEM;
            break;
        }
        br->stages = v;
        if (s == br->root) {
            memmove(v + 1, v, sizeof *v * (size_t)br->n_stages);
            v[0] = s;
        } else {
            v[br->n_stages] = s;
        }
        br->n_stages++;
    }
    free(seen);
    free(found);
    free(owner);
    return rc;
}

static int name_branches(kw_branches *b, const kw_bstage *st)
{
    for (int i = 0; i < b->n; i++)
        if (!(b->v[i].name = branch_name(&b->v[i], st)))
            return KW_ENOMEM;
    bool *dup = calloc((size_t)b->n + 1, sizeof *dup);
    if (!dup)
        return KW_ENOMEM;
    for (int i = 0; i < b->n; i++)
        for (int j = i + 1; j < b->n; j++)
            if (!strcmp(b->v[i].name, b->v[j].name))
                dup[i] = dup[j] = true;
    int rc = 0;
    for (int i = 0; rc == 0 && i < b->n; i++) {
        if (!dup[i])
            continue;
        free(b->v[i].name);
        if (!(b->v[i].name = strdup(st[b->v[i].stages[0]].id)))
            rc = KW_ENOMEM;
    }
    free(dup);
    return rc;
}

static int set_columns(kw_branches *b, const kw_bstage *st, const char *const *rest)
{
    for (int k = 0; k < b->n_keys; k++) {
        kw_bkey *bk = &b->keys[k];
        if (bk->branch < 0)
            continue;
        bool twice = false;
        for (int j = 0; j < b->n_keys && !twice; j++)
            twice = b->keys[j].branch == bk->branch && b->keys[j].stage != bk->stage &&
                    !strcmp(rest[j], rest[k]);
        if (!twice) {
            bk->column = strdup(rest[k]);
        } else {
            char *r = role(st[bk->stage].id, b->v[bk->branch].name);
            if (r && asprintf(&bk->column, "%s%s%s", r, *r ? ":" : "", rest[k]) < 0)
                bk->column = NULL;
            free(r);
        }
        if (!bk->column)
            return KW_ENOMEM;
    }
    return 0;
}

int kw__branches_build(kw_branches *b, const kw_bstage *st, int n, const char *const *keys,
                       int n_keys, kw_error *err)
{
    memset(b, 0, sizeof *b);
    bool *keyed = calloc((size_t)n + 1, sizeof *keyed), *root = calloc((size_t)n + 1, 1);
    int *branch_of = calloc((size_t)n + 1, sizeof *branch_of);
    const char **rest = calloc((size_t)n_keys + 1, sizeof *rest);
    b->keys = calloc((size_t)n_keys + 1, sizeof *b->keys);
    int rc = keyed && root && branch_of && rest && b->keys ? 0 : KW_ENOMEM;
    if (rc == 0) {
        b->n_keys = n_keys;
        for (int k = 0; k < n_keys; k++) {
            int s = key_stage(st, n, keys[k], &rest[k]);
            b->keys[k] = (kw_bkey){.branch = -1, .stage = s};
            if (s >= 0) {
                keyed[s] = true;
                root[s] |= decode_key(rest[k]);
            }
        }
        rc = group(b, st, n, keyed, root, branch_of);
    }
    for (int k = 0; rc == 0 && k < n_keys; k++)
        if (b->keys[k].stage >= 0)
            b->keys[k].branch = branch_of[b->keys[k].stage];
    if (rc == 0)
        rc = name_branches(b, st);
    if (rc == 0)
        rc = set_columns(b, st, rest);
    free(keyed);
    free(root);
    free(branch_of);
    free(rest);
    if (rc < 0) {
        kw__branches_clear(b);
        return kw_error_set(err, rc, "out of memory grouping the run's metrics by branch");
    }
    return 0;
}

void kw__branches_clear(kw_branches *b)
{
    for (int i = 0; b->v && i < b->n; i++) {
        free(b->v[i].name);
        free(b->v[i].stages);
    }
    for (int k = 0; b->keys && k < b->n_keys; k++)
        free(b->keys[k].column);
    free(b->v);
    free(b->keys);
    memset(b, 0, sizeof *b);
}

/* "a, b, c" of the branches' names (a static buffer, cut at its end). */
static const char *names(const kw_branches *b)
{
    static char buf[1024];
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < b->n && k < sizeof buf; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s", i ? ", " : "", b->v[i].name);
    return buf;
}

int kw__branches_reference(const kw_branches *b, const kw_bstage *st, const char *ref,
                           int *idx, kw_error *err)
{
    int hit = -1, n = 0;
    const char *want = ref ? ref : "full";
    for (int i = 0; i < b->n && hit < 0; i++)
        if (!strcmp(b->v[i].name, want))
            hit = i;
    for (int i = 0; ref && i < b->n && hit < 0; i++)
        for (int j = 0; j < b->v[i].n_stages && hit < 0; j++)
            if (!strcmp(st[b->v[i].stages[j]].id, ref))
                hit = i;
    for (int i = 0; hit < 0 && i < b->n; i++) {
        const char *at = strstr(b->v[i].name, want);
        if (ref ? at == b->v[i].name : at != NULL) {
            n++;
            *idx = i;
        }
    }
    if (hit >= 0) {
        *idx = hit;
        return 0;
    }
    if (n == 1)
        return 0;
    if (n > 1)
        return kw_error_set(err, KW_EINVAL, "several branches %s '%s' (branches: %s); "
                            "--reference BRANCH picks one", ref ? "start with" : "contain",
                            want, names(b));
    if (!ref)
        return 1;
    return kw_error_set(err, KW_ENOTFOUND, "no branch or stage '%s' (branches: %s)", ref,
                        names(b));
}
