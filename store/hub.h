/* Hub: models and data sets named the way the Hugging Face ecosystem names them
 * ("HuggingFaceTB/SmolLM2-135M-Instruct", a GGUF file inside a repo, a data set repo),
 * fetched over the Hugging Face HTTP protocol with libcurl and cached exactly where and
 * how huggingface_hub caches them, so either tool reuses the other's downloads.
 *
 *   kw_hub_opts o = kw_hub_opts_default();          // revision "main", model repo
 *   kw_hub_prov prov = {0};
 *   char *path = NULL;
 *   kw_error err = {0};
 *   if (kw_hub_resolve("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-q4_0.gguf", &o,
 *                      &path, &prov, &err) < 0) { ... err.msg ... }
 *   // path: <cache>/models--Qwen--Qwen2.5-0.5B-Instruct-GGUF/snapshots/<commit>/qwen...gguf
 *   kw_hub_prov_clear(&prov); free(path);
 *
 * Protocol (endpoint: $HF_ENDPOINT, default https://huggingface.co):
 *   HEAD {endpoint}/[datasets/]{repo}/resolve/{revision}/{path}
 *     redirects on the endpoint's origin are followed (relative ones too); a redirect to
 *     another origin (the CDN) ends the HEAD: its X-Linked-Etag / X-Linked-Size and the
 *     Location are the metadata. X-Repo-Commit names the commit; the etag (quotes and W/
 *     stripped) names the blob: the sha256 of an LFS file, the git sha1 of a small one.
 *   GET {location} with Range: bytes=N- and If-Range when a .incomplete blob exists;
 *     every redirect is followed by kvweave itself (at most 10). The token ($HF_TOKEN,
 *     else the file `hf auth login` writes: $HF_TOKEN_PATH, else $HF_HOME/token) goes
 *     only to the endpoint's origin and is dropped on a redirect to another origin.
 *   A whole repo: GET {endpoint}/api/{models|datasets}/{repo}/revision/{revision} (the
 *     commit), then /api/.../tree/{commit}?recursive=true (paged by Link: rel="next"),
 *     filtered by the include globs (fnmatch(3) without FNM_PATHNAME: '*' crosses '/',
 *     like huggingface_hub's allow_patterns; a glob ending in '/' matches the folder).
 *
 * Cache ($HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else
 * $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub):
 *   models--ORG--NAME/ (datasets--ORG--NAME/ for data sets)
 *     blobs/<etag>                 the content; blobs/<etag>.incomplete while downloading
 *     refs/<revision>              the commit hash, no newline (not written for a commit)
 *     snapshots/<commit>/<path>    relative symlink to ../../blobs/<etag>
 *   .locks/models--ORG--NAME/<etag>.lock   flock(2)ed while the blob is written
 * Blobs are verified before they are kept: sha256 for a 64-hex etag, the git blob sha1
 * for a 40-hex one; a .gguf must start with "GGUF", a .safetensors with its header, and
 * an HTML page is never taken for a binary file. A mismatch deletes the download.
 *
 * Offline ($HF_HUB_OFFLINE or $TRANSFORMERS_OFFLINE = 1/ON/YES/TRUE, or opts.offline):
 * resolution reads only refs/ and snapshots/; a miss is KW_ENOTFOUND naming the cache
 * path that is missing. Library code: nothing here prints; progress goes to a callback.
 */
#ifndef KW_STORE_HUB_H
#define KW_STORE_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvweave/status.h"

typedef enum kw_hub_repo_type { KW_HUB_MODEL = 0, KW_HUB_DATASET = 1 } kw_hub_repo_type;

/* One progress report: path is the file in the repo; total is -1 when unknown. done
 * counts bytes already in the .incomplete file from an earlier attempt. */
typedef struct kw_hub_progress {
    const char *path;
    int64_t done, total;
    double rate_bps;   /* bytes per second over this transfer so far */
    double elapsed_s;
    int file_index, file_count; /* 1-based position in a repo pull; 1 of 1 otherwise */
    bool finished;     /* the last report of this file */
    bool cached;       /* finished without a transfer (the blob was in the cache) */
} kw_hub_progress;
typedef void (*kw_hub_progress_fn)(const kw_hub_progress *p, void *user);

typedef struct kw_hub_opts {
    kw_hub_repo_type repo_type;
    const char *revision;          /* branch, tag or commit; NULL: "main" */
    const char *const *include;    /* nullable, NULL-terminated globs for a repo pull */
    int offline;                   /* -1: from the environment; 0: online; 1: cache only */
    bool prefer_cache;             /* a name already in the cache resolves without the
                                    * network (the model loader); false: ask the hub for
                                    * the revision's current commit (kvweave pull) */
    int max_retries;               /* resumes after an interrupted transfer, per file */
    long connect_timeout_s;        /* default 15 */
    long stall_timeout_s;          /* abort a transfer below 1 byte/s for this long (60) */
    long lock_timeout_s;           /* waiting for another process's download (3600) */
    kw_hub_progress_fn progress;   /* nullable */
    void *progress_user;
} kw_hub_opts;

kw_hub_opts kw_hub_opts_default(void);

/* What a resolution used: enough to find the same bytes again. */
typedef struct kw_hub_file {
    char *path;    /* in the repo */
    char *etag;    /* blob name: sha256 (LFS) or git sha1 */
    int64_t size;
} kw_hub_file;

typedef struct kw_hub_prov {
    char repo_id[128];
    char repo_type[8];     /* "model" | "dataset" */
    char revision[256];    /* as asked */
    char commit[64];       /* 40 hex */
    size_t n_files;
    kw_hub_file *files;    /* sorted by path */
} kw_hub_prov;

void kw_hub_prov_clear(kw_hub_prov *p);
/* {"repo":..., "repo_type":..., "revision":..., "commit":..., "files":[{"path","etag",
 * "size"}...]} (transfer full; NULL on out of memory). */
char *kw_hub_prov_json(const kw_hub_prov *p);
/* One digest for a run's model_sha256 / dataset_sha256: the etag itself when it is the
 * only file and a sha256, else sha256 over "path\tetag\n" lines in path order. */
void kw_hub_prov_digest(const kw_hub_prov *p, char hex[65]);

/* Resolves repo_id ("ORG/NAME") at opts->revision into the cache and returns the local
 * path (transfer full): the snapshot file when path is non-NULL, else the snapshot
 * directory holding every file that matches opts->include (all files when NULL).
 * prov (nullable) is filled from the cache after the files are in place.
 * Errors: KW_EINVAL a bad name or path; KW_ENOTFOUND repo, revision or file not on the
 * hub, or not in the cache offline; KW_EIO network, HTTP and disk errors (disk full,
 * interrupted transfers: the .incomplete blob is kept and the next call resumes it);
 * KW_EFORMAT checksum mismatch or wrong content (the download is deleted). */
int kw_hub_resolve(const char *repo_id, const char *path, const kw_hub_opts *opts,
                   char **local_path, kw_hub_prov *prov, kw_error *err);

/* true when spec reads as a hub name (see kw_hub_resolve_spec) and is not an existing
 * local file or directory. */
bool kw_hub_is_name(const char *spec);

/* Resolves a name as written in a pipeline or on the command line:
 *   [hf://][models/|datasets/]ORG/NAME[@REVISION][/PATH/IN/REPO]
 * "ORG/NAME" is the whole repo (its snapshot directory); "ORG/NAME/file.gguf" or
 * "ORG/NAME@v1.0/sub/file.gguf" one file of it. A "datasets/" prefix overrides
 * opts->repo_type. Returns KW_ENOTFOUND with a message when spec is not a hub name
 * (kw_hub_is_name false), so a caller may try it as a local path first or after. */
int kw_hub_resolve_spec(const char *spec, const kw_hub_opts *opts, char **local_path,
                        kw_hub_prov *prov, kw_error *err);

/* The model loader's entry: kw_hub_resolve_spec with prefer_cache (a cached name needs
 * no network), $HF_HUB_OFFLINE honoured, no progress. local_path: transfer full. */
int kw_hub_resolve_model(const char *spec, char **local_path, kw_error *err);

/* Provenance of a path that a resolution returned (a snapshot file or directory inside
 * the hub cache), read from the cache alone: repo and type from the folder name, the
 * commit from snapshots/<commit>, the revision from the ref naming that commit (else
 * the commit), file etags from the snapshot links. KW_ENOTFOUND when local_path is not
 * inside a hub cache snapshot. For recording what a run used: kw_db_run_set(...,
 * "model_id", prov.repo_id) and kw_hub_prov_digest for "model_sha256". */
int kw_hub_prov_from_path(const char *local_path, kw_hub_prov *prov, kw_error *err);

/* The cache root as described above (no trailing slash). */
int kw_hub_cache_dir(char *buf, size_t n, kw_error *err);
/* The endpoint: $HF_ENDPOINT without trailing '/', else https://huggingface.co. */
const char *kw_hub_endpoint(char *buf, size_t n);
/* true when $HF_HUB_OFFLINE (or $TRANSFORMERS_OFFLINE) is 1/ON/YES/TRUE. */
bool kw_hub_offline_env(void);

#endif
