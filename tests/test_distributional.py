"""Distributional regression: auxiliary parameters with formulas of their own (brms' ``bf(y ~ ., sigma ~ .)``).

* the y site's parameters are the inverse links of their own linear predictors, row by row
  (sigma = exp(...), zi = logistic(...)), computed here by hand from the traced sites;
* brms' site names in ArviZ's rows: ``sigma_Intercept``, ``b_sigma`` (rows ``b_sigma[x]``),
  ``sd_g__sigma`` (rows ``sd_g__sigma[Intercept]``), ``r_g__sigma``; priors and parameterizations keyed alike;
* ``fit.predict(..., dpar=...)`` gives each parameter per row and its link-scale predictor;
* recovery (slow): a heteroscedastic gaussian with ``sigma ~ x + (1 | g)`` recovers its
  hyperparameters within 3.29 posterior sd and covers the group effects of sigma.
"""

from __future__ import annotations

import numpy as np
import numpyro.distributions as dist
import pandas as pd
import pytest
from numpyro import handlers
from scipy import special

import bhmjax as bj
from bhmjax._src.naming import flat_names
from tests._prior_fit import prior_fit


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 160
    frame = pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n), "g": rng.integers(0, 8, n)})
    frame["y"] = 1.0 + 0.5 * frame.x + rng.normal(size=n) * np.exp(0.3 * frame.z)
    frame["k"] = rng.poisson(2.0, n) * (rng.random(n) > 0.3)
    return frame


def _trace(model, seed=0):
    return handlers.trace(handlers.seed(model.numpyro_model, seed)).get_trace(**model.data)


def test_sigma_is_the_exp_of_its_own_predictor(df):
    model = bj.Model("y ~ x + (1 | g)", df, sigma="~ z + (1 | g)")
    tr = _trace(model)
    assert "sigma" not in tr and {"sigma_Intercept", "b_sigma", "sd_g__sigma", "r_g__sigma"} <= set(tr)
    codes = model.data["codes_1"]
    eta = (tr["sigma_Intercept"]["value"] + df.z.to_numpy() * tr["b_sigma"]["value"][0]
           + tr["r_g__sigma"]["value"][codes, 0])
    np.testing.assert_allclose(np.asarray(tr["y"]["fn"].scale), np.exp(np.asarray(eta)), rtol=1e-5)
    # the mean's predictor is untouched by sigma's terms
    mu = tr["Intercept"]["value"] + df.x.to_numpy() * tr["b"]["value"][0] + tr["r_g"]["value"][model.data["codes_0"], 0]
    np.testing.assert_allclose(np.asarray(tr["y"]["fn"].loc), np.asarray(mu), rtol=1e-4, atol=1e-4)


def test_zero_inflation_gets_the_logit_of_its_predictor(df):
    model = bj.Model("k ~ x", df, family="zero_inflated_poisson", zi="zi ~ z")
    tr = _trace(model, seed=3)
    eta = tr["zi_Intercept"]["value"] + df.z.to_numpy() * tr["b_zi"]["value"][0]
    np.testing.assert_allclose(np.asarray(tr["y"]["fn"].gate), special.expit(np.asarray(eta)), rtol=1e-5)


def test_names_data_and_priors(df):
    model = bj.Model("y ~ x + (1 + x | g)", df, sigma="~ z + (1 + z | g)")
    names, coords, dims = model.names()
    assert flat_names("b_sigma", (1,), coords, dims) == ["b_sigma[z]"] and names["sigma_Intercept_c"] == [None]
    assert flat_names("sd_g__sigma", (2,), coords, dims) == ["sd_g__sigma[Intercept]", "sd_g__sigma[z]"]
    assert flat_names("sd_g", (2,), coords, dims) == ["sd_g[Intercept]", "sd_g[x]"]
    assert names["cor_g__sigma"][1] == "cor_g__sigma[Intercept, z]"
    assert flat_names("r_g__sigma", (8, 2), coords, dims)[1] == "r_g__sigma[0, z]"
    data = model.data
    assert data["X_sigma"].shape == (len(df), 1) and data["G_1"] == 8 and data["Z_1"].shape == (len(df), 2)
    loc = dict(model.spec.priors["sigma_Intercept"].args)["loc"]  # log sd(y): sigma's scale
    np.testing.assert_allclose(loc, np.log(df.y.std(ddof=0)))
    assert "sigma" not in model.spec.priors
    text = model.describe(verbose=False)
    assert "sigma (link: log), predicted per row" in text and "sd_g__sigma[z]" in text and "  sigma: ~ z" in text


def test_prior_keys_of_a_predicted_parameter(df):
    model = bj.Model("y ~ x + (1 | g)", df, sigma="~ z + (1 | g)", priors={
        "sigma_Intercept": dist.Normal(0, 1), "b_sigma_z": dist.Normal(0, 0.5), "sd_g__sigma": dist.HalfNormal(0.5),
        "sd": dist.HalfNormal(2.0)})
    p = model.spec.priors
    assert p["sigma_Intercept"].kind == "user" and p["b_sigma"].parts[0][1].kind == "user"
    assert p["sd_g__sigma"].parts[0][1].dist.scale == 0.5 and p["sd_g"].parts[0][1].dist.scale == 2.0
    with pytest.raises(ValueError, match="no parameter of this model is named 'sigma'.*'b_sigma_z'"):
        bj.Model("y ~ x", df, sigma="~ z", priors={"sigma": dist.HalfNormal(1.0)})


def test_parameterization_per_predictor(df):
    model = bj.Model("y ~ x + (1 | g)", df, sigma="~ (1 | g)", parameterization={"g__sigma": "centered"})
    assert [g.centeredness for g in model.spec.structure.groups] == [(0.0,)]
    assert model.spec.structure.dpars[0].groups[0].centeredness == (1.0,)
    assert model.centeredness == {"g": (0.0,), "g__sigma": (1.0,)}


@pytest.mark.parametrize("kwargs, error, match", [
    ({"sigma": "phi ~ z"}, ValueError, "the formula of sigma has the left-hand side 'phi'"),
    ({"sigma": 3}, TypeError, "the formula of sigma must be a string"),
    ({"prior": {}}, TypeError, "the gaussian family has no parameter 'prior' .*did you mean 'priors'"),
    ({"phi": "~ z"}, TypeError, "its auxiliary parameters are \\['sigma'\\]"),
    ({"sigma": "~ w"}, ValueError, "column 'w' named in the formula is not in the data"),
])
def test_dpar_errors(df, kwargs, error, match):
    with pytest.raises(error, match=match):
        bj.Model("y ~ x", df, **kwargs)


def test_predict_each_parameter(df):
    model = bj.Model("y ~ x + (1 | g)", df, sigma="~ z")
    fit = prior_fit(model, draws=20)
    new = pd.DataFrame({"x": [0.0, 1.0], "z": [-1.0, 2.0], "g": [0, 1]})
    eta = fit.predict(new, kind="linear_predictor", dpar="sigma").draws
    want = fit.draws["sigma_Intercept"][..., None] + fit.draws["b_sigma"][..., 0:1] * new.z.to_numpy()
    np.testing.assert_allclose(eta, want, rtol=1e-5)
    np.testing.assert_allclose(fit.predict(new, kind="mean", dpar="sigma").draws, np.exp(eta), rtol=1e-5)
    mu = fit.predict(new, kind="mean", dpar="mu", groups="population").draws
    np.testing.assert_allclose(mu, fit.draws["Intercept"][..., None] + fit.draws["b"] * new.x.to_numpy(), rtol=1e-5)
    assert fit.predict(new, kind="response").draws.shape == (2, 20, 2)
    assert fit.log_likelihood().shape == (2, 20, len(df))


def test_categorical_predictors_are_per_level():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=90), "g": rng.integers(0, 5, 90),
                          "y": rng.choice(["lo", "mid", "hi"], 90)})
    model = bj.Model("y ~ x + (1 | g)", frame, family="categorical")
    fit = prior_fit(model, draws=10)
    logits = fit.predict(frame.iloc[:3], kind="linear_predictor").draws
    assert logits.shape == (2, 10, 3, 3) and (logits[..., 0] == 0).all()  # "hi" is the reference
    probs = fit.predict(frame.iloc[:3], kind="mean").draws
    np.testing.assert_allclose(probs, special.softmax(logits, axis=-1), rtol=1e-5)
    mid = fit.predict(frame.iloc[:3], kind="mean", dpar="mumid").draws
    np.testing.assert_allclose(mid, probs[..., 2], rtol=1e-5)


def test_program_size_is_flat_in_the_number_of_groups():
    """No loop over groups in any predictor: the log density's program is the same size for 5 and 500 groups."""
    import jax
    from numpyro.infer.util import log_density

    sizes = []
    for groups in (5, 500):
        rng = np.random.default_rng(groups)
        frame = pd.DataFrame({"x": rng.normal(size=1000), "g": np.arange(1000) % groups,
                              "y": rng.choice(["a", "b", "c"], 1000)})
        model = bj.Model("y ~ x + (1 + x | g)", frame, family="categorical")
        data = model.data
        static = {k: v for k, v in data.items() if isinstance(v, int)}
        arrays = {k: v for k, v in data.items() if k not in static}
        tr = _trace(model)
        params = {k: v["value"] for k, v in tr.items() if v["type"] == "sample" and not v["is_observed"]}
        jaxpr = jax.make_jaxpr(lambda p, a: log_density(model.numpyro_model, (), {**a, **static}, p)[0])(
            params, arrays)
        sizes.append(len(jaxpr.eqns))
    assert sizes[0] == sizes[1], sizes


@pytest.mark.slow
def test_heteroscedastic_recovery():
    rng = np.random.default_rng(2)
    groups, per = 20, 20
    g = np.repeat(np.arange(groups), per)
    x = rng.normal(size=g.size)
    r_mu, r_sigma = rng.normal(0, 0.6, groups), rng.normal(0, 0.4, groups)
    sigma = np.exp(-0.3 + 0.5 * x + r_sigma[g])
    y = 1.0 + 0.7 * x + r_mu[g] + rng.normal(size=g.size) * sigma
    frame = pd.DataFrame({"y": y, "x": x, "g": g})
    fit = bj.Model("y ~ x + (1 | g)", frame, sigma="~ x + (1 | g)").fit(
        chains=2, warmup=400, draws=400, progress=False, chain_method="sequential", seed=3)
    table = fit.summary()
    assert table["r_hat"].max() < 1.05 and int(fit.stats["diverging"].sum()) <= 2
    truth = pd.Series({"Intercept": 1.0, "b[x]": 0.7, "sd_g[Intercept]": 0.6, "sigma_Intercept": -0.3,
                       "b_sigma[x]": 0.5, "sd_g__sigma[Intercept]": 0.4})
    z = (table.loc[truth.index, "mean"] - truth).abs() / table.loc[truth.index, "sd"]
    assert (z < 3.29).all(), z
    draws = fit.draws["r_g__sigma"][..., 0].reshape(-1, groups)
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    assert 0.6 <= np.mean((lo <= r_sigma) & (r_sigma <= hi)) <= 1.0
