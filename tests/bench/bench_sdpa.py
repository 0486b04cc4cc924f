"""PyTorch peers for the attention benchmarks, on the same GPU in the same run.

  bench_sdpa.py [MAX_CTX] [BW_GBPS]: decode, SDPA over the dense KV (bf16, 32 query /
      8 KV heads, head_dim 128) and gather-then-SDPA over a 25% token selection, in
      bench_cuda_attn's CSV format.
  bench_sdpa.py prefill [MAX_CTX] [PEAK_TFLOPS]: causal prefill attention of one
      sequence (every token a query, contexts 4k..MAX_CTX, default 32k) with
      is_causal=True, in bench_cuda_prefill's CSV format and FLOP count. View "gqa"
      passes the 8 KV heads with enable_gqa=True; "expanded" repeats them to 32 heads
      first (outside the timing), in case a fused backend does not take GQA; "cudnn" and
      "flash": the expanded heads with that fused backend forced.
"""
import sys

import torch
import torch.nn.functional as F

DECODE_BATCH = 16  # decode calls timed back to back (bench_cuda_attn does the same)


def timeit(fn, reps=30, batch=1):
    """Median ms per call; batch calls back to back between the events (decode calls are
    short enough that one call alone would also time the host launching onto an idle
    GPU), as kwb_time_ms_batch does for kvweave's kernels."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(batch):
            fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) / batch)
    ts.sort()
    return ts[len(ts) // 2]


def prefill(max_ctx, peak):
    torch.manual_seed(0)
    H, HKV, D = 32, 8, 128
    ctx = 4096
    while ctx <= max_ctx:
        q = torch.randn(1, H, ctx, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, HKV, ctx, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        flop = 4.0 * H * D * (ctx * (ctx + 1) / 2)
        reps = 20 if ctx <= 8192 else 10
        views = []
        try:
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            views.append(("gqa", lambda: F.scaled_dot_product_attention(
                q, k, v, is_causal=True, enable_gqa=True)))
        except (TypeError, RuntimeError):  # PyTorch before 2.5
            pass
        ke = k.repeat_interleave(H // HKV, dim=1)
        ve = v.repeat_interleave(H // HKV, dim=1)
        views.append(("expanded", lambda: F.scaled_dot_product_attention(
            q, ke, ve, is_causal=True)))
        # each fused backend forced, so the table's SDPA figure is the fastest of them
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            for bname, be in (("cudnn", SDPBackend.CUDNN_ATTENTION),
                              ("flash", SDPBackend.FLASH_ATTENTION)):
                def forced(be=be):
                    with sdpa_kernel([be]):
                        return F.scaled_dot_product_attention(q, ke, ve, is_causal=True)
                try:
                    forced()
                    views.append((bname, forced))
                except RuntimeError:
                    pass
        except ImportError:
            pass
        for name, fn in views:
            ms = timeit(fn, reps)
            tf = flop / (ms * 1e-3) / 1e12
            print(f"sdpa_prefill,{name},{ctx},{ctx},{ms:.4f},{flop/1e12:.3f},{tf:.1f},"
                  f"{100*tf/peak:.1f}", flush=True)
        del q, k, v, ke, ve, views
        torch.cuda.empty_cache()
        ctx *= 2


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "prefill":
        prefill(int(sys.argv[2]) if len(sys.argv) > 2 else 32768,
                float(sys.argv[3]) if len(sys.argv) > 3 else 800.0)
        return
    max_ctx = int(sys.argv[1]) if len(sys.argv) > 1 else 131072
    bw = float(sys.argv[2]) * 1e9 if len(sys.argv) > 2 else 3.0e12
    torch.manual_seed(0)
    for B in (1, 8):
        ctx = 4096
        while ctx <= max_ctx:
            q = torch.randn(B, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(B, 8, ctx, 128, device="cuda", dtype=torch.bfloat16)
            v = torch.randn_like(k)
            ms = timeit(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                        batch=DECODE_BATCH)
            byt = k.numel() * 2 * 2
            print(f"sdpa_dense,dense,{B},{ctx},{ms:.4f},{byt/1e6:.1f},"
                  f"{byt/(ms*1e-3)/1e9:.1f},{100*byt/(ms*1e-3)/bw:.1f},0,0")
            idx = torch.sort(torch.randperm(ctx, device="cuda")[: ctx // 4]).values

            def gathered():
                kk = k.index_select(2, idx)
                vv = v.index_select(2, idx)
                return F.scaled_dot_product_attention(q, kk, vv, enable_gqa=True)

            ms = timeit(gathered, batch=DECODE_BATCH)
            byt = k.numel() * 2 * 2 // 4
            print(f"sdpa_gather,tokens25,{B},{ctx},{ms:.4f},{byt/1e6:.1f},"
                  f"{byt/(ms*1e-3)/1e9:.1f},{100*byt/(ms*1e-3)/bw:.1f},0,0")
            del q, k, v
            torch.cuda.empty_cache()
            ctx *= 2


if __name__ == "__main__":
    main()
