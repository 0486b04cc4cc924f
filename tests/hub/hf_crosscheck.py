#!/usr/bin/env python3
"""Cross-check of kvweave's hub cache with the real huggingface_hub package.

  hf_crosscheck.py read  KVWEAVE_JSON...  huggingface_hub, offline, finds what kvweave
                                          pulled at the same paths; scan_cache_dir()
                                          reports the cache without warnings
  hf_crosscheck.py write                  huggingface_hub downloads from HF_ENDPOINT
                                          into HF_HUB_CACHE (kvweave then reads it
                                          offline); prints the paths as JSON

Environment: HF_HUB_CACHE, HF_HUB_OFFLINE / HF_ENDPOINT, set before the import.
"""
import json
import os
import sys

import huggingface_hub as hf

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def read(pulls):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    for p in pulls:
        j = json.load(open(p))
        rt = j["repo_type"]
        if len(j["files"]) == 1 and j["local_path"].endswith("/" + j["files"][0]["path"]):
            got = hf.hf_hub_download(j["repo"], j["files"][0]["path"], repo_type=rt)
        else:
            got = hf.snapshot_download(j["repo"], repo_type=rt)
        assert got == j["local_path"], (got, j["local_path"])
        for f in j["files"]:
            cached = hf.try_to_load_from_cache(j["repo"], f["path"], repo_type=rt)
            assert isinstance(cached, str) and os.path.getsize(cached) == f["size"], (f, cached)
            assert os.path.basename(os.path.realpath(cached)) == f["etag"], (f, cached)
        print("ok: huggingface_hub finds %s %s at %s" % (rt, j["repo"], got))
    info = hf.scan_cache_dir()
    assert not info.warnings, info.warnings
    seen = {}
    for repo in info.repos:
        revs = list(repo.revisions)
        assert len(revs) == 1 and revs[0].commit_hash == COMMIT, revs
        assert "main" in revs[0].refs, revs[0].refs
        for f in revs[0].files:
            assert os.path.getsize(f.blob_path) == f.size_on_disk, f
        seen[(repo.repo_type, repo.repo_id)] = len(revs[0].files)
    print("ok: scan_cache_dir: %s, no warnings" % sorted(seen.items()))


def write():
    out = {
        "file": hf.hf_hub_download("kwtest/tiny-gguf", "tiny-q8.gguf"),
        "snapshot": hf.snapshot_download("kwtest/tiny-model"),
        "dataset": hf.hf_hub_download("kwtest/tiny-data", "data/train.jsonl",
                                      repo_type="dataset"),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "read":
        read(sys.argv[2:])
    else:
        write()
