/* Hub names as users write them ("hf://ORG/NAME@rev/file.gguf") and the provenance a
 * resolution leaves for the results store. */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hub_internal.h"
#include "kvweave/util.h"

typedef struct spec {
    kw_hub_repo_type type;
    bool type_given;
    char repo[200];
    char rev[256];
    char path[1100];
} spec;

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Copies s[0..n) into out decoding %XX (a revision like refs%2Fpr%2F1). */
static bool unquote(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            ch = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        }
        if (o + 1 >= cap)
            return false;
        out[o++] = ch;
    }
    out[o] = '\0';
    return true;
}

static bool parse_spec(const char *s, spec *sp)
{
    memset(sp, 0, sizeof *sp);
    if (!strncmp(s, "hf://", 5))
        s += 5;
    if (!strncmp(s, "datasets/", 9)) {
        sp->type = KW_HUB_DATASET;
        sp->type_given = true;
        s += 9;
    } else if (!strncmp(s, "models/", 7)) {
        sp->type_given = true;
        s += 7;
    }
    const char *slash = strchr(s, '/');
    if (!slash)
        return false;
    const char *end = strchr(slash + 1, '/');
    size_t n = end ? (size_t)(end - s) : strlen(s);
    const char *at = memchr(slash + 1, '@', n - (size_t)(slash + 1 - s));
    size_t idn = at ? (size_t)(at - s) : n;
    if (idn >= sizeof sp->repo)
        return false;
    memcpy(sp->repo, s, idn);
    sp->repo[idn] = '\0';
    if (at && !unquote(at + 1, n - idn - 1, sp->rev, sizeof sp->rev))
        return false;
    if (end && (strlen(end + 1) >= sizeof sp->path))
        return false;
    if (end)
        snprintf(sp->path, sizeof sp->path, "%s", end + 1);
    return kw__hub_valid_repo_id(sp->repo) && (!at || kw__hub_valid_revision(sp->rev)) &&
           (!end || kw__hub_valid_path(sp->path));
}

bool kw_hub_is_name(const char *s)
{
    spec sp;
    struct stat st;
    if (!s || !*s || *s == '/' || *s == '.' || *s == '~')
        return false;
    if (strncmp(s, "hf://", 5) && stat(s, &st) == 0)
        return false; /* an existing local file or directory wins */
    return parse_spec(s, &sp);
}

int kw_hub_resolve_spec(const char *s, const kw_hub_opts *opts, char **local_path,
                        kw_hub_prov *prov, kw_error *err)
{
    *local_path = NULL;
    spec sp;
    if (!kw_hub_is_name(s) || !parse_spec(s, &sp))
        return kw_error_set(err, KW_ENOTFOUND, "'%s' is not a hub name "
                            "([hf://][datasets/]ORG/NAME[@REVISION][/PATH])", s ? s : "");
    kw_hub_opts o = opts ? *opts : kw_hub_opts_default();
    if (sp.type_given)
        o.repo_type = sp.type;
    if (*sp.rev)
        o.revision = sp.rev;
    return kw_hub_resolve(sp.repo, *sp.path ? sp.path : NULL, &o, local_path, prov, err);
}

int kw_hub_resolve_model(const char *s, char **local_path, kw_error *err)
{
    kw_hub_opts o = kw_hub_opts_default();
    o.prefer_cache = true;
    return kw_hub_resolve_spec(s, &o, local_path, NULL, err);
}

void kw_hub_prov_clear(kw_hub_prov *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_files; i++) {
        free(p->files[i].path);
        free(p->files[i].etag);
    }
    free(p->files);
    memset(p, 0, sizeof *p);
}

char *kw_hub_prov_json(const kw_hub_prov *p)
{
    json_t *files = json_array();
    for (size_t i = 0; files && i < p->n_files; i++)
        json_array_append_new(files, json_pack("{s:s, s:s, s:I}", "path", p->files[i].path,
                                               "etag", p->files[i].etag, "size",
                                               (json_int_t)p->files[i].size));
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:o}", "repo", p->repo_id, "repo_type",
                          p->repo_type, "revision", p->revision, "commit", p->commit,
                          "files", files);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

void kw_hub_prov_digest(const kw_hub_prov *p, char hex[65])
{
    if (p->n_files == 1 && strlen(p->files[0].etag) == 64) {
        snprintf(hex, 65, "%s", p->files[0].etag);
        return;
    }
    size_t cap = 1, n = 0;
    for (size_t i = 0; i < p->n_files; i++)
        cap += strlen(p->files[i].path) + strlen(p->files[i].etag) + 2;
    char *buf = malloc(cap);
    if (!buf) {
        kw_sha256_hex("", 0, hex);
        return;
    }
    for (size_t i = 0; i < p->n_files; i++)
        n += (size_t)sprintf(buf + n, "%s\t%s\n", p->files[i].path, p->files[i].etag);
    kw_sha256_hex(buf, n, hex);
    free(buf);
}

/* The ref (refs/<name>, nested names too) that holds commit; 1 found. */
static int ref_naming(const char *refs, const char *sub, const char *commit, char *out,
                      size_t n, int depth)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%s%s", refs, *sub ? "/" : "", sub);
    DIR *d = depth < 8 ? opendir(dir) : NULL;
    if (!d)
        return 0;
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".tmp"))
            continue;
        char name[1024], full[8200], text[64] = "";
        snprintf(name, sizeof name, "%s%s%s", sub, *sub ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/%s", refs, name);
        struct stat st;
        if (stat(full, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            found = ref_naming(refs, name, commit, out, n, depth + 1);
            continue;
        }
        FILE *f = fopen(full, "r");
        size_t k = f ? fread(text, 1, sizeof text - 1, f) : 0;
        if (f)
            fclose(f);
        text[k] = '\0';
        if (!strncmp(text, commit, 40) && (k == 40 || text[40] == '\n')) {
            snprintf(out, n, "%s", name);
            found = 1;
        }
    }
    closedir(d);
    return found;
}

int kw_hub_prov_from_path(const char *local_path, kw_hub_prov *prov, kw_error *err)
{
    const char *snap = strstr(local_path, "/snapshots/");
    const char *folder = local_path; /* after the last '/' before /snapshots/ */
    for (const char *p = local_path; snap && p < snap; p++)
        if (*p == '/')
            folder = p + 1;
    kw_hub_repo_type type = KW_HUB_MODEL;
    if (folder && !strncmp(folder, "datasets--", 10))
        type = KW_HUB_DATASET;
    const char *rest = snap ? snap + 11 : NULL;
    if (!snap || (strncmp(folder, "models--", 8) && type != KW_HUB_DATASET) ||
        strlen(rest) < 40 || (rest[40] && rest[40] != '/'))
        return kw_error_set(err, KW_ENOTFOUND, "'%s' is not inside a hub cache snapshot",
                            local_path);
    char commit[41], repo[200], root[4096];
    snprintf(commit, sizeof commit, "%.40s", rest);
    const char *name = folder + (type == KW_HUB_DATASET ? 10 : 8);
    const char *sep = strstr(name, "--");
    if (!kw__hub_is_commit(commit) || !sep || (size_t)(snap - name) >= sizeof repo)
        return kw_error_set(err, KW_ENOTFOUND, "'%s' is not inside a hub cache snapshot",
                            local_path);
    snprintf(repo, sizeof repo, "%.*s/%.*s", (int)(sep - name), name,
             (int)(snap - sep - 2), sep + 2);
    kw__hub_repo r = {0};
    snprintf(r.folder, sizeof r.folder, "%.*s", (int)(snap - local_path), local_path);
    snprintf(r.repo_id, sizeof r.repo_id, "%s", repo);
    r.type = type;
    kw_hub_prov_clear(prov);
    snprintf(root, sizeof root, "%s/refs", r.folder);
    char main_commit[64];
    if (kw__hub_ref_read(&r, "main", main_commit) == 1 && !strcmp(main_commit, commit))
        snprintf(prov->revision, sizeof prov->revision, "main");
    else if (!ref_naming(root, "", commit, prov->revision, sizeof prov->revision, 0))
        snprintf(prov->revision, sizeof prov->revision, "%s", commit);
    return kw__hub_prov_fill(&r, commit, rest[40] ? rest + 41 : NULL, prov, err);
}
