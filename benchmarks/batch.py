"""Batch-fitting benchmarks (issue #7), on this machine's CPU.

``python -m benchmarks.batch many``  1,000 small hierarchical datasets: bj.fit_many against a
                                     Python loop of NumPyro MCMC runs (timed on a subset).
``python -m benchmarks.batch big [gaussian|bernoulli]``  issue #17: y ~ 1 + x + (1 + x | store),
                                     100,000 stores, 1,000,000 rows, 4 chains x 1,000 + 1,000:
                                     R-hat, ESS, divergences, wall time, peak memory; nutpie at a
                                     reduced size where installed (gaussian). After the sizes,
                                     --target-accept 0.95 / --parameterization centered vary it.
``python -m benchmarks.batch gradient [groups]``  one chain's gradient of the bernoulli stores,
                                     laplace and non-centered, cells as reduced vs group-major.
``python -m benchmarks.batch cache`` the same small fit in two fresh processes: the second
                                     one finds the XLA executables in the persistent cache.

Results are merged into benchmarks/results/batch_cpu.json.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "batch_cpu.json"


def _save(key: str, value: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = value
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps({key: value}, indent=2))


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ---------------------------------------------------------------- many small datasets


def simulate(num: int, seed: int = 0, groups=(8, 20), rows=(50, 500)) -> list[dict]:
    """Varying-intercept datasets: y = a + b x + r[g] + noise, sizes drawn at random."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        g_n, n = int(rng.integers(*groups, endpoint=True)), int(rng.integers(*rows, endpoint=True))
        g = np.concatenate([np.arange(g_n), rng.integers(0, g_n, n - g_n)])
        x = rng.normal(size=n)
        r = rng.normal(0, 0.5, g_n)
        out.append({"y": 1.0 + 0.5 * x + r[g] + rng.normal(0, 1.0, n), "x": x, "g": g})
    return out


def numpyro_model(y, x, g, group_ids):
    import numpyro
    import numpyro.distributions as dist

    a = numpyro.sample("a", dist.Normal(0, 5))
    b = numpyro.sample("b", dist.Normal(0, 5))
    sd = numpyro.sample("sd", dist.HalfNormal(2))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2))
    z = numpyro.sample("z", dist.Normal(0, 1).expand(group_ids.shape).to_event(1))  # static under jit
    numpyro.sample("y", dist.Normal(a + b * x + sd * z[g], sigma), obs=y)


def loop_numpyro(datasets, chains, warmup, draws) -> float:
    """Seconds for a Python loop of NumPyro MCMC runs (one MCMC object, jit reused per shape)."""
    import jax
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(numpyro_model), num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method="sequential", progress_bar=False, jit_model_args=True)
    t = time.perf_counter()
    for i, d in enumerate(datasets):
        mcmc.run(jax.random.PRNGKey(i), d["y"].astype(np.float32), d["x"].astype(np.float32), d["g"],
                 np.arange(int(d["g"].max()) + 1))
        jax.block_until_ready(mcmc.get_samples())
    return time.perf_counter() - t


def bench_many(num=300, loop_subset=10, chains=4, warmup=200, draws=200) -> None:
    import bhmjax as bj
    from bhmjax._src import sampling

    datasets = simulate(num)
    before = sampling.trace_counts()["collect"]
    t = time.perf_counter()
    fits = bj.fit_many("y ~ 1 + x + (1 | g)", datasets, chains=chains, warmup=warmup, draws=draws, seed=0,
                       progress=True)
    batch_s = time.perf_counter() - t
    compiles = sampling.trace_counts()["collect"] - before
    table = fits.summary()
    per_batch = num / batch_s
    result = {
        "datasets": num, "chains": chains, "warmup": warmup, "draws": draws,
        "groups_range": [8, 20], "rows_range": [50, 500],
        "fit_many_seconds": round(batch_s, 2), "fit_many_datasets_per_s": round(per_batch, 3),
        "fit_many_timings": {k: round(v, 2) if isinstance(v, float) else v for k, v in fits.timings.items()},
        "compile_share_of_wall": round(fits.timings["compile"] / batch_s, 3),
        "padded_work_share": fits.settings["padded_work_share"],
        "buckets": len(fits.buckets), "compilations": compiles, "batch_sizes": fits.batch_sizes,
        "failed": len(fits.failed()), "max_r_hat": float(np.nanmax(table["r_hat"])),
        "cpu": os.cpu_count(), "peak_rss_gib": round(_peak_rss_gib(), 2)}
    _save("many_small", result)
    loop_s = loop_numpyro(datasets[:loop_subset], chains, warmup, draws)
    per_loop = loop_subset / loop_s
    _save("many_small", {**result,
        "numpyro_loop_subset": loop_subset, "numpyro_loop_seconds": round(loop_s, 2),
        "numpyro_loop_datasets_per_s": round(per_loop, 3),
        "speedup": round(per_batch / per_loop, 2),
        "note": "NumPyro loop timed on the first datasets and extrapolated per dataset; "
                "it recompiles for every new data shape (jit_model_args=True reuses same shapes). "
                "Run with an empty persistent compilation cache (BHMJAX_CACHE_DIR) on a shared 2-core CPU.",
        "load_after": [round(x, 2) for x in os.getloadavg()],
    })


# ---------------------------------------------------------------- very many groups


BIG_FORMULA = "y ~ 1 + x + (1 + x | store)"
BIG_HYPER = ("Intercept", "b", "sd_store", "cor_store", "sigma")


def big_data(family: str = "gaussian", groups: int = 100_000, rows: int = 1_000_000):
    """Issue #17's stores: every store has a row, the rest spread at random (about 10 rows a
    store, 1 to ~30), effects with sds 0.5 and 0.3. Gaussian: a continuous x. Bernoulli: x a
    0/1 treatment, so a store's rows sum into at most two binomial cells (count aggregation)."""
    import pandas as pd

    rng = np.random.default_rng(1)
    store = np.concatenate([np.arange(groups), rng.integers(0, groups, rows - groups)])
    if family == "gaussian":
        x = rng.normal(size=rows)
        r = rng.normal(0, [0.5, 0.3], (groups, 2))
        y = 1.0 + 0.5 * x + r[store, 0] + r[store, 1] * x + rng.normal(0, 1.0, rows)
    elif family == "bernoulli":
        x = rng.integers(0, 2, rows).astype(np.float64)
        r = rng.normal(0, [0.5, 0.3], (groups, 2))
        eta = -0.5 + 0.8 * x + r[store, 0] + r[store, 1] * x
        y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    else:
        raise ValueError(f"big_data: family 'gaussian' or 'bernoulli', got {family!r}")
    return pd.DataFrame({"y": y, "x": x, "store": store})


def bench_big(family: str = "gaussian", groups: int = 100_000, rows: int = 1_000_000, iterations: int = 1000,
              nutpie_groups: int = 5_000, *, target_accept: float | None = None,
              parameterization: str | None = None) -> None:
    """Issue #17's configuration: ``y ~ 1 + x + (1 + x | store)``, 4 chains x 1,000 + 1,000, the library's
    defaults and one documented setting (``drop`` the per-store draws, 3.2 GB at this size; draw them
    afterwards with ``bj.marginal_effects`` where integrated). Records R-hat, ESS, divergences, wall
    time of the whole call and peak memory; then nutpie (when installed: run this under the ``peers``
    environment) on the same model at ``nutpie_groups`` stores (rows in proportion), said in the result.
    ``target_accept`` and ``parameterization`` (bj.Model's) vary the setting; such a run, or one at
    another size, is saved under ``big_groups_<family>_<groups>[_<setting>]`` beside the defaults' result."""
    import bhmjax as bj

    frame = big_data(family, groups, rows)
    rss_data = _peak_rss_gib()
    t0 = time.perf_counter()
    varied = {k: v for k, v in [("parameterization", parameterization)] if v is not None}
    model = bj.Model(BIG_FORMULA, frame, family=family, **varied)
    drop = ["r_store"] if family == "gaussian" else ["r_store", "z_store", "theta_store"]  # whichever it samples
    sampling = {} if target_accept is None else {"target_accept": target_accept}
    fit = model.fit(chains=4, warmup=iterations, draws=iterations, seed=0, progress=False, drop=drop, **sampling)
    wall = time.perf_counter() - t0
    hyper = fit.summary(var_names=[s for s in BIG_HYPER if s in fit.draws])
    ess = float(hyper["ess_bulk"].min())
    result = {
        "model": BIG_FORMULA, "family": family, "groups": groups, "rows": rows, "chains": 4,
        "warmup": iterations, "draws": iterations, "setting": f"drop={drop}", **varied, **sampling,
        "marginalized": fit.settings.get("marginalized"), "reduction": fit.settings.get("reduction"),
        "wall_s": round(wall, 1), "timings": {k: round(v, 2) for k, v in fit.timings.items() if isinstance(v, float)},
        "grad_evals": dict(fit.num_grad_evals), "mean_tree_depth": float(np.mean(fit.stats["tree_depth"])),
        "divergences": int(np.sum(fit.stats["diverging"])), "max_r_hat": float(hyper["r_hat"].max()),
        "min_ess_bulk": ess, "ess_per_s": round(ess / wall, 2),
        "peak_rss_gib": round(_peak_rss_gib(), 2), "rss_after_data_gib": round(rss_data, 2),
        "load": os.getloadavg(), "summary": hyper.round(4).to_dict(orient="index")}
    print(hyper.round(3), flush=True)
    if varied or sampling or groups != 100_000:  # a reduced size or another setting: beside the defaults' result
        _save("_".join([f"big_groups_{family}_{groups}", *(f"{k}={v}" for k, v in {**varied, **sampling}.items())]),
              result)
        return
    _save(f"big_groups_{family}", result)
    if family == "gaussian":
        _save(f"big_groups_{family}", {**result, "nutpie": _big_nutpie(nutpie_groups, rows * nutpie_groups // groups,
                                                                         iterations, ess / wall)})


def _big_nutpie(groups: int, rows: int, iterations: int, ours_ess_per_s: float) -> dict:
    """nutpie on the PyMC twin of the same model (``benchmarks.peers``), at a reduced size."""
    from . import peers
    from .common import ess_stats

    have = peers.available()
    if any(have[k] == "not installed" or have[k].startswith("broken") for k in ("pymc", "nutpie")):
        return {"status": f"nutpie: {have['nutpie']}; pymc: {have['pymc']} (run under .venv-peers)"}
    import bhmjax as bj

    model = bj.Model(BIG_FORMULA, big_data("gaussian", groups, rows))
    settings = dict(chains=4, warmup=iterations, draws=iterations, seed=0)
    res = peers.sample_peer("nutpie", peers.pymc_formula_model(model), settings, list(BIG_HYPER))
    ess = ess_stats(res["draws"])
    per_s = ess["min_ess_bulk"] / res["wall_s"]
    return {"status": "ok", "version": have["nutpie"], "groups": groups, "rows": rows,
            "note": f"reduced size: {groups:,} stores and {rows:,} rows (the full model cannot finish here)",
            "wall_s": round(res["wall_s"], 1), "gradients": res["gradients"],
            "raw_gradient_ms": res["raw_gradient_ms"], "divergences": res["divergences"], **ess,
            "ess_per_s": round(per_s, 3), "bhmjax_full_size_over_nutpie_reduced": round(ours_ess_per_s / per_s, 1)}


def bench_gradient(groups: int = 100_000, calls: int = 20, repeats: int = 5) -> None:
    """One chain's value and gradient of issue #17's bernoulli stores (``big_data``, cells summed),
    laplace and non-centered forms, on the cells as reduced and stored group-major (what
    ``Model.fit`` runs, ``bhmjax._src.layout``); median ms a call. Saved as ``big_groups_gradient_<groups>``."""
    import bhmjax as bj
    from bhmjax._src import layout
    from bhmjax._src.data import split_data
    from bhmjax._src.models import row_keys

    from .count_reduction import time_gradient

    frame = big_data("bernoulli", groups, 10 * groups)
    result = {"model": BIG_FORMULA, "family": "bernoulli", "groups": groups, "rows": 10 * groups,
              "what": "one chain's jitted value_and_grad, float32, median of repeats"}
    for form in ("laplace", "noncentered"):
        model = bj.Model(BIG_FORMULA, frame, family="bernoulli", parameterization=form)
        cells = model.reduced_data()
        grouped = layout.group_major(cells, row_keys(model.spec.structure, cells), 0)  # the one grouping, store
        for name, data in (("cells", cells), ("group_major", grouped)):
            arrays, static = split_data(data)
            fn = model.numpyro_model
            timed = time_gradient(lambda N, **a: fn(**a, **static), {**arrays, "N": data["N"]}, calls, repeats)
            result[f"{form}_{name}_ms"] = round(timed["ms_per_gradient"], 3)
            print(form, name, data["N"], "rows:", result[f"{form}_{name}_ms"], "ms", flush=True)
    _save(f"big_groups_gradient_{groups}", result)


# ---------------------------------------------------------------- persistent compilation cache


_CACHE_SCRIPT = """
import time; t = time.perf_counter()
import numpy as np, bhmjax as bj
from benchmarks.batch import simulate
bj.fit_many("y ~ 1 + x + (1 | g)", simulate(16, seed=3), chains=2, warmup=100, draws=100, seed=0)
print(time.perf_counter() - t)
"""


def bench_cache(cache_dir="/tmp/bhmjax_cache_bench") -> None:
    import shutil

    shutil.rmtree(cache_dir, ignore_errors=True)
    env = dict(os.environ, BHMJAX_CACHE_DIR=cache_dir)
    root = Path(__file__).resolve().parents[1]
    times = []
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT], env=env, cwd=root, capture_output=True,
                             text=True, check=True)
        times.append(float(run.stdout.strip().splitlines()[-1]))
    _save("persistent_cache", {"first_process_s": round(times[0], 2), "second_process_s": round(times[1], 2),
                               "saving_s": round(times[0] - times[1], 2),
                               "what": "fit_many of 16 small datasets (2 chains, 100+100) in a fresh process, "
                                       "empty cache then warm cache"})


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "many"
    if what == "big":  # family, then groups, rows, iterations, nutpie's groups; --target-accept, --parameterization
        args, options = sys.argv[2:], {}
        for name, cast in (("--target-accept", float), ("--parameterization", str)):
            if name in args:
                i = args.index(name)
                options[name[2:].replace("-", "_")] = cast(args[i + 1])
                del args[i:i + 2]
        bench_big(*(args[:1] or ["gaussian"]), *[int(a) for a in args[1:]], **options)
    else:
        sizes = [int(a) for a in sys.argv[2:]]  # many: datasets, loop subset, chains, warmup, draws; gradient: groups
        {"many": bench_many, "cache": bench_cache, "gradient": bench_gradient}[what](*sizes)
