#!/usr/bin/env python3
"""Hugging Face transformers (LlamaForCausalLM, bf16, SDPA attention) at a model's shapes
with random weights, on the GPU: prefill tokens/s of one sequence (the whole context in
one call) and decode ms/token at batch 1 after a prefill of each context, with the
library's own KV cache (DynamicCache). The peer for bench_model's figures; speed does not
depend on the weights' values. CUDA events, warm-up, medians. Prints CSV like bench_model:

  kind,batch,ctx,ms,tok_per_s

  bench_hf.py [--layers 32 --dim 4096 --heads 32 --kv 8 --ff 14336 --vocab 128256]
              [--ctx 8192,32768] [--steps 20] [--theta 500000]
"""
import argparse
import statistics

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ap = argparse.ArgumentParser()
for k, v in [("layers", 32), ("dim", 4096), ("heads", 32), ("kv", 8), ("ff", 14336),
             ("vocab", 128256), ("steps", 20)]:
    ap.add_argument("--" + k, type=int, default=v)
ap.add_argument("--ctx", default="8192,32768")
ap.add_argument("--theta", type=float, default=500000.0)
a = ap.parse_args()
ctxs = [int(x) for x in a.ctx.split(",")]
cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.dim, intermediate_size=a.ff,
                  num_hidden_layers=a.layers, num_attention_heads=a.heads,
                  num_key_value_heads=a.kv, max_position_embeddings=max(ctxs) + a.steps + 16,
                  rope_theta=a.theta, tie_word_embeddings=False, torch_dtype=torch.bfloat16)
cfg._attn_implementation = "sdpa"
torch.manual_seed(0)
with torch.device("cuda"):
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()


def ids(b, n):
    return torch.randint(3, a.vocab, (b, n), device="cuda")


def timed(fn):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    out = fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e), out


print("kind,batch,ctx,ms,tok_per_s")
with torch.inference_mode():
    timed(lambda: model(ids(1, 512), use_cache=True, logits_to_keep=1))  # warm-up
    for c in ctxs:
        reps = 3 if c <= 8192 else 1
        t = []
        for _ in range(reps):
            ms, out = timed(lambda: model(ids(1, c), use_cache=True, logits_to_keep=1))
            t.append(ms)
        ms = statistics.median(t)
        print(f"prefill,1,{c},{ms:.2f},{c / (ms / 1e3):.0f}", flush=True)
        cache = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
        d = []
        for st in range(a.steps + 3):
            ms, o = timed(lambda: model(nxt, past_key_values=cache, use_cache=True,
                                        logits_to_keep=1))
            cache = o.past_key_values
            nxt = o.logits[:, -1:].argmax(-1)
            if st >= 3:
                d.append(ms)
        ms = statistics.median(d)
        print(f"decode,1,{c},{ms:.3f},{1e3 / ms:.1f}", flush=True)
        del out, cache, o
        torch.cuda.empty_cache()
