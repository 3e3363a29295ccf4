"""Hand-written NumPyro models: centered function, non-centered function, and auto (issue #18).

The model is varying intercepts and slopes with unequal group sizes, written by hand:

    mu_a, mu_b ~ Normal(0, 5);  sigma_a, sigma_b, sigma ~ HalfNormal(2.5)
    a[g] ~ Normal(mu_a, sigma_a), b[g] ~ Normal(mu_b, sigma_b)      (plate over G groups)
    y[i] ~ Normal(a[g[i]] + b[g[i]] x[i], sigma)

``slopes_cp`` is the natural centered form, ``slopes_ncp`` the non-centered one
(``a_z ~ Normal(0, 1)``, ``a = mu_a + sigma_a a_z``), and "auto" is
``bj.sample(slopes_cp, data, parameterization="auto")``: one centeredness per group and
site, learned by the SVI pre-pass. Group sizes are drawn from log-normal weights, so
some groups have a handful of rows (they want non-centered) and most have dozens to
hundreds (centered).

Measured per form: min bulk ESS over the hyperparameters (mu_a, mu_b, sigma_a, sigma_b,
sigma) per second of the whole ``bj.sample`` call (pre-pass and compile included), max
R-hat over them, divergences, and the posterior means against the centered form's in
MCSE units. On a shared machine the wall time of forms run one after another sees
different loads, so each row also has the process CPU seconds of the call and ESS per
CPU second (the same work whatever the load; ratios of it are the steadier comparison). nutpie on the PyMC twin of the centered function runs where PyMC and nutpie
are installed (the ``peers`` extra); otherwise its row says so.

Run: python -m benchmarks.handwritten [--groups 2000 --rows 100000] [--out benchmarks/results/handwritten_cpu.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import numpyro
import numpyro.distributions as dist

import bhmjax as bj

from . import peers
from .common import machine, save_json

HYPER = ("mu_a", "mu_b", "sigma_a", "sigma_b", "sigma")
FORMS = ("centered function", "non-centered function", "auto (centered function)")


def slopes_cp(x, g, num_groups, y=None):
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 5.0))
    mu_b = numpyro.sample("mu_b", dist.Normal(0.0, 5.0))
    sigma_a = numpyro.sample("sigma_a", dist.HalfNormal(2.5))
    sigma_b = numpyro.sample("sigma_b", dist.HalfNormal(2.5))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.5))
    with numpyro.plate("groups", num_groups):
        a = numpyro.sample("a", dist.Normal(mu_a, sigma_a))
        b = numpyro.sample("b", dist.Normal(mu_b, sigma_b))
    numpyro.sample("y", dist.Normal(a[g] + b[g] * x, sigma), obs=y)


def slopes_ncp(x, g, num_groups, y=None):
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 5.0))
    mu_b = numpyro.sample("mu_b", dist.Normal(0.0, 5.0))
    sigma_a = numpyro.sample("sigma_a", dist.HalfNormal(2.5))
    sigma_b = numpyro.sample("sigma_b", dist.HalfNormal(2.5))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.5))
    with numpyro.plate("groups", num_groups):
        a = numpyro.deterministic("a", mu_a + sigma_a * numpyro.sample("a_z", dist.Normal(0.0, 1.0)))
        b = numpyro.deterministic("b", mu_b + sigma_b * numpyro.sample("b_z", dist.Normal(0.0, 1.0)))
    numpyro.sample("y", dist.Normal(a[g] + b[g] * x, sigma), obs=y)


def slopes_data(num_groups: int, num_rows: int, seed: int = 0, size_sd: float = 1.5) -> dict:
    """G groups whose sizes follow log-normal weights (sd ``size_sd`` on the log scale), every group >= 1 row."""
    rng = np.random.default_rng([seed, num_groups, num_rows])
    weights = np.exp(rng.normal(0.0, size_sd, num_groups))
    g = np.concatenate([np.arange(num_groups), rng.choice(num_groups, num_rows - num_groups,
                                                          p=weights / weights.sum())])
    g = np.sort(g).astype(np.int32)
    x = rng.normal(size=num_rows)
    a, b = rng.normal(1.0, 1.0, num_groups), rng.normal(0.5, 0.5, num_groups)
    y = a[g] + b[g] * x + rng.normal(0.0, 2.0, num_rows)
    return {"x": x.astype(np.float32), "g": g, "num_groups": num_groups, "y": y.astype(np.float32)}


def fit_form(form: str, data: dict, **settings):
    """One ``bj.sample`` call of a form (see ``FORMS``)."""
    if form == "centered function":
        return bj.sample(slopes_cp, data, **settings)
    if form == "non-centered function":
        return bj.sample(slopes_ncp, data, **settings)
    if form == "auto (centered function)":
        return bj.sample(slopes_cp, data, parameterization="auto", **settings)
    raise ValueError(f"unknown form {form!r}; forms are {FORMS}")


def measure(fit, wall: float, cpu: float) -> dict:
    """Min bulk ESS over the hyperparameters per second of the whole call, max R-hat, the posterior."""
    ess = {k: float(bj.ess(np.asarray(fit.draws[k], np.float64), method="bulk")) for k in HYPER}
    rhat = {k: float(bj.rhat(np.asarray(fit.draws[k], np.float64))) for k in HYPER}
    posterior = {k: [float(np.mean(fit.draws[k])), float(np.std(fit.draws[k])),
                     float(np.std(fit.draws[k]) / np.sqrt(ess[k]))] for k in HYPER}
    reparam = fit.settings.get("reparam") or {}
    return {"wall_s": wall, "cpu_s": cpu, "min_ess_bulk": min(ess.values()), "ess_per_s": min(ess.values()) / wall,
            "ess_per_cpu_s": min(ess.values()) / cpu,
            "max_rhat": max(rhat.values()), "rhat": rhat, "ess_bulk": ess, "posterior": posterior,
            "divergences": int(np.sum(fit.stats["diverging"])),
            "divergent_share": float(np.mean(fit.stats["diverging"])),
            "grad_evals": dict(fit.num_grad_evals), "timings": dict(fit.timings),
            "mean_tree_depth": float(np.mean(fit.stats["tree_depth"])),
            "reparam_s": reparam.get("seconds"), "reparam_text": reparam.get("text")}


def agreement(rows: dict, reference: str = "centered function") -> None:
    """Each row's largest |mean difference| / joint MCSE against the reference row."""
    ref = rows.get(reference, {}).get("posterior")
    for name, row in rows.items():
        if name == reference or ref is None or "posterior" not in row:
            continue
        z = {k: abs(row["posterior"][k][0] - ref[k][0]) / np.hypot(row["posterior"][k][2], ref[k][2])
             for k in HYPER}
        row["vs_centered_max_z"] = max(z.values())


def pymc_slopes(data: dict):
    """The PyMC twin of ``slopes_cp`` (same priors, centered), for nutpie."""
    import pymc as pm

    g, x, y = np.asarray(data["g"]), np.asarray(data["x"], float), np.asarray(data["y"], float)
    with pm.Model() as model:
        mu_a, mu_b = pm.Normal("mu_a", 0.0, 5.0), pm.Normal("mu_b", 0.0, 5.0)
        sigma_a, sigma_b = pm.HalfNormal("sigma_a", 2.5), pm.HalfNormal("sigma_b", 2.5)
        sigma = pm.HalfNormal("sigma", 2.5)
        a = pm.Normal("a", mu_a, sigma_a, shape=data["num_groups"])
        b = pm.Normal("b", mu_b, sigma_b, shape=data["num_groups"])
        pm.Normal("y", a[g] + b[g] * x, sigma, observed=y)
    return model


def nutpie_row(data: dict, settings: dict) -> dict:
    have = peers.available()["nutpie"]
    if have == "not installed" or have.startswith("broken") or peers.available()["pymc"] == "not installed":
        return {"status": f"nutpie: {have}; pymc: {peers.available()['pymc']} (the peers extra, .venv-peers)"}
    import nutpie

    t0 = time.perf_counter()
    compiled = nutpie.compile_pymc_model(pymc_slopes(data))
    idata = nutpie.sample(compiled, draws=settings["draws"], tune=settings["warmup"], chains=settings["chains"],
                          seed=settings["seed"], progress_bar=False)
    wall = time.perf_counter() - t0
    draws = {k: np.asarray(idata.posterior[k].values) for k in HYPER}
    ess = {k: float(bj.ess(draws[k], method="bulk")) for k in HYPER}
    return {"status": "ok", "version": have, "wall_s": wall, "min_ess_bulk": min(ess.values()),
            "ess_per_s": min(ess.values()) / wall,
            "max_rhat": max(float(bj.rhat(draws[k])) for k in HYPER),
            "divergences": int(np.asarray(idata.sample_stats["diverging"]).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--iterations", type=int, default=1000, help="warmup = draws = N")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--chain-method", default="auto")
    parser.add_argument("--forms", default=",".join(FORMS), help="comma-separated subset of " + ", ".join(FORMS))
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/handwritten_cpu.json"))
    args = parser.parse_args()
    data = slopes_data(args.groups, args.rows)
    sizes = np.bincount(data["g"], minlength=args.groups)
    settings = dict(chains=args.chains, warmup=args.iterations, draws=args.iterations, seed=0,
                    chain_method=args.chain_method, progress=False)
    results = {"machine": machine(), "settings": {**settings, "groups": args.groups, "rows": args.rows},
               "group_sizes": {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max()),
                               "under_5": int((sizes < 5).sum())},
               "load_average_start": list(np.round(__import__("os").getloadavg(), 2)), "rows": {}}
    print(f"G={args.groups} N={args.rows}; group sizes {results['group_sizes']}", flush=True)
    for form in args.forms.split(","):
        t0, c0 = time.perf_counter(), time.process_time()
        fit = fit_form(form, data, **settings)
        row = results["rows"][form] = measure(fit, time.perf_counter() - t0, time.process_time() - c0)
        if form.startswith("auto"):
            c = fit.settings["parameterization"]
            row["centeredness"] = {k: (np.asarray(v).tolist() if np.ndim(v) == 0 else
                                       {"mean": float(np.mean(v)), "ones": int(np.sum(np.asarray(v) == 1)),
                                        "zeros": int(np.sum(np.asarray(v) == 0)), "size": int(np.size(v))})
                                   for k, v in c.items()}
        print(f"{form:28s} ESS/s {row['ess_per_s']:8.2f}  ESS/cpu s {row['ess_per_cpu_s']:8.2f}  "
              f"min ESS {row['min_ess_bulk']:7.0f}  wall {row['wall_s']:6.1f} s  cpu {row['cpu_s']:6.1f} s"
              f"  R-hat {row['max_rhat']:.3f}  div {row['divergences']}  depth {row['mean_tree_depth']:.1f}"
              + (f"  pre-pass {row['reparam_s']:.1f} s" if row["reparam_s"] else ""), flush=True)
        save_json(results, args.out)
    agreement(results["rows"])
    auto = results["rows"].get(FORMS[2])
    for metric in ("ess_per_s", "ess_per_cpu_s"):
        best = max((results["rows"][f][metric] for f in FORMS[:2] if f in results["rows"]), default=None)
        if best and auto:
            results[f"auto_over_best_fixed_{metric}"] = auto[metric] / best
            print(f"auto / best fixed form, {metric}: {auto[metric] / best:.2f}", flush=True)
    results["load_average_end"] = list(np.round(__import__("os").getloadavg(), 2))
    results["nutpie"] = {"status": "skipped (--no-peers)"} if args.no_peers else nutpie_row(data, settings)
    if auto and results["nutpie"].get("status") == "ok":
        results["auto_over_nutpie"] = auto["ess_per_s"] / results["nutpie"]["ess_per_s"]
    print(f"nutpie: {results['nutpie']}", flush=True)
    save_json(results, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
