#!/usr/bin/env python3
"""Hugging Face transformers on a GGUF (a synthetic model from `kvweave gen model`, or a
real one), as the reference kvweave is compared with:

  1. writes a golden in tests/golden's format for test_golden (KVWEAVE_GOLDEN_MODEL=MODEL,
     KVWEAVE_GOLDEN_PREFIX=OUT_PREFIX): prompts of random token ids (seeded; ids from 3 up,
     so no special token), per prompt the top-20 logits at a few positions, the full
     logits of the last position (first N_FULL prompts) and 32 greedy tokens;
  2. with --time, times transformers' prefill (one sequence of --time-ctx tokens) and
     decode (tokens/s at that context, batch 1, its own KV cache), printed as CSV lines
     `hf,prefill|decode,batch,ctx,ms,tok_per_s` beside kvweave's bench_model figures.

transformers dequantizes the GGUF and undoes llama.cpp's Q/K permutation, so it computes
the same function as kvweave reading the file's interleaved layout. Needs torch,
transformers, gguf and numpy. Not run in CI.

  python3 tests/bench/hf_compare.py MODEL.gguf OUT_PREFIX [--device cpu|cuda]
          [--dtype f32|bf16] [--lens 7,100,700] [--seed 1] [--time] [--time-ctx 8192]
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM

N_GREEDY = 32
TOPK = 20
N_FULL = 3


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def gguf_meta(path):
    """The GGUF's scalar and string metadata as a dict."""
    import gguf

    r = gguf.GGUFReader(path)
    out = {}
    for k, f in r.fields.items():
        if not f.data:
            continue
        v = f.parts[f.data[0]]
        if f.types and f.types[0] == gguf.GGUFValueType.STRING:
            out[k] = bytes(v).decode("utf-8", "replace")
        elif len(f.data) == 1 and getattr(v, "size", 0) == 1:
            out[k] = v[0].item()
    return out


def apply_rope_scaling(model, path):
    """transformers' GGUF loader reads rope.freq_base but not {arch}.rope.scaling.* (nor a
    rope_freqs tensor), so a Llama-3.1 GGUF would run with plain RoPE there while kvweave
    applies the llama3 frequency scaling the file declares. Give transformers' rotary
    embedding the same frequencies (computed here from the metadata), so both sides run
    the model the file describes."""
    m = gguf_meta(path)
    arch = m.get("general.architecture", "llama")
    kind = m.get(f"{arch}.rope.scaling.type")
    if kind is None:
        return
    rot = getattr(model.model, "rotary_emb", None)
    if rot is None or not hasattr(rot, "inv_freq"):
        sys.exit("hf_compare: the GGUF declares RoPE scaling but this transformers version "
                 "has no rotary_emb.inv_freq to set")
    dim = int(m.get(f"{arch}.rope.dimension_count") or model.config.head_dim)
    base = float(m.get(f"{arch}.rope.freq_base", 10000.0))
    inv = (1.0 / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))).astype(np.float64)  # as float32, as both sides compute it
    factor = float(m.get(f"{arch}.rope.scaling.factor", 1.0))
    if kind == "linear":
        inv = inv / factor
    elif kind == "llama3":
        lo = float(m.get(f"{arch}.rope.scaling.low_freq_factor", 1.0))
        hi = float(m.get(f"{arch}.rope.scaling.high_freq_factor", 4.0))
        old = float(m.get(f"{arch}.rope.scaling.original_context_length", 8192))
        wavelen = 2 * np.pi / inv
        smooth = np.clip((old / wavelen - lo) / (hi - lo), 0.0, 1.0)
        # long wavelengths (> old / lo) divided by factor, short ones (< old / hi) kept,
        # the band between interpolated
        inv = (1 - smooth) * inv / factor + smooth * inv
    else:
        sys.exit(f"hf_compare: RoPE scaling type '{kind}' is not handled here")
    t = torch.tensor(inv, dtype=torch.float32, device=rot.inv_freq.device)
    rot.inv_freq = t
    if hasattr(rot, "original_inv_freq"):
        rot.original_inv_freq = t.clone()
    print(f"# RoPE scaling {kind} (factor {factor}) applied to transformers' rotary "
          "embedding", file=sys.stderr)


def sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--lens", default="7,100,700")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--time", action="store_true")
    ap.add_argument("--time-ctx", type=int, default=8192)
    a = ap.parse_args()
    dt = torch.float32 if a.dtype == "f32" else torch.bfloat16
    d, name = os.path.split(os.path.abspath(a.model))
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, torch_dtype=dt)
    model.to(a.device).eval()
    apply_rope_scaling(model, a.model)
    print(f"# loaded {a.model} in {time.time() - t0:.1f} s ({a.device}, {a.dtype})",
          file=sys.stderr)
    V = model.config.vocab_size
    rng = np.random.default_rng(a.seed)
    doc = {"model": os.path.basename(a.model), "gguf_sha256": sha256(a.model), "n_vocab": V,
           "topk": TOPK, "n_full": N_FULL, "device": a.device, "dtype": a.dtype,
           "prompts": []}
    full = []
    with torch.no_grad():
        for i, n in enumerate(int(x) for x in a.lens.split(",")):
            ids = [int(x) for x in rng.integers(3, V, size=n)]
            logits = model(torch.tensor([ids], device=a.device)).logits[0].float().cpu().numpy()
            pos = sorted({0, n // 4, n // 2, (3 * n) // 4, n - 2, n - 1})
            pos = [p for p in pos if 0 <= p < n]
            top = []
            for p in pos:
                row = logits[p]
                order = np.lexsort((np.arange(row.size), -row))[:TOPK]
                top.append([[int(j), float(row[j])] for j in order])
            if i < N_FULL:
                full.append(logits[n - 1].astype("<f4"))
            out = model.generate(torch.tensor([ids], device=a.device), max_new_tokens=N_GREEDY,
                                 min_new_tokens=N_GREEDY, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)
            greedy = [int(t) for t in out[0, n:].tolist()]
            doc["prompts"].append({"label": f"random{n}", "ids": ids, "positions": pos,
                                   "top": top, "greedy": greedy})
            print(f"random{n}: greedy {greedy[:8]}...", file=sys.stderr)
    doc["n_full"] = len(full)
    with open(a.out + ".json", "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    np.concatenate(full).tofile(a.out + ".bin")
    if not a.time:
        return
    C = a.time_ctx
    with torch.no_grad():
        x = torch.tensor([[int(t) for t in rng.integers(3, V, size=C)]], device=a.device)
        model(x[:, :256])  # warm-up
        sync(a.device)
        t0 = time.time()
        o = model(x, use_cache=True)
        sync(a.device)
        pre = time.time() - t0
        print(f"hf,prefill,1,{C},{pre * 1e3:.2f},{C / pre:.0f}")
        cache = o.past_key_values
        nxt = o.logits[:, -1:].argmax(-1)
        times = []
        for _ in range(12):
            sync(a.device)
            t0 = time.time()
            o = model(nxt, past_key_values=cache, use_cache=True)
            sync(a.device)
            times.append(time.time() - t0)
            cache = o.past_key_values
            nxt = o.logits[:, -1:].argmax(-1)
        ms = float(np.median(times[2:])) * 1e3
        print(f"hf,decode,1,{C},{ms:.3f},{1e3 / ms:.1f}")


if __name__ == "__main__":
    main()
