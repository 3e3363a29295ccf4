"""Values, not shapes: predictions and log-likelihoods against independent formulas.

* Per family, on synthetic draws: the linear predictor is ``Intercept + x b + r[g]``
  computed here in NumPy; the mean is its inverse link (identity, logistic, exp); the
  pointwise log-likelihood is scipy's log density of the family; response draws have
  the mean and variance of the family's predictive distribution
  (``E[Var(y | theta)] + Var(E[y | theta])``), within 4.5 Monte Carlo standard errors.
* A reduced fit (sufficient statistics, or counts summed per cell) reports the
  log-likelihood of every original row: scipy's value from its draws, and NumPyro's
  (``bhmjax.io.pointwise_log_likelihood``) on the original rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import bhmjax as bj
from bhmjax.io import pointwise_log_likelihood
from tests.test_predict import fake_fit, family_data

FAMILIES = ["gaussian", "student_t", "bernoulli", "binomial", "poisson", "negative_binomial"]
NEW = pd.DataFrame({"x": [-1.2, 0.0, 1.5], "g": [0, 3, 4], "n": [4, 7, 12]})
Y_NEW = {"gaussian": [0.3, -1.2, 2.0], "student_t": [0.3, -4.0, 2.0], "bernoulli": [0, 1, 1],
         "binomial": [1, 3, 12], "poisson": [0, 2, 7], "negative_binomial": [0, 2, 7]}


def _formula(family: str) -> str:
    return "y | trials(n) ~ 1 + x + (1 | g)" if family == "binomial" else "y ~ 1 + x + (1 | g)"


def _eta(fit, rows: pd.DataFrame) -> np.ndarray:
    """(chains, draws, rows): Intercept + x b + r[g], in float64 from the fit's draws."""
    d = {k: np.asarray(v, np.float64) for k, v in fit.draws.items()}
    codes = [fit.spec.groups[0].encoding.labels.index(g) for g in rows["g"]]
    return d["Intercept"][..., None] + d["b"][..., :1] * rows["x"].to_numpy() + d["r_g"][:, :, codes, 0]


def _conditional(family: str, eta: np.ndarray, d: dict, n: np.ndarray):
    """(mean, variance, scipy distribution) of y given the draws, per (chain, draw, row)."""
    sigma, nu, phi = (d[k][..., None] if k in d else None for k in ("sigma", "nu", "phi"))
    if family == "gaussian":
        return eta, sigma ** 2 + 0 * eta, stats.norm(eta, sigma)
    if family == "student_t":
        return eta, sigma ** 2 * nu / (nu - 2) + 0 * eta, stats.t(df=nu, loc=eta, scale=sigma)
    if family == "bernoulli":
        p = special.expit(eta)
        return p, p * (1 - p), stats.bernoulli(p)
    if family == "binomial":
        p = special.expit(eta)
        return n * p, n * p * (1 - p), stats.binom(n, p)
    mu = np.exp(eta)
    if family == "poisson":
        return mu, mu, stats.poisson(mu)
    return mu, mu + mu ** 2 / phi, stats.nbinom(phi, phi / (phi + mu))


@pytest.fixture(scope="module", params=FAMILIES)
def family_fit(request):
    family = request.param
    model = bj.Model(_formula(family), family_data(family), family=family)
    return family, fake_fit(model, chains=2, draws=2000, seed=1)


def test_linear_predictor_and_mean_are_the_inverse_link(family_fit):
    family, fit = family_fit
    eta = _eta(fit, NEW)
    np.testing.assert_allclose(fit.predict(NEW, kind="linear_predictor").draws, eta, rtol=1e-5, atol=1e-5)
    per_trial = {"bernoulli": special.expit, "binomial": special.expit, "poisson": np.exp,
                 "negative_binomial": np.exp}.get(family, lambda e: e)(eta)
    np.testing.assert_allclose(fit.predict(NEW, kind="mean").draws, per_trial, rtol=1e-5, atol=1e-6)


def test_log_likelihood_is_scipys(family_fit):
    family, fit = family_fit
    rows = NEW.assign(y=Y_NEW[family])
    d = {k: np.asarray(v, np.float64) for k, v in fit.draws.items()}
    _, _, dist = _conditional(family, _eta(fit, rows), d, rows["n"].to_numpy())
    y = rows["y"].to_numpy()
    expected = dist.logpdf(y) if family in ("gaussian", "student_t") else dist.logpmf(y)
    np.testing.assert_allclose(fit.log_likelihood(rows), expected, rtol=2e-5, atol=2e-5)


def test_response_draws_have_the_predictive_mean_and_variance(family_fit):
    family, fit = family_fit
    d = {k: np.asarray(v, np.float64) for k, v in fit.draws.items()}
    mean, var, _ = _conditional(family, _eta(fit, NEW), d, NEW["n"].to_numpy())
    y = fit.predict(NEW, seed=3).draws.reshape(-1, len(NEW)).astype(np.float64)
    mean, var = mean.reshape(-1, len(NEW)), var.reshape(-1, len(NEW))
    s = y.shape[0]
    expected_mean = mean.mean(axis=0)
    expected_var = var.mean(axis=0) + mean.var(axis=0)
    z_mean = np.abs(y.mean(axis=0) - expected_mean) / np.sqrt(expected_var / s)
    centred = y - y.mean(axis=0)
    se_var = np.sqrt(np.maximum(np.mean(centred ** 4, axis=0) - y.var(axis=0) ** 2, 1e-12) / s)
    z_var = np.abs(y.var(axis=0) - expected_var) / se_var
    assert np.all(z_mean < 4.5), (family, z_mean)
    assert np.all(z_var < 4.5), (family, z_var, y.var(axis=0), expected_var)
    if family == "binomial":
        assert np.all(y <= NEW["n"].to_numpy()) and y[:, 2].max() > 7


# ---------------------------------------------------------------- reduced fits


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(11)
    n = 1500
    g = rng.integers(0, 10, n)
    x = rng.integers(0, 3, n).astype(float)
    eta = 0.2 + 0.5 * x + rng.normal(0, 0.6, 10)[g]
    return pd.DataFrame({"y": eta + rng.normal(0, 0.8, n), "yb": rng.binomial(1, special.expit(eta)),
                         "x": x, "g": g})


@pytest.mark.slow
@pytest.mark.parametrize("family, response", [("gaussian", "y"), ("bernoulli", "yb")])
def test_reduced_fit_log_likelihood_is_the_row_level_one(rows, family, response):
    model = bj.Model(f"{response} ~ 1 + x + (1 | g)", rows, family=family)
    fit = model.fit(chains=2, warmup=100, draws=40, seed=2, x64=True, progress=False)
    assert fit.settings["reduction"]["pseudo_rows"] < len(rows) / 10  # it ran on reduced data
    frame = rows.rename(columns={response: "yy"})
    eta = _eta(fit, frame)
    d = {k: np.asarray(v, np.float64) for k, v in fit.draws.items()}
    _, _, dist = _conditional(family, eta, d, None)
    y = frame["yy"].to_numpy()
    expected = dist.logpdf(y) if family == "gaussian" else dist.logpmf(y)
    ll = fit.log_likelihood()
    assert ll.shape == (2, 40, len(rows))
    np.testing.assert_allclose(ll, expected, rtol=1e-9, atol=1e-9)
    numpyro_ll = pointwise_log_likelihood(fit)["y"]  # NumPyro's model on the original rows
    np.testing.assert_allclose(ll, numpyro_ll, rtol=1e-9, atol=1e-9)
