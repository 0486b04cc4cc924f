#!/usr/bin/env python3
"""Makes the SmolLM2-135M-Instruct logits golden (tests/golden/logits_smollm2.*).

The reference is Hugging Face transformers loading the same GGUF file (torch on the CPU,
float32): transformers dequantizes the tensors and undoes llama.cpp's Q/K permutation, so
its logits are the model's true logits, while kvweave reads the file's interleaved
layout as is. Not run in CI. Usage, in a throwaway virtual environment:

    pip install torch transformers gguf numpy
    python make_logits_golden.py MODEL.gguf TEXT_FILE OUT_PREFIX

TEXT_FILE is a long plain text (e.g. $KVWEAVE_DATA/text/pg19_frank_merriwell_down_south.txt)
from which the ~1k-token prompt is cut. Writes OUT_PREFIX.json (token ids, the top-20
logits at a few positions of every prompt, the 32 greedy tokens) and OUT_PREFIX.bin (the
full float32 logits of the last position of the first N_FULL prompts, in order).
"""
import hashlib
import json
import os
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

N_GREEDY = 32
TOPK = 20
N_FULL = 4  # prompts whose last-position logits are stored in full (size budget)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def prompts(tok, text):
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    chat_ids = tok.apply_chat_template(chat, add_generation_prompt=True)
    if hasattr(chat_ids, "input_ids"):
        chat_ids = chat_ids["input_ids"]
    words = text.split()
    long_text = " ".join(words[2000:2900])
    long_ids = tok(long_text, add_special_tokens=False)["input_ids"][:1000]
    return [
        ("chat", list(chat_ids)),
        ("short", tok("The quick brown fox", add_special_tokens=False)["input_ids"]),
        ("code", tok("def fibonacci(n):\n    ", add_special_tokens=False)["input_ids"]),
        ("long", long_ids),
        ("numbers", tok("1, 2, 3, 5, 8, 13,", add_special_tokens=False)["input_ids"]),
    ]


def main():
    gguf_path, text_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
    d, name = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, torch_dtype=torch.float32)
    model.eval()
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    doc = {"model": "smollm2-135m-instruct", "gguf_sha256": sha256(gguf_path),
           "n_vocab": model.config.vocab_size, "topk": TOPK, "n_full": N_FULL,
           "prompts": []}
    full = []
    with torch.no_grad():
        for i, (label, ids) in enumerate(prompts(tok, text)):
            x = torch.tensor([ids])
            logits = model(x).logits[0].float().numpy()
            n = len(ids)
            pos = sorted({0, n // 4, n // 2, (3 * n) // 4, n - 2, n - 1} - {-1})
            pos = [p for p in pos if 0 <= p < n]
            top = []
            for p in pos:
                row = logits[p]
                order = np.lexsort((np.arange(row.size), -row))[:TOPK]
                top.append([[int(j), float(row[j])] for j in order])
            if i < N_FULL:
                full.append(logits[n - 1].astype("<f4"))
            seq = list(ids)
            for _ in range(N_GREEDY):  # greedy without an eos stop
                lg = model(torch.tensor([seq])).logits[0, -1]
                seq.append(int(torch.argmax(lg)))
            doc["prompts"].append({"label": label, "ids": [int(t) for t in ids],
                                   "positions": pos, "top": top,
                                   "greedy": seq[n:]})
            print(f"{label}: {n} tokens, greedy {seq[n:n + 8]}...", file=sys.stderr)
    with open(out + ".json", "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    np.concatenate(full).tofile(out + ".bin")


if __name__ == "__main__":
    main()
