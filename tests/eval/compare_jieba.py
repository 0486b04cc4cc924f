#!/usr/bin/env python3
"""The C jieba segmenter against python3-jieba's jieba.cut(s, cut_all=False, HMM=True)
on every context of LongBench's multifieldqa_zh ($KVWEAVE_DATA/longbench), cut into
lines and sentences, plus the whole contexts and inputs. Passes with zero mismatches;
prints each mismatch otherwise. Needs the kw_eval_cli driver ($KW_EVAL_CLI)."""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyenv_check import require  # noqa: E402

require(["jieba"])
import jieba  # noqa: E402

jieba.setLogLevel(60)
MIN_PIECES = 10000


def pieces():
    path = os.path.join(os.environ.get("KVWEAVE_DATA", "../shared/data"), "longbench",
                        "multifieldqa_zh.jsonl")
    if not os.path.exists(path):
        print("SKIP: %s not found" % path)
        sys.exit(77)
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            for field in ("context", "input"):
                text = rec[field]
                out.append(text)
                for ln in text.split("\n"):
                    for s in re.split(r"(?<=[。！？；])", ln):
                        if s.strip():
                            out.append(s)
            for a in rec["answers"]:
                out.append(a)
    return out


def generated(texts, n=3000, seed=7):
    """Random strings mixing the data's characters with ASCII letters, digits, the
    characters jieba's block regexes treat specially, white space and CR LF."""
    import random
    rng = random.Random(seed)
    pool = sorted(set("".join(texts[:400])))
    special = list("+#&._%-") + [" ", "\t", "\r\n", "\r", "\n", "\u3000", ".5", "%"]
    alnum = list("abcXYZ0123456789")
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 40)):
            r = rng.random()
            if r < 0.6:
                parts.append(rng.choice(pool))
            elif r < 0.8:
                parts.append(rng.choice(alnum))
            else:
                parts.append(rng.choice(special))
        out.append("".join(parts))
    return out


def main():
    cases = pieces()
    cases += generated(cases)
    cli = os.environ["KW_EVAL_CLI"]
    with tempfile.TemporaryFile("w+", encoding="utf-8") as tf:
        for s in cases:
            tf.write(json.dumps({"text": s}) + "\n")
        tf.seek(0)
        res = subprocess.run([cli, "jieba"], stdin=tf, capture_output=True, text=True)
    if res.returncode != 0:
        print("kw_eval_cli failed (%d): %s" % (res.returncode, res.stderr))
        return 1
    got = res.stdout.splitlines()
    if len(got) != len(cases):
        print("kw_eval_cli gave %d lines for %d cases" % (len(got), len(cases)))
        return 1
    bad = 0
    for i, (s, line) in enumerate(zip(cases, got)):
        want = list(jieba.cut(s, cut_all=False, HMM=True))
        have = json.loads(line) if not line.startswith("ERROR") else line
        if have != want:
            bad += 1
            if bad <= 20:
                print("mismatch %d: %r\n  python: %r\n  c:      %r" % (i, s[:200], want[:50],
                                                                      have[:50]))
    ntok = sum(len(json.loads(g)) for g in got if not g.startswith("ERROR"))
    print("jieba: %d pieces, %d tokens, %d mismatches" % (len(cases), ntok, bad))
    if len(cases) < MIN_PIECES:
        print("too few pieces: %d < %d" % (len(cases), MIN_PIECES))
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
