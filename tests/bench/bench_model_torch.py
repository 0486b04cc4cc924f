#!/usr/bin/env python3
"""The same model work as bench_model, in plain PyTorch (eager, bf16, SDPA attention), on
random weights of the same shapes: prefill tokens/s of one sequence (whole context in one
call, causal SDPA) and decode tokens/s at batches x contexts with a preallocated KV cache
(SDPA over the cache, GQA). CUDA events, warm-up, medians. Prints CSV like bench_model.

  bench_model_torch.py --layers 32 --dim 4096 --heads 32 --kv 8 --ff 14336 --vocab 128256
                       [--ctx 2048,8192,32768] [--batch 1,8] [--steps 20] [--prefill-max N]
"""
import argparse
import statistics

import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
for k, v in [("layers", 32), ("dim", 4096), ("heads", 32), ("kv", 8), ("ff", 14336),
             ("vocab", 128256), ("steps", 20), ("prefill_max", 32768)]:
    ap.add_argument("--" + k.replace("_", "-"), type=int, default=v)
ap.add_argument("--ctx", default="2048,8192,32768")
ap.add_argument("--batch", default="1,8")
ap.add_argument("--theta", type=float, default=500000.0)
a = ap.parse_args()
dev = torch.device("cuda")
torch.manual_seed(0)
L, E, H, KV, FF, V = a.layers, a.dim, a.heads, a.kv, a.ff, a.vocab
D = E // H
dt = torch.bfloat16


def w(*shape):
    return (torch.randn(*shape, device=dev, dtype=torch.float32) * 0.02).to(dt)


layers = [dict(wq=w(H * D, E), wk=w(KV * D, E), wv=w(KV * D, E), wo=w(E, H * D),
               wg=w(FF, E), wu=w(FF, E), wd=w(E, FF), n1=torch.ones(E, device=dev, dtype=dt),
               n2=torch.ones(E, device=dev, dtype=dt)) for _ in range(L)]
emb = w(V, E)
head = w(V, E)
nf = torch.ones(E, device=dev, dtype=dt)
inv = 1.0 / (a.theta ** (torch.arange(0, D, 2, device=dev, dtype=torch.float32) / D))


def rms(x, g):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dt) * g


def rope(x, pos):  # x (B, h, T, D), rotate halves
    f = pos.float()[:, None] * inv[None, :]
    cos, sin = torch.cos(f).to(dt), torch.sin(f).to(dt)
    cos = torch.cat([cos, cos], -1)
    sin = torch.cat([sin, sin], -1)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def layer(p, x, pos, cache=None, start=0):
    B, T, _ = x.shape
    h = rms(x, p["n1"])
    q = F.linear(h, p["wq"]).view(B, T, H, D).transpose(1, 2)
    k = F.linear(h, p["wk"]).view(B, T, KV, D).transpose(1, 2)
    v = F.linear(h, p["wv"]).view(B, T, KV, D).transpose(1, 2)
    q, k = rope(q, pos), rope(k, pos)
    if cache is None:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    else:
        kc, vc = cache
        kc[:, :, start:start + T] = k
        vc[:, :, start:start + T] = v
        o = F.scaled_dot_product_attention(q, kc[:, :, :start + T], vc[:, :, :start + T],
                                           enable_gqa=True)
    x = x + F.linear(o.transpose(1, 2).reshape(B, T, H * D), p["wo"])
    h = rms(x, p["n2"])
    return x + F.linear(F.silu(F.linear(h, p["wg"])) * F.linear(h, p["wu"]), p["wd"])


@torch.inference_mode()
def prefill(ids):
    x = emb[ids]
    pos = torch.arange(ids.shape[1], device=dev)
    for p in layers:
        x = layer(p, x, pos)
    return F.linear(rms(x[:, -1:], nf), head)


@torch.inference_mode()
def decode(ids, caches, start):
    x = emb[ids]
    pos = torch.tensor([start], device=dev)
    for p, c in zip(layers, caches):
        x = layer(p, x, pos, c, start)
    return F.linear(rms(x, nf), head).argmax(-1)


def timed(fn, reps, warm):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        torch.cuda.synchronize()
        ts.append(e0.elapsed_time(e1) / 1e3)
    return statistics.median(ts)


ctxs = [int(c) for c in a.ctx.split(",")]
bats = [int(b) for b in a.batch.split(",")]
print(f"# torch {torch.__version__} eager bf16 SDPA, {L} layers {E} dim {H}/{KV} heads")
print("kind,batch,ctx,ms,tok_per_s")
rows = []
for C in ctxs:
    if C > a.prefill_max:
        continue
    ids = torch.randint(3, V, (1, C), device=dev)
    s = timed(lambda: prefill(ids), 3 if C <= 8192 else 1, 1)
    print(f"prefill,1,{C},{s * 1e3:.2f},{C / s:.0f}", flush=True)
    rows.append(("prefill", 1, C, s))
for B in bats:
    for C in ctxs:
        caches = [(torch.randn(B, KV, C + a.steps + 8, D, device=dev, dtype=dt),
                   torch.randn(B, KV, C + a.steps + 8, D, device=dev, dtype=dt)) for _ in range(L)]
        ids = torch.randint(3, V, (B, 1), device=dev)
        st = [C]

        def step():
            decode(ids, caches, st[0])

        s = timed(step, a.steps, 3)
        print(f"decode,{B},{C},{s * 1e3:.3f},{B / s:.1f}", flush=True)
        rows.append(("decode", B, C, s))
        del caches
        torch.cuda.empty_cache()
