"""Example 2 of the workflow: grouped data with partial pooling of the group means.

    mu_alpha ~ Normal(0, 10),  sigma_alpha ~ HalfCauchy(5)
    alpha_g ~ Normal(mu_alpha, sigma_alpha)        one vectorized site for all groups
    y ~ Normal(alpha[group], 1)

fitted in the centered and the non-centered parameterization.

Run: python examples/grouped_means.py [--out FOLDER] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import numpyro
import numpyro.distributions as dist

import bhmjax as bj

NUM_GROUPS = 8


def model(group, num_groups: int, y=None, centered: bool = True):
    """Group means gathered by index: one sample site, never a loop over groups."""
    mu_alpha = numpyro.sample("mu_alpha", dist.Normal(0.0, 10.0))
    sigma_alpha = numpyro.sample("sigma_alpha", dist.HalfCauchy(5.0))
    with numpyro.plate("groups", num_groups):
        if centered:
            alpha = numpyro.sample("alpha", dist.Normal(mu_alpha, sigma_alpha))
        else:
            alpha_z = numpyro.sample("alpha_z", dist.Normal(0.0, 1.0))
            alpha = numpyro.deterministic("alpha", mu_alpha + sigma_alpha * alpha_z)
    numpyro.sample("y", dist.Normal(alpha[group], 1.0), obs=y)


def simulate(rows_per_group: int = 5, seed: int = 1):
    """Group labels are strings, encoded to codes; the labels name the parameters."""
    rng = np.random.default_rng(seed)
    truth = {"mu_alpha": 1.0, "sigma_alpha": 2.0}
    alpha = rng.normal(truth["mu_alpha"], truth["sigma_alpha"], NUM_GROUPS)
    labels = np.repeat([f"g{g}" for g in range(NUM_GROUPS)], rows_per_group)
    groups = bj.encode_groups(labels, name="group")
    y = rng.normal(alpha[groups.codes], 1.0)
    truth.update({f"alpha[{label}]": a for label, a in zip(groups.labels, alpha)})
    return groups, y, truth


def main(out: Path, quick: bool = False, progress: bool = True) -> dict[str, bj.Fit]:
    from linear_regression import with_truth

    groups, y, truth = simulate()
    data = {"group": groups.codes, "num_groups": groups.num_groups, "y": y}
    size = dict(warmup=300, draws=300) if quick else dict(warmup=1000, draws=1000)
    labels = dict(coords={"group": groups.labels}, dims={"alpha": ["group"], "alpha_z": ["group"]})
    fits = {}
    out.mkdir(parents=True, exist_ok=True)
    for name, centered in (("centered", True), ("noncentered", False)):
        fit = bj.sample(model, {**data, "centered": centered}, chains=4, seed=0, progress=progress,
                        **labels, **size)
        print(f"\nExample 2: grouped means, {name}")
        print(with_truth(fit, truth).drop(index=[n for n in fit.param_names() if "alpha_z" in n])
              .round(3).to_string())
        fit.diagnose()
        path = out / f"grouped_means_{name}_trace.png"
        fit.plot_trace(var_names=["mu_alpha", "sigma_alpha"], path=path)
        print(f"trace plot: {path}")
        fits[name] = fit
    return fits


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--quick", action="store_true", help="few draws, for a smoke test")
    args = parser.parse_args()
    main(args.out, args.quick)
