"""PyTorch peers for the decode-attention benchmark, on the same GPU in the same run:
SDPA over the dense KV (bf16, 32 query / 8 KV heads, head_dim 128) and gather-then-SDPA
over a 25% token selection. Prints CSV lines in bench_cuda_attn's format."""
import sys

import torch
import torch.nn.functional as F


def timeit(fn, reps=30):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def main():
    max_ctx = int(sys.argv[1]) if len(sys.argv) > 1 else 131072
    bw = float(sys.argv[2]) * 1e9 if len(sys.argv) > 2 else 3.0e12
    torch.manual_seed(0)
    for B in (1, 8):
        ctx = 4096
        while ctx <= max_ctx:
            q = torch.randn(B, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(B, 8, ctx, 128, device="cuda", dtype=torch.bfloat16)
            v = torch.randn_like(k)
            ms = timeit(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
            byt = k.numel() * 2 * 2
            print(f"sdpa_dense,dense,{B},{ctx},{ms:.4f},{byt/1e6:.1f},"
                  f"{byt/(ms*1e-3)/1e9:.1f},{100*byt/(ms*1e-3)/bw:.1f},0,0")
            idx = torch.sort(torch.randperm(ctx, device="cuda")[: ctx // 4]).values

            def gathered():
                kk = k.index_select(2, idx)
                vv = v.index_select(2, idx)
                return F.scaled_dot_product_attention(q, kk, vv, enable_gqa=True)

            ms = timeit(gathered)
            byt = k.numel() * 2 * 2 // 4
            print(f"sdpa_gather,tokens25,{B},{ctx},{ms:.4f},{byt/1e6:.1f},"
                  f"{byt/(ms*1e-3)/1e9:.1f},{100*byt/(ms*1e-3)/bw:.1f},0,0")
            del q, k, v
            torch.cuda.empty_cache()
            ctx *= 2


if __name__ == "__main__":
    main()
