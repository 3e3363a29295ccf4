"""Gradient cost of a Bernoulli model on rows against counts summed per cell.

``y ~ 1 + c + (1 | g)`` (bernoulli; ``c`` categorical with 4 levels, G=500 groups,
N=100,000 rows) has at most 4 x 500 = 2,000 cells of identical covariates and group
levels. ``Model.reduced_data`` sums each cell into one binomial row (the posterior is
the same; see ``bhmjax/_src/reduce.py``). Both potentials (float32, the fitting default)
get one jitted ``value_and_grad``; after a warmup call, ``--calls`` calls are timed
(blocking on each result) ``--repeats`` times, and the median per call is kept.
Prints a line per setting and writes ``benchmarks/results/count_reduction_cpu.json``.

    python benchmarks/count_reduction.py [--rows 100000] [--groups 500] [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def time_gradient(model, data, calls: int, repeats: int) -> dict:
    import jax
    from numpyro.infer.util import initialize_model

    info, potential, _, _ = initialize_model(jax.random.PRNGKey(0), model, model_kwargs=data)
    step = jax.jit(jax.value_and_grad(potential))
    z = info.z
    jax.block_until_ready(step(z))
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            jax.block_until_ready(step(z))
        per_call.append((time.perf_counter() - t0) / calls)
    per_call.sort()
    return {"rows": int(data["N"]), "ms_per_gradient": 1e3 * per_call[len(per_call) // 2],
            "ms_per_gradient_min": 1e3 * per_call[0]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "count_reduction_cpu.json")
    args = parser.parse_args(argv)

    import numpy as np
    import pandas as pd

    import bhmjax as bj
    from benchmarks.common import machine

    rng = np.random.default_rng(0)
    g = rng.integers(0, args.groups, args.rows)
    c = rng.choice(["a", "b", "c", "d"], args.rows)
    eta = -0.3 + (c == "b") * 0.5 - (c == "d") * 0.4 + rng.normal(0, 0.7, args.groups)[g]
    y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    model = bj.Model("y ~ 1 + c + (1 | g)", pd.DataFrame({"y": y, "c": c, "g": g}), family="bernoulli")
    rows = model.model_data()
    t0 = time.perf_counter()
    reduced = model.reduced_data(rows)
    aggregate_s = time.perf_counter() - t0
    out = {"model": "y ~ 1 + c + (1 | g), bernoulli, c with 4 levels", "groups": args.groups,
           "calls": args.calls, "repeats": args.repeats, "dtype": "float32", "aggregate_s": aggregate_s,
           "rows": time_gradient(model.numpyro_model, rows, args.calls, args.repeats),
           "reduced": time_gradient(model.numpyro_model, reduced, args.calls, args.repeats),
           "machine": machine()}
    out["speedup"] = out["rows"]["ms_per_gradient"] / out["reduced"]["ms_per_gradient"]
    for key in ("rows", "reduced"):
        r = out[key]
        print(f"{key:>8}: {r['rows']:>7} rows  {r['ms_per_gradient']:.4f} ms/gradient "
              f"(min {r['ms_per_gradient_min']:.4f})")
    print(f"speedup {out['speedup']:.1f}x; aggregating the rows took {aggregate_s:.3f} s once")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
