"""Run benchmark cells: simulate or load data, fit, measure, survive failures, save JSON.

Every fit goes through ``bj.Model`` formulas (so the parameterization switch is the
library's) except the hand-written NumPyro models: eight schools (known sigma per
school) and ``slopes_handwritten`` (varying intercepts and slopes, unequal group sizes,
``benchmarks/handwritten.py``), each as a centered function, a non-centered function
and "auto" (the centered function with ``bj.sample(..., parameterization="auto")``).
Every ESS is :func:`benchmarks.common.ess_stats`, on the sites both parameterizations share.
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import time
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist

import bhmjax as bj

from . import handwritten, peers, suites
from .common import DATA_DIR, ess_stats, machine, save_json

LOGISTIC_SD = math.pi / math.sqrt(3.0)
FORMULAS = {"intercepts": ("y ~ 1 + (1 | g)", "gaussian"),
            "slopes": ("y ~ 1 + x + (1 + x | g)", "gaussian"),
            "bernoulli": ("y ~ 1 + (1 | g)", "bernoulli"),
            "radon": ("log_radon ~ 1 + floor + (1 + floor | county)", "gaussian")}
# Sampler auxiliaries that only one parameterization has: never measured.
AUX_PREFIXES = ("z_", "L_", "theta_z")
AUX_SUFFIXES = ("_z", "_decentered")
METRICS = ("compile_s", "warmup_s", "sampling_s", "wall_s", "grad_evals_warmup", "grad_evals_sampling",
           "min_ess_bulk", "median_ess_bulk", "min_ess_tail", "median_ess_tail", "ess_per_s_sampling",
           "ess_per_s_total", "ess_per_1k_grads", "divergences", "max_rhat", "mean_tree_depth",
           "tree_depth_spread", "ms_per_grad", "s_per_eff_draw", "peak_rss_mb", "device_peak_mb")


# ---------------------------------------------------------------- data

def regime_data(model: str, groups: int, rows: int, noise_ratio: float, seed: int = 0) -> dict:
    """Simulated data: G groups of ``rows`` rows, noise sd / group sd = ``noise_ratio``.

    Gaussian models use group sd 1 and noise sd ``noise_ratio``; the Bernoulli-logit
    model's noise is the latent logistic noise, so its group sd is
    ``(pi / sqrt(3)) / noise_ratio``.
    """
    rng = np.random.default_rng([seed, groups, rows, int(round(noise_ratio * 1000))])
    g = np.repeat(np.arange(groups, dtype=np.int32), rows)
    n = g.size
    if model == "bernoulli":
        eta = rng.normal(0.0, LOGISTIC_SD / noise_ratio, groups)[g]
        return {"y": (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int32), "g": g}
    sigma = noise_ratio
    if model == "intercepts":
        return {"y": 1.0 + rng.normal(0.0, 1.0, groups)[g] + rng.normal(0.0, sigma, n), "g": g}
    if model == "slopes":
        x = rng.normal(0.0, 1.0, n)
        r = rng.normal(0.0, 1.0, (groups, 2))
        return {"y": 1.0 + 0.5 * x + r[g, 0] + r[g, 1] * x + rng.normal(0.0, sigma, n), "x": x, "g": g}
    raise ValueError(f"unknown regime model {model!r}; expected one of 'intercepts', 'slopes', 'bernoulli'")


def _posteriordb(name: str) -> dict:
    path = DATA_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the real-data benchmarks need the posteriordb folder "
                                "at ../shared/data/posteriordb beside the repository.")
    return json.loads(path.read_text())


def radon_data(name: str = "radon_mn") -> dict:
    raw = _posteriordb(name)
    return {"log_radon": np.asarray(raw["log_radon"], float), "floor": np.asarray(raw["floor_measure"], float),
            "county": np.asarray(raw["county_idx"], np.int32) - 1}  # 1-based in the file


def eight_schools_data() -> dict:
    raw = _posteriordb("eight_schools")
    return {"y": np.asarray(raw["y"], np.float32), "sigma": np.asarray(raw["sigma"], np.float32)}


# ---------------------------------------------------------------- eight schools, hand-written

def eight_schools_cp(y, sigma):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", y.shape[0]):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools_ncp(y, sigma):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", y.shape[0]):
        z = numpyro.sample("theta_z", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * z)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


# ---------------------------------------------------------------- the library's "auto"

@lru_cache(maxsize=None)
def auto_parameterization() -> dict:
    """Whether ``bj.Model`` accepts ``parameterization="auto"`` (and why not)."""
    try:
        bj.Model("y ~ 1 + (1 | g)", {"y": [0.0, 1.0, 2.0, 3.0], "g": [0, 0, 1, 1]}, parameterization="auto")
    except (TypeError, ValueError) as err:
        return {"available": False, "reason": f"bj.Model rejects parameterization='auto': {err}"}
    return {"available": True, "reason": ""}


class Unavailable(Exception):
    """A cell that cannot run here (no automatic form, a peer not installed): not an error."""


# ---------------------------------------------------------------- one fit

def fit_once(cell: dict, seed: int):
    """Build the cell's model and sample it once; returns the Fit (timed by the caller)."""
    kwargs = dict(chains=cell["chains"], warmup=cell["warmup"], draws=cell["draws"], seed=seed,
                  chain_method=cell["chain_method"], progress=False, x64=bool(cell.get("x64")))
    param, model = cell["parameterization"], cell["model"]
    if cell.get("sampler", "nuts") != "nuts":  # the "samplers" block: many lockstep chains (ChEES-HMC)
        kwargs.update(sampler=cell["sampler"], chains=cell.get("sampler_chains", kwargs["chains"]))
    if param == "auto" and not auto_parameterization()["available"]:
        raise Unavailable(auto_parameterization()["reason"])
    if model in ("eight_schools", "slopes_handwritten"):  # hand-written: a function per form, auto on the centered one
        if param == "marginalized":
            raise Unavailable("a hand-written NumPyro model: integrate its effects out with bj.MarginalNormalGroups")
        if model == "eight_schools":
            cp, ncp, data = eight_schools_cp, eight_schools_ncp, eight_schools_data()
        else:
            cp, ncp = handwritten.slopes_cp, handwritten.slopes_ncp
            data = handwritten.slopes_data(cell["G"], cell["G"] * cell["rows"], cell.get("data_seed", 0))
        if kwargs["x64"]:
            data = {k: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
                    for k, v in data.items()}
        if param == "auto":
            return bj.sample(cp, data, parameterization="auto", **kwargs)
        return bj.sample(cp if param == "centered" else ncp, data, **kwargs)
    if model.startswith("radon"):
        formula, family = FORMULAS["radon"]
        frame = radon_data(model)
    else:
        formula, family = FORMULAS[model]
        frame = regime_data(model, cell["G"], cell["rows"], cell["noise_ratio"], cell.get("data_seed", 0))
    if param == "marginalized":  # the group effects integrated out (gaussian only), drawn after sampling
        if family != "gaussian":
            raise Unavailable(f"the {family} family's group effects cannot be integrated out exactly")
        return bj.Model(formula, frame, family=family).fit(marginalize=True, **kwargs)
    return bj.Model(formula, frame, family=family, parameterization=param).fit(marginalize=False, **kwargs)


def measured_draws(fit) -> dict[str, np.ndarray]:
    """Draws of the sites every parameterization has, constant columns (cor diagonal) dropped."""
    out = {}
    for name, x in fit.draws.items():
        if name.startswith(AUX_PREFIXES) or name.endswith(AUX_SUFFIXES):
            continue
        x = np.asarray(x).reshape(x.shape[0], x.shape[1], -1)
        varies = np.ptp(x, axis=(0, 1)) > 0
        if varies.any():
            out[name] = x[..., varies]
    return out


def device_peak_mb() -> float | None:
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        return None
    return None if not stats else stats.get("peak_bytes_in_use", 0) / 2**20


def fit_metrics(fit, wall_s: float) -> dict[str, Any]:
    """Every number of :data:`METRICS` for one fit."""
    draws = measured_draws(fit)
    ess = ess_stats(draws)
    rhat = max(float(np.nanmax(np.asarray(bj.rhat(x)))) for x in draws.values())
    t, g = fit.timings, fit.num_grad_evals
    depth = np.asarray(fit.stats["tree_depth"], float).mean(axis=1)
    grads = g["warmup"] + g["sampling"]
    ess_b = ess["min_ess_bulk"]
    return {
        "compile_s": t["compile"], "warmup_s": t["warmup"], "sampling_s": t["sampling"], "wall_s": wall_s,
        "grad_evals_warmup": int(g["warmup"]), "grad_evals_sampling": int(g["sampling"]), **ess,
        "ess_per_s_sampling": ess_b / t["sampling"], "ess_per_s_total": ess_b / wall_s,
        "ess_per_1k_grads": 1000.0 * ess_b / max(g["sampling"], 1),
        "divergences": int(np.sum(fit.stats["diverging"])), "max_rhat": rhat,
        "mean_tree_depth": float(depth.mean()), "tree_depth_spread": float(depth.max() - depth.min()),
        "ms_per_grad": 1000.0 * (t["warmup"] + t["sampling"]) / max(grads, 1),
        "s_per_eff_draw": t["sampling"] / ess_b if ess_b > 0 else float("inf"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "device_peak_mb": device_peak_mb(),
    }


def aggregate(per_seed: list[dict]) -> tuple[dict, dict]:
    """Median and [min, max] of each metric over seeds.

    Compile time, wall time and ESS per wall second are the first seed's: later seeds
    reuse its compiled program, so their wall time leaves the compile out.
    """
    median, spread = {}, {}
    for key in per_seed[0]:
        values = [r[key] for r in per_seed if r[key] is not None]
        if not values:
            median[key], spread[key] = None, None
            continue
        median[key] = float(statistics.median(values))
        spread[key] = [float(min(values)), float(max(values))]
    for key in ("compile_s", "wall_s", "ess_per_s_total"):
        median[key] = per_seed[0][key]
    return median, spread


# ---------------------------------------------------------------- one cell

def _identity(cell: dict) -> dict:
    keep = ("block", "model", "G", "rows", "noise_ratio", "parameterization", "chain_method", "x64",
            "chains", "warmup", "draws", "seeds", "samplers", "sampler", "sampler_chains")
    row = {k: cell[k] for k in keep if k in cell}
    if "G" in cell:
        row["N"] = cell["G"] * cell["rows"]
    return row


def _summarise(values) -> Any:
    """A few centeredness values as they are; many as counts of centered / non-centered and their mean."""
    v = np.asarray(values, dtype=np.float64)
    if v.size <= 8:
        return v.tolist()
    return {"size": int(v.size), "centered": int((v == 1).sum()), "noncentered": int((v == 0).sum()),
            "mean": float(v.mean())}


def run_cell(cell: dict, log: Callable[[str], None] = print) -> dict | list[dict]:
    """Run one cell over its seeds. Never raises: errors are recorded in the row."""
    if cell["block"] == "baselines":
        return run_baselines(cell, log)
    row = {**_identity(cell), "label": suites.describe(cell)}
    per_seed = []
    try:
        for seed in cell["seeds"]:
            t0 = time.perf_counter()
            fit = fit_once(cell, seed)
            per_seed.append({"seed": seed, **fit_metrics(fit, time.perf_counter() - t0)})
            row["chain_method_used"] = fit.settings["chain_method"]
            if fit.settings.get("parameterization"):  # learned by "auto", or as given
                row["centeredness"] = {k: _summarise(v) for k, v in fit.settings["parameterization"].items()}
                row["reparam_s"] = (fit.settings.get("reparam") or {}).get("seconds", 0.0)
    except Unavailable as why:
        row.update(status="unavailable", error=str(why))
        log(f"  -- {row['label']}: unavailable ({why})")
        return row
    except Exception as err:  # noqa: BLE001 - a failed cell must not stop the run
        row.update(status="error", error=f"{type(err).__name__}: {err}",
                   traceback=traceback.format_exc(limit=4))
        log(f"  !! {row['label']}: {row['error']}")
        return row
    metrics, spread = aggregate([{k: v for k, v in r.items() if k != "seed"} for r in per_seed])
    row.update(status="ok", metrics=metrics, spread=spread, per_seed=per_seed)
    m = metrics
    log(f"  ok {row['label']}: compile {m['compile_s']:.1f}s sample {m['sampling_s']:.1f}s  "
        f"minESS {m['min_ess_bulk']:.0f}  ESS/1k grads {m['ess_per_1k_grads']:.1f}  "
        f"div {m['divergences']:.0f}  R-hat {m['max_rhat']:.3f}")
    return row


def run_baselines(cell: dict, log: Callable[[str], None] = print) -> list[dict]:
    """bhmjax vs hand-written NumPyro (benchmarks/overhead.py) and, if installed, PyMC and nutpie."""
    from . import overhead

    base = _identity(cell)
    model_fn, data, name = baseline_model(cell["model"])
    settings = dict(chains=cell["chains"], warmup=cell["warmup"], draws=cell["draws"], seed=cell["seeds"][0])
    rows = []
    if "numpyro" in cell["samplers"]:
        try:
            cmp = overhead.compare(name, model_fn, data, chain_method=cell["chain_method"], **settings)
            for sampler, wall, ess in (("numpyro", cmp["numpyro_wall_s"], cmp["numpyro_min_ess_bulk"]),
                                       ("bhmjax", cmp["bhmjax_wall_s"], cmp["bhmjax_min_ess_bulk"])):
                t = cmp["bhmjax_timings"]
                run = t["warmup"] + t["sampling"] if sampler == "bhmjax" else None
                rows.append({**base, "sampler": sampler, "status": "ok", "overhead": cmp,
                             "metrics": peers.baseline_metrics(wall, run, {"min_ess_bulk": ess})})
        except Exception as err:  # noqa: BLE001
            rows.append({**base, "sampler": "numpyro", "status": "error", "error": f"{type(err).__name__}: {err}"})
    for sampler in (s for s in cell["samplers"] if s in peers.PEERS):
        rows.append({**base, "sampler": sampler, **peers.run_peer(sampler, cell["model"], data, settings)})
    for r in rows:
        r["label"] = f"baselines {cell['model']} {r['sampler']}"
        log(f"  {r['status']:>2s} {r['label']}" + (f": {r.get('error')}" if r["status"] != "ok" else
            f": wall {r['metrics']['wall_s']:.1f}s  minESS {r['metrics']['min_ess_bulk']:.0f}  "
            f"ESS/s {r['metrics']['ess_per_s_total']:.1f}"))
    return rows


def baseline_model(name: str):
    """The hand-written NumPyro model and data of a baseline (from benchmarks/overhead.py)."""
    from . import overhead

    if name == "eight_schools_ncp":
        return overhead.eight_schools_ncp, eight_schools_data(), name
    if name.startswith("intercepts_G"):
        groups, rows = (int(p[1:]) for p in name.split("_")[1:3])
        rng = np.random.default_rng(0)
        group = rng.integers(0, groups, rows).astype(np.int32)
        y = (1.0 + rng.normal(0, 1.0, groups)[group] + rng.normal(0, 2.0, rows)).astype(np.float32)
        return overhead.varying_intercepts, {"group": group, "y": y, "num_groups": groups}, name
    raise ValueError(f"unknown baseline model {name!r}")


# ---------------------------------------------------------------- a suite

def run_suite(suite: str, out: Path | None = None, *, cells: list[dict] | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Run every cell of ``suite`` (or the given cells), saving the JSON after each one."""
    cells = suites.cells(suite) if cells is None else cells
    results = {"suite": suite, "machine": machine(), "settings": suites.SETTINGS.get(suite, {}),
               "compilation_cache": bj.compilation_cache_dir(), "host_devices": jax.local_device_count(),
               "auto_parameterization": auto_parameterization(), "peers": peers.available(),
               "metrics": list(METRICS), "cells": [], "elapsed_s": 0.0}
    t0 = time.perf_counter()
    log(f"suite {suite}: {len(cells)} cells on {results['machine']['cpu']} "
        f"({results['machine']['backend']}, {jax.local_device_count()} devices)")
    for i, cell in enumerate(cells, 1):
        log(f"[{i}/{len(cells)} {time.perf_counter() - t0:6.0f}s] {suites.describe(cell)}")
        row = run_cell(cell, log)
        results["cells"].extend(row if isinstance(row, list) else [row])
        results["elapsed_s"] = time.perf_counter() - t0
        if out is not None:
            save_json(results, Path(out))
    log(f"done in {results['elapsed_s']:.0f}s" + (f": {out}" if out else ""))
    return results
