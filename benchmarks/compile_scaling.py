"""Compile time of a varying-intercepts formula model against the number of groups.

``y ~ 1 + (1 | g)`` with G = 10 ... 100,000 groups and a few rows per group: the
group effects are one site of shape (G, 1) gathered by integer codes, so the
compiled program (and the time XLA takes to build it) should not grow with G.
Each G runs in a fresh process with XLA's persistent compilation cache off, so
every compile is a real one; each G is run ``--repeats`` times and the fastest
compile is reported (the others are kept), since other work on a shared machine
only ever adds time. Prints a table and writes
``benchmarks/results/compile_scaling.json``.

    python benchmarks/compile_scaling.py [--groups 10 100 ...] [--rows-per-group 3]
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
RESULT = HERE / "results" / "compile_scaling.json"

_ONE = r"""
import json, sys, time
import numpy as np
import bhmjax as bj

G, per, warmup, draws = (int(a) for a in sys.argv[1:5])
rng = np.random.default_rng(0)
g = np.repeat(np.arange(G), per)
y = 1.0 + rng.normal(0, 0.5, G)[g] + rng.normal(0, 1.0, g.size)
t0 = time.perf_counter()
model = bj.Model("y ~ 1 + (1 | g)", {"y": y, "g": g})
t_model = time.perf_counter() - t0
fit = model.fit(chains=1, warmup=warmup, draws=draws, seed=0, progress=False, chain_method="sequential")
print(json.dumps({"groups": G, "rows": int(g.size), "model_build_s": t_model,
                  "compile_s": fit.timings["compile"], "warmup_s": fit.timings["warmup"],
                  "sampling_s": fit.timings["sampling"]}))
"""


def run_one(groups: int, per: int, warmup: int, draws: int) -> dict:
    env = dict(os.environ, BHMJAX_COMPILATION_CACHE="0", BHMJAX_HOST_DEVICES="1")
    out = subprocess.run([sys.executable, "-c", _ONE, str(groups), str(per), str(warmup), str(draws)],
                         cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[10, 100, 1_000, 10_000, 100_000])
    parser.add_argument("--rows-per-group", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from benchmarks.common import machine, save_json

    rows = []
    print(f"{'groups':>8} {'rows':>8} {'compile s':>10} {'warmup s':>9} {'model s':>8}")
    for groups in args.groups:
        runs = [run_one(groups, args.rows_per_group, args.warmup, args.draws) for _ in range(args.repeats)]
        r = dict(min(runs, key=lambda run: run["compile_s"]), compile_s_all=[run["compile_s"] for run in runs])
        rows.append(r)
        print(f"{r['groups']:>8} {r['rows']:>8} {r['compile_s']:>10.2f} {r['warmup_s']:>9.2f} "
              f"{r['model_build_s']:>8.2f}", flush=True)
    ratio = rows[-1]["compile_s"] / rows[0]["compile_s"]
    print(f"compile time at G={rows[-1]['groups']} / at G={rows[0]['groups']}: {ratio:.2f}x")
    result = {"benchmark": "compile_scaling", "formula": "y ~ 1 + (1 | g)",
              "settings": {"rows_per_group": args.rows_per_group, "warmup": args.warmup,
                           "draws": args.draws, "chains": 1, "chain_method": "sequential",
                           "compilation_cache": "off", "process": "fresh per run",
                           "repeats": args.repeats, "reported": "fastest compile of the repeats"},
              "machine": machine(), "results": rows, "compile_ratio_last_first": ratio}
    save_json(result, args.out)
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    main()
