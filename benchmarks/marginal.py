"""Group effects integrated out (issue #21): the large model, 100,000 groups, and the LAPACK price.

    python -m benchmarks.marginal large   # G=2,000, N=100,000: marginalized vs centered sampled, same run
    python -m benchmarks.marginal big     # 100,000 stores, 1,000,000 rows, (1 + x | store), 4 x 1,000 + 1,000
    python -m benchmarks.marginal lapack  # gradient of centered correlated effects: LAPACK vs written out

``large`` fits ``y ~ 1 + x + (1 + x | g)`` (``benchmarks.speed.varying_slopes``: groups of
unequal size, about 50 rows each) with the effects integrated out and, in the same process,
the centered sampled form (the best fixed form there); both 4 chains x 1,000 + 1,000.
ESS/s = min bulk ESS over the hyperparameters and a fixed sample of 50 groups' effects, per
second of the whole ``fit`` call (compile, warmup, sampling and the draws of ``r_g``).
Each fit is timed twice: the first call compiles (``compile_s``), the repeat reuses it.

``big`` times the whole call of the 100,000-group model and its peak memory, with ``r_store``
left out of the stored draws (``drop=["r_store"]``, 3.2 GB at 4 x 1,000 draws) and then drawn
for 100 draws per chain with ``bj.marginal_effects`` (what a user does to bound memory).

Results go to ``benchmarks/results/marginal_cpu.json`` (one key per subcommand); the load
of the machine (``os.getloadavg``) is recorded before and after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

import bhmjax as bj

from .common import machine, save_json

OUT = Path("benchmarks/results/marginal_cpu.json")
HYPER = ("Intercept", "b", "sd_g", "cor_g", "sigma")


def _load() -> list[float]:
    return [round(v, 1) for v in os.getloadavg()]


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measured(fit, groups: np.ndarray, name: str = "g") -> dict[str, np.ndarray]:
    """Hyperparameters (constant cor diagonal dropped) and the effects of the chosen groups."""
    out = {}
    for site in HYPER:
        site = site.replace("_g", f"_{name}")
        if site in fit.draws:
            x = np.asarray(fit.draws[site], np.float64).reshape(*fit.draws[site].shape[:2], -1)
            out[site] = x[..., np.ptp(x, axis=(0, 1)) > 0]
    out[f"r_{name}"] = np.asarray(fit.draws[f"r_{name}"])[:, :, groups].reshape(fit.num_chains, fit.num_draws, -1)
    return out


def fit_row(label: str, call, groups: np.ndarray) -> dict:
    load = _load()
    t0 = time.perf_counter()
    fit = call()
    wall = time.perf_counter() - t0
    draws = measured(fit, groups)
    ess = {k: np.asarray(bj.ess(v)) for k, v in draws.items()}
    rhat = {k: np.asarray(bj.rhat(v)) for k, v in draws.items()}
    worst = min(ess, key=lambda k: ess[k].min())
    min_ess = float(min(v.min() for v in ess.values()))
    row = {"fit": label, "wall_s": wall, "timings": dict(fit.timings), "grad_evals": dict(fit.num_grad_evals),
           "min_ess_bulk": min_ess, "min_ess_site": worst, "ess_per_s": min_ess / wall,
           "min_ess_bulk_hyper": float(min(v.min() for k, v in ess.items() if not k.startswith("r_"))),
           "max_rhat": float(max(np.nanmax(v) for v in rhat.values())),
           "divergences": int(np.sum(fit.stats["diverging"])),
           "mean_tree_depth": float(np.mean(fit.stats["tree_depth"])),
           "load_before": load, "load_after": _load(),
           "means": {k: v.mean(axis=(0, 1)).tolist() for k, v in draws.items() if not k.startswith("r_")}}
    print(f"{label:34s} wall {wall:7.1f} s (compile {fit.timings['compile']:.1f})  min ESS {min_ess:7.0f} "
          f"({worst})  ESS/s {row['ess_per_s']:8.1f}  R-hat {row['max_rhat']:.3f}  div {row['divergences']}  "
          f"depth {row['mean_tree_depth']:.1f}  load {load}", flush=True)
    return row, fit


def agreement(a, b, groups) -> float:
    """Largest |mean difference| / joint MCSE over the measured scalars of two fits."""
    da, db = measured(a, groups), measured(b, groups)
    z = []
    for k in da:
        mcse = np.sqrt(np.asarray(bj.mcse(da[k])) ** 2 + np.asarray(bj.mcse(db[k])) ** 2)
        z.append(np.abs(da[k].mean(axis=(0, 1)) - db[k].mean(axis=(0, 1))) / mcse)
    return float(np.max(np.concatenate(z)))


def large(chains: int = 4, iterations: int = 1000) -> dict:
    from .speed import FORMULA, varying_slopes

    frame = varying_slopes(2000, 100_000)
    groups = np.random.default_rng(0).choice(2000, 50, replace=False)
    settings = dict(chains=chains, warmup=iterations, draws=iterations, seed=0, progress=False)
    rows, fits = [], {}
    for label, marginalize, param in (("marginalized", True, "noncentered"), ("centered (sampled)", False,
                                                                               "centered")):
        model = bj.Model(FORMULA, frame, parameterization=param)
        for attempt in ("first call", "repeat"):
            row, fit = fit_row(f"{label}, {attempt}", lambda: model.fit(marginalize=marginalize, **settings),
                               groups)
            rows.append(row)
        fits[label] = fit
    z = agreement(fits["marginalized"], fits["centered (sampled)"], groups)
    print(f"marginalized vs centered: max |mean diff| / joint MCSE {z:.2f} over hyperparameters and 100 effects")
    sizes = np.bincount(frame["g"], minlength=2000)
    return {"model": f"{FORMULA}, G=2000, N=100000 (group sizes {sizes.min()}..{sizes.max()})",
            "settings": {**settings, "chain_method": "auto (parallel over host devices)"},
            "effects_measured": "50 groups x 2 columns, fixed", "rows": rows, "max_abs_z_vs_centered": z}


def big(chains: int = 4, iterations: int = 1000, groups: int = 100_000, rows: int = 1_000_000) -> dict:
    from .batch import big_data

    frame = big_data("gaussian", groups, rows)  # the data of benchmarks/batch.py big
    load = _load()
    t0 = time.perf_counter()
    model = bj.Model("y ~ 1 + x + (1 + x | store)", frame)
    build_s = time.perf_counter() - t0
    fit = model.fit(chains=chains, warmup=iterations, draws=iterations, seed=0, progress=False, drop=["r_store"])
    fit_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    effects = bj.marginal_effects(fit, draws=100)
    effects_s = time.perf_counter() - t1
    table = fit.summary()
    hyper = table.loc[[i for i in table.index if not i.startswith(("r_", "Intercept_c", "L_"))]]
    out = {"model": "y ~ 1 + x + (1 + x | store)", "groups": groups, "rows": rows, "chains": chains,
           "warmup": iterations, "draws": iterations, "build_s": build_s, "wall_s_build_and_fit": fit_s,
           "timings": dict(fit.timings), "grad_evals": dict(fit.num_grad_evals),
           "pseudo_rows": fit.settings.get("reduction", {}).get("pseudo_rows"),
           "divergences": int(np.sum(fit.stats["diverging"])), "mean_tree_depth": float(np.mean(fit.stats["tree_depth"])),
           "max_rhat": float(hyper["r_hat"].max()), "min_ess_bulk": float(hyper["ess_bulk"].min()),
           "effects_100_draws_per_chain_s": effects_s, "effects_shape": list(effects.shape),
           "peak_rss_gib": _peak_rss_gib(), "load_before": load, "load_after": _load(),
           "summary": hyper.round(4).to_dict(orient="index")}
    print(json.dumps({k: v for k, v in out.items() if k != "summary"}, indent=1), flush=True)
    print(hyper.round(3))
    return out


def lapack(groups=(2000, 100_000), repeats: int = 200) -> dict:
    """ms per gradient of the centered correlated model's group-effect density, LAPACK against written out."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist

    from bhmjax._src.smallmat import TrilNormal

    out = {"load_before": _load(), "rows": []}
    for g in groups:
        rng = np.random.default_rng(0)
        theta = jnp.asarray(rng.normal(size=(g, 2)), jnp.float32)
        sd, chol = jnp.asarray([0.8, 0.5]), jnp.asarray([[1.0, 0.0], [0.3, 0.954]])
        forms = {"MultivariateNormal(...).expand (LAPACK)":
                 lambda t, s, c, g=g: dist.MultivariateNormal(jnp.zeros(2), scale_tril=s[:, None] * c).expand(
                     (g,)).to_event(1).log_prob(t),
                 "TrilNormal (written out)": lambda t, s, c, g=g: TrilNormal(jnp.zeros(2), s[:, None] * c, g)
                 .to_event(1).log_prob(t)}
        for name, fn in forms.items():
            grad = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2)))
            jax.block_until_ready(grad(theta, sd, chol))
            t0 = time.perf_counter()
            for _ in range(repeats):
                res = grad(theta, sd, chol)
            jax.block_until_ready(res)
            ms = 1000 * (time.perf_counter() - t0) / repeats
            out["rows"].append({"groups": g, "form": name, "ms_per_gradient": ms, "value": float(res[0])})
            print(f"G={g:7d} {name:40s} {ms:9.3f} ms per gradient", flush=True)
    out["load_after"] = _load()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("large", "big", "lapack"))
    parser.add_argument("--iterations", type=int, default=1000, help="warmup = draws per chain")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = machine()
    if args.what == "lapack":
        results["lapack"] = lapack()
    elif args.what == "large":
        results["large"] = large(iterations=args.iterations)
    else:
        results["big"] = big(iterations=args.iterations)
    save_json(results, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
