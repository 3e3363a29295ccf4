"""Example 1 of the workflow: a Bayesian linear regression.

    alpha, beta ~ Normal(0, 10),  epsilon ~ HalfCauchy(5)
    y ~ Normal(alpha + beta * x, epsilon)

Run: python examples/linear_regression.py [--out FOLDER] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import numpyro
import numpyro.distributions as dist

import bhmjax as bj

TRUTH = {"alpha": 0.5, "beta": 2.0, "epsilon": 1.0}


def model(x, y=None):
    """Step 1: the likelihood, the priors and the parameters."""
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0))
    epsilon = numpyro.sample("epsilon", dist.HalfCauchy(5.0))
    numpyro.sample("y", dist.Normal(alpha + beta * x, epsilon), obs=y)


def simulate(n: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = TRUTH["alpha"] + TRUTH["beta"] * x + rng.normal(scale=TRUTH["epsilon"], size=n)
    return {"x": x, "y": y}


def with_truth(fit: bj.Fit, truth: dict[str, float]):
    """The summary table with the simulated true values beside the estimates."""
    table = fit.summary()
    table.insert(0, "true", [truth.get(name, np.nan) for name in table.index])
    return table


def main(out: Path, quick: bool = False, progress: bool = True) -> bj.Fit:
    size = dict(warmup=200, draws=200) if quick else dict(warmup=1000, draws=1000)
    fit = bj.sample(model, simulate(), chains=4, seed=0, progress=progress, **size)  # step 2
    print("\nExample 1: Bayesian linear regression")
    print(with_truth(fit, TRUTH).round(3).to_string())  # step 3: estimates and convergence
    fit.diagnose()
    out.mkdir(parents=True, exist_ok=True)
    fit.plot_trace(path=out / "linear_regression_trace.png")
    print(f"trace plot: {out / 'linear_regression_trace.png'}")
    return fit


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--quick", action="store_true", help="few draws, for a smoke test")
    args = parser.parse_args()
    main(args.out, args.quick)
