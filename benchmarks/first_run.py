"""The first fit of a new model: a fresh process, an empty compilation cache, time to draws.

    python -m benchmarks.first_run [--repeats 2] [--tools bhmjax numpyro-parallel ...]

Per model (eight schools non-centered, varying slopes G=50 N=1,000, a logistic varying-
intercept model G=50 N=1,000) and per tool, each run is its own Python process with an
empty persistent cache folder; it times the sampling call alone (imports and data
building excluded: ``first_s``), then the same call again in the same process
(``repeat_s``), 4 chains x 1,000 + 1,000. JAX tools also report their backend
compilations and XLA seconds (``jax.monitoring`` events).

Tools: ``bhmjax`` (defaults: ``bj.sample`` / ``bj.Model.fit``), ``numpyro-vectorized``
(``MCMC(chain_method="vectorized")``), ``numpyro-parallel`` (``chain_method="parallel"``
over 4 host devices, NumPyro's fastest CPU setup here), and ``pymc`` / ``nutpie`` when
the peers' virtual environment (``.venv-peers``) is present. NumPyro and the peers run
the model as their users write it (the NumPyro function bhmjax builds from the formula
is a plain NumPyro model; PyMC's from ``benchmarks.peers``).

Results go to ``benchmarks/results/first_run_cpu.json`` with the machine's load before
and after: absolute seconds on a shared 2-core machine are noisy, ratios within one run
less so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "first_run_cpu.json"
MODELS = ("eight_schools", "slopes", "logistic")
TOOLS = ("bhmjax", "numpyro-vectorized", "numpyro-parallel", "pymc", "nutpie")
SETTINGS = dict(chains=4, warmup=1000, draws=1000)


def _frame(kind: str):
    import numpy as np
    import pandas as pd

    from benchmarks.speed import varying_slopes

    if kind == "slopes":
        return "y ~ 1 + x + (1 + x | g)", varying_slopes(50, 1000), "gaussian"
    rng = np.random.default_rng(2)
    g = rng.integers(0, 50, 1000)
    x = rng.normal(size=1000)
    eta = -0.3 + 0.8 * x + rng.normal(0, 0.7, 50)[g]
    return "y ~ 1 + x + (1 | g)", pd.DataFrame({"y": rng.binomial(1, 1 / (1 + np.exp(-eta))), "x": x, "g": g}), \
        "bernoulli"


def _eight_schools():
    import numpy as np

    d = json.loads((REPO / "tests" / "data" / "eight_schools.json").read_text())
    return {"y": np.asarray(d["y"], np.float32), "sigma": np.asarray(d["sigma"], np.float32)}


def _jax_counter():
    from jax import monitoring

    seen = {"compiles": 0, "xla_s": 0.0}

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            seen["compiles"] += 1
            seen["xla_s"] += duration
    monitoring.register_event_duration_secs_listener(listen)
    return seen


def one(model: str, tool: str) -> dict:
    """Run in a child process: time the sampling call twice (first, then repeat)."""
    if tool.startswith("numpyro-parallel"):
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    if tool in ("pymc", "nutpie"):
        return _one_peer(model, tool)
    seen = _jax_counter()
    import jax
    import numpy as np

    if tool == "bhmjax":
        import bhmjax as bj
        from benchmarks.overhead import eight_schools_ncp

        if model == "eight_schools":
            data = _eight_schools()
            call = lambda seed: bj.sample(eight_schools_ncp, data, seed=seed, progress=False, **SETTINGS)  # noqa: E731
        else:
            formula, frame, family = _frame(model)
            m = bj.Model(formula, frame, family=family)
            call = lambda seed: m.fit(seed=seed, progress=False, **SETTINGS)  # noqa: E731
        draws = lambda fit: fit.num_grad_evals  # noqa: E731
    else:
        from numpyro.infer import MCMC, NUTS

        import bhmjax as bj
        from benchmarks.overhead import eight_schools_ncp

        if model == "eight_schools":
            fn, data = eight_schools_ncp, _eight_schools()
        else:
            formula, frame, family = _frame(model)
            m = bj.Model(formula, frame, family=family, parameterization="noncentered")
            fn, data = m.numpyro_model, m.model_data()
        method = tool.split("-")[1]
        mcmc = MCMC(NUTS(fn), num_warmup=SETTINGS["warmup"], num_samples=SETTINGS["draws"],
                    num_chains=SETTINGS["chains"], chain_method=method, progress_bar=False)

        def call(seed):
            mcmc.run(jax.random.PRNGKey(seed), **data)
            return jax.block_until_ready(mcmc.get_samples())
        draws = lambda _: None  # noqa: E731
    out = {}
    for attempt in ("first", "repeat"):
        before = dict(seen)
        t0 = time.perf_counter()
        fit = call(0 if attempt == "first" else 1)
        out[f"{attempt}_s"] = time.perf_counter() - t0
        out[f"{attempt}_compiles"] = seen["compiles"] - before["compiles"]
        out[f"{attempt}_xla_s"] = seen["xla_s"] - before["xla_s"]
        if attempt == "first" and tool == "bhmjax":
            out["timings"] = {k: v for k, v in fit.timings.items() if k != "fetched"}
    out["grads"] = draws(fit)
    out["versions"] = {"jax": jax.__version__, "numpyro": __import__("numpyro").__version__,
                       "numpy": np.__version__}
    return out


def _one_peer(model: str, tool: str) -> dict:
    import numpy as np

    from benchmarks import peers

    if model == "eight_schools":
        d = _eight_schools()
        pm_model = peers.pymc_model("eight_schools_ncp", {k: np.asarray(v, np.float64) for k, v in d.items()})
    elif model == "logistic":
        pm_model = _pymc_logistic()
    else:
        import bhmjax as bj

        formula, frame, family = _frame(model)
        pm_model = peers.pymc_formula_model(bj.Model(formula, frame, family=family, parameterization="noncentered"))
    out = {}
    for attempt in ("first", "repeat"):
        t0 = time.perf_counter()
        if tool == "pymc":
            import pymc as pm

            with pm_model:
                pm.sample(draws=SETTINGS["draws"], tune=SETTINGS["warmup"], chains=SETTINGS["chains"], cores=1,
                          progressbar=False, random_seed=0, compute_convergence_checks=False)
        else:
            import nutpie

            nutpie.sample(nutpie.compile_pymc_model(pm_model), draws=SETTINGS["draws"], tune=SETTINGS["warmup"],
                          chains=SETTINGS["chains"], progress_bar=False, seed=0)
        out[f"{attempt}_s"] = time.perf_counter() - t0
    return out


def _pymc_logistic():
    """The logistic model as a PyMC user writes it: non-centered intercepts, HalfNormal scale."""
    import pymc as pm

    _, frame, _ = _frame("logistic")
    g, x, y = frame["g"].to_numpy(), frame["x"].to_numpy(float), frame["y"].to_numpy()
    with pm.Model() as model:
        a = pm.Normal("Intercept", 0.0, 2.5)
        b = pm.Normal("b", 0.0, 2.5)
        sd = pm.HalfNormal("sd_g", 2.5)
        z = pm.Normal("z_g", 0.0, 1.0, shape=int(g.max()) + 1)
        pm.Bernoulli("y", logit_p=a + b * x + sd * z[g], observed=y)
    return model


def _python(tool: str) -> str | None:
    if tool in ("pymc", "nutpie"):
        peers = REPO / ".venv-peers" / "bin" / "python"
        return str(peers) if peers.exists() else None
    return sys.executable


def run_all(models, tools, repeats: int) -> list[dict]:
    from benchmarks.common import run_fresh

    rows = []
    for rep in range(repeats):
        for model in models:
            for tool in tools:
                python = _python(tool)
                if python is None:
                    rows.append({"model": model, "tool": tool, "skipped": "not installed (.venv-peers)"})
                    continue
                with tempfile.TemporaryDirectory() as cache:
                    env = {**os.environ, "BHMJAX_CACHE_DIR": cache, "PYTENSOR_FLAGS": f"compiledir={cache}/pt",
                           "PYTHONPATH": str(REPO)}
                    load = os.getloadavg()[0]
                    row = {"model": model, "tool": tool, "repeat": rep, "load_before": round(load, 2),
                           **run_fresh("benchmarks.first_run", [model, tool], env, python)}
                if "error" in row:
                    rows.append(row)
                    print(model, tool, "failed", row["error"][-500:], flush=True)
                    continue
                rows.append(row)
                print(f"{model:14s} {tool:20s} first {row['first_s']:6.1f} s  repeat {row['repeat_s']:6.1f} s  "
                      f"compiles {row.get('first_compiles', '-')}  xla {row.get('first_xla_s', 0):.1f} s  "
                      f"load {load:.1f}", flush=True)
    return rows


def ratios_of(rows: list[dict]) -> dict:
    """Per model: bhmjax's mean first-fit seconds over the best NumPyro setup's."""
    models = dict.fromkeys(r["model"] for r in rows)
    ratios = {}
    for model in models:
        mine = [r for r in rows if r["model"] == model and r["tool"] == "bhmjax" and "first_s" in r]
        numpyro = [r for r in rows if r["model"] == model and r["tool"].startswith("numpyro") and "first_s" in r]
        if mine and numpyro:
            best = min(sum(r["first_s"] for r in numpyro if r["tool"] == t) / max(1, sum(
                1 for r in numpyro if r["tool"] == t)) for t in {r["tool"] for r in numpyro})
            ours = sum(r["first_s"] for r in mine) / len(mine)
            ratios[model] = {"bhmjax_first_s": ours, "best_numpyro_first_s": best, "ratio": ours / best}
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "TOOL"), help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return
    from benchmarks.common import machine, save_json

    rows = run_all(args.models, args.tools, args.repeats)
    redone = {(r["model"], r["tool"]) for r in rows}
    if args.out.is_file():  # rows of other models and tools are kept from the earlier run
        rows = [r for r in json.loads(args.out.read_text())["rows"] if (r["model"], r["tool"]) not in redone] + rows
    result = {"machine": machine(), "settings": SETTINGS, "rows": rows, "first_run_ratio_vs_best_numpyro": ratios_of(rows)}
    save_json(result, args.out)
    print(json.dumps(result["first_run_ratio_vs_best_numpyro"], indent=1))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
