"""PyMC and nutpie on the baseline models: same data, priors, chains, warmup and draws.

Both are optional (``pip install -e ".[peers]"``); where one is missing its row says
"not installed" and the run goes on. Their draws are measured by the same
:func:`benchmarks.common.ess_stats` as bhmjax's, on the same sites.

The hand-written models mirror ``benchmarks/overhead.py``:

* ``eight_schools_ncp``: mu ~ N(0, 5), tau ~ HalfCauchy(5), theta_z ~ N(0, 1),
  y ~ N(mu + tau theta_z, sigma);
* ``intercepts_G*_N*``: mu ~ N(0, 5), tau ~ HalfNormal(2), sigma ~ HalfNormal(2),
  z ~ N(0, 1) per group, y ~ N(mu + tau z[group], sigma).

:func:`pymc_formula_model` is the PyMC twin of a gaussian ``bj.Model`` (non-centered group
terms), built from the model's own data and default priors; :func:`sample_peer` fits a
PyMC model with either peer and returns what ``benchmarks/speed.py`` measures.
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


def versions() -> dict[str, str]:
    """:func:`available` plus the versions under the peers (PyTensor, numba) where installed."""
    out = available()
    for name in ("pytensor", "numba"):
        if importlib.util.find_spec(name) is not None:
            out[name] = getattr(__import__(name), "__version__", "installed")
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


# ---------------------------------------------------------------- formula models (speed.py)

_PYMC_PRIORS = {  # bhmjax's default prior kinds (priors.py) -> PyMC distribution and its arguments
    "normal": ("Normal", ("mu", "sigma")),
    "student_t": ("StudentT", ("nu", "mu", "sigma")),
    "half_student_t": ("HalfStudentT", ("nu", "sigma")),  # = NumPyro's folded StudentT(df, 0, scale)
    "gamma": ("Gamma", ("alpha", "beta")),
    "exponential": ("Exponential", ("lam",)),
}


def _pymc_prior(site: str | None, prior, shape=None):
    """The PyMC random variable ``site`` with bhmjax's prior (a Prior or a one-part VectorPrior);
    ``site`` None: the unnamed distribution (``.dist``), as ``LKJCholeskyCov``'s ``sd_dist`` takes it."""
    import pymc as pm

    if hasattr(prior, "parts"):
        if len(prior.parts) != 1:
            raise NotImplementedError(f"{site}: priors split across entries have no PyMC twin here")
        prior = prior.parts[0][1]
    if prior.kind not in _PYMC_PRIORS:
        raise NotImplementedError(f"{site}: prior kind {prior.kind!r} has no PyMC twin here")
    cls, names = _PYMC_PRIORS[prior.kind]
    args = {n: np.asarray(v, np.float64) for n, (_, v) in zip(names, prior.args)}
    shape_arg = {} if shape is None else {"shape": shape}
    if site is None:
        return getattr(pm, cls).dist(**args, **shape_arg)
    return getattr(pm, cls)(site, **args, **shape_arg)


def pymc_formula_model(model):
    """The PyMC twin of a gaussian ``bj.Model`` with centered or non-centered group terms, written
    the way PyMC's own examples write it; same posterior, bhmjax's site names.

    Built from the model's own data and priors (``model.model_data``, ``model.spec``):

    * ``b`` ~ the slope prior, on centred columns ``X - X_mean``; ``Intercept_c`` ~ the
      intercept prior; ``Intercept = Intercept_c - X_mean @ b`` (deterministic);
    * per group term: an uncorrelated term has ``sd_<g>`` ~ its prior; a correlated one
      ``pm.LKJCholeskyCov`` (LKJ(eta) on the correlation, ``sd_dist`` the same sd prior),
      ``cor_<g>`` and ``sd_<g>`` from it; non-centered: ``z_<g>`` (K, G) ~ N(0, 1), the
      effects ``chol @ z``; centered: ``theta_<g>`` (G, K) ~ ``pm.MvNormal`` (``pm.Normal``
      without correlation) around the population coefficients; the linear predictor gathers each column's vector of G effects
      by the group index (one 1-D gather per column, as users write ``a[g] + b[g] * x``);
      ``r_<g>`` (G, K) deterministic;
    * ``y ~ Normal(eta, sigma)``, ``sigma`` ~ its prior (HalfStudentT).

    Other families and partially centered terms raise ``NotImplementedError`` (the speed
    benchmark does not need them).
    """
    import pymc as pm
    import pytensor.tensor as pt

    s, priors = model.spec.structure, model.spec.priors
    if s.family != "gaussian":
        raise NotImplementedError(f"PyMC twin of family {s.family!r}")
    d = model.model_data(x64=True)
    with pm.Model() as pm_model:
        eta = pt.zeros(d["N"])
        coefs = {}
        b = None
        if s.slopes:
            b = _pymc_prior("b", priors["b"], shape=len(s.slopes))
            eta = eta + pt.dot(d["X"] - d["X_mean"] if s.intercept else d["X"], b)
            coefs.update({name: b[j] for j, name in enumerate(s.slopes)})
        if s.intercept:
            a = _pymc_prior("Intercept_c", priors["Intercept"])
            coefs["Intercept"] = pm.Deterministic("Intercept", a - pt.dot(d["X_mean"], b) if s.slopes else a)
            eta = eta + a
        for i, g in enumerate(s.groups):
            k, num_groups = len(g.columns), d[f"G_{i}"]
            centered = all(c == 1 for c in g.centeredness)
            if not centered and any(c != 0 for c in g.centeredness):
                raise NotImplementedError("PyMC twin of partially centered group terms")
            if g.correlated:
                eta_lkj = float(priors[f"cor_{g.name}"].args[0][1])
                chol, corr, sd = pm.LKJCholeskyCov(f"chol_{g.name}", n=k, eta=eta_lkj, compute_corr=True,
                                                   sd_dist=_pymc_prior(None, priors[f"sd_{g.name}"], shape=k))
                pm.Deterministic(f"sd_{g.name}", sd)
                pm.Deterministic(f"cor_{g.name}", corr)
            else:
                chol, sd = None, _pymc_prior(f"sd_{g.name}", priors[f"sd_{g.name}"], shape=k)
            if centered:  # the group coefficients, centred on the population ones (as bhmjax's centered form)
                loc = pt.stack([pt.as_tensor(coefs.get(c, 0.0), dtype="float64") for c in g.columns])
                theta = (pm.MvNormal(f"theta_{g.name}", mu=loc, chol=chol, shape=(num_groups, k)) if g.correlated
                         else pm.Normal(f"theta_{g.name}", mu=loc, sigma=sd, shape=(num_groups, k)))
                effects = (theta - loc).T  # (K, G)
            else:
                z = pm.Normal(f"z_{g.name}", 0.0, 1.0, shape=(k, num_groups))
                effects = pt.dot(chol, z) if g.correlated else sd[:, None] * z
            pm.Deterministic(f"r_{g.name}", effects.T)
            codes = d[f"codes_{i}"]
            for column in range(k):
                eta = eta + effects[column][codes] * d[f"Z_{i}"][:, column]
        (name, sigma_prior), = s.family_priors
        sigma = _pymc_prior(name, sigma_prior)
        pm.Normal("y", eta, sigma, observed=d["y"])
    return pm_model


def pymc_raw_gradient_ms(pm_model, min_seconds: float = 0.5) -> float:
    """ms of one logp + gradient call as PyMC's NUTS makes it (compiled C, called from Python)."""
    f = pm_model.logp_dlogp_function(ravel_inputs=True)
    f.set_extra_values({})
    point = pm_model.initial_point()
    x = np.concatenate([np.ravel(point[v.name]) for v in pm_model.value_vars]).astype(np.float64)
    f(x)
    calls, t0 = 0, time.perf_counter()
    while calls < 20 or time.perf_counter() - t0 < min_seconds:
        _, grad = f(x)
        x = x - 1e-9 * grad
        calls += 1
    return 1000 * (time.perf_counter() - t0) / calls


def nutpie_raw_gradient_ms(compiled, min_seconds: float = 0.5) -> float | None:
    """ms of one logp + gradient of nutpie's numba function, in a numba loop (no Python between
    calls, as nutpie's Rust sampler calls it). None where the model has shared data."""
    if compiled.shared_data:
        return None
    import numba

    fn = compiled.logp_func.vm.jit_fn

    @numba.njit
    def many(x, n):
        total = 0.0
        for _ in range(n):
            out = fn(x)
            total += out[0][()]
            x = x - 1e-9 * out[1]  # nudge the point so no call is hoisted
        return total

    x = np.asarray(compiled.initial_point_func(0), np.float64)
    many(x, 1)
    n = 10
    while True:
        t0 = time.perf_counter()
        many(x, n)
        elapsed = time.perf_counter() - t0
        if elapsed > min_seconds or n >= 10**7:
            return 1000 * elapsed / n
        n *= max(2, min(100, int(min_seconds / max(elapsed, 1e-6))))


def sample_peer(sampler: str, pm_model, settings: dict, sites) -> dict[str, Any]:
    """Fit ``pm_model`` with PyMC's NUTS or nutpie, chains one after another (``cores=1``).

    Returns the ``sites`` draws (chain, draw, ...), gradient evaluations of warmup and
    sampling (sums of the per-draw ``n_steps``), wall seconds (compile included), warmup and
    sampling seconds, raw gradient ms and divergences. PyMC's warmup/sampling split is timed
    per draw (a ``pm.sample`` callback); nutpie reports no per-draw time, so its run time
    (compile excluded) is split in proportion to the gradients.
    """
    s = settings
    t0 = time.perf_counter()
    if sampler == "pymc":
        import pymc as pm

        clock = {"last": None, "warmup": 0.0, "sampling": 0.0}

        def tick(trace, draw):
            now = time.perf_counter()
            if clock["last"] is not None:
                clock["warmup" if draw.tuning else "sampling"] += now - clock["last"]
            clock["last"] = now

        with pm_model:
            idata = pm.sample(draws=s["draws"], tune=s["warmup"], chains=s["chains"], cores=1,
                              random_seed=s["seed"], progressbar=False, compute_convergence_checks=False,
                              discard_tuned_samples=False, callback=tick)
        wall = time.perf_counter() - t0
        timings = {"warmup": clock["warmup"], "sampling": clock["sampling"], "split": "timed per draw"}
        raw_ms = pymc_raw_gradient_ms(pm_model)
    elif sampler == "nutpie":
        import nutpie

        compiled = nutpie.compile_pymc_model(pm_model)
        t1 = time.perf_counter()
        idata = nutpie.sample(compiled, draws=s["draws"], tune=s["warmup"], chains=s["chains"], cores=1,
                              seed=s["seed"], progress_bar=False, save_warmup=True)
        wall = time.perf_counter() - t0
        timings = {"compile": t1 - t0, "run": wall - (t1 - t0), "split": "run time apportioned by gradients"}
        raw_ms = nutpie_raw_gradient_ms(compiled)
    else:
        raise ValueError(f"unknown peer {sampler!r}")
    grads = {"warmup": int(np.asarray(idata.warmup_sample_stats["n_steps"]).sum()),
             "sampling": int(np.asarray(idata.sample_stats["n_steps"]).sum())}
    if sampler == "nutpie":
        share = grads["sampling"] / max(grads["warmup"] + grads["sampling"], 1)
        timings.update(sampling=timings["run"] * share, warmup=timings["run"] * (1 - share))
    return {"draws": _posterior(idata, sites), "gradients": grads, "wall_s": wall, "timings": timings,
            "raw_gradient_ms": raw_ms, "divergences": int(np.asarray(idata.sample_stats["diverging"]).sum())}
