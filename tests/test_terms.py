"""Formula terms beyond formulaic's: offsets, observation weights, censoring, penalized splines.

* offsets enter the linear predictor with coefficient 1, in the model and in predictions;
* weights: integer weights give exactly the log density of duplicated rows; a weighted fit
  equals a hand-written NumPyro model of the weighted likelihood within 4 MCSE (slow);
* censoring: each row's log-likelihood is brms' (density, log CDF, log survival, log of a CDF
  difference) against scipy; a right-censored Weibull fit equals a hand-written NumPyro model
  within 4 MCSE (slow);
* splines: the mixed-model basis has the penalty as identity and its wiggly part orthogonal
  to [1, x]; a spline fit of a sine beats the straight line on held-out rows (slow);
* every error message is asserted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density
from scipy import special, stats

import bhmjax as bj
from bhmjax._src.formula import parse_formula
from bhmjax._src.smooth import bspline_basis, smooth_basis
from tests._prior_fit import prior_fit
from tests._stats import agreement_z

FIXED_PRIORS = {"Intercept": dist.Normal(0, 5), "b": dist.Normal(0, 2), "sigma": dist.HalfNormal(2.0),
                "sd": dist.HalfNormal(1.0)}


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, 6, n), "e": rng.uniform(0.5, 4.0, n),
                          "w": rng.integers(1, 4, n).astype(float)})
    frame["k"] = rng.poisson(frame.e * np.exp(0.3 * frame.x))
    frame["y"] = 1.0 + 0.5 * frame.x + rng.normal(size=n)
    frame["t"] = rng.weibull(1.5, n) * 2.0
    return frame


@pytest.fixture
def x64():
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


# --------------------------------------------------------------------------- parsing


def test_parse_addition_terms_and_specials():
    spec = parse_formula("t | cens(c, up) + weights(w) ~ x + s(z, k = 6) + offset(log(e)) + (1 | g)")
    assert (spec.response, spec.cens, spec.cens_upper, spec.weights, spec.trials) == ("t", "c", "up", "w", None)
    assert spec.fixed == "x" and spec.offsets == ("log(e)",) and spec.smooths[0].k == 6
    assert spec.variables() == ["t", "w", "c", "x", "e", "z", "g"]
    assert parse_formula("y ~ bs(x, df=3) + C(c)").smooths == ()  # bs() and C() stay formulaic's


@pytest.mark.parametrize("formula, match", [
    ("y | se(s) ~ x", "cannot read the addition term 'se\\(s\\)'"),
    ("y | weights(w) + weights(v) ~ x", "cannot read the addition term 'weights\\(v\\)'"),
    ("y ~ s(x, bs = 'tp')", "asks for the basis 'tp'.*P-splines"),
    ("y ~ s(x, k = 2)", "has the argument 'k = 2'"),
    ("y ~ s(x + z)", "needs one column name first"),
    ("y ~ s(x) + s(x, k = 5)", "a variable has more than one s\\(\\) term"),
])
def test_parse_errors(formula, match):
    with pytest.raises(ValueError, match="cannot parse the formula.*" + match):
        parse_formula(formula)


# --------------------------------------------------------------------------- offsets


def test_offset_in_model_and_predictions(df):
    model = bj.Model("k ~ x + offset(log(e))", df, family="poisson")
    np.testing.assert_allclose(model.data["offset"], np.log(df.e), rtol=1e-6)
    tr = handlers.trace(handlers.seed(model.numpyro_model, 0)).get_trace(**model.data)
    eta = tr["Intercept"]["value"] + df.x.to_numpy() * tr["b"]["value"][0] + np.log(df.e.to_numpy())
    np.testing.assert_allclose(np.asarray(tr["y"]["fn"].rate), np.exp(eta), rtol=1e-4)
    fit = prior_fit(model, draws=10)
    new = pd.DataFrame({"x": [0.0, 1.0], "e": [1.0, 10.0]})
    lp = fit.predict(new, kind="linear_predictor").draws
    want = fit.draws["Intercept"][..., None] + fit.draws["b"] * new.x.to_numpy() + np.log(new.e.to_numpy())
    np.testing.assert_allclose(lp, want, rtol=1e-5)
    assert model.reduced_data() is None or "weights" in model.reduced_data()  # never the plain count sum


def test_offset_errors(df):
    with pytest.raises(ValueError, match="offset .* is -inf at row 2 \\(1 non-finite rows\\)"):
        bj.Model("k ~ x + offset(log(e))", df.assign(e=np.where(np.arange(len(df)) == 2, 0.0, df.e)),
                 family="poisson")
    with pytest.raises(ValueError, match="must be one number per row"):
        bj.Model("k ~ x + offset(c)", df.assign(c=np.where(df.x > 0, "a", "b")), family="poisson")


# --------------------------------------------------------------------------- weights


def test_integer_weights_equal_duplicated_rows(df, x64):
    priors = {k: v for k, v in FIXED_PRIORS.items() if k != "b"}
    weighted = bj.Model("y | weights(w) ~ 1 + (1 | g)", df, priors=priors)
    copies = df.loc[df.index.repeat(df.w.astype(int))].reset_index(drop=True)
    duplicated = bj.Model("y ~ 1 + (1 | g)", copies, priors=priors)
    prior = bj.prior_predictive(weighted, draws=3, seed=1)
    for s in range(3):
        params = {k: jnp.asarray(prior[k][0, s]) for k in ("Intercept_c", "sigma", "sd_g", "z_g")}
        a = log_density(weighted.numpyro_model, (), weighted.model_data(x64=True), params)[0]
        b = log_density(duplicated.numpyro_model, (), duplicated.model_data(x64=True), params)[0]
        np.testing.assert_allclose(float(a), float(b), rtol=1e-10)


def test_weights_multiply_each_rows_log_likelihood(df, x64):
    model = bj.Model("y ~ x + (1 | g)", df, weights="w", priors=FIXED_PRIORS)
    plain = bj.Model("y ~ x + (1 | g)", df, priors=FIXED_PRIORS)
    params = {k: jnp.asarray(v[0, 0]) for k, v in bj.prior_predictive(plain, draws=1, seed=4).items()
              if k in ("Intercept_c", "b", "sigma", "sd_g", "z_g")}
    weighted = log_density(model.numpyro_model, (), model.model_data(x64=True), params)[0]
    unweighted = log_density(plain.numpyro_model, (), plain.model_data(x64=True), params)[0]
    tr = handlers.trace(handlers.substitute(plain.numpyro_model, params)).get_trace(**plain.model_data(x64=True))
    rows = np.asarray(tr["y"]["fn"].log_prob(tr["y"]["value"]))
    np.testing.assert_allclose(float(weighted) - float(unweighted), np.sum((df.w.to_numpy() - 1) * rows),
                               rtol=1e-10)
    fit = prior_fit(model, draws=5)
    ll = fit.log_likelihood()
    ll_plain = prior_fit(plain, draws=5).log_likelihood()
    np.testing.assert_allclose(ll, ll_plain * df.w.to_numpy(), rtol=1e-5)  # brms: weighted pointwise


@pytest.mark.parametrize("weights, match", [
    (lambda w: np.where(np.arange(len(w)) == 5, -1.0, w), "weights column 'w' must hold finite numbers >= 0; "
     "row 5 is -1"),
    (lambda w: np.zeros(len(w)), "is 0 on every row"),
])
def test_weight_errors(df, weights, match):
    with pytest.raises(ValueError, match=match):
        bj.Model("y ~ x", df.assign(w=weights(df.w.to_numpy())), weights="w")
    with pytest.raises(ValueError, match="weights given twice"):
        bj.Model("y | weights(w) ~ x", df, weights="e")


# --------------------------------------------------------------------------- censoring


def test_censored_rows_take_brms_likelihoods(df, x64):
    codes = np.tile(["none", "left", "right", "interval"], len(df) // 4)
    frame = df.assign(c=codes, up=df.y + 0.7)
    model = bj.Model("y | cens(c, up) ~ x", frame, priors={k: v for k, v in FIXED_PRIORS.items() if k != "sd"})
    fit = prior_fit(model, draws=4)
    ll = fit.log_likelihood()[0]
    mu = fit.draws["Intercept"][0][:, None] + fit.draws["b"][0][:, :1] * df.x.to_numpy()
    d = stats.norm(mu, fit.draws["sigma"][0][:, None])
    y, up = df.y.to_numpy(), df.y.to_numpy() + 0.7
    # log P(y < Y <= up) from the tail that keeps its precision (a plain cdf difference rounds to 0)
    interval = np.where(y > mu, d.logsf(y) + np.log1p(-np.exp(d.logsf(up) - d.logsf(y))),
                        d.logcdf(up) + np.log1p(-np.exp(d.logcdf(y) - d.logcdf(up))))
    want = np.select([codes == "none", codes == "left", codes == "right"],
                     [d.logpdf(y), d.logcdf(y), d.logsf(y)], interval)
    np.testing.assert_allclose(ll, want, rtol=1e-4, atol=1e-5)
    # brms' numeric codes and booleans are the same censoring
    same = bj.Model("y ~ x", frame.assign(c=np.tile([0, -1, 1, 2], len(df) // 4)), cens="c", cens_upper="up")
    assert np.array_equal(same.data["cens"], model.data["cens"])
    right = bj.Model("y ~ x", frame.assign(c=np.arange(len(df)) % 2 == 0), cens="c")
    assert set(np.unique(right.data["cens"])) == {0.0, 1.0}


@pytest.mark.parametrize("change, kwargs, error, match", [
    ({"c": "sideways"}, {}, ValueError, "censoring column 'c' has 'sideways' at row 0"),
    ({"c": "interval"}, {}, ValueError, "row 0 is interval censored, which needs its upper bound"),
    ({"c": "interval", "up": -9.0}, {"cens_upper": "up"}, ValueError, "interval-censored row 0 needs cens_upper "
     "'up' above the response"),
    ({"c": "right"}, {"family": "bernoulli"}, ValueError, "the bernoulli family does not take censored"),
    ({}, {"cens_upper": "up", "cens": None}, ValueError, "cens_upper='up' without cens"),
])
def test_censoring_errors(df, change, kwargs, error, match):
    frame = df.assign(c="none", up=df.y + 1.0, yb=(df.y > 1).astype(int)).assign(**change)
    kwargs = {"cens": "c", **kwargs}
    response = "yb" if kwargs.get("family") == "bernoulli" else "y"
    with pytest.raises(error, match=match):
        bj.Model(f"{response} ~ x", frame, **kwargs)


# --------------------------------------------------------------------------- splines


def test_spline_basis_is_the_mixed_model_form():
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 3, 300)
    basis = smooth_basis("x", x, k=10)
    raw = bspline_basis(np.clip(x, basis.lower, basis.upper - 1e-9), basis.knots)
    np.testing.assert_allclose(raw.sum(axis=1), 1.0, rtol=1e-12)  # B-splines partition unity
    diff = np.diff(np.eye(10), n=2, axis=0)
    np.testing.assert_allclose(basis.transform.T @ diff.T @ diff @ basis.transform, np.eye(8), atol=1e-9)
    z = basis.columns(x)
    assert z.shape == (300, 8)
    np.testing.assert_allclose(np.stack([np.ones_like(x), x]) @ z, 0.0, atol=1e-8)  # wiggly part only
    far = basis.columns(np.array([-10.0, 10.0]))
    assert np.isfinite(far).all()
    with pytest.raises(ValueError, match="s\\(c\\) needs a numeric column with at least 4 distinct values"):
        smooth_basis("c", np.repeat([0.0, 1.0], 10))


def test_spline_sites_and_names(df):
    model = bj.Model("y ~ s(x) + (1 | g)", df)
    assert model.spec.structure.slopes == ("sx_1",) and model.data["Zs_0"].shape == (len(df), 8)
    names, _, _ = model.names()
    assert names["s_sx_1"][0] == "s_sx_1[1]" and names["zs_sx_1"] == [None] * 8
    tr = handlers.trace(handlers.seed(model.numpyro_model, 0)).get_trace(**model.data)
    np.testing.assert_allclose(np.asarray(tr["s_sx_1"]["value"]),
                               np.asarray(tr["sds_sx_1"]["value"] * tr["zs_sx_1"]["value"]), rtol=1e-6)
    assert "sds_sx_1" in model.describe(verbose=False)
    sigma_spline = bj.Model("y ~ x", df, sigma="~ s(x, k = 6)")
    assert sigma_spline.spec.structure.dpars[0].smooths[0].name == "sigma_sx_1"
    _, coords, dims = sigma_spline.names()
    assert dims["b_sigma"] == ["coef_sigma"] and coords["coef_sigma"] == ["sx_1"]


# --------------------------------------------------------------------------- agreement with hand-written models (slow)

SETTINGS = dict(chains=2, warmup=500, draws=1000, progress=False, chain_method="sequential")


def _agree(fit, ref, pairs: dict) -> None:
    for ours, theirs in pairs.items():
        a = np.asarray(fit.draws[ours], float)
        z = agreement_z(a.reshape(a.shape[:2]), np.asarray(ref.draws[theirs], float))
        assert z < 4, (ours, z)


@pytest.mark.slow
def test_weighted_fit_equals_handwritten_numpyro(df):
    def handwritten(x, y, w, x_mean):  # x centred: the prior is on the centred intercept, as in brms
        a = numpyro.sample("a", dist.Normal(0, 5))
        b = numpyro.sample("b", dist.Normal(0, 2))
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
        numpyro.deterministic("Intercept", a - b * x_mean)
        numpyro.factor("ll", jnp.sum(w * dist.Normal(a + b * x, sigma).log_prob(y)))

    priors = {"Intercept": dist.Normal(0, 5), "b": dist.Normal(0, 2), "sigma": dist.HalfNormal(2.0)}
    fit = bj.Model("y | weights(w) ~ x", df, priors=priors).fit(seed=1, **SETTINGS)
    data = {"x": df.x.to_numpy() - df.x.mean(), "y": df.y.to_numpy(), "w": df.w.to_numpy(),
            "x_mean": df.x.mean()}
    ref = bj.sample(handwritten, data, seed=2, **SETTINGS)
    _agree(fit, ref, {"Intercept": "Intercept", "b": "b", "sigma": "sigma"})


@pytest.mark.slow
def test_censored_weibull_fit_equals_handwritten_numpyro(df):
    cens = (df.t > 2.0).astype(int)  # right censored at 2
    t = np.minimum(df.t.to_numpy(), 2.0)

    def handwritten(x, t, cens):
        a = numpyro.sample("a", dist.Normal(0, 3))
        b = numpyro.sample("b", dist.Normal(0, 2))
        k = numpyro.sample("shape", dist.HalfNormal(3.0))
        scale = jnp.exp(a + b * x - jax.scipy.special.gammaln(1 + 1 / k))
        log_surv = -(t / scale) ** k
        log_pdf = jnp.log(k / scale) + (k - 1) * jnp.log(t / scale) + log_surv
        numpyro.factor("ll", jnp.sum(jnp.where(cens == 1, log_surv, log_pdf)))

    frame = df.assign(t=t, c=cens)
    priors = {"Intercept": dist.Normal(0, 3), "b": dist.Normal(0, 2), "shape": dist.HalfNormal(3.0)}
    fit = bj.Model("t | cens(c) ~ x", frame, family="weibull", priors=priors).fit(seed=1, **SETTINGS)
    data = {"x": df.x.to_numpy() - df.x.mean(), "t": t, "cens": cens.to_numpy()}
    ref = bj.sample(handwritten, data, seed=2, **SETTINGS)
    _agree(fit, ref, {"Intercept_c": "a", "b": "b", "shape": "shape"})


@pytest.mark.slow
def test_spline_beats_a_line_on_a_sine():
    rng = np.random.default_rng(6)
    x = rng.uniform(-3, 3, 240)
    frame = pd.DataFrame({"x": x, "y": np.sin(1.5 * x) + rng.normal(0, 0.3, x.size)})
    train, test = frame.iloc[:180], frame.iloc[180:]
    settings = dict(chains=2, warmup=300, draws=300, progress=False, chain_method="sequential", seed=1)
    spline = bj.Model("y ~ s(x)", train).fit(**settings)
    line = bj.Model("y ~ x", train).fit(**settings)
    truth = np.sin(1.5 * test.x.to_numpy())
    rmse = {name: np.sqrt(np.mean((f.predict(test[["x"]], kind="mean").mean - truth) ** 2))
            for name, f in (("spline", spline), ("line", line))}
    assert rmse["spline"] < 0.12 and rmse["line"] > 0.4, rmse
    assert spline.summary().loc["sds_sx_1", "mean"] > 0.1


# --------------------------------------------------------------------------- saved models (records)


@pytest.mark.parametrize("build", [
    lambda f: bj.Model("y ~ x + (1 | g)", f, weights="w", cens="c", cens_upper="up", sigma="~ x + (1 | g)",
                       parameterization={"g__sigma": "centered"}),
    lambda f: bj.Model("y | weights(w) + cens(c, up) ~ s(x, k = 6) + offset(log(e))", f),
    lambda f: bj.Model("k ~ x + offset(log(e))", f, family="zero_inflated_poisson", zi="~ x"),
], ids=["options", "formula", "zi"])
def test_record_rebuilds_weights_censoring_and_dpars(df, build):
    """bj.save stores a formula model as its record: every new option must come back (issue #15's format)."""
    frame = df.assign(c=np.tile(["none", "right", "interval", "left"], len(df) // 4), up=df.y + 1.0)
    frame.loc[frame.c != "interval", "up"] = np.nan  # the bound may be missing where unused
    model = build(frame)
    record, arrays = model.to_record()
    rebuilt = bj.Model.from_record(record, arrays)
    assert rebuilt.describe(verbose=False) == model.describe(verbose=False)
    assert rebuilt.names() == model.names()
    data = model.model_data()
    assert sorted(rebuilt.model_data()) == sorted(data)
    for k, v in data.items():
        assert np.array_equal(rebuilt.model_data()[k], v, equal_nan=True), k


def test_saved_fit_of_a_distributional_censored_model_loads(df, tmp_path):
    frame = df.assign(c=np.where(df.y > 2.0, "right", "none"))
    model = bj.Model("y ~ x", frame, cens="c", weights="w", sigma="~ x")
    fit = prior_fit(model, draws=5)
    fit.settings = {"x64": False}
    loaded = bj.load(fit.save(tmp_path / "dpar.bhm"))
    np.testing.assert_array_equal(loaded.log_likelihood(), fit.log_likelihood())
    new = pd.DataFrame({"x": [0.0, 1.0]})
    np.testing.assert_array_equal(loaded.predict(new, kind="mean", dpar="sigma").draws,
                                  fit.predict(new, kind="mean", dpar="sigma").draws)
