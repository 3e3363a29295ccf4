"""Where sampling time goes: raw gradient vs NUTS per gradient, ESS per gradient, repeat runs.

Per model, for bhmjax (``bj.sample`` / ``bj.Model.fit``, with the exact data reduction
where it applies) and for NumPyro's ``MCMC`` on the row-level model, in one run:

* raw gradient ms: one jitted ``value_and_grad`` of the potential (the floor);
* NUTS ms per gradient: sampling seconds / sampling gradient evaluations, and its
  ratio to the raw gradient (what sits between them);
* ESS per 1,000 gradients (min bulk ESS over parameters, ``benchmarks.common.ess_stats``);
* ESS/s on sampling alone and on total wall time (compile included);
* first-run and repeat-run wall seconds of eight schools in fresh processes (the
  persistent compilation cache at work).

PyMC and nutpie rows are added when they are installed (the ``peers`` extra).

Run: python -m benchmarks.speed [--quick] [--out benchmarks/results/speed_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import initialize_model

import bhmjax as bj

from .common import DATA_DIR, REPO, ess_stats, machine, save_json
from .overhead import eight_schools_ncp

LATENT_SKIP = ("z_", "L_", "Intercept_c")


def raw_gradient_ms(model, data: dict, repeats: int = 500) -> float:
    """ms of one value_and_grad of the potential: ``repeats`` evaluations in one jitted loop.

    The loop (each step nudges the point by the gradient, so nothing is hoisted)
    keeps Python dispatch out of the figure: it is the floor a sampler can reach.
    """
    info = initialize_model(jax.random.PRNGKey(0), model, dynamic_args=True, model_kwargs=data)
    arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray)}
    static = {k: v for k, v in data.items() if k not in arrays}

    @jax.jit
    def many(z, arrays):
        value_and_grad = jax.value_and_grad(info.potential_fn(**arrays, **static))

        def body(_, carry):
            z, total = carry
            value, grad = value_and_grad(z)
            return jax.tree.map(lambda a, g: a - 1e-9 * g, z, grad), total + value

        return jax.lax.fori_loop(0, repeats, body, (z, 0.0))

    z = info.param_info.z
    jax.block_until_ready(many(z, arrays))
    t0 = time.perf_counter()
    jax.block_until_ready(many(z, arrays))
    return 1000 * (time.perf_counter() - t0) / repeats


def comparable(draws: dict) -> dict:
    return {k: v for k, v in draws.items() if not k.startswith(LATENT_SKIP)}


def row(name: str, who: str, draws: dict, wall: float, sampling_s: float, grads: dict, raw_ms: float) -> dict:
    ess = ess_stats(comparable(draws))["min_ess_bulk"]
    per_grad = 1000 * sampling_s / max(grads["sampling"], 1)
    out = {"model": name, "sampler": who, "raw_gradient_ms": raw_ms, "nuts_ms_per_gradient": per_grad,
           "nuts_over_raw": per_grad / raw_ms, "warmup_gradients": grads["warmup"],
           "sampling_gradients": grads["sampling"], "min_ess_bulk": ess,
           "ess_per_1000_gradients": 1000 * ess / max(grads["sampling"], 1),
           "ess_per_s_sampling": ess / sampling_s, "ess_per_s_total": ess / wall, "wall_s": wall}
    print(f"{name:28s} {who:16s} raw {raw_ms:7.3f} ms  NUTS {per_grad:7.3f} ms/grad (x{out['nuts_over_raw']:.2f})"
          f"  ESS/1k grads {out['ess_per_1000_gradients']:6.1f}  ESS/s {out['ess_per_s_sampling']:8.1f} "
          f"(total {out['ess_per_s_total']:7.1f})  warmup grads {grads['warmup']}", flush=True)
    return out


def run_numpyro(name, model, data, chains, warmup, draws, raw_ms) -> dict:
    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method="sequential", progress_bar=False)
    mcmc.warmup(jax.random.PRNGKey(0), **data, extra_fields=("num_steps",), collect_warmup=True)
    warm_grads = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
    t1 = time.perf_counter()
    mcmc.run(mcmc.post_warmup_state.rng_key, **data, extra_fields=("num_steps",))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    t2 = time.perf_counter()
    grads = {"warmup": warm_grads, "sampling": int(np.sum(mcmc.get_extra_fields()["num_steps"]))}
    return row(name, "numpyro MCMC", samples, t2 - t0, t2 - t1, grads, raw_ms)


def run_bhmjax(name, fit_fn, raw_ms) -> dict:
    t0 = time.perf_counter()
    fit = fit_fn()
    wall = time.perf_counter() - t0
    return row(name, "bhmjax", fit.draws, wall, fit.timings["sampling"], fit.num_grad_evals, raw_ms)


def varying_slopes(num_groups: int, num_rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, num_groups, num_rows)
    x = rng.normal(size=num_rows)
    a, b = rng.normal(0, 1, num_groups), rng.normal(0, 0.5, num_groups)
    y = 1.0 + a[g] + (0.5 + b[g]) * x + rng.normal(0, 1.0, num_rows)
    return pd.DataFrame({"y": y, "x": x, "g": g})


def formula_case(name, frame, chains, warmup, draws) -> list[dict]:
    model = bj.Model("y ~ 1 + x + (1 + x | g)", frame, parameterization="noncentered")
    rows_data = model.model_data()
    reduced = model.reduced_data(rows_data)
    out = []
    settings = dict(chains=chains, warmup=warmup, draws=draws, seed=0, progress=False, chain_method="sequential")
    raw_rows = raw_gradient_ms(model.numpyro_model, rows_data)
    out.append(run_numpyro(name, model.numpyro_model, rows_data, chains, warmup, draws, raw_rows))
    out.append(run_bhmjax(name, lambda: model.fit(reduce=False, **settings), raw_rows))
    if reduced is not None:
        raw_reduced = raw_gradient_ms(model.numpyro_model, reduced)
        out.append(run_bhmjax(name, lambda: model.fit(**settings), raw_reduced))
        out[-1]["sampler"] = "bhmjax reduced"
        out[-1]["pseudo_rows"] = reduced["N"]
    return out


def repeat_runs() -> dict:
    """Wall seconds of two fresh processes fitting eight schools with an empty cache dir."""
    script = ("import sys, json, numpy as np, bhmjax as bj; sys.path.insert(0, '.');"
              "from benchmarks.overhead import eight_schools_ncp as m;"
              f"d = json.load(open({str(DATA_DIR / 'eight_schools.json')!r}));"
              "bj.sample(m, {'y': np.array(d['y'], np.float32), 'sigma': np.array(d['sigma'], np.float32)},"
              " progress=False)")
    times = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "BHMJAX_CACHE_DIR": cache}
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True)
            times.append(time.perf_counter() - t0)
    print(f"eight schools in a new process: first {times[0]:.1f} s, repeat {times[1]:.1f} s", flush=True)
    return {"first_run_s": times[0], "repeat_run_s": times[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller large model and fewer draws")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed_cpu.json"))
    args = parser.parse_args()
    chains = 4
    warmup = draws = 500 if args.quick else 1000
    large = (500, 25_000) if args.quick else (2000, 100_000)
    results = {"machine": machine(), "settings": {"chains": chains, "warmup": warmup, "draws": draws,
                                                   "chain_method": "sequential"}, "rows": []}
    raw = json.loads((DATA_DIR / "eight_schools.json").read_text())
    schools = {"y": np.asarray(raw["y"], np.float32), "sigma": np.asarray(raw["sigma"], np.float32)}
    raw_ms = raw_gradient_ms(eight_schools_ncp, schools)
    results["rows"].append(run_numpyro("eight_schools_ncp", eight_schools_ncp, schools, chains, warmup, draws, raw_ms))
    results["rows"].append(run_bhmjax("eight_schools_ncp", lambda: bj.sample(
        eight_schools_ncp, schools, chains=chains, warmup=warmup, draws=draws, progress=False,
        chain_method="sequential"), raw_ms))
    results["rows"] += formula_case("slopes_G50_N1000", varying_slopes(50, 1000), chains, warmup, draws)
    results["rows"] += formula_case(f"slopes_G{large[0]}_N{large[1]}", varying_slopes(*large), chains, warmup, draws)
    results["repeat_runs"] = repeat_runs()
    from .peers import available

    results["peers"] = available()  # PyMC / nutpie rows need the peers extra (not installed here)
    save_json(results, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
