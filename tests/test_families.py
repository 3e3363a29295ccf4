"""The brms families: likelihoods against scipy, means against draws, checks, predictions, recovery.

* log-likelihoods equal scipy's (or the closed form from scipy's pieces) on random values, in
  float64 to 1e-6 relative; censoring's log CDF and survival likewise;
* each family's mean (the ``kind="mean"`` prediction) equals the mean of its own draws within
  4 Monte Carlo standard errors (this also checks the zero-truncated sampler of the hurdles);
* every family predicts "mean", "response" and "log_likelihood" with the right shapes and types;
* recovery (slow): one small fit per family of ``y ~ 1 + x + (1 | g)`` with known parameters;
  hyperparameters within 3.29 posterior sd, 90% intervals of the 20 group effects cover
  [0.6, 1] of them (see tests/test_models_fit.py for the rationale of the bounds).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import bhmjax as bj
from bhmjax._src.families import FAMILIES, get_family
from bhmjax._src.families.censoring import log_cdfs
from bhmjax._src.families.counts import Hurdle
from bhmjax._src.naming import flat_names
from tests._prior_fit import prior_fit

NEW = ["lognormal", "gamma", "beta", "exponential", "weibull", "zero_inflated_poisson",
       "zero_inflated_negative_binomial", "hurdle_poisson", "hurdle_negative_binomial", "cumulative",
       "categorical"]


@pytest.fixture
def x64():
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


# --------------------------------------------------------------------------- likelihoods vs scipy


def _reference(family: str, y, eta, p):
    """scipy's log density of ``y`` given the linear predictor and parameters (brms' parameterization)."""
    mu = np.exp(eta)
    nb = stats.nbinom(p.get("phi", 1.0), p.get("phi", 1.0) / (p.get("phi", 1.0) + mu))
    pois = stats.poisson(mu)
    if family == "lognormal":
        return stats.lognorm.logpdf(y, p["sigma"], scale=mu)
    if family == "gamma":
        return stats.gamma.logpdf(y, p["shape"], scale=mu / p["shape"])
    if family == "beta":
        m = special.expit(eta)
        return stats.beta.logpdf(y, m * p["phi"], (1 - m) * p["phi"])
    if family == "exponential":
        return stats.expon.logpdf(y, scale=mu)
    if family == "weibull":
        return stats.weibull_min.logpdf(y, p["shape"], scale=mu / special.gamma(1 + 1 / p["shape"]))
    base = pois if "poisson" in family else nb
    if family.startswith("zero_inflated"):
        return np.where(y == 0, np.log(p["zi"] + (1 - p["zi"]) * base.pmf(0)), np.log1p(-p["zi"]) + base.logpmf(y))
    if family.startswith("hurdle"):
        return np.where(y == 0, np.log(p["hu"]), np.log1p(-p["hu"]) + base.logpmf(y) - np.log(base.sf(0)))
    raise KeyError(family)


def _draw_params(family: str, rng, n: int) -> dict:
    ranges = {"sigma": (0.3, 2.0), "shape": (0.5, 6.0), "phi": (0.5, 20.0), "zi": (0.05, 0.9), "hu": (0.05, 0.9),
              "nu": (2.0, 10.0)}
    return {k: rng.uniform(*ranges[k], n) for k in FAMILIES[family].params}


def _responses(family: str, rng, n: int) -> np.ndarray:
    kind = FAMILIES[family].kind
    if kind == "positive":
        return rng.gamma(2.0, 1.0, n) + 1e-3
    if kind == "unit":
        return rng.uniform(0.01, 0.99, n)
    return rng.integers(0, 12, n).astype(float)


@pytest.mark.parametrize("family", NEW[:-2])
def test_loglik_matches_scipy(family, x64):
    rng = np.random.default_rng(1)
    n = 400
    eta, y, p = rng.normal(0.5, 1.0, n), _responses(family, rng, n), _draw_params(family, rng, n)
    ours = get_family(family).likelihood(jnp.asarray(eta), {k: jnp.asarray(v) for k, v in p.items()}, None)
    np.testing.assert_allclose(np.asarray(ours.log_prob(jnp.asarray(y))), _reference(family, y, eta, p),
                               rtol=1e-6, atol=1e-6)  # numpyro's zero-inflated NB2 agrees to ~1e-7


def test_cumulative_and_categorical_logliks(x64):
    rng = np.random.default_rng(2)
    n, cut = 300, np.array([-1.0, 0.3, 1.7])
    eta, y = rng.normal(size=n), rng.integers(0, 4, n)
    cdf = np.concatenate([np.zeros((n, 1)), special.expit(cut - eta[:, None]), np.ones((n, 1))], axis=1)
    want = np.log(cdf[np.arange(n), y + 1] - cdf[np.arange(n), y])  # P(y <= k) = logistic(cut_k - eta)
    d = FAMILIES["cumulative"].likelihood(jnp.asarray(eta), {"Intercept": jnp.asarray(cut)}, None)
    np.testing.assert_allclose(np.asarray(d.log_prob(jnp.asarray(y))), want, rtol=1e-8)
    logits = np.concatenate([np.zeros((n, 1)), rng.normal(size=(n, 2))], axis=1)
    d = FAMILIES["categorical"].likelihood(jnp.asarray(logits), {}, None)
    np.testing.assert_allclose(np.asarray(d.log_prob(jnp.asarray(y % 3))),
                               special.log_softmax(logits, axis=1)[np.arange(n), y % 3], rtol=1e-8)


def test_cumulative_tails_stay_finite_in_float32():
    """P(y = k) of two cutpoints far below eta is a difference of two numbers near 1: NumPyro's
    OrderedLogistic rounds it to 0 (log -inf, where NUTS may start); ours matches float64 scipy."""
    eta = np.array([30.0, 30.0, 30.0, -30.0, -30.0, 0.0])
    cut, y = np.array([-1.0, 0.5, 2.0]), np.array([0, 1, 3, 0, 3, 2])
    bounds = np.r_[-np.inf, cut, np.inf]
    lo, hi, L = bounds[y] - eta, bounds[y + 1] - eta, stats.logistic
    with np.errstate(divide="ignore", invalid="ignore"):  # each form from the tail it is exact in (float64)
        below = L.logcdf(hi) + np.log1p(-np.exp(L.logcdf(lo) - L.logcdf(hi)))
        above = L.logsf(lo) + np.log1p(-np.exp(L.logsf(hi) - L.logsf(lo)))
    want = np.where(lo + hi > 0, above, below)
    d = FAMILIES["cumulative"].likelihood(jnp.asarray(eta, jnp.float32), {"Intercept": jnp.asarray(cut, jnp.float32)},
                                          None)
    np.testing.assert_allclose(np.asarray(d.log_prob(jnp.asarray(y))), want, rtol=1e-5)


@pytest.mark.parametrize("family", ["gaussian", "student_t", "lognormal", "gamma", "beta", "exponential",
                                    "weibull", "poisson", "negative_binomial"])
def test_censoring_cdfs_match_scipy(family, x64):
    rng = np.random.default_rng(3)
    n = 300
    eta, y, p = rng.normal(0.3, 0.8, n), _responses(family, rng, n), _draw_params(family, rng, n)
    d = FAMILIES[family].likelihood(jnp.asarray(eta), {k: jnp.asarray(v) for k, v in p.items()}, None)
    mu = np.exp(eta)
    ref = {"gaussian": stats.norm(eta, p.get("sigma")), "student_t": stats.t(p.get("nu"), eta, p.get("sigma")),
           "lognormal": stats.lognorm(p.get("sigma"), scale=mu),
           "gamma": stats.gamma(p.get("shape"), scale=mu / p.get("shape", 1.0)),
           "beta": stats.beta(special.expit(eta) * p.get("phi", 1), special.expit(-eta) * p.get("phi", 1)),
           "exponential": stats.expon(scale=mu),
           "weibull": stats.weibull_min(p.get("shape"), scale=mu / special.gamma(1 + 1 / p.get("shape", 1.0))),
           "poisson": stats.poisson(mu),
           "negative_binomial": stats.nbinom(p.get("phi"), p.get("phi", 1) / (p.get("phi", 1) + mu))}[family]
    log_f, log_s = log_cdfs(d, jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(log_f), ref.logcdf(y), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(np.asarray(log_s), ref.logsf(y), rtol=1e-6, atol=1e-9)  # P(Y > y), as Stan


# --------------------------------------------------------------------------- means vs draws


@pytest.mark.parametrize("family", NEW)
def test_mean_equals_mean_of_draws(family, x64):
    fam = get_family(family)
    eta = jnp.asarray([-1.5, 0.2, 1.1])
    params = {"sigma": 0.6, "shape": 2.5, "phi": 3.0, "zi": 0.3, "hu": 0.6,
              "Intercept": jnp.asarray([-0.8, 0.4, 1.5])}
    if family == "categorical":
        eta = jnp.asarray([[0.0, 0.5, -0.7], [0.0, -1.0, 1.2]])
    d = fam.likelihood(eta, params, None)
    draws = np.asarray(d.sample(jax.random.PRNGKey(0), (200_000,)))
    if fam.kind in ("ordinal", "categorical"):  # the mean is the probability of each level
        levels = np.asarray(fam.mean(eta, params)).shape[-1]
        draws = (draws[..., None] == np.arange(levels)).astype(float)
    mean, se = draws.mean(axis=0), draws.std(axis=0) / np.sqrt(len(draws))
    z = np.abs(np.asarray(fam.mean(eta, params)) - mean) / np.maximum(se, 1e-12)
    assert (z < 4).all(), (z, mean)


def test_hurdle_draws_follow_the_truncated_pmf_at_small_rates(x64):
    """Rates near 0, where redrawing the zeros would need ~1/P(Y > 0) rounds: frequencies match the pmf."""
    rate, hu, n = 0.02, 0.5, 100_000
    draws = np.asarray(Hurdle(bj_poisson(rate), hu).sample(jax.random.PRNGKey(1), (n,)))
    pmf = np.r_[hu, (1 - hu) * stats.poisson.pmf([1, 2], rate) / stats.poisson.sf(0, rate)]
    freq = np.array([(draws == k).mean() for k in range(3)])
    se = np.sqrt(pmf * (1 - pmf) / n)
    assert (np.abs(freq - pmf) < 4 * se + 1e-12).all(), (freq, pmf)
    assert draws.min() >= 0 and np.all(draws == np.round(draws))


def bj_poisson(rate):
    import numpyro.distributions as dist

    return dist.Poisson(jnp.asarray(rate))


# --------------------------------------------------------------------------- data checks


def family_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, 6, n)})
    df["pos"] = rng.gamma(2.0, 1.0, n)
    df["unit"] = rng.uniform(0.05, 0.95, n)
    df["count"] = rng.poisson(1.5, n)
    df["ord"] = rng.integers(1, 5, n)
    df["cat"] = rng.choice(["b", "a", "c"], n)
    return df


@pytest.mark.parametrize("formula, family, data, error, match", [
    ("pos ~ x", "gamma", {"pos": -1.0}, ValueError, "response 'pos' must be positive \\(> 0\\) for the gamma "
     "family; row 3 is -1"),
    ("unit ~ x", "beta", {"unit": 1.0}, ValueError, "must lie strictly between 0 and 1 for the beta family; row 3"),
    ("count ~ x", "hurdle_poisson", {"count": 1.5}, ValueError, "must hold non-negative integers for the "
     "hurdle_poisson family; row 3"),
    ("ord ~ x", "cumulative", {"ord": 2.5}, ValueError, "must hold integers or an ordered pandas categorical "
     "for the cumulative family .*row 3"),
    ("cat ~ x", "cumulative", {}, ValueError, "must hold integers or an ordered pandas categorical"),
    ("ord ~ x", "gama", {}, ValueError, "unknown family 'gama' \\(did you mean 'gamma'\\?\\)"),
    ("count ~ x", "zero_inflated_poisson", {}, TypeError, "the zero_inflated_poisson family has no parameter "
     "'sigma'"),
])
def test_response_errors(formula, family, data, error, match):
    df = family_frame()
    for col, value in data.items():
        df[col] = df[col].astype(float)
        df.loc[3, col] = value
    kwargs = {"sigma": "~ x"} if "sigma" in match else {}
    with pytest.raises(error, match=match):
        bj.Model(formula, df, family=family, **kwargs)


def test_category_errors():
    df = family_frame()
    with pytest.raises(ValueError, match="is an unordered pandas categorical; the cumulative family needs ordered"):
        bj.Model("c ~ x", df.assign(c=pd.Categorical(df["cat"])), family="cumulative")
    with pytest.raises(ValueError, match="response 'c' has a single level \\('a'\\)"):
        bj.Model("c ~ x", df.assign(c="a"), family="categorical")


def test_categories_keep_their_order_and_reference():
    df = family_frame()
    ordered = pd.Categorical(df["cat"], categories=["c", "a", "b"], ordered=True)
    m = bj.Model("c ~ x + (1 | g)", df.assign(c=ordered), family="cumulative")
    assert m.spec.categories == ("c", "a", "b") and m.spec.structure.thresholds == 2
    assert np.array_equal(m.data["y"], pd.Series(ordered).cat.codes.to_numpy())
    m = bj.Model("cat ~ x + (1 | g)", df, family="categorical")
    assert m.spec.categories == ("a", "b", "c") and m.spec.structure.categories == ("mub", "muc")
    names, coords, dims = m.names()
    assert flat_names("b_mub", (1,), coords, dims) == ["b_mub[x]"]
    assert flat_names("sd_g__muc", (1,), coords, dims) == ["sd_g__muc[Intercept]"]
    assert flat_names("r_g__mub", (6, 1), coords, dims)[0] == "r_g__mub[0, Intercept]"


def test_cumulative_cutpoint_prior_and_names():
    m = bj.Model("ord ~ x + (1 | g)", family_frame(), family="cumulative",
                 priors={"Intercept[2]": __import__("numpyro").distributions.Normal(0, 1)})
    names, _, _ = m.names()
    assert names["Intercept"] == ["Intercept[1]", "Intercept[2]", "Intercept[3]"]
    assert not m.spec.structure.intercept and "Intercept" not in m.spec.structure.slopes
    prior = dict(m.spec.structure.family_priors)["Intercept"]
    assert [idx for idx, _ in prior.parts] == [(0, 2), (1,)]
    text = m.describe(verbose=False)
    assert "Intercept (3,) ordered cutpoints" in text and "Intercept_c[2]" in text


# --------------------------------------------------------------------------- predictions of every family


RESPONSES = {"lognormal": "pos", "gamma": "pos", "beta": "unit", "exponential": "pos", "weibull": "pos",
             "zero_inflated_poisson": "count", "zero_inflated_negative_binomial": "count",
             "hurdle_poisson": "count", "hurdle_negative_binomial": "count", "cumulative": "ord",
             "categorical": "cat"}


@pytest.mark.parametrize("family", NEW)
def test_every_family_predicts(family):
    df = family_frame()
    model = bj.Model(f"{RESPONSES[family]} ~ x + (1 | g)", df, family=family)
    fit = prior_fit(model)
    new = pd.DataFrame({"x": [0.0, 1.0, -1.0], "g": [0, 4, 77]})
    levels = len(model.spec.categories)
    mean = fit.predict(new, kind="mean", groups="new")
    assert mean.draws.shape == (2, 40, 3) + ((levels,) if levels else ())
    if levels:  # probabilities of the levels, labelled
        np.testing.assert_allclose(mean.draws.sum(-1), 1.0, rtol=1e-5)
        assert mean.categories == model.spec.categories
        assert list(mean.summary().index[:2]) == [(0, model.spec.categories[0]), (0, model.spec.categories[1])]
    response = fit.predict(new, kind="response", groups="new", seed=1)
    assert response.draws.shape == (2, 40, 3)
    assert response.draws.dtype == (np.int32 if FAMILIES[family].discrete else np.float32)
    if levels:
        assert response.draws.min() >= 0 and response.draws.max() < levels
    ll = fit.log_likelihood()
    assert ll.shape == (2, 40, len(df)) and not np.isnan(ll).any()
    for dpar in FAMILIES[family].params:  # scalar parameters per row
        value = fit.predict(new, kind="mean", dpar=dpar, groups="new").draws
        np.testing.assert_allclose(value[..., 1], np.asarray(fit.draws[dpar]), rtol=1e-6)


def test_predict_dpar_errors():
    fit = prior_fit(bj.Model("count ~ x", family_frame(), family="zero_inflated_poisson"), draws=5)
    with pytest.raises(ValueError, match="dpar='sigma' is not a parameter of this zero_inflated_poisson model; "
                                         "choose one of \\['mu', 'zi'\\]"):
        fit.predict({"x": [0.0]}, kind="mean", dpar="sigma")
    with pytest.raises(ValueError, match="has no response draws"):
        fit.predict({"x": [0.0]}, dpar="zi")


# --------------------------------------------------------------------------- exact reduction


@pytest.mark.parametrize("family, response", [("negative_binomial", "count"), ("hurdle_poisson", "count"),
                                              ("cumulative", "ord"), ("categorical", "cat")])
def test_merged_rows_give_the_row_log_density(family, response, x64):
    from numpyro.infer.util import log_density

    rng = np.random.default_rng(4)
    n = 600
    df = pd.DataFrame({"x": rng.integers(0, 2, n).astype(float), "g": rng.integers(0, 4, n),
                       "count": rng.poisson(1.0, n), "ord": rng.integers(1, 4, n),
                       "cat": rng.choice(["a", "b", "c"], n)})
    model = bj.Model(f"{response} ~ x + (1 | g)", df, family=family)
    data = model.model_data(x64=True)
    merged = model.reduced_data(data)
    assert merged is not None and merged["N"] < n / 4 and merged["weights"].sum() == n
    prior = bj.prior_predictive(model, draws=3, seed=2)
    for s in range(3):
        params = {k: jnp.asarray(v[0, s], jnp.float64) for k, v in prior.items() if k != "y"}
        rows = log_density(model.numpyro_model, (), data, params)[0]
        cells = log_density(model.numpyro_model, (), merged, params)[0]
        np.testing.assert_allclose(float(cells), float(rows), rtol=1e-10)


# --------------------------------------------------------------------------- recovery (slow)

SETTINGS = dict(chains=2, warmup=500, draws=500, progress=False, chain_method="sequential", seed=1)
TRUTH = {  # family -> (Intercept, slope, sd_g, family parameters)
    "lognormal": (0.5, 0.4, 0.5, {"sigma": 0.6}),
    "gamma": (0.5, 0.4, 0.5, {"shape": 4.0}),
    "beta": (-0.3, 0.5, 0.5, {"phi": 12.0}),
    "exponential": (0.5, 0.4, 0.5, {}),
    "weibull": (0.5, 0.4, 0.5, {"shape": 2.0}),
    "zero_inflated_poisson": (1.0, 0.4, 0.5, {"zi": 0.3}),
    "zero_inflated_negative_binomial": (1.0, 0.4, 0.5, {"zi": 0.3, "phi": 5.0}),
    "hurdle_poisson": (1.0, 0.4, 0.5, {"hu": 0.4}),
    "hurdle_negative_binomial": (1.0, 0.4, 0.5, {"hu": 0.4, "phi": 5.0}),
    "cumulative": (None, 0.8, 0.5, {"Intercept[1]": -1.0, "Intercept[2]": 0.3, "Intercept[3]": 1.5}),
    "categorical": (None, None, 0.5, {"mub_Intercept": 0.4, "b_mub[x]": 0.8, "muc_Intercept": -0.3,
                                      "b_muc[x]": -0.6}),
}


def _positive_counts(rng, base, size):
    """Zero-truncated draws by redrawing the zeros (numpy, independent of the model's sampler)."""
    out = base(size)
    while (out == 0).any():
        out[out == 0] = base(int((out == 0).sum()))
    return out


def simulate(family: str, groups: int = 20, per_group: int = 15, seed: int = 0):
    """``y ~ 1 + x + (1 | g)`` with the parameters of ``TRUTH``; returns (frame, truth, true r_g)."""
    rng = np.random.default_rng(seed)
    a, b, sd, extra = TRUTH[family]
    g = np.repeat(np.arange(groups), per_group)
    x = rng.normal(size=g.size)
    r = rng.normal(0, sd, groups)
    eta = (a or 0.0) + (b or 0.0) * x + r[g]
    mu, n = np.exp(eta), g.size
    if family == "lognormal":
        y = np.exp(eta + rng.normal(0, extra["sigma"], n))
    elif family == "gamma":
        y = rng.gamma(extra["shape"], mu / extra["shape"])
    elif family == "beta":
        m = special.expit(eta)
        y = rng.beta(m * extra["phi"], (1 - m) * extra["phi"])
    elif family == "exponential":
        y = rng.exponential(mu)
    elif family == "weibull":
        y = mu / special.gamma(1 + 1 / extra["shape"]) * rng.weibull(extra["shape"], n)
    elif family == "cumulative":
        cut = np.array([extra[f"Intercept[{k}]"] for k in (1, 2, 3)])
        y = 1 + (eta[:, None] + rng.logistic(size=n)[:, None] > cut).sum(axis=1)
    elif family == "categorical":
        logits = np.stack([np.zeros(n), extra["mub_Intercept"] + extra["b_mub[x]"] * x + r[g],
                           extra["muc_Intercept"] + extra["b_muc[x]"] * x], axis=1)
        p = special.softmax(logits, axis=1)
        y = np.array(["a", "b", "c"])[(rng.random(n)[:, None] > p.cumsum(axis=1)).sum(axis=1)]
    else:
        if "negative_binomial" in family:
            def base(size, m=None):
                return rng.poisson(rng.gamma(extra["phi"], (m if m is not None else mu) / extra["phi"]))
        else:
            def base(size, m=None):
                return rng.poisson(m if m is not None else mu)
        if family.startswith("zero_inflated"):
            y = base(n) * (rng.random(n) > extra["zi"])
        else:
            y = np.zeros(n, int)
            for i in np.flatnonzero(rng.random(n) > extra["hu"]):
                y[i] = _positive_counts(rng, lambda s, m=mu[i]: np.atleast_1d(base(s, m)), 1)[0]
    truth = {**({"Intercept": a} if a is not None else {}), **({"b[x]": b} if b is not None else {}),
             ("sd_g__mub[Intercept]" if family == "categorical" else "sd_g[Intercept]"): sd, **extra}
    return pd.DataFrame({"y": y, "x": x, "g": [f"G{i:02d}" for i in g]}), truth, r


@pytest.mark.slow
@pytest.mark.parametrize("family", NEW)
def test_recovery(family):
    frame, truth, r = simulate(family)
    formula = ("y ~ 1 + x + (1 | g)" if family != "categorical" else "y ~ 1 + x + (1 | g)")
    fit = bj.Model(formula, frame, family=family).fit(**SETTINGS)
    table = fit.summary()
    assert table["r_hat"].max() < 1.05, table.sort_values("r_hat").tail()
    # a rate, not a count: the few divergences near sd_g = 0 vary with the CPU's rounding; a broken
    # geometry gives many (target_accept 0.3: 8% of draws)
    assert fit.stats["diverging"].mean() <= 0.01
    z = (table.loc[list(truth), "mean"] - pd.Series(truth)).abs() / table.loc[list(truth), "sd"]
    assert (z < 3.29).all(), z
    site = "r_g__mub" if family == "categorical" else "r_g"
    draws = fit.draws[site][..., 0].reshape(-1, len(r))
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    assert 0.6 <= np.mean((lo <= r) & (r <= hi)) <= 1.0


def test_weibull_fits_start_at_the_prior_median():
    """Uniform(-2, 2) starts of the recovery data can sit where the potential energy is 1e10 or
    more (a large shape with a low Intercept): the float32 step size collapses to 1e-8 and the
    chain stays there (R-hat 2.3 in a recovery fit). With seed 4 both chains' uniform starts are
    such points (3 of the first 15 seeds have one). Weibull fits start at the prior median unless
    told otherwise."""
    frame, _, _ = simulate("weibull")
    model = bj.Model("y ~ 1 + x + (1 | g)", frame, family="weibull")
    quick = dict(chains=2, warmup=20, draws=5, progress=False, chain_method="sequential", seed=4)
    fit = model.fit(**quick)
    assert float(np.max(fit.stats["potential_energy"])) < 1e3  # the posterior's: about 370
    assert fit.settings["init_strategy"] == "median"
    uniform = model.fit(**quick, init_strategy="uniform")  # the user's choice is kept
    assert uniform.settings["init_strategy"] == "uniform"
    assert float(np.min(uniform.stats["potential_energy"])) > 1e3  # both still far from the posterior
