"""PyMC and nutpie on the baseline models: same data, priors, chains, warmup and draws.

Both are optional (``pip install -e ".[peers]"``); where one is missing its row says
"not installed" and the run goes on. Their draws are measured by the same
:func:`benchmarks.common.ess_stats` as bhmjax's, on the same sites.

The models mirror ``benchmarks/overhead.py``:

* ``eight_schools_ncp``: mu ~ N(0, 5), tau ~ HalfCauchy(5), theta_z ~ N(0, 1),
  y ~ N(mu + tau theta_z, sigma);
* ``intercepts_G*_N*``: mu ~ N(0, 5), tau ~ HalfNormal(2), sigma ~ HalfNormal(2),
  z ~ N(0, 1) per group, y ~ N(mu + tau z[group], sigma).
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import numpy as np

from .common import ess_stats

PEERS = ("pymc", "nutpie")


def available() -> dict[str, str]:
    """Installed version of each peer, or "not installed"."""
    out = {}
    for name in PEERS:
        if importlib.util.find_spec(name) is None:
            out[name] = "not installed"
            continue
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "installed")
        except Exception as err:  # noqa: BLE001 - a broken install is reported, not raised
            out[name] = f"broken install: {type(err).__name__}: {err}"
    return out


def baseline_metrics(wall_s: float, run_s: float | None, ess: dict[str, float]) -> dict[str, Any]:
    """ESS per second of total wall time (compile included) and of the run (warmup + sampling,
    compile excluded; None where the sampler does not separate them)."""
    e = ess["min_ess_bulk"]
    return {"wall_s": wall_s, "run_s": run_s, **ess, "ess_per_s_total": e / wall_s,
            "ess_per_s_run": None if not run_s else e / run_s}


def pymc_model(name: str, data: dict):
    """The PyMC twin of the baseline model ``name`` (see the module docstring)."""
    import pymc as pm

    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 5.0)
        if name == "eight_schools_ncp":
            tau = pm.HalfCauchy("tau", 5.0)
            z = pm.Normal("theta_z", 0.0, 1.0, shape=len(data["y"]))
            pm.Normal("y", mu + tau * z, np.asarray(data["sigma"], float), observed=np.asarray(data["y"], float))
        elif name.startswith("intercepts_G"):
            tau = pm.HalfNormal("tau", 2.0)
            sigma = pm.HalfNormal("sigma", 2.0)
            z = pm.Normal("z", 0.0, 1.0, shape=int(data["num_groups"]))
            pm.Normal("y", mu + tau * z[np.asarray(data["group"])], sigma, observed=np.asarray(data["y"], float))
        else:
            raise ValueError(f"no PyMC version of baseline model {name!r}")
    return model


def _posterior(idata, names) -> dict[str, np.ndarray]:
    post = idata.posterior
    return {k: np.asarray(post[k].values) for k in names if k in post}


def run_peer(sampler: str, name: str, data: dict, settings: dict) -> dict[str, Any]:
    """One peer run as a row: status "ok", "not installed" or "error" (with the message)."""
    if available()[sampler] == "not installed":
        return {"status": "not installed", "error": f"{sampler} is not installed (pip install -e '.[peers]')"}
    try:
        t0 = time.perf_counter()
        idata, run_s = (_run_pymc if sampler == "pymc" else _run_nutpie)(name, data, settings)
        wall = time.perf_counter() - t0
        sites = ("mu", "tau", "sigma", "theta_z", "z")
        draws = _posterior(idata, sites)
        return {"status": "ok", "metrics": baseline_metrics(wall, run_s, ess_stats(draws)),
                "divergences": int(np.asarray(idata.sample_stats["diverging"]).sum())}
    except Exception as err:  # noqa: BLE001 - a failed peer must not stop the run
        return {"status": "error", "error": f"{type(err).__name__}: {err}"}


def _run_pymc(name: str, data: dict, s: dict):
    import pymc as pm

    with pymc_model(name, data):
        t0 = time.perf_counter()
        idata = pm.sample(draws=s["draws"], tune=s["warmup"], chains=s["chains"], random_seed=s["seed"],
                          progressbar=False, compute_convergence_checks=False)
    return idata, time.perf_counter() - t0  # tuning and sampling (PyMC compiles inside pm.sample)


def _run_nutpie(name: str, data: dict, s: dict):
    import nutpie

    compiled = nutpie.compile_pymc_model(pymc_model(name, data))
    t0 = time.perf_counter()
    idata = nutpie.sample(compiled, draws=s["draws"], tune=s["warmup"], chains=s["chains"], seed=s["seed"],
                          progress_bar=False)
    return idata, time.perf_counter() - t0  # tuning included, compile excluded
