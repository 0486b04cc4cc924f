/* Hub: names, the cache layout, offline and cache-first resolution, provenance, and the
 * parsers of what the hub sends (headers, tree pages). The network paths are tested end
 * to end against a loopback hub in tests/hub/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub.h"
#include "hub_internal.h"
#include "kvweave/util.h"

#define COMMIT "89abcdef0123456789abcdef0123456789abcdef"

static char tmp[256];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A cache made by hand the way huggingface_hub lays it out. */
static void make_cache(char sha[65])
{
    char p[1024], blobs[512];
    snprintf(blobs, sizeof blobs, "%s/cache/models--org--name/blobs", tmp);
    kw_error err = {0};
    assert_int_equal(kw__hub_mkdirs(blobs, &err), 0);
    const char *content = "GGUF fake model bytes";
    kw_sha256_hex(content, strlen(content), sha);
    snprintf(p, sizeof p, "%s/%s", blobs, sha);
    write_file(p, content);
    snprintf(p, sizeof p, "%s/cache/models--org--name/snapshots/" COMMIT, tmp);
    assert_int_equal(kw__hub_mkdirs(p, &err), 0);
    char link[1200], target[200];
    snprintf(link, sizeof link, "%s/m.gguf", p);
    snprintf(target, sizeof target, "../../blobs/%s", sha);
    unlink(link);
    assert_int_equal(symlink(target, link), 0);
    snprintf(p, sizeof p, "%s/cache/models--org--name/refs", tmp);
    assert_int_equal(kw__hub_mkdirs(p, &err), 0);
    snprintf(p, sizeof p, "%s/cache/models--org--name/refs/main", tmp);
    write_file(p, COMMIT);
}

static int setup(void **s)
{
    (void)s;
    snprintf(tmp, sizeof tmp, "%s/kwhubunit.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    assert_non_null(mkdtemp(tmp));
    char cache[512];
    snprintf(cache, sizeof cache, "%s/cache", tmp);
    setenv("HF_HUB_CACHE", cache, 1);
    setenv("HF_ENDPOINT", "http://127.0.0.1:9", 1); /* nothing listens: no network */
    unsetenv("HF_HUB_OFFLINE");
    unsetenv("TRANSFORMERS_OFFLINE");
    return 0;
}

static int teardown(void **s)
{
    (void)s;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_etag_normalisation_strips_weak_prefix_and_quotes(void **s)
{
    (void)s;
    char out[80];
    kw__hub_normalize_etag("W/\"abc123\"", out, sizeof out);
    assert_string_equal(out, "abc123");
    kw__hub_normalize_etag("\"d41d8cd98f\"", out, sizeof out);
    assert_string_equal(out, "d41d8cd98f");
    kw__hub_normalize_etag("plain", out, sizeof out);
    assert_string_equal(out, "plain");
}

static void test_cache_dir_follows_huggingface_hub_precedence(void **s)
{
    (void)s;
    char buf[1024], keep[600];
    snprintf(keep, sizeof keep, "%s", getenv("HF_HUB_CACHE"));
    kw_error err = {0};
    setenv("HUGGINGFACE_HUB_CACHE", "/legacy", 1);
    setenv("HF_HOME", "/hfhome", 1);
    setenv("XDG_CACHE_HOME", "/xdg", 1);
    assert_int_equal(kw_hub_cache_dir(buf, sizeof buf, &err), 0);
    assert_string_equal(buf, keep);
    unsetenv("HF_HUB_CACHE");
    assert_int_equal(kw_hub_cache_dir(buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "/legacy");
    unsetenv("HUGGINGFACE_HUB_CACHE");
    assert_int_equal(kw_hub_cache_dir(buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "/hfhome/hub");
    unsetenv("HF_HOME");
    assert_int_equal(kw_hub_cache_dir(buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "/xdg/huggingface/hub");
    unsetenv("XDG_CACHE_HOME");
    char want[1100];
    snprintf(want, sizeof want, "%s/.cache/huggingface/hub", getenv("HOME"));
    assert_int_equal(kw_hub_cache_dir(buf, sizeof buf, &err), 0);
    assert_string_equal(buf, want);
    setenv("HF_HUB_CACHE", keep, 1);
    unsetenv("HF_ENDPOINT");
    assert_string_equal(kw_hub_endpoint(buf, sizeof buf), "https://huggingface.co");
    setenv("HF_ENDPOINT", "http://h.example:8080//", 1);
    assert_string_equal(kw_hub_endpoint(buf, sizeof buf), "http://h.example:8080");
    setenv("HF_ENDPOINT", "http://127.0.0.1:9", 1);
}

static void test_repo_folders_are_named_like_huggingface_hub(void **s)
{
    (void)s;
    kw__hub_repo r;
    kw_error err = {0};
    assert_int_equal(kw__hub_repo_init(&r, "Qwen/Qwen2.5-7B-Instruct", KW_HUB_MODEL, &err), 0);
    assert_non_null(strstr(r.folder, "/cache/models--Qwen--Qwen2.5-7B-Instruct"));
    assert_non_null(strstr(r.lockdir, "/cache/.locks/models--Qwen--Qwen2.5-7B-Instruct"));
    assert_int_equal(kw__hub_repo_init(&r, "org/data", KW_HUB_DATASET, &err), 0);
    assert_non_null(strstr(r.folder, "/cache/datasets--org--data"));
    assert_int_equal(kw__hub_repo_init(&r, "a--b/c", KW_HUB_MODEL, &err), KW_EINVAL);
    assert_non_null(strstr(err.msg, "'a--b/c' is not a repo id"));
    assert_int_equal(kw__hub_repo_init(&r, "a/b/c", KW_HUB_MODEL, &err), KW_EINVAL);
    assert_int_equal(kw__hub_repo_init(&r, "noslash", KW_HUB_MODEL, &err), KW_EINVAL);
}

static void test_link_target_climbs_one_level_per_directory(void **s)
{
    (void)s;
    char t[256];
    kw__hub_link_target("m.gguf", "e1", t, sizeof t);
    assert_string_equal(t, "../../blobs/e1");
    kw__hub_link_target("a/b/c.txt", "e2", t, sizeof t);
    assert_string_equal(t, "../../../../blobs/e2");
}

static void test_repo_paths_reject_traversal(void **s)
{
    (void)s;
    const char *bad[] = {"", "/etc/passwd", "../x", "a/../b", "a//b", "a/", "./a", "a\\b",
                         "a/.", "a\nb"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_false(kw__hub_valid_path(bad[i]));
    assert_true(kw__hub_valid_path("sub/dir/model.Q4_K_M.gguf"));
    assert_true(kw__hub_valid_path("..hidden/x"));
    assert_true(kw__hub_valid_revision("refs/pr/1"));
    assert_false(kw__hub_valid_revision("../main"));
    assert_true(kw__hub_is_commit(COMMIT));
    assert_false(kw__hub_is_commit("main"));
    assert_false(kw__hub_is_commit("89ABCDEF0123456789abcdef0123456789abcdef"));
}

static void test_hub_names_and_local_paths(void **s)
{
    (void)s;
    assert_true(kw_hub_is_name("HuggingFaceTB/SmolLM2-135M-Instruct"));
    assert_true(kw_hub_is_name("Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_0.gguf"));
    assert_true(kw_hub_is_name("hf://org/name@v1.0/sub/f.gguf"));
    assert_true(kw_hub_is_name("hf://org/name@refs%2Fpr%2F1"));
    assert_true(kw_hub_is_name("datasets/org/data"));
    assert_false(kw_hub_is_name("smollm2-135m-instruct"));
    assert_false(kw_hub_is_name("/models/x/y.gguf"));
    assert_false(kw_hub_is_name("./org/name"));
    assert_false(kw_hub_is_name("~/org/name"));
    assert_false(kw_hub_is_name("org/name/../../etc"));
    assert_false(kw_hub_is_name("org/na--me"));
    assert_false(kw_hub_is_name(""));
    /* an existing local path is not a hub name */
    char cwd[1024], dir[600];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(dir, sizeof dir, "%s/local/model", tmp);
    kw_error err = {0};
    assert_int_equal(kw__hub_mkdirs(dir, &err), 0);
    assert_int_equal(chdir(tmp), 0);
    assert_false(kw_hub_is_name("local/model"));
    assert_true(kw_hub_is_name("local/other"));
    assert_int_equal(chdir(cwd), 0);
}

static void test_resolve_model_reads_the_cache_without_network(void **s)
{
    (void)s;
    char sha[65], want[1024];
    make_cache(sha);
    char *path = NULL;
    kw_error err = {0};
    int rc = kw_hub_resolve_model("org/name/m.gguf", &path, &err);
    assert_int_equal(rc, 0);
    snprintf(want, sizeof want, "%s/cache/models--org--name/snapshots/" COMMIT "/m.gguf", tmp);
    assert_string_equal(path, want);
    char got[65];
    assert_int_equal(kw_sha256_file(path, got, &err), 0);
    assert_string_equal(got, sha);
    free(path);
    assert_int_equal(kw_hub_resolve_model("hf://org/name", &path, &err), 0);
    snprintf(want, sizeof want, "%s/cache/models--org--name/snapshots/" COMMIT, tmp);
    assert_string_equal(path, want);
    free(path);
    assert_int_equal(kw_hub_resolve_model("org/name@" COMMIT "/m.gguf", &path, &err), 0);
    free(path);
    /* not cached: the hub is asked (nothing listens: an I/O error, not a crash) */
    rc = kw_hub_resolve_model("org/name/other.gguf", &path, &err);
    assert_int_equal(rc, KW_EIO);
    assert_null(path);
    assert_non_null(strstr(err.msg, "127.0.0.1:9"));
    /* offline: the missing cache entry is named */
    setenv("HF_HUB_OFFLINE", "1", 1);
    rc = kw_hub_resolve_model("org/name/other.gguf", &path, &err);
    assert_int_equal(rc, KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "snapshots/" COMMIT "/other.gguf"));
    rc = kw_hub_resolve_model("org/name@v2/m.gguf", &path, &err);
    assert_int_equal(rc, KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "models--org--name/refs/v2"));
    assert_int_equal(kw_hub_resolve_model("org/name/m.gguf", &path, &err), 0);
    free(path);
    unsetenv("HF_HUB_OFFLINE");
    /* not a hub name */
    rc = kw_hub_resolve_model("smollm2-135m-instruct", &path, &err);
    assert_int_equal(rc, KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "is not a hub name"));
}

static void test_provenance_names_commit_and_blob_hashes(void **s)
{
    (void)s;
    char sha[65];
    make_cache(sha);
    kw_hub_opts o = kw_hub_opts_default();
    o.offline = 1;
    kw_hub_prov p = {0};
    char *path = NULL;
    kw_error err = {0};
    assert_int_equal(kw_hub_resolve("org/name", "m.gguf", &o, &path, &p, &err), 0);
    free(path);
    assert_string_equal(p.commit, COMMIT);
    assert_string_equal(p.revision, "main");
    assert_int_equal(p.n_files, 1);
    assert_string_equal(p.files[0].etag, sha);
    assert_int_equal(p.files[0].size, 21);
    char d[65];
    kw_hub_prov_digest(&p, d);
    assert_string_equal(d, sha); /* one LFS file: its own sha256 */
    char *js = kw_hub_prov_json(&p);
    json_t *j = json_loads(js, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "repo")), "org/name");
    assert_string_equal(json_string_value(json_object_get(j, "commit")), COMMIT);
    json_decref(j);
    free(js);
    /* two files: a digest over "path\tetag\n" lines */
    kw_hub_file f2[2] = {{"a.json", "1111", 4}, {"m.gguf", sha, 21}};
    kw_hub_prov two = p;
    two.files = f2;
    two.n_files = 2;
    char lines[200], want[65];
    snprintf(lines, sizeof lines, "a.json\t1111\nm.gguf\t%s\n", sha);
    kw_sha256_hex(lines, strlen(lines), want);
    kw_hub_prov_digest(&two, d);
    assert_string_equal(d, want);
    kw_hub_prov_clear(&p);
    assert_int_equal(p.n_files, 0);

    /* the same, from the path alone (what the model loader holds) */
    char lp[1024];
    snprintf(lp, sizeof lp, "%s/cache/models--org--name/snapshots/" COMMIT "/m.gguf", tmp);
    assert_int_equal(kw_hub_prov_from_path(lp, &p, &err), 0);
    assert_string_equal(p.repo_id, "org/name");
    assert_string_equal(p.repo_type, "model");
    assert_string_equal(p.revision, "main");
    assert_string_equal(p.commit, COMMIT);
    assert_int_equal(p.n_files, 1);
    assert_string_equal(p.files[0].path, "m.gguf");
    assert_string_equal(p.files[0].etag, sha);
    snprintf(lp, sizeof lp, "%s/cache/models--org--name/snapshots/" COMMIT, tmp);
    assert_int_equal(kw_hub_prov_from_path(lp, &p, &err), 0);
    assert_int_equal(p.n_files, 1);
    kw_hub_prov_clear(&p);
    assert_int_equal(kw_hub_prov_from_path("/models/x.gguf", &p, &err), KW_ENOTFOUND);
    assert_non_null(strstr(err.msg, "'/models/x.gguf' is not inside a hub cache snapshot"));
    assert_int_equal(kw_hub_prov_from_path("/c/models--a--b/snapshots/123/x", &p, &err),
                     KW_ENOTFOUND);
}

static void test_tree_pages_reject_broken_input(void **s)
{
    (void)s;
    kw__hub_list l = {0};
    kw_error err = {0};
    const char *u = "http://h/api/models/o/n/tree/main";
    assert_int_equal(kw__hub_tree_parse("[{\"type\":\"file\"", 15, u, NULL, &l, &err),
                     KW_EPARSE);
    assert_non_null(strstr(err.msg, "http://h/api/models/o/n/tree/main: line 1 column"));
    assert_int_equal(kw__hub_tree_parse("{}", 2, u, NULL, &l, &err), KW_EPARSE);
    assert_non_null(strstr(err.msg, "expected a JSON array"));
    const char *nopath = "[{\"type\":\"file\",\"path\":\"a\"},{\"type\":\"file\"}]";
    assert_int_equal(kw__hub_tree_parse(nopath, strlen(nopath), u, NULL, &l, &err), KW_EPARSE);
    assert_non_null(strstr(err.msg, "entry 1 has no \"type\" or \"path\""));
    kw__hub_list_free(&l);
    memset(&l, 0, sizeof l);
    const char *evil = "[{\"type\":\"file\",\"path\":\"../../.bashrc\"}]";
    assert_int_equal(kw__hub_tree_parse(evil, strlen(evil), u, NULL, &l, &err), KW_EPARSE);
    assert_non_null(strstr(err.msg, "unsafe path '../../.bashrc'"));
    const char *good = "[{\"type\":\"directory\",\"path\":\"sub\"},"
                       "{\"type\":\"file\",\"path\":\"sub/a.json\",\"size\":3},"
                       "{\"type\":\"file\",\"path\":\"m.gguf\",\"lfs\":{\"oid\":\"x\"}},"
                       "{\"type\":\"file\",\"path\":\"README.md\"}]";
    const char *inc[] = {"*.json", "m.*", NULL};
    assert_int_equal(kw__hub_tree_parse(good, strlen(good), u, inc, &l, &err), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.total, 3);
    assert_string_equal(l.v[0], "sub/a.json"); /* '*' crosses '/' like fnmatch in Python */
    assert_string_equal(l.v[1], "m.gguf");
    kw__hub_list_free(&l);
    const char *dir[] = {"sub/", NULL};
    assert_true(kw__hub_included("sub/a.json", dir));
    assert_false(kw__hub_included("m.gguf", dir));
}

static void header(kw__hub_resp *r, const char *line) { kw__hub_header_line(r, line, strlen(line)); }

static void test_header_lines_fill_the_response(void **s)
{
    (void)s;
    kw__hub_resp r = {0};
    kw__hub_resp_clear(&r);
    header(&r, "HTTP/1.1 302 Found\r\n");
    header(&r, "x-repo-commit: " COMMIT "\r\n");
    header(&r, "X-Linked-Etag: \"abc\"\r\n");
    header(&r, "ETag: W/\"def\"\r\n");
    header(&r, "X-Linked-Size:   1234\r\n");
    header(&r, "X-Error-Code: GatedRepo\r\n");
    header(&r, "Link: <http://h/p?cursor=1>; rel=\"next\", <http://h/last>; rel=\"last\"\r\n");
    header(&r, "Content-Range: bytes 100-199/200\r\n");
    header(&r, "no colon here\r\n");
    assert_int_equal(r.status, 302);
    assert_string_equal(r.commit, COMMIT);
    assert_string_equal(r.linked_etag, "abc");
    assert_string_equal(r.etag, "def");
    assert_int_equal(r.linked_size, 1234);
    assert_string_equal(r.error_code, "GatedRepo");
    assert_string_equal(r.link_next, "http://h/p?cursor=1");
    assert_int_equal(r.range_start, 100);
    header(&r, "HTTP/2 200\r\n"); /* a new response forgets the old headers */
    assert_int_equal(r.status, 200);
    assert_string_equal(r.commit, "");
    assert_int_equal(r.linked_size, -1);
    header(&r, "HTTP/1.1");
    assert_int_equal(r.status, 0);
    kw__hub_resp_clear(&r);
    char o[128];
    assert_true(kw__hub_origin("HTTP://Example.COM/a", o, sizeof o));
    assert_string_equal(o, "http://example.com:80");
    assert_true(kw__hub_origin("https://cdn.example.com:8443/x?y", o, sizeof o));
    assert_string_equal(o, "https://cdn.example.com:8443");
    char q[64];
    assert_true(kw__hub_quote("refs/pr/1", false, q, sizeof q));
    assert_string_equal(q, "refs%2Fpr%2F1");
    assert_true(kw__hub_quote("a b/c.gguf", true, q, sizeof q));
    assert_string_equal(q, "a%20b/c.gguf");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_etag_normalisation_strips_weak_prefix_and_quotes),
        cmocka_unit_test(test_cache_dir_follows_huggingface_hub_precedence),
        cmocka_unit_test(test_repo_folders_are_named_like_huggingface_hub),
        cmocka_unit_test(test_link_target_climbs_one_level_per_directory),
        cmocka_unit_test(test_repo_paths_reject_traversal),
        cmocka_unit_test(test_hub_names_and_local_paths),
        cmocka_unit_test(test_resolve_model_reads_the_cache_without_network),
        cmocka_unit_test(test_provenance_names_commit_and_blob_hashes),
        cmocka_unit_test(test_tree_pages_reject_broken_input),
        cmocka_unit_test(test_header_lines_fill_the_response),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
