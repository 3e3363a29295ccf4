"""fit.diagnose(): flags broken fits with the right advice, passes good ones."""

import json

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bhmjax as bj
from bhmjax.diagnose import diagnose, group_scales, group_terms
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
    assert group_terms(fit) == {"eta": ("tau", "noncentered")}
    fit.model = None  # names alone: one scale-like site is a guess of unknown form, two are no guess
    assert group_terms(fit) == {"eta": ("tau", None)}
    fit.draws["sigma_g"] = draws["tau"] + 1
    assert group_scales(fit) == {}


# ------------------------------------------------- advice fits the fit's parameterization (#15, item 4)

TINY = dict(chains=2, warmup=50, draws=50, seed=0, progress=False)


def grouped_means(group, num_groups, y=None, centered=True):
    """The demo's grouped means (examples/grouped_means.py): the effect is a deterministic site."""
    mu = numpyro.sample("mu_alpha", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma_alpha", dist.HalfCauchy(5.0))
    with numpyro.plate("groups", num_groups):
        if centered:
            alpha = numpyro.sample("alpha", dist.Normal(mu, sigma))
        else:
            alpha = numpyro.deterministic("alpha", mu + sigma * numpyro.sample("alpha_z", dist.Normal(0.0, 1.0)))
    numpyro.sample("y", dist.Normal(alpha[group], 1.0), obs=y)


def regression(x, y=None):
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    numpyro.sample("y", dist.Normal(b[0] + b[1] * x, sigma), obs=y)


def _diverging_at_small(fit, scale: str):
    """The fit's draws marked divergent where ``scale`` is in its lowest tenth (the neck of a funnel)."""
    x = np.asarray(fit.draws[scale], dtype=float).reshape(*fit.stats["diverging"].shape, -1).mean(axis=-1)
    fit.stats = {**fit.stats, "diverging": x < np.quantile(x, 0.1)}
    return next(p for p in diagnose(fit).problems if p.check == "divergences").advice


@pytest.fixture(scope="module")
def grouped_data():
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(6), 5)
    return {"group": group, "num_groups": 6, "y": rng.normal(rng.normal(1.0, 2.0, 6)[group], 1.0)}


@pytest.fixture(scope="module")
def grouped_frame(grouped_data):
    import pandas as pd

    return pd.DataFrame({"y": grouped_data["y"], "g": grouped_data["group"]})


def test_noncentered_numpyro_fit_is_not_told_to_go_noncentered(grouped_data):
    fit = bj.sample(grouped_means, {**grouped_data, "centered": False}, **TINY)
    assert group_terms(fit) == {"alpha": ("sigma_alpha", "noncentered")}
    advice = _diverging_at_small(fit, "sigma_alpha")
    assert "'sigma_alpha', the group scale of 'alpha'" in advice
    assert "already non-centered" in advice and "try the centered parameterization" in advice
    assert "try the non-centered" not in advice and "target_accept" in advice


def test_centered_numpyro_fit_is_told_to_go_noncentered(grouped_data):
    fit = bj.sample(grouped_means, {**grouped_data, "centered": True}, **TINY)
    assert group_terms(fit) == {"alpha": ("sigma_alpha", "centered")}
    advice = _diverging_at_small(fit, "sigma_alpha")
    assert "these group effects are centered: try the non-centered parameterization" in advice


@pytest.mark.parametrize("form, cure", [("noncentered", "parameterization='centered'"),
                                        ("centered", "parameterization='noncentered'")])
def test_formula_fit_advice_names_the_other_parameterization(grouped_frame, form, cure):
    fit = bj.Model("y ~ 1 + (1 | g)", grouped_frame, parameterization=form).fit(**TINY)
    assert group_terms(fit) == {"r_g": ("sd_g", form)}
    advice = _diverging_at_small(fit, "sd_g")
    assert "'sd_g', the group scale of 'r_g'" in advice and cure in advice
    assert ("try the non-centered" in advice) == (form == "centered")


@pytest.mark.parametrize("formula", [True, False])
def test_residual_sigma_is_not_a_group_scale(formula):
    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    data = {"x": x, "y": 1.0 + x + rng.normal(size=40)}
    if formula:
        import pandas as pd

        fit = bj.Model("y ~ 1 + x", pd.DataFrame(data)).fit(**TINY)
    else:
        fit = bj.sample(regression, data, **TINY)
    assert group_terms(fit) == {}  # b is not an effect of sigma: sigma is the scale of the observed y
    advice = _diverging_at_small(fit, "sigma")
    assert "group scale" not in advice and "'sigma'" not in advice and "funnel" not in advice
    assert "first. Raise target_accept above 0.8 (e.g. 0.95 or 0.99); " in advice
    assert ("non-centered" in advice) == (not formula)  # a NumPyro model may hide group effects


def test_data_far_from_zero_are_advised_to_be_centred():
    rng = np.random.default_rng(0)
    stuck = rng.normal(size=(4, 1, 400)) + np.arange(4)[:, None, None]  # chains far apart: r_hat fails
    fit = _fake({"mu": stuck[:, 0]})
    fit.data = {"y": 1e6 + rng.normal(size=50), "group": np.arange(50) % 5, "flag": np.ones(50, bool)}
    report = diagnose(fit)
    far = next(p for p in report.problems if p.check == "data_location")
    assert "the data sit far from zero: 'y' (mean 1e+06, sd" in far.message
    assert far.advice.startswith("centre them") and "'group'" not in far.message
    fit.draws = {"mu": rng.normal(size=(4, 400))}  # a converged fit is not nagged about its data
    assert diagnose(fit).ok


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
