#!/usr/bin/env python3
"""Writes the data the C jieba segmenter (operators/score/jieba.c) reads, from an
installed jieba package (Debian: python3-jieba):

  OUTDIR/dict.txt  jieba's prefix dictionary, copied as is ("word freq tag" per line)
  OUTDIR/hmm.tsv   the finalseg HMM tables as text, one number per line:
                     start <state> <logp>
                     trans <from> <to> <logp>
                     emit <state> <codepoint hex> <logp>
                   every <logp> is Python's repr of the float (round-trips exactly)

Usage: jieba_data.py OUTDIR        write the files
       jieba_data.py --find        print the jieba package directory, exit 1 if absent
The jieba package is looked up on sys.path first, then in Debian's dist-packages.
Nothing of jieba's data is part of kvweave's sources.
"""
import ast
import os
import shutil
import sys

DEBIAN_DIRS = ["/usr/lib/python3/dist-packages", "/usr/share/python3/dist-packages"]


def find_jieba():
    for d in list(sys.path) + DEBIAN_DIRS:
        p = os.path.join(d or ".", "jieba")
        if os.path.isfile(os.path.join(p, "dict.txt")) and \
                os.path.isfile(os.path.join(p, "finalseg", "prob_emit.py")):
            return os.path.abspath(p)
    return None


def load_table(path):
    """The `P = {...}` literal of a finalseg prob_*.py file, without importing it."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    tree = ast.parse(src, path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "P" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("jieba_data: no 'P = ...' in %s" % path)


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    jdir = find_jieba()
    if sys.argv[1] == "--find":
        if not jdir:
            sys.exit(1)
        print(jdir)
        return
    if not jdir:
        raise SystemExit("jieba_data: the jieba package (python3-jieba) is not installed")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    fs = os.path.join(jdir, "finalseg")
    start = load_table(os.path.join(fs, "prob_start.py"))
    trans = load_table(os.path.join(fs, "prob_trans.py"))
    emit = load_table(os.path.join(fs, "prob_emit.py"))
    tmp = os.path.join(out, "hmm.tsv.part")
    with open(tmp, "w", encoding="ascii") as f:
        for s in "BMES":
            f.write("start %s %r\n" % (s, float(start[s])))
        for s in "BMES":
            for t, p in sorted(trans[s].items()):
                f.write("trans %s %s %r\n" % (s, t, float(p)))
        for s in "BMES":
            for ch, p in sorted(emit[s].items()):
                if len(ch) != 1:
                    raise SystemExit("jieba_data: emission key %r is not one character" % ch)
                f.write("emit %s %x %r\n" % (s, ord(ch), float(p)))
    os.replace(tmp, os.path.join(out, "hmm.tsv"))
    shutil.copyfile(os.path.join(jdir, "dict.txt"), os.path.join(out, "dict.txt.part"))
    os.replace(os.path.join(out, "dict.txt.part"), os.path.join(out, "dict.txt"))


if __name__ == "__main__":
    main()
