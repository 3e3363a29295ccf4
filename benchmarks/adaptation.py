"""Warmup adaptation schemes compared per gradient, averaged over seeds.

Per model and ``adaptation`` ("hybrid", "nutpie", "stan"): 4 chains x 1,000 + 1,000
(sequential), one fit per seed; mean, min and max of the min bulk ESS per 1,000 sampling
gradients (``benchmarks.common.ess_stats`` over every latent site but the standardized
group effects ``z_*``, as ``benchmarks/speed.py`` skips them), mean warmup gradients
and divergences per seed. Models:

* ``eight_schools_ncp`` (``benchmarks.overhead``), 16 seeds;
* ``slopes_G50_N1000``: varying intercepts and slopes, non-centered, written as a plain
  NumPyro model (mu_a, mu_b ~ N(0, 5); sd_a, sd_b, sigma ~ HalfNormal(2); independent
  group effects), 8 seeds;
* ``--large``: the formula model of ``benchmarks/speed.py`` at G=2,000, N=100,000
  (non-centered, reduced), seed 0, "hybrid" and "stan" only.

Run: python -m benchmarks.adaptation [--large] [--out benchmarks/results/adaptation_cpu.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import numpyro
import numpyro.distributions as dist

import bhmjax as bj

from .common import DATA_DIR, ess_stats, machine, save_json
from .overhead import eight_schools_ncp

SCHEMES = ("hybrid", "nutpie", "stan")


def slopes(g, x, y, num_groups: int):
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 5.0))
    mu_b = numpyro.sample("mu_b", dist.Normal(0.0, 5.0))
    sd_a = numpyro.sample("sd_a", dist.HalfNormal(2.0))
    sd_b = numpyro.sample("sd_b", dist.HalfNormal(2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("groups", num_groups):
        z_a = numpyro.sample("z_a", dist.Normal(0.0, 1.0))
        z_b = numpyro.sample("z_b", dist.Normal(0.0, 1.0))
    a, b = mu_a + sd_a * z_a, mu_b + sd_b * z_b
    numpyro.sample("y", dist.Normal(a[g] + b[g] * x, sigma), obs=y)


def slopes_data(num_groups: int = 50, num_rows: int = 1000, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, num_groups, num_rows).astype(np.int32)
    x = rng.normal(size=num_rows).astype(np.float32)
    a, b = rng.normal(0, 0.5, num_groups), 0.5 + rng.normal(0, 0.3, num_groups)
    y = (1.0 + a[g] + b[g] * x + rng.normal(0, 1.0, num_rows)).astype(np.float32)
    return {"g": g, "x": x, "y": y}


def per_seed(model, arrays, static, scheme: str, seed: int) -> dict:
    result = bj.sample(model, {**arrays, **static}, chains=4, warmup=1000, draws=1000, seed=seed,
                       adaptation=scheme, chain_method="sequential", progress=False)
    ess = ess_stats({k: v for k, v in result.draws.items() if not k.startswith("z_")})["min_ess_bulk"]
    return {"ess_per_1000_gradients": 1000 * ess / result.num_grad_evals["sampling"],
            "warmup_gradients": result.num_grad_evals["warmup"],
            "divergences": int(result.stats["diverging"].sum())}


def compare(name: str, model, arrays, static, seeds: int, schemes=SCHEMES) -> list[dict]:
    rows = []
    for scheme in schemes:
        runs = [per_seed(model, arrays, static, scheme, s) for s in range(seeds)]
        per_grad = np.array([r["ess_per_1000_gradients"] for r in runs])
        rows.append({"model": name, "adaptation": scheme, "seeds": seeds,
                     "ess_per_1000_gradients": {"mean": per_grad.mean(), "min": per_grad.min(), "max": per_grad.max()},
                     "warmup_gradients_mean": float(np.mean([r["warmup_gradients"] for r in runs])),
                     "divergences": [r["divergences"] for r in runs]})
        print(f"{name:20s} {scheme:7s} ESS/1k grads mean {per_grad.mean():6.1f} (min {per_grad.min():.1f}, "
              f"max {per_grad.max():.1f})  warmup grads {rows[-1]['warmup_gradients_mean']:9.0f}  "
              f"divergences {rows[-1]['divergences']}", flush=True)
    return rows


def large(schemes=("hybrid", "stan")) -> list[dict]:
    from .speed import FORMULA, comparable, varying_slopes

    model = bj.Model(FORMULA, varying_slopes(2000, 100_000), parameterization="noncentered")
    rows = []
    for scheme in schemes:
        fit = model.fit(chains=4, warmup=1000, draws=1000, seed=0, progress=False, chain_method="sequential",
                        adaptation=scheme, marginalize=False)
        ess = ess_stats(comparable(fit.draws))["min_ess_bulk"]
        rows.append({"model": "slopes_G2000_N100000", "adaptation": scheme, "min_ess_bulk": ess,
                     "warmup_gradients": fit.num_grad_evals["warmup"],
                     "ess_per_1000_gradients": 1000 * ess / fit.num_grad_evals["sampling"]})
        print(f"slopes_G2000_N100000 {scheme:7s} min ESS {ess:6.0f}  warmup grads {rows[-1]['warmup_gradients']}",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also the G=2,000, N=100,000 model (seed 0)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/adaptation_cpu.json"))
    args = parser.parse_args()
    raw = json.loads((DATA_DIR / "eight_schools.json").read_text())
    schools = {"y": np.asarray(raw["y"], np.float32), "sigma": np.asarray(raw["sigma"], np.float32)}
    results = {"machine": machine(), "rows": []}
    results["rows"] += compare("eight_schools_ncp", eight_schools_ncp, schools, {}, 16)
    results["rows"] += compare("slopes_G50_N1000", slopes, slopes_data(), {"num_groups": 50}, 8)
    if args.large:
        results["rows"] += large()
    save_json(results, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
