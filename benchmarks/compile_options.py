"""Compile time against run time per XLA option set: the measurement behind ``bj.set_compile_options``.

    python -m benchmarks.compile_options [--repeats 2]

For eight schools (non-centered, ``bj.sample``), a logistic varying-intercept model
(G=50, N=1,000) and varying slopes G=50, N=1,000 and G=2,000, N=100,000 (``bj.Model.fit``,
the group effects integrated out, and sampled: ``_sampled``), 4 chains x 1,000 + 1,000: each compile mode ("default": XLA's optimizing compile, "fast": LLVM's
optimizations off, "auto": per program, see ``bhmjax._src.engine.compiler_options``) runs
in its own fresh process with the persistent cache off, modes alternating within each
repeat. Per run: XLA seconds (``fit.timings["compiled"]``), warmup + sampling seconds,
how the chunk was compiled and how many numbers its inputs hold
(``fit.timings["compile_options"]``, what "auto" decides on) and the machine's load.

Results go to ``benchmarks/results/compile_options_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "compile_options_cpu.json"
MODELS = ("eight_schools", "logistic_50", "slopes_50", "slopes_50_sampled", "slopes_2000", "slopes_2000_sampled")
MODES = ("default", "fast", "auto")


def one(model: str, mode: str) -> dict:
    import bhmjax as bj

    bj.set_compile_options(mode)
    t0 = time.perf_counter()
    if model == "eight_schools":
        from benchmarks.first_run import _eight_schools
        from benchmarks.overhead import eight_schools_ncp

        fit = bj.sample(eight_schools_ncp, _eight_schools(), progress=False)
    elif model == "logistic_50":
        from benchmarks.first_run import _frame

        formula, frame, family = _frame("logistic")
        fit = bj.Model(formula, frame, family=family).fit(progress=False)
    else:
        from benchmarks.speed import FORMULA, varying_slopes

        frame = varying_slopes(50, 1000) if model.startswith("slopes_50") else varying_slopes(2000, 100_000)
        fit = bj.Model(FORMULA, frame).fit(progress=False, marginalize=not model.endswith("_sampled"))
    t = fit.timings
    return {"model": model, "mode": mode, "wall_s": time.perf_counter() - t0, "xla_s": sum(t["compiled"].values()),
            "compiled": t["compiled"], "run_s": t["warmup"] + t["sampling"], "grads": fit.num_grad_evals,
            "chunk": t["compile_options"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return
    from benchmarks.common import machine, run_fresh, save_json

    rows = []
    env = {**os.environ, "BHMJAX_COMPILATION_CACHE": "0", "PYTHONPATH": str(REPO)}
    for rep in range(args.repeats):
        for model in args.models:
            for mode in args.modes:
                load = os.getloadavg()[0]
                row = run_fresh("benchmarks.compile_options", [model, mode], env)
                if "error" in row:
                    print(model, mode, "failed:", row["error"][-800:], flush=True)
                    continue
                row.update(repeat=rep, load_before=load)
                rows.append(row)
                print(f"{model:20s} {mode:8s} wall {row['wall_s']:6.1f} s  xla {row['xla_s']:6.1f} s  "
                      f"run {row['run_s']:6.1f} s  chunk {row['chunk']}  load {load:.1f}", flush=True)
    means = {}
    for model in args.models:
        for mode in args.modes:
            mine = [r for r in rows if r["model"] == model and r["mode"] == mode]
            if mine:
                means[f"{model}/{mode}"] = {k: sum(r[k] for r in mine) / len(mine) for k in ("wall_s", "xla_s", "run_s")}
    save_json({"machine": machine(), "settings": "4 chains x 1,000 + 1,000, fresh process, cache off",
               "rows": rows, "means": means}, args.out)
    print(json.dumps(means, indent=1))


if __name__ == "__main__":
    main()
