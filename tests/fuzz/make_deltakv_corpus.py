#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_deltakv_load (corpus/deltakv): small DeltaKV compressor
checkpoints in safetensors, valid ones (linear shared, SwiGLU down and GELU up per layer,
BF16 and F32) and broken ones (a layer missing, a shape off, split K/V names, a part no
module has, mixed kinds, a latent larger than the model's values, a NaN, a layer out of
range, no compressor tensor).

    python3 tests/fuzz/make_deltakv_corpus.py tests/fuzz/corpus/deltakv
"""
import json
import math
import os
import random
import struct
import sys


def bf16(x):
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return struct.pack("<H", u & 0xFFFF)


def write(path, tensors):
    """tensors: list of (name, dtype 'F32'|'BF16', shape, values)"""
    hdr, blobs, off = {}, [], 0
    for name, dt, shape, vals in tensors:
        b = b"".join(bf16(v) if dt == "BF16" else struct.pack("<f", v) for v in vals)
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    js = json.dumps(hdr).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)) + js + b"".join(blobs))


def vec(n, rng):
    return [rng.uniform(-0.5, 0.5) for _ in range(n)]


def per_layer(L, D, R, NI, rng, dt="F32"):
    t = []
    for l in range(L):
        p = f"model.layers.{l}.self_attn."
        t += [(p + "compress_down.w12.weight", "BF16", [2 * NI, D], vec(2 * NI * D, rng)),
              (p + "compress_down.w12.bias", dt, [2 * NI], vec(2 * NI, rng)),
              (p + "compress_down.w3.weight", dt, [R, NI], vec(R * NI, rng)),
              (p + "compress_up.0.weight", dt, [NI, R], vec(NI * R, rng)),
              (p + "compress_up.2.weight", dt, [D, NI], vec(D * NI, rng)),
              (p + "compress_up.2.bias", dt, [D], vec(D, rng))]
    return t


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(7)
    L, D, R, NI = 3, 32, 8, 6
    write(f"{out}/linear_shared", [("compress_down.weight", "F32", [R, D], vec(R * D, rng)),
                                   ("compress_down.bias", "F32", [R], vec(R, rng)),
                                   ("compress_up.weight", "F32", [D, R], vec(D * R, rng))])
    good = per_layer(L, D, R, NI, rng)
    write(f"{out}/swiglu_gelu", good)
    write(f"{out}/small_linear", [(f"layers.{l}.compress_{k}.weight", "F32", s, vec(s[0] * s[1], rng))
                                  for l in range(2) for k, s in (("down", [4, 8]), ("up", [8, 4]))])
    write(f"{out}/bad_missing_layer", good[:-3])
    bad = list(good)
    bad[2] = (bad[2][0], "F32", [R, NI - 1], vec(R * (NI - 1), rng))
    write(f"{out}/bad_shape", bad)
    write(f"{out}/bad_split_kv", good + [("model.layers.0.self_attn.k_compress_down.weight",
                                          "F32", [R, D // 2], vec(R * D // 2, rng))])
    write(f"{out}/bad_part", good + [("model.layers.1.self_attn.compress_down.w99.weight",
                                      "F32", [R], vec(R, rng))])
    write(f"{out}/bad_mixed", good + [("model.layers.1.self_attn.compress_down.weight",
                                       "F32", [R, D], vec(R * D, rng))])
    big = per_layer(L, D, D + 1, NI, rng)
    write(f"{out}/bad_latent", big)
    nan = list(good)
    nan[5] = (nan[5][0], "F32", [D], [math.nan] + vec(D - 1, rng))
    write(f"{out}/bad_nan", nan)
    write(f"{out}/bad_layer_index", good + [("model.layers.9.self_attn.compress_up.2.bias",
                                             "F32", [D], vec(D, rng))])
    write(f"{out}/bad_nothing", [("model.embed_tokens.weight", "F32", [4], vec(4, rng))])


if __name__ == "__main__":
    main()
