#!/usr/bin/env python3
"""Prints the budget sweep as one table (markdown): for every branch of the newest
sweep-budgets-ruler and sweep-budgets-pg19 runs of a results store, per method and
budget, the means over samples of: RULER score; pages held (mean, peak) and tokens
attended per layer and decode step, KV payload peak, decode time per token, prompt
tokens taken from the shared prefill (all from the RULER run); KL(full || method),
top-1 agreement and perplexity (the method's, and full attention's in the same row) from
the PG19 run. A branch a run lacks shows "-".

  python3 pipelines/tools/sweep_table.py RESULTS.db [--csv]
"""
import sqlite3
import sys


def newest(db, name):
    r = db.execute("SELECT uuid FROM runs WHERE pipeline = ? ORDER BY start_time DESC LIMIT 1",
                   (name,)).fetchone()
    return r[0] if r else None


def means(db, run):
    if not run:
        return {}
    q = ("SELECT key, avg(value) FROM metrics WHERE run = ? AND sample IS NOT NULL "
         "GROUP BY key")
    return dict(db.execute(q, (run,)).fetchall())


def branches(ruler, pg):
    names = set()
    for m in (ruler, pg):
        for k in m:
            if k.startswith("gen_") and "/gen/n_prompt" in k:
                names.add(k[4:k.index("/")])
    def order(n):
        if n == "full":
            return ("", 0)
        m, _, b = n.rpartition("_")
        return (m, int(b) if b.isdigit() else 0)
    return sorted(names, key=order)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
    ruler = means(db, newest(db, "sweep-budgets-ruler"))
    pg = means(db, newest(db, "sweep-budgets-pg19"))
    cols = [("method", None), ("budget", None),
            ("ruler", lambda n: ruler.get("%s/score" % n)),
            ("pages_mean", lambda n: ruler.get("gen_%s/mem/pages_mean" % n)),
            ("pages_peak", lambda n: ruler.get("gen_%s/mem/pages_peak" % n)),
            ("attended", lambda n: ruler.get("gen_%s/mem/attended_mean" % n)),
            ("kv_peak_MB", lambda n: (lambda v: v / 2**20 if v is not None else None)(
                ruler.get("gen_%s/mem/kv_payload_peak_bytes" % n))),
            ("s/tok", lambda n: ruler.get("gen_%s/gen/decode_s_per_token" % n)),
            ("shared_prefill", lambda n: ruler.get("gen_%s/gen/prefill_shared_tokens" % n)),
            ("pg19_kl", lambda n: pg.get("%s_fid/kl" % n)),
            ("pg19_top1", lambda n: pg.get("%s_fid/top1" % n)),
            ("pg19_ppl", lambda n: pg.get("%s_ppl/ppl" % n)),
            ("pg19_ppl_full", lambda n: pg.get("%s_ppl/ppl_full" % n))]
    rows = []
    for n in branches(ruler, pg):
        m, _, b = n.rpartition("_")
        row = [n, "100%"] if n == "full" else [m, "%d%%" % int(b)]
        for _, f in cols[2:]:
            v = f(n)
            row.append("-" if v is None else ("%.4g" % v))
        rows.append(row)
    if "--csv" in sys.argv:
        print(",".join(c for c, _ in cols))
        for r in rows:
            print(",".join(r))
        return
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
