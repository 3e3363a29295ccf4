"""bhmjax's overhead over hand-written NumPyro (`MCMC`), same models, settings and seed.

Fits eight schools (non-centered) and a varying-intercepts model (G=2,000 groups,
N=100,000 rows) both through ``bj.sample`` and through NumPyro's ``MCMC``, and
prints the ratio of wall times (compile included and sampling alone) and of ESS/s.
Also times each chain method of ``bj.sample`` on the large model, which is how
the default ``chain_method="auto"`` was chosen.

Run: python -m benchmarks.overhead [--quick] [--out benchmarks/results/overhead.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

import bhmjax as bj

from .common import DATA_DIR, ess_stats, machine, save_json


def eight_schools_ncp(y, sigma):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", y.shape[0]):
        z = numpyro.sample("theta_z", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu + tau * z, sigma), obs=y)


def varying_intercepts(group, y, num_groups: int):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("groups", num_groups):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu + tau * z[group], sigma), obs=y)


def datasets(num_groups: int = 2000, num_rows: int = 100_000) -> dict[str, tuple]:
    raw = json.loads((DATA_DIR / "eight_schools.json").read_text())
    schools = {"y": np.asarray(raw["y"], np.float32), "sigma": np.asarray(raw["sigma"], np.float32)}
    rng = np.random.default_rng(0)
    group = rng.integers(0, num_groups, num_rows).astype(np.int32)
    effects = rng.normal(0, 1.0, num_groups)
    y = (1.0 + effects[group] + rng.normal(0, 2.0, num_rows)).astype(np.float32)
    large = {"group": group, "y": y, "num_groups": num_groups}
    return {"eight_schools_ncp": (eight_schools_ncp, schools),
            f"varying_intercepts_G{num_groups}_N{num_rows}": (varying_intercepts, large)}


def run_numpyro(model, data, chains, warmup, draws, seed, chain_method):
    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method=chain_method, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), **data)
    samples = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(samples)
    wall = time.perf_counter() - t0
    return wall, {k: np.asarray(v) for k, v in samples.items()}


def run_bhmjax(model, data, chains, warmup, draws, seed, chain_method):
    t0 = time.perf_counter()
    fit = bj.sample(model, data, chains=chains, warmup=warmup, draws=draws, seed=seed,
                    chain_method=chain_method, progress=False)
    return time.perf_counter() - t0, fit


def compare(name, model, data, chains, warmup, draws, seed, chain_method) -> dict:
    nwall, nsamples = run_numpyro(model, data, chains, warmup, draws, seed, chain_method)
    bwall, fit = run_bhmjax(model, data, chains, warmup, draws, seed, chain_method)
    latent = {k: v for k, v in fit.draws.items() if k in nsamples}
    n_ess, b_ess = ess_stats(nsamples)["min_ess_bulk"], ess_stats(latent)["min_ess_bulk"]
    row = {
        "model": name, "chain_method": chain_method, "numpyro_wall_s": nwall, "bhmjax_wall_s": bwall,
        "bhmjax_timings": fit.timings, "wall_ratio": bwall / nwall,
        "numpyro_min_ess_bulk": n_ess, "bhmjax_min_ess_bulk": b_ess,
        "ess_per_s_ratio": (b_ess / bwall) / (n_ess / nwall),
    }
    print(f"{name:32s} {chain_method:10s} numpyro {nwall:7.1f} s  bhmjax {bwall:7.1f} s "
          f"(compile {fit.timings['compile']:.1f})  wall ratio {row['wall_ratio']:.2f}  "
          f"min ESS {n_ess:6.0f} vs {b_ess:6.0f}  ESS/s ratio {row['ess_per_s_ratio']:.2f}", flush=True)
    return row


def tree_spread(num_steps: np.ndarray) -> dict:
    """How much vectorized (lockstep) chains wait for the longest tree, from (chains, draws) leapfrog counts.

    ``lockstep_efficiency`` is the share of the gradients a vmapped step evaluates
    that any chain uses: sum of steps / (chains * sum over draws of the max over chains).
    """
    steps = np.asarray(num_steps, np.float64)
    depth = np.ceil(np.log2(steps + 1))
    return {"lockstep_efficiency": float(steps.sum() / (steps.shape[0] * steps.max(axis=0).sum())),
            "tree_depth_spread_mean": float((depth.max(axis=0) - depth.min(axis=0)).mean()),
            "tree_depth_mean": float(depth.mean())}


def chain_methods(model, data, chains, warmup, draws, seed) -> list[dict]:
    rows = []
    for method in ("sequential", "vectorized", "parallel"):
        wall, fit = run_bhmjax(model, data, chains, warmup, draws, seed, method)
        steps = fit.timings["warmup"] + fit.timings["sampling"]
        rows.append({"chain_method": method, "devices": jax.local_device_count(), "wall_s": wall,
                     "run_s": steps, **fit.timings,
                     "grads_per_ms": sum(fit.num_grad_evals.values()) / (1000 * steps),
                     **tree_spread(fit.stats["num_steps"])})
        print(f"  chain_method={method:10s} wall {wall:6.1f} s  run {steps:6.1f} s  "
              f"gradients/ms {rows[-1]['grads_per_ms']:.2f}  lockstep efficiency "
              f"{rows[-1]['lockstep_efficiency']:.2f} (tree depth {rows[-1]['tree_depth_mean']:.1f}, "
              f"spread {rows[-1]['tree_depth_spread_mean']:.1f})", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="G=200, N=10,000, 300+300 steps")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/overhead.json"))
    args = parser.parse_args()
    chains, seed = 4, 0
    warmup = draws = 300 if args.quick else 1000
    sizes = dict(num_groups=200, num_rows=10_000) if args.quick else {}
    results = {"machine": machine(), "settings": dict(chains=chains, warmup=warmup, draws=draws, seed=seed),
               "overhead": [], "chain_methods": {}}
    for name, (model, data) in datasets(**sizes).items():
        for method in ("vectorized", "sequential"):
            results["overhead"].append(compare(name, model, data, chains, warmup, draws, seed, method))
        print(f"{name}: bj.sample chain methods ({jax.local_device_count()} devices)")
        results["chain_methods"][name] = chain_methods(model, data, chains, warmup, draws, seed)
    save_json(results, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
