"""Gaussian formula models sample on a standardized response (issue #15, item 5).

A response near 1e6 with sd 1, or with sd 1e6 or 1e-6, fits like one near 0 with sd 1
(it did not: one Intercept value per chain in float32, R-hat 2 in float64); the
standardization is an exact reparameterization (the same log density at the same
user-scale values) and every stored site is on the user's scale.
"""

from __future__ import annotations

import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import log_density

import bhmjax as bj
from bhmjax._src import standardize
from bhmjax._src.models import build_model
from bhmjax._src.precision import x64_mode

from ._stats import mcse_z


def frame(loc=0.0, scale=1.0, seed=1, groups=20, rows=10):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), rows)
    x = rng.normal(size=g.size)
    y = loc + scale * (1.0 + 0.5 * x + rng.normal(0, 0.7, groups)[g] + rng.normal(size=g.size))
    return {"y": y, "x": x, "g": g}


def test_rescaled_keeps_values_and_density_and_scales_the_coordinate():
    base = dist.HalfNormal(2.0)
    d = standardize.Rescaled(base, 100.0)
    assert float(biject_to(d.support)(0.0)) == pytest.approx(100.0)  # value = 100 * exp(u)
    assert float(biject_to(d.support).inv(250.0)) == pytest.approx(np.log(2.5))
    assert float(d.log_prob(3.0)) == pytest.approx(float(base.log_prob(3.0)))
    vec = standardize.Rescaled(dist.Normal(0.0, 1.0).expand([2]).to_event(1), np.array([2.0, 4.0]))
    np.testing.assert_allclose(biject_to(vec.support)(np.ones(2)), [2.0, 4.0])
    assert float(biject_to(vec.support).log_abs_det_jacobian(np.ones(2), None)) == pytest.approx(np.log(8.0))


@pytest.mark.parametrize("priors", [None, {"Intercept": dist.Normal(1e6, 10.0), "sigma": dist.Exponential(1.0)}])
def test_standardized_model_has_the_same_log_density(priors):
    """At the same user-scale values, the model on standardized data (and its shifted intercept) has
    the log density of the model on the raw data: the posterior is unchanged (default and user priors)."""
    model = bj.Model("y ~ 1 + x + (1 + x | g)", frame(loc=1e6, scale=3.0), priors=priors)
    fn = build_model(model.spec.structure)
    with x64_mode(True):
        raw = model.model_data(x64=True)
        std, _ = model.sampling_data(x64=True, reduce=False, marginalize=False)
        loc = float(std["response:loc"])
        rng = np.random.default_rng(0)
        values = {"Intercept_c": 1e6 + 0.3, "b": np.array([0.4]), "sd_g": np.array([0.9, 0.5]),
                  "L_g": np.array([[1.0, 0.0], [0.3, np.sqrt(1 - 0.09)]]), "z_g": rng.normal(size=(20, 2)),
                  "sigma": 2.5}
        shifted = dict(values, Intercept_c=values["Intercept_c"] - loc)
        a, _ = log_density(fn, (), raw, values)
        b, _ = log_density(fn, (), std, shifted)
    assert abs(float(a) - float(b)) < 1e-6 * abs(float(a)), (float(a), float(b))


@pytest.mark.slow
@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("marginalize", ["auto", False])
def test_response_near_a_million_fits(x64, marginalize):
    """y near 1e6 with sd 1: converged, the Intercept's posterior mean within MCSE of the one fitted
    on y - 1e6 (plus 1e6), its draws resolved in float64 far below float32's 0.06 at 1e6."""
    shift = 1e6
    settings = dict(chains=2, warmup=400, draws=400, progress=False, seed=3, x64=x64, marginalize=marginalize)
    far = bj.Model("y ~ 1 + x + (1 | g)", frame(loc=shift)).fit(**settings)
    near = bj.Model("y ~ 1 + x + (1 | g)", frame(loc=0.0)).fit(**settings)
    table = far.summary(["Intercept", "b", "sd_g", "sigma"])
    # converged (the suite's bar, as in tests/_stats.assert_converged): 2 x 400 draws, R-hat 1.02 is noise
    assert table["r_hat"].max() < 1.05 and table["ess_bulk"].min() >= 100, table
    assert far.draws["Intercept"].dtype == np.float64
    assert len(np.unique(far.draws["Intercept"])) > 0.9 * far.draws["Intercept"].size
    for site in ("Intercept", "b", "sd_g", "sigma"):
        expected = near.draws[site].mean(axis=(0, 1)) + (shift if site == "Intercept" else 0.0)
        assert (mcse_z(far.draws[site].astype(np.float64), expected) < 5).all(), site


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_response_scale_does_not_decide_convergence(scale):
    """sd 1e6 or 1e-6: every site is the unit-scale fit's times the scale (in MCSE units)."""
    settings = dict(chains=2, warmup=400, draws=400, progress=False, seed=5, marginalize=False)
    scaled = bj.Model("y ~ 1 + x + (1 | g)", frame(scale=scale)).fit(**settings)
    unit = bj.Model("y ~ 1 + x + (1 | g)", frame()).fit(**settings)
    table = scaled.summary(["Intercept", "b", "sd_g", "sigma"])
    assert table["r_hat"].max() < 1.05 and table["ess_bulk"].min() > 100, table  # unstandardized: R-hat 2, ESS < 10
    for site in ("Intercept", "b", "sd_g", "sigma", "r_g"):
        z = mcse_z(scaled.draws[site].astype(np.float64) / scale, unit.draws[site].mean(axis=(0, 1)))
        assert np.median(z) < 2 and z.max() < 6, (site, z.max())


def test_settings_and_a_model_without_intercept():
    """Without an intercept nothing absorbs a shift: only the scales change."""
    data = frame(loc=5.0)
    model = bj.Model("y ~ 0 + x + (1 | g)", data)
    std, _ = model.sampling_data(reduce=False, marginalize=False)
    assert "response:loc" not in std and "scale:sigma" in std
    np.testing.assert_allclose(std["y"], data["y"].astype(np.float32))
    fit = bj.Model("y ~ 1 + (1 | g)", data).fit(chains=1, warmup=50, draws=20, progress=False)
    assert fit.settings["standardized"]["loc"] == pytest.approx(np.mean(data["y"]))
    assert fit.settings["standardized"]["scale"] == pytest.approx(np.std(data["y"]))
    assert "sampled on a standardized response" in model.describe(verbose=False)


def test_model_without_intercept_samples_on_scaled_coordinates():
    """No intercept: b and sigma are sampled through their rescaled bijections and the fit matches the
    closed-form least-squares answer (flat-ish priors, 400 rows), with nothing of the abstract trace left
    in the compiled program (it once was compiled for 4 more inputs than it was called with)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=400)
    data = {"x": x, "y": 1e3 * (2.0 * x + rng.normal(size=400))}
    model = bj.Model("y ~ 0 + x", data)
    std, _ = model.sampling_data(reduce=False, marginalize=False)
    assert "scale:b" in std and "scale:sigma" in std and "response:loc" not in std
    fit = model.fit(chains=2, warmup=300, draws=300, progress=False, seed=1)
    slope = float(x @ data["y"] / (x @ x))
    assert mcse_z(fit.draws["b"][..., 0].astype(np.float64), slope) < 4
    assert fit.summary(["b", "sigma"])["r_hat"].max() < 1.05
