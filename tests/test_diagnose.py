"""fit.diagnose(): flags broken fits with the right advice, passes good ones."""

import json

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bhmjax as bj
from bhmjax.diagnose import diagnose, group_scales
from bhmjax.fit import Fit

from ._models import eight_schools_centered as centered  # noqa: E402
SCHOOLS = [f"school_{i}" for i in range(8)]


def noncentered(J, y, sigma):
    mu = numpyro.sample("mu", dist.Normal(0, 5))
    tau = numpyro.sample("tau", dist.HalfCauchy(5))
    with numpyro.plate("J", J):
        eta = numpyro.sample("eta", dist.Normal(0, 1))
        numpyro.sample("y", dist.Normal(mu + tau * eta, sigma), obs=y)


def normal(y):
    mu = numpyro.sample("mu", dist.Normal(0, 100))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5))
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


@pytest.fixture(scope="module")
def schools(eight_schools):
    return eight_schools


@pytest.fixture(scope="module")
def broken(schools):
    """Centered eight schools with 20 warmup steps: divergences in the funnel of tau."""
    return bj.sample(centered, schools, chains=4, warmup=20, draws=200, seed=1, progress=False,
                     coords={"school": SCHOOLS}, dims={"theta": ["school"]})


@pytest.fixture(scope="module")
def y_normal():
    return np.random.default_rng(0).normal(3.0, 1.0, size=50)


@pytest.fixture(scope="module")
def good(y_normal):
    """A well-conditioned model with enough warmup: nothing to flag, whatever the chain method."""
    return bj.sample(normal, {"y": y_normal}, chains=4, warmup=300, draws=500, seed=0, progress=False)


def test_broken_centered_fit_is_flagged_with_funnel_advice(broken):
    report = broken.diagnose(verbose=False)
    assert not report.ok and not report
    checks = {p.check for p in report.problems}
    assert "divergences" in checks
    assert report.divergences.shape == (4,) and report.divergences.sum() > 0
    assert report.divergence_share == pytest.approx(report.divergences.sum() / 800)
    div = next(p for p in report.problems if p.check == "divergences")
    assert "'tau'" in div.advice and "non-centered" in div.advice and "target_accept" in div.advice
    assert "Warmup was only 20 steps" in div.advice
    assert checks & {"r_hat", "ess"}


def test_chains_started_apart_without_warmup_are_flagged(y_normal):
    fit = bj.sample(normal, {"y": y_normal}, chains=4, warmup=1, draws=100, seed=1, progress=False)
    report = diagnose(fit)
    assert report.max_rhat > 1.1
    assert set(report.rhat_over) == {"mu", "sigma"}
    assert set(report.ess_under) == {"mu", "sigma"}
    assert {"r_hat", "ess"} <= {p.check for p in report.problems}


def test_good_fit_passes(good, capsys):
    report = good.diagnose()
    out = capsys.readouterr().out
    assert report.ok, str(report)
    assert "converged: no problems found" in out and "E-BFMI per chain" in out and "step size" in out
    assert report.max_rhat < 1.01 and report.min_ess_bulk >= 400 and report.divergences.sum() == 0
    assert np.all(report.ebfmi > 0.3) and report.step_size.shape == (4,)
    assert report.tree_depth_saturation == 0.0
    d = report.to_dict()
    assert d["ok"] is True and len(d["step_size"]) == 4 and json.dumps(d)


def test_report_prints_every_problem_with_advice(broken):
    text = str(diagnose(broken))
    assert text.startswith("Diagnostics (4 chains x 200 draws): NOT converged")
    for line in ("divergences", "max r_hat", "min ess bulk/tail", "E-BFMI per chain", "tree depth at max",
                 "step size"):
        assert line in text
    assert text.count("advice:") == len(diagnose(broken).problems)


def test_group_scales_from_model_and_names(broken, schools):
    assert group_scales(broken) == {"theta": "tau"}
    rng = np.random.default_rng(0)
    draws = {"mu": rng.normal(size=(2, 5)), "tau": rng.random((2, 5)) + 0.5, "eta": rng.normal(size=(2, 5, 8))}
    fit = _fake(draws, chains=2, n=5)
    fit.model, fit.data = noncentered, schools
    assert group_scales(fit) == {"eta": "tau"}  # non-centered: no Normal(., tau) site, found by name
    fit.draws["sigma_g"] = draws["tau"] + 1  # two scale-like names: no guess
    assert group_scales(fit) == {}


# ----------------------------------------------------------------------- synthetic fits


def _fake(draws: dict, *, diverging=None, energy=None, depth=None, chains=4, n=400, **settings) -> Fit:
    rng = np.random.default_rng(3)
    stats = {
        "diverging": np.zeros((chains, n), bool) if diverging is None else diverging,
        "energy": rng.normal(size=(chains, n)) if energy is None else energy,
        "tree_depth": np.full((chains, n), 3) if depth is None else depth,
        "step_size": np.full((chains, n), 0.5), "num_steps": np.full((chains, n), 7),
        "accept_prob": np.full((chains, n), 0.8), "potential_energy": rng.normal(size=(chains, n)),
    }
    return Fit(draws=draws, stats=stats, timings={}, num_grad_evals={},
               settings={"max_tree_depth": 10, "warmup": 1000, **settings})


def test_low_ebfmi_and_tree_depth_saturation_are_flagged():
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=(4, 400)), axis=1)  # energy of a slow random walk: E-BFMI ~ 0
    depth = np.full((4, 400), 10)
    report = diagnose(_fake({"a": rng.normal(size=(4, 400))}, energy=walk, depth=depth))
    checks = {p.check: p for p in report.problems}
    assert np.all(report.ebfmi < 0.3) and "chain(s) [0, 1, 2, 3]" in checks["e_bfmi"].message
    assert report.tree_depth_saturation == 1.0 and "max_tree_depth" in checks["tree_depth"].advice


def test_constant_parameters_are_not_flagged_but_nan_draws_are():
    rng = np.random.default_rng(1)
    fixed = _fake({"a": rng.normal(size=(4, 400)), "one": np.ones((4, 400))})
    assert diagnose(fixed).ok
    nan = rng.normal(size=(4, 400))
    nan[0, 5] = np.nan
    report = diagnose(_fake({"a": nan}))
    assert report.problems[0].check == "nonfinite" and "a" in report.problems[0].message


def test_single_chain_cannot_be_judged():
    report = diagnose(_fake({"a": np.random.default_rng(2).normal(size=(1, 400))}, chains=1))
    assert [p.check for p in report.problems] == ["chains"]


def test_bad_threshold_is_rejected():
    with pytest.raises(ValueError, match="rhat_threshold must be a non-negative number"):
        diagnose(_fake({"a": np.zeros((4, 400))}), rhat_threshold=-1)
