"""Predictions for 1,000,000 new rows: wall time and peak memory per setting.

A correlated varying-slopes model ``y ~ 1 + x + c + (1 + x | g)`` (gaussian, 60 groups)
is fitted once per run (2 chains; the persistent compilation cache makes refits cheap),
then ``fit.predict`` draws predictions for ``--rows`` new rows, 1% of them in 1,000
groups not seen in training (``groups="new"``). Each setting runs in a fresh process;
memory is the process's resident set (Linux ``/proc/self/status``): ``VmRSS`` before each
call and its peak ``VmHWM`` during the call (reset just before it), so
``peak_over_before_mib`` is what one call adds. The result array alone takes
``chains * draws * rows * 4`` bytes; the checked design of the new rows and a chunk's
working memory (bounded by ``max_bytes``) come on top of it. The first call compiles the chunk program, the second reuses it;
``design_s`` is the part spent checking and encoding the new rows (pandas, formulaic).
Prints a table and writes ``benchmarks/results/predict_cpu.json``.

    python benchmarks/predict.py [--rows 1000000] [--draws 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULT = HERE / "results" / "predict_cpu.json"

_ONE = r"""
import json, sys, time
import numpy as np, pandas as pd
import bhmjax as bj

rows, draws, kind, max_bytes = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def status(key):  # MiB from /proc/self/status: VmRSS now, VmHWM the peak since the last reset
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
def reset_peak():  # Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
rng = np.random.default_rng(0)
G, per = 60, 8
g = np.repeat(np.arange(G), per); x = rng.normal(size=g.size); c = rng.choice(list("abc"), g.size)
r = rng.multivariate_normal([0, 0], [[0.25, 0.05], [0.05, 0.09]], G)
y = 1.0 + 0.5 * x + (c == "b") * 0.3 + r[g, 0] + r[g, 1] * x + rng.normal(0, 0.7, g.size)
t0 = time.perf_counter()
fit = bj.Model("y ~ 1 + x + c + (1 + x | g)", {"y": y, "x": x, "c": c, "g": g}).fit(
    chains=2, warmup=200, draws=draws, seed=0, progress=False, chain_method="sequential")
t_fit = time.perf_counter() - t0
new = pd.DataFrame({"x": rng.normal(size=rows), "c": rng.choice(list("abc"), rows),
                    "g": np.where(rng.random(rows) < 0.01, rng.integers(1000, 2000, rows),
                                  rng.integers(0, G, rows))})
from bhmjax.design import new_design
t0 = time.perf_counter(); new_design(fit.spec, new, groups="new"); t_design = time.perf_counter() - t0
times, before, peaks, pred = [], [], [], None
for seed in (1, 2):
    pred = None  # the previous result is freed first: one result array at a time
    before.append(status("VmRSS")); reset_peak()
    t0 = time.perf_counter()
    pred = fit.predict(new, kind=kind, groups="new", seed=seed, max_bytes=max_bytes)
    times.append(time.perf_counter() - t0)
    peaks.append(status("VmHWM"))
t0 = time.perf_counter(); table = pred.summary(); t_summary = time.perf_counter() - t0
print(json.dumps({"rows": rows, "kind": kind, "max_bytes_mib": max_bytes / 2**20,
                  "chains": int(pred.draws.shape[0]), "draws_per_chain": int(pred.draws.shape[1]),
                  "result_mib": pred.draws.nbytes / 2**20, "new_levels": len(pred.new_levels["g"]),
                  "predict_first_s": times[0], "predict_second_s": times[1], "summary_s": t_summary,
                  "design_s": t_design,
                  "rss_before_mib": before, "peak_rss_mib": peaks,
                  "peak_over_before_mib": [p - b for p, b in zip(peaks, before)], "fit_s": t_fit}))
"""

CASES = [("response", 256), ("response", 32), ("mean", 256), ("linear_predictor", 256)]


def run_one(rows: int, draws: int, kind: str, max_mib: int) -> dict:
    env = dict(os.environ, BHMJAX_HOST_DEVICES="1")
    out = subprocess.run([sys.executable, "-c", _ONE, str(rows), str(draws), kind, str(max_mib * 2**20)],
                         cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--draws", type=int, default=50, help="draws per chain (2 chains)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks.common import machine

    results = [run_one(args.rows, args.draws, kind, mib) for kind, mib in CASES]
    print(f"{'kind':<17}{'max MiB':>8}{'first s':>9}{'second s':>9}{'design s':>9}{'summary s':>10}"
          f"{'result MiB':>11}{'RSS before':>11}{'peak added':>11}")
    for r in results:
        print(f"{r['kind']:<17}{r['max_bytes_mib']:>8.0f}{r['predict_first_s']:>9.2f}"
              f"{r['predict_second_s']:>9.2f}{r['design_s']:>9.2f}{r['summary_s']:>10.2f}{r['result_mib']:>11.0f}"
              f"{r['rss_before_mib'][1]:>11.0f}{r['peak_over_before_mib'][1]:>11.0f}")
    report = {"benchmark": "predict", "formula": "y ~ 1 + x + c + (1 + x | g)",
              "settings": {"rows": args.rows, "chains": 2, "draws_per_chain": args.draws,
                           "groups": 'new (1% of rows in 1,000 unseen levels)',
                           "process": "fresh per case",
                           "memory": "VmRSS before each call, VmHWM peak during it (reset before)"},
              "machine": machine(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
