#!/usr/bin/env python3
"""Writes the budget sweep pipelines of issue 6: every KV method (StreamingLLM, H2O,
SnapKV, PyramidKV, Quest, ClusterKV, OmniKV, XKV+SnapKV) at budgets given as ratios of the prompt, plus a
full-attention branch, as one branch per (method, budget) in one pipeline per data set:

  sweep_budgets.yaml       RULER niah tasks at 4k: decode.greedy + score.ruler per branch
  sweep_budgets_pg19.yaml  PG19 fidelity: decode.fidelity (a full-attention reference
                           beside each branch) + score.fidelity + score.ppl per branch

All branches read one tokenize stage; every decode stage asks for share_prefill, so the
engine prefills each prompt once and each branch computes only its tail (methods that act
before the prompt ends, H2O and StreamingLLM evicting per chunk, prefill on their own and
say so in the generation's prefill_share).

Budgets are `ratio`s of the prompt everywhere, so no branch depends on a nominal prompt
length. compress.* and retrieve.* take the ratio of each sample's prompt (Quest and
ClusterKV read round(ratio x prompt) tokens per query head and layer, ClusterKV's sink
included and its tokens not yet clustered on top; OmniKV chooses round(ratio x prompt)
tokens, its 8 sink and 128 recent ones on top). layer_budget.xkv takes it of the
calibration samples' prompts: each one's total is n_layer x (round(ratio x prompt) -
window), the same tokens as a uniform SnapKV capacity of ratio x prompt with XKV's window
of 8 included, and the averaged allocation is every sample's budget (XKV's budget is
solved once on the calibration share); all prompts of a sweep file have about one length.

  python3 pipelines/tools/gen_sweep.py              # rewrites both files in pipelines/
  python3 pipelines/tools/gen_sweep.py --check      # exit 1 when they differ
  python3 pipelines/tools/gen_sweep.py --out-dir D --ruler-length 512 ...  # small ones
"""
import argparse
import os
import sys

METHODS = ["streaming", "h2o", "snapkv", "pyramidkv", "quest", "clusterkv", "omnikv", "xkv"]
NIAH = ("niah_single_1,niah_single_2,niah_single_3,niah_multikey_1,niah_multikey_2,"
        "niah_multikey_3,niah_multivalue,niah_multiquery")


def pct(r):
    return "%02d" % round(r * 100)


def flow(d):
    return "{ " + ", ".join("%s: %s" % (k, v) for k, v in d.items()) + " }"


def method_stages(m, r, a):
    """(extra stages, kvmethod stage id) of method m at ratio r."""
    kv = "kv_%s_%s" % (m, pct(r))
    if m == "streaming":
        w = {"sink": 4, "ratio": r}
        if not a.streaming_prefill_evict:
            w["prefill_evict"] = "false"
        return [{"id": kv, "op": "compress.streaming", "with": w}], kv
    if m == "h2o":
        return [{"id": kv, "op": "compress.h2o", "with": {"ratio": r, "heavy_share": 0.5}}], kv
    if m == "snapkv":
        return [{"id": kv, "op": "compress.snapkv",
                 "with": {"ratio": r, "window": 32, "kernel": 5, "pooling": "avg"}}], kv
    if m == "pyramidkv":
        return [{"id": kv, "op": "compress.pyramidkv",
                 "with": {"ratio": r, "window": 32, "kernel": 5, "pooling": "avg",
                          "beta": 20}}], kv
    if m == "quest":
        return [{"id": kv, "op": "retrieve.quest",
                 "with": {"page": 16, "ratio": r, "dense_layers": 2}}], kv
    if m == "clusterkv":
        return [{"id": kv, "op": "retrieve.clusterkv",
                 "with": {"ratio": r, "sink": 16, "clusters": 400, "dense_layers": 2}}], kv
    if m == "omnikv":
        return [{"id": kv, "op": "retrieve.omnikv",
                 "with": {"ratio": r, "layers": '"0,1,2,8,18"'}}], kv
    if m == "xkv":
        b = "xkv_budget_%s" % pct(r)
        return [{"id": b, "op": "layer_budget.xkv", "in": ["probe"],
                 "with": {"ratio": r, "window": 8}},
                {"id": kv, "op": "compress.snapkv", "in": [b],
                 "with": {"window": 8, "kernel": 7, "pooling": "avg"}}], kv
    raise ValueError(m)


def stage_line(s):
    parts = ["id: %s" % s["id"], "op: %s" % s["op"]]
    if s.get("in"):
        parts.append("in: [%s]" % ", ".join(s["in"]))
    if s.get("with"):
        parts.append("with: " + flow(s["with"]))
    return "  - { " + ", ".join(parts) + " }"


def branches(a, decode, dec_with, scorers, streaming_dec_with):
    """stage lines: the full branch, then method x budget."""
    out = []
    def branch(name, kv, extra_with=None):
        w = dict(dec_with)
        if extra_with:
            w.update(extra_with)
        ins = ["tok"] + ([kv] if kv else [])
        out.append(stage_line({"id": "gen_" + name, "op": decode, "in": ins, "with": w}))
        for sid, op, extra in scorers(name):
            out.append(stage_line({"id": sid, "op": op, "in": ["gen_" + name] + extra}))
    out.append("  # full attention (the reference)")
    branch("full", None)
    need_probe = "xkv" in a.methods
    if need_probe:
        out.append("  # XKV calibration: mini-prefill scores on a seeded share of the samples")
        out.append(stage_line({"id": "probe", "op": "mini_prefill.snap", "in": ["tok"],
                               "with": {"window": 8, "kernel": 7, "pooling": "avg"}}))
    for m in a.methods:
        out.append("  # %s" % m)
        for r in a.budgets:
            extra, kv = method_stages(m, r, a)
            out.extend(stage_line(s) for s in extra)
            branch("%s_%s" % (m, pct(r)), kv, streaming_dec_with if m == "streaming" else None)
    return out


def header(title, lines):
    return ["# " + l if l else "#" for l in [title] + lines]


def ruler_yaml(a):
    ds = {"task": '"%s"' % NIAH, "length": a.ruler_length, "n": a.ruler_n, "seed": 42}
    if a.ruler_max_new != 128:
        ds["max_new"] = a.ruler_max_new
    out = header("Budget sweep on RULER niah tasks (written by pipelines/tools/gen_sweep.py: "
                 "edit that, not this)", [
        "",
        "Methods: %s." % ", ".join(a.methods),
        "Budgets: %s of the prompt. One branch per method and budget, and full" %
        ", ".join("%g%%" % (r * 100) for r in a.budgets),
        "attention (gen_full / full). Each branch: kv_<m>_<pct> (the kvmethod),",
        "gen_<m>_<pct> (decode.greedy, share_prefill), <m>_<pct> (score.ruler), so the run",
        "records <m>_<pct>/score, <m>_<pct>/score/<task>, gen_<m>_<pct>/mem/... and",
        "gen_<m>_<pct>/gen/prefill_shared_tokens. Budgets are ratios of each sample's",
        "prompt (XKV: of the calibration samples' prompts, averaged).",
        "",
        "  pipelines/sweep_budgets.sh --limit 1      # with the PG19 sweep: one command",
        "  ./build/kvweave run pipelines/sweep_budgets.yaml --set dataset.n=1",
    ])
    out += ["name: sweep-budgets-ruler", "model: smollm2-135m-instruct", "dataset:",
            "  op: dataset.ruler", "  with: " + flow(ds)]
    if "xkv" in a.methods:
        out.append("calibration: { sample_ratio: 0.1 }")
    out.append("stages:")
    out.append(stage_line({"id": "tok", "op": "tokenize.chat"}))
    dec = {"share_prefill": "true"}
    if a.ruler_max_new != 128:
        dec["max_new"] = a.ruler_max_new
    out += branches(a, "decode.greedy", dec,
                    lambda n: [(n, "score.ruler", ["dataset"])], None)
    out.append("run: { device: cpu, seed: 1 }")
    return "\n".join(out) + "\n"


def pg19_yaml(a):
    ds = {"path": "\"${KVWEAVE_DATA}/text/pg19_frank_merriwell_down_south.txt\"",
          "n": a.pg19_n, "prefill": a.pg19_prefill, "steps": a.pg19_steps}
    out = header("Budget sweep on PG19 fidelity (written by pipelines/tools/gen_sweep.py: "
                 "edit that, not this)", [
        "",
        "Methods: %s." % ", ".join(a.methods),
        "Budgets: %s of the prompt (prefill tokens). One branch per method and" %
        ", ".join("%g%%" % (r * 100) for r in a.budgets),
        "budget. gen_<m>_<pct> is decode.fidelity: the method beside a full-attention",
        "reference on the same prefill (StreamingLLM drops prompt tokens per chunk, so its",
        "reference prefills on its own); <m>_<pct>_fid (score.fidelity: kl, top1, top5) and",
        "<m>_<pct>_ppl (score.ppl: nll, ppl, nll_full, ppl_full). gen_full has no method: its",
        "kl is 0 (a self-check) and its ppl is full attention's. Budgets are ratios of",
        "each sample's prompt (XKV: of the calibration samples' prompts, averaged).",
        "",
        "  pipelines/sweep_budgets.sh --limit 1      # with the RULER sweep: one command",
        "  ./build/kvweave run pipelines/sweep_budgets_pg19.yaml --set dataset.n=1",
    ])
    out += ["name: sweep-budgets-pg19", "model: smollm2-135m-instruct", "dataset:",
            "  op: dataset.text", "  with: " + flow(ds)]
    if "xkv" in a.methods:
        out.append("calibration: { sample_ratio: 0.25 }")
    out.append("stages:")
    out.append(stage_line({"id": "tok", "op": "tokenize.ids"}))
    own = {"reference_prefill": "own"} if a.streaming_prefill_evict else None
    out += branches(a, "decode.fidelity", {"share_prefill": "true"},
                    lambda n: [(n + "_fid", "score.fidelity", []),
                               (n + "_ppl", "score.ppl", [])], own)
    out.append("run: { device: cpu, seed: 1 }")
    return "\n".join(out) + "\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", default=os.path.dirname(here))
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    p.add_argument("--budgets", default="0.05,0.1,0.25,0.5")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--ruler-length", type=int, default=4096)
    p.add_argument("--ruler-max-new", type=int, default=128, help="niah's answer length")
    p.add_argument("--ruler-n", type=int, default=5, help="samples per task")
    p.add_argument("--pg19-prefill", type=int, default=4096)
    p.add_argument("--pg19-steps", type=int, default=64)
    p.add_argument("--pg19-n", type=int, default=4)
    p.add_argument("--streaming-prefill-evict", type=int, default=1,
                   help="1: StreamingLLM evicts per prompt chunk (the publication's)")
    a = p.parse_args()
    a.budgets = [float(x) for x in a.budgets.split(",")]
    a.methods = [m for m in a.methods.split(",") if m]
    for m in a.methods:
        if m not in METHODS:
            p.error("unknown method %r (%s)" % (m, ", ".join(METHODS)))
    files = {"sweep_budgets.yaml": ruler_yaml(a), "sweep_budgets_pg19.yaml": pg19_yaml(a)}
    bad = 0
    for name, text in files.items():
        path = os.path.join(a.out_dir, name)
        if a.check:
            try:
                cur = open(path).read()
            except OSError:
                cur = None
            if cur != text:
                print("%s differs from what %s writes" % (path, os.path.basename(__file__)))
                bad = 1
        else:
            with open(path, "w") as f:
                f.write(text)
    return bad


if __name__ == "__main__":
    sys.exit(main())
