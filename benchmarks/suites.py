"""The benchmark suites: which cells run, at what size, with which sampler settings.

A suite is a name, sampler settings shared by its cells and a list of cells. A cell
is a plain dict naming its ``block`` (what question it answers) and everything that
shapes the run, so the JSON row can be traced back to it:

* ``regimes``: simulated data, one row per (model, G, rows per group, noise ratio,
  parameterization); the phase diagram of which parameterization wins where, with
  "marginalized" (gaussian group effects integrated out) beside the sampled forms.
* ``real``: eight schools (hand-written CP/NCP/auto, known sigma) and radon (formula).
* ``handwritten``: varying intercepts and slopes written as a NumPyro function
  (``benchmarks/handwritten.py``, unequal group sizes): the centered function, the
  non-centered function and auto (the centered function, ``parameterization="auto"``).
* ``chain_methods``: sequential, vectorized and parallel (over devices) on one model.
* ``precision``: float32 against float64 (``bj.sample(x64=True)``).
* ``scaling``: time per gradient and per effective draw against G and N.
* ``samplers``: NUTS against ChEES-HMC (hundreds of lockstep chains) on one model.
* ``baselines``: hand-written NumPyro (overhead ratio), PyMC and nutpie on the same
  models, priors and draws.

Noise ratio = noise sd / group sd. For the Bernoulli-logit model the noise is the
latent logistic noise (sd pi/sqrt(3)), so the group sd is (pi/sqrt(3)) / ratio.
"""

from __future__ import annotations

import itertools
from typing import Any

# "marginalized": gaussian group effects integrated out (bj.Model.fit(marginalize=True)), not sampled.
PARAMETERIZATIONS = ("centered", "noncentered", "auto", "marginalized")

# Sampler settings per suite (a cell may override any of them).
SETTINGS = {
    "smoke": dict(chains=2, warmup=150, draws=150, seeds=(0,), chain_method="sequential"),
    "quick": dict(chains=2, warmup=300, draws=300, seeds=(0,), chain_method="sequential"),
    "full": dict(chains=4, warmup=1000, draws=1000, seeds=(0, 1, 2), chain_method="auto"),
    "gpu": dict(chains=4, warmup=400, draws=400, seeds=(0,), chain_method="vectorized"),
}


def _regimes(models, groups, rows, noise, params=PARAMETERIZATIONS, **extra) -> list[dict]:
    return [dict(block="regimes", model=m, G=g, rows=r, noise_ratio=s, parameterization=p, **extra)
            for m, g, r, s, p in itertools.product(models, groups, rows, noise, params)]


def _real(models, params=PARAMETERIZATIONS, **extra) -> list[dict]:
    return [dict(block="real", model=m, parameterization=p, **extra) for m in models for p in params]


def _handwritten(groups, rows, params=("centered", "noncentered", "auto"), **extra) -> list[dict]:
    """Hand-written varying slopes, G groups of ``rows`` rows on average (sizes vary widely); a
    NumPyro function has no "marginalized" form (it would call bj.marginal_normal_groups itself)."""
    return [dict(block="handwritten", model="slopes_handwritten", G=g, rows=r, noise_ratio=2.0,
                 parameterization=p, **extra) for g, r in itertools.product(groups, rows) for p in params]


def _chain_methods(model, methods=("sequential", "vectorized", "parallel"), **cell) -> list[dict]:
    return [dict(block="chain_methods", model=model, chain_method=c, seeds=(0,), **cell) for c in methods]


def _precision(model, **cell) -> list[dict]:
    return [dict(block="precision", model=model, x64=x, seeds=(0,), **cell) for x in (False, True)]


def _scaling(groups, rows, model="intercepts", parameterization="noncentered", **extra) -> list[dict]:
    return [dict(block="scaling", model=model, G=g, rows=r, noise_ratio=1.0,
                 parameterization=parameterization, seeds=(0,), **extra)
            for g, r in itertools.product(groups, rows)]


def _samplers(model, samplers=("nuts", "chees"), sampler_chains=256, **cell) -> list[dict]:
    """NUTS against ChEES-HMC (``sampler_chains`` lockstep chains) on one model: ESS per second and per gradient."""
    return [dict(block="samplers", model=model, sampler=s, seeds=(0,), **cell,
                 **({"sampler_chains": sampler_chains} if s != "nuts" else {})) for s in samplers]


def _baselines(models, samplers=("numpyro", "pymc", "nutpie"), **extra) -> list[dict]:
    return [dict(block="baselines", model=m, samplers=tuple(samplers), seeds=(0,), **extra) for m in models]


def smoke() -> list[dict]:
    """The tiny grid of the test: the two directions known to hold with few draws."""
    return (_real(["eight_schools"], params=("centered", "noncentered"))
            + _regimes(["intercepts"], [8], [1000], [0.1], params=("centered", "noncentered", "marginalized")))


def quick() -> list[dict]:
    """About ten minutes on a 2-core laptop CPU (cold compiles included: ~20 programs)."""
    return (
        _real(["eight_schools"], seeds=(0, 1, 2))
        + _real(["radon_mn"])
        + _regimes(["intercepts"], [8], [1, 10, 100, 1000], [0.1, 1.0, 10.0], warmup=200, draws=200)
        + _regimes(["bernoulli"], [20], [20], [1.0])
        + _handwritten([200], [25])
        + _chain_methods("eight_schools", parameterization="noncentered")
        + _precision("eight_schools", parameterization="noncentered")
        + _scaling([100, 1000, 10_000], [5], warmup=100, draws=100)
        + _samplers("intercepts", G=8, rows=10, noise_ratio=3.0, parameterization="noncentered",
                    sampler_chains=128, draws=100)
        + _baselines(["eight_schools_ncp"])
    )


def full() -> list[dict]:
    """The whole grid (hours on a CPU)."""
    return (
        _real(["eight_schools", "radon_mn", "radon_all"])
        + _regimes(["intercepts"], [8, 100, 1000], [1, 10, 100, 1000], [0.1, 0.3, 1.0, 3.0, 10.0])
        + _regimes(["slopes", "bernoulli"], [8, 100, 1000], [1, 10, 100], [0.3, 1.0, 3.0])
        + _regimes(["intercepts"], [10_000, 100_000], [10], [1.0])
        + _handwritten([200, 2000], [50])
        + _chain_methods("eight_schools", parameterization="noncentered")
        + _chain_methods("intercepts", G=1000, rows=10, noise_ratio=1.0, parameterization="noncentered")
        + _precision("eight_schools", parameterization="noncentered")
        + _precision("intercepts", G=1000, rows=10, noise_ratio=1.0, parameterization="noncentered")
        + _scaling([100, 1000, 10_000, 100_000], [10])
        + _scaling([1000], [1, 10, 100, 1000])
        + _baselines(["eight_schools_ncp", "intercepts_G2000_N100000"])
    )


def gpu() -> list[dict]:
    """Sized for one H100/H200 in about 10 minutes: large G, vectorized chains, few compiles; ends with
    issue #17's 100,000-group models (not yet run on a GPU: no device was lent to this work)."""
    return (
        _real(["eight_schools", "radon_all"], params=("centered", "noncentered"))
        + _regimes(["intercepts"], [10_000], [1, 10, 100], [0.1, 1.0, 10.0], params=("centered", "noncentered"))
        + _regimes(["bernoulli"], [10_000], [10], [1.0], params=("centered", "noncentered"))
        + _chain_methods("intercepts", methods=("vectorized", "parallel"), G=10_000, rows=10,
                         noise_ratio=1.0, parameterization="noncentered")
        + _precision("intercepts", G=10_000, rows=10, noise_ratio=1.0, parameterization="noncentered")
        + _scaling([1000, 10_000, 100_000], [10])
        + _samplers("intercepts", G=10_000, rows=10, noise_ratio=1.0, parameterization="noncentered",
                    sampler_chains=1024, draws=100)
        + _baselines(["intercepts_G2000_N100000"], samplers=("numpyro",))
        # issue #17's model: (1 + x | store), 100,000 groups x 10 rows, the issue's 4 x 1,000 + 1,000
        + _regimes(["slopes"], [100_000], [10], [1.0], params=("marginalized", "centered"), warmup=1000, draws=1000)
        + _regimes(["bernoulli"], [100_000], [10], [1.0], params=("noncentered",))
    )


SUITES = {"smoke": smoke, "quick": quick, "full": full, "gpu": gpu}


def cells(suite: str) -> list[dict[str, Any]]:
    """The cells of ``suite`` with the suite's settings filled in where a cell has none."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; suites are {sorted(SUITES)}")
    out = []
    for cell in SUITES[suite]():
        full_cell = {**SETTINGS[suite], **cell}
        full_cell.setdefault("parameterization", "noncentered")
        full_cell.setdefault("x64", False)
        full_cell["seeds"] = list(full_cell["seeds"])
        out.append(full_cell)
    return out


def describe(cell: dict) -> str:
    """A one-line label of a cell for the terminal and the report."""
    parts = [cell["block"], cell["model"]]
    if "G" in cell:
        parts.append(f"G={cell['G']} rows={cell['rows']} noise={cell['noise_ratio']:g}")
    if cell["block"] != "baselines":
        parts.append(cell["parameterization"])
    if cell["block"] == "chain_methods":
        parts.append(cell["chain_method"])
    if cell["block"] == "samplers":
        parts.append(cell["sampler"] + (f" x{cell['sampler_chains']}" if "sampler_chains" in cell else ""))
    if cell.get("x64"):
        parts.append("x64")
    return " ".join(parts)
