#!/usr/bin/env python3
"""A loopback imitation of the Hugging Face hub for kvweave's hub tests.

Two HTTP servers on 127.0.0.1 with ephemeral ports, so that they are two origins:
  hub  /{[datasets/]ORG/NAME}/resolve/{rev}/{path}   HEAD/GET; small files answered
       directly (ETag = git blob sha1), LFS files by a 302 to the cdn with
       X-Linked-Etag (sha256) and X-Linked-Size; X-Repo-Commit on every answer
       /api/{models|datasets}/ORG/NAME/revision/{rev}  {"sha": ...}
       /api/{models|datasets}/ORG/NAME/tree/{rev}?recursive=true  paged by Link rel=next
  cdn  /blobs/{sha256}?repo=..&file=..   GET/HEAD with Range and If-Range

Behaviours that imitate the hub's failures, by repo:
  kwtest/gated   403 X-Error-Code: GatedRepo unless "Authorization: Bearer hf_granted"
  kwtest/cut     the cdn drops the connection half-way through the first full GET of a file
  kwtest/badsum  the cdn's bytes do not hash to the advertised etag
  kwtest/html    the cdn answers 200 text/html (a login page) for the GGUF file
  kwtest/huge    X-Linked-Size of 2^60 bytes
  kwtest/moved   a relative 307 to kwtest/tiny-model (a renamed repo)
  kwtest/nosha   the revision API answers without "sha"
  kwtest/badtree the tree API answers truncated JSON
  kwtest/evil    the tree lists a path that climbs out of the snapshot
  any repo       "Authorization: Bearer hf_bad" gives 401 Invalid credentials
Unknown repos: 401 RepoNotFound; unknown revisions: 404 RevisionNotFound; unknown
files: 404 EntryNotFound.

Usage: fake_hub.py STATE_DIR [--lifetime S] [--slow] [--big MB] [--serve ORG/NAME/PATH=FILE]...
--serve adds model repo ORG/NAME with the local FILE as its LFS file PATH (a real model,
for end-to-end tests; repeatable).
Writes STATE_DIR/ports ("HUB CDN") once listening and one JSON line per request to
STATE_DIR/requests.log; exits by itself after --lifetime seconds (default 120).
"""
import hashlib
import http.server
import json
import os
import random
import socketserver
import sys
import threading
import time
import urllib.parse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
GATED_TOKEN = "hf_granted"


def rand_bytes(seed, n):
    rng = random.Random(seed)
    return b"".join(rng.randbytes(min(1 << 20, n - i)) for i in range(0, n, 1 << 20))


def gguf(seed, n):
    return b"GGUF" + (3).to_bytes(4, "little") + rand_bytes(seed, n - 8)


def safetensors(seed, n):
    header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
    return len(header).to_bytes(8, "little") + header + rand_bytes(seed, n)


def git_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class File:
    def __init__(self, data, lfs, served=None, size=None):
        self.data = data
        self.lfs = lfs
        self.served = data if served is None else served  # what the cdn sends
        self.etag = hashlib.sha256(data).hexdigest() if lfs else git_sha1(data)
        self.size = len(data) if size is None else size


def build_repos(big_mb=0):
    small = lambda s: File(s.encode(), False)
    r = {
        ("model", "kwtest/tiny-model"): {
            "config.json": small('{"model_type": "llama", "hidden_size": 64}\n'),
            "tokenizer.json": small('{"version": "1.0", "model": {"type": "BPE"}}\n'),
            "model.safetensors": File(safetensors(1, 300_000), True),
            "sub/notes.txt": small("nested file\n"),
        },
        ("model", "kwtest/tiny-gguf"): {
            "README.md": small("# tiny gguf\n"),
            "tiny-q4.gguf": File(gguf(2, 1_500_000), True),
            "tiny-q8.gguf": File(gguf(3, 2_500_000), True),
        },
        ("dataset", "kwtest/tiny-data"): {
            "README.md": small("# tiny data\n"),
            "data/train.jsonl": File(b"".join(b'{"id": %d}\n' % i for i in range(20000)), True),
        },
        ("model", "kwtest/gated"): {"g.gguf": File(gguf(4, 100_000), True)},
        ("model", "kwtest/cut"): {"big.gguf": File(gguf(5, 3_000_000), True)},
        ("model", "kwtest/badsum"): {
            "w.gguf": File(gguf(6, 200_000), True, served=gguf(7, 200_000))},
        ("model", "kwtest/html"): {
            "m.gguf": File(gguf(8, 50_000), True,
                           served=b"<!DOCTYPE html><html><body>Sign in</body></html>\n")},
        ("model", "kwtest/huge"): {"h.gguf": File(gguf(9, 1000), True, size=1 << 60)},
        ("model", "kwtest/nosha"): {"a.json": small("{}\n")},
        ("model", "kwtest/badtree"): {"a.json": small("{}\n")},
        ("model", "kwtest/evil"): {"../../outside.txt": small("escape\n")},
    }
    if big_mb:  # for measurements: fake_hub.py DIR --big MB
        r[("model", "kwtest/big")] = {"big.gguf": File(gguf(10, big_mb << 20), True)}
    return r


def parse_serve(arg):
    """ORG/NAME/PATH=FILE -> (("model", "ORG/NAME"), PATH, File)"""
    spec, eq, local = arg.partition("=")
    parts = spec.split("/")
    if not eq or len(parts) < 3 or not all(parts) or not local:
        sys.exit("--serve wants ORG/NAME/PATH=FILE, got %r" % arg)
    with open(local, "rb") as fh:
        data = fh.read()
    return ("model", parts[0] + "/" + parts[1]), "/".join(parts[2:]), File(data, True)


class State:
    def __init__(self, state_dir, slow, big_mb=0, served=()):
        self.dir = state_dir
        self.slow = slow
        self.repos = build_repos(big_mb)
        for key, path, f in served:
            self.repos.setdefault(key, {})[path] = f
        self.by_etag = {}
        for (kind, rid), files in self.repos.items():
            for path, f in files.items():
                self.by_etag[f.etag] = (rid, path, f)
        self.cut_done = set()
        self.lock = threading.Lock()
        self.hub_port = self.cdn_port = 0

    def log(self, rec):
        with self.lock, open(os.path.join(self.dir, "requests.log"), "a") as fh:
            fh.write(json.dumps(rec) + "\n")


def parse_range(h, size):
    if not h or not h.startswith("bytes=") or "," in h:
        return None
    a, _, b = h[6:].partition("-")
    if not a:
        return None
    start = int(a)
    end = int(b) if b else size - 1
    return start, min(end, size - 1)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None
    role = ""

    def log_message(self, fmt, *args):
        pass

    def record(self):
        self.state.log({"role": self.role, "method": self.command, "path": self.path,
                        "range": self.headers.get("Range"),
                        "if_range": self.headers.get("If-Range"),
                        "auth": self.headers.get("Authorization"),
                        "pid": os.getpid(), "t": time.time()})

    def send(self, status, headers=None, body=b"", head=False):
        self.send_response(status)
        hs = dict(headers or {})
        hs.setdefault("Content-Length", str(len(body)))
        for k, v in hs.items():
            self.send_header(k, v)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def error(self, status, code, msg, commit=None):
        h = {"X-Error-Code": code, "X-Error-Message": msg, "Content-Type": "application/json"}
        if commit:
            h["X-Repo-Commit"] = commit
        self.send(status, h, json.dumps({"error": msg}).encode(), self.command == "HEAD")

    def do_HEAD(self):
        self.handle_any()

    def do_GET(self):
        self.handle_any()

    def handle_any(self):
        self.record()
        try:
            if self.role == "hub":
                self.hub()
            else:
                self.cdn()
        except (BrokenPipeError, ConnectionResetError):
            pass

    # ---- hub -------------------------------------------------------------------
    def token(self):
        a = self.headers.get("Authorization") or ""
        return a[7:] if a.startswith("Bearer ") else None

    def repo_of(self, kind, rid, rev):
        files = self.state.repos.get((kind, rid))
        if files is None:
            self.error(401, "RepoNotFound", "Repository not found")
            return None
        if rid == "kwtest/gated" and self.token() != GATED_TOKEN:
            self.error(403, "GatedRepo", "Access to model kwtest/gated is restricted. You must "
                       "have access to it and be authenticated to access it. Please log in.")
            return None
        if rev not in ("main", "v1.0", COMMIT):
            self.error(404, "RevisionNotFound", "Invalid rev id: " + rev)
            return None
        return files

    def hub(self):
        if self.token() == "hf_bad":
            return self.error(401, "", "Invalid credentials in Authorization header")
        u = urllib.parse.urlsplit(self.path)
        parts = u.path.split("/")
        if u.path.startswith("/api/"):
            return self.api(parts, urllib.parse.parse_qs(u.query))
        kind = "model"
        if parts[1] == "datasets":
            kind = "dataset"
            parts = parts[1:]
        if len(parts) < 6 or parts[3] != "resolve":
            return self.send(404, {}, b"not found")
        rid = parts[1] + "/" + parts[2]
        rev = urllib.parse.unquote(parts[4])
        path = urllib.parse.unquote("/".join(parts[5:]))
        if rid == "kwtest/moved":
            return self.send(307, {"Location": "/kwtest/tiny-model/resolve/%s/%s" %
                                   (parts[4], "/".join(parts[5:]))})
        files = self.repo_of(kind, rid, rev)
        if files is None:
            return
        f = files.get(path)
        if f is None:
            return self.error(404, "EntryNotFound", "Entry not found", COMMIT)
        head = self.command == "HEAD"
        if not f.lfs:
            return self.serve(f.data, {"ETag": '"%s"' % f.etag, "X-Repo-Commit": COMMIT}, head)
        loc = "http://127.0.0.1:%d/blobs/%s?repo=%s&file=%s" % (
            self.state.cdn_port, f.etag, urllib.parse.quote(rid, safe=""),
            urllib.parse.quote(path, safe=""))
        self.send(302, {"Location": loc, "X-Repo-Commit": COMMIT,
                        "X-Linked-Etag": '"%s"' % f.etag, "X-Linked-Size": str(f.size),
                        "ETag": 'W/"%s"' % git_sha1(b"pointer " + f.etag.encode())})

    def api(self, parts, query):
        # /api/{models|datasets}/ORG/NAME/{revision|tree}/REV
        if len(parts) < 7 or parts[2] not in ("models", "datasets"):
            return self.send(404, {}, b"not found")
        kind = "model" if parts[2] == "models" else "dataset"
        rid = parts[3] + "/" + parts[4]
        rev = urllib.parse.unquote(parts[6])
        files = self.repo_of(kind, rid, rev)
        if files is None:
            return
        if parts[5] == "revision":
            if rid == "kwtest/nosha":
                return self.send(200, {"Content-Type": "application/json"}, b'{"id": "x"}')
            body = {"id": rid, "sha": COMMIT,
                    "siblings": [{"rfilename": p} for p in sorted(files)]}
            return self.send(200, {"Content-Type": "application/json"}, json.dumps(body).encode())
        if rid == "kwtest/badtree":
            return self.send(200, {"Content-Type": "application/json"}, b'[{"type": "file", "pa')
        entries, dirs = [], set()
        for p in sorted(files):
            f = files[p]
            for i in range(1, p.count("/") + 1):
                d = "/".join(p.split("/")[:i])
                if d not in dirs:
                    dirs.add(d)
                    entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": d})
            e = {"type": "file", "oid": git_sha1(f.data) if not f.lfs else "1" * 40,
                 "size": f.size, "path": p}
            if f.lfs:
                e["lfs"] = {"oid": f.etag, "size": f.size, "pointerSize": 134}
            entries.append(e)
        cursor = int(query.get("cursor", ["0"])[0])
        page = entries[cursor:cursor + 3]
        h = {"Content-Type": "application/json"}
        if cursor + 3 < len(entries):
            h["Link"] = ('<http://127.0.0.1:%d/api/%s/%s/tree/%s?recursive=true&cursor=%d>; '
                         'rel="next"' % (self.state.hub_port, parts[2], rid, parts[6], cursor + 3))
        self.send(200, h, json.dumps(page).encode())

    def serve(self, data, headers, head, cut=False, html=False):
        size = len(data)
        h = dict(headers)
        h["Accept-Ranges"] = "bytes"
        h["Content-Type"] = "text/html" if html else "application/octet-stream"
        rng = parse_range(self.headers.get("Range"), size)
        if_range = self.headers.get("If-Range")
        if rng and if_range and if_range.strip('"') != h.get("ETag", "").strip('"'):
            rng = None  # the validator does not match: send everything
        status, body = 200, data
        if rng:
            if rng[0] >= size:
                return self.send(416, {"Content-Range": "bytes */%d" % size})
            status, body = 206, data[rng[0]:rng[1] + 1]
            h["Content-Range"] = "bytes %d-%d/%d" % (rng[0], rng[1], size)
        self.send_response(status)
        h["Content-Length"] = str(len(body))
        for k, v in h.items():
            self.send_header(k, v)
        self.end_headers()
        if head:
            return
        limit = len(body) // 2 if cut else len(body)
        step = 65536
        for off in range(0, limit, step):
            self.wfile.write(body[off:min(off + step, limit)])
            if self.state.slow:
                time.sleep(0.03)
        if cut:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)

    # ---- cdn -------------------------------------------------------------------
    def cdn(self):
        u = urllib.parse.urlsplit(self.path)
        etag = u.path.rsplit("/", 1)[-1]
        q = urllib.parse.parse_qs(u.query)
        ent = self.state.by_etag.get(etag)
        if ent is None:
            return self.send(404, {}, b"no such blob")
        rid, path, f = ent
        cut = False
        if rid == "kwtest/cut" and self.command == "GET" and not self.headers.get("Range"):
            with self.state.lock:
                cut = path not in self.state.cut_done
                self.state.cut_done.add(path)
        self.serve(f.served, {"ETag": '"%s"' % etag}, self.command == "HEAD", cut=cut,
                   html=rid == "kwtest/html")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    state_dir = sys.argv[1]
    lifetime = 120.0
    if "--lifetime" in sys.argv:
        lifetime = float(sys.argv[sys.argv.index("--lifetime") + 1])
    big = int(sys.argv[sys.argv.index("--big") + 1]) if "--big" in sys.argv else 0
    served = [parse_serve(sys.argv[i + 1]) for i, a in enumerate(sys.argv[:-1]) if a == "--serve"]
    st = State(state_dir, "--slow" in sys.argv, big, served)
    servers = []
    for role in ("hub", "cdn"):
        h = type(role.capitalize() + "Handler", (Handler,), {"state": st, "role": role})
        servers.append(Server(("127.0.0.1", 0), h))
    st.hub_port = servers[0].server_address[1]
    st.cdn_port = servers[1].server_address[1]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    tmp = os.path.join(state_dir, "ports.tmp")
    with open(tmp, "w") as fh:
        fh.write("%d %d\n" % (st.hub_port, st.cdn_port))
    os.replace(tmp, os.path.join(state_dir, "ports"))
    time.sleep(lifetime)  # exits by itself: the tests never leave a server behind
    for s in servers:
        s.shutdown()


if __name__ == "__main__":
    main()
