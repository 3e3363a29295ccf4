"""Formula models without sampling: parsing, designs, priors, names, reparameterization, errors."""

from __future__ import annotations

import numpy as np
import numpyro.distributions as dist
import pandas as pd
import pytest
from numpyro import handlers

import bhmjax as bj
from bhmjax._src.formula import parse_formula
from bhmjax._src.models import linear_predictor
from bhmjax._src.priors import Prior, Stacked
from bhmjax._src.reparam import group_effects


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame({
        "x": rng.normal(size=n), "z": rng.normal(2.0, 3.0, size=n),
        "c": rng.choice(["a", "b", "c"], n), "g": rng.integers(0, 8, n), "h": rng.choice(["p", "q"], n),
    })
    frame["y"] = 1.0 + 0.5 * frame.x + rng.normal(size=n)
    frame["k"] = rng.poisson(2.0, n)
    frame["n"] = 5
    frame["s"] = rng.binomial(5, 0.4, n)
    frame["b01"] = rng.integers(0, 2, n)
    return frame


# ---------------------------------------------------------------- parsing


def test_parse_terms():
    spec = parse_formula("y ~ 1 + x*c + (1 + x | g) + (1 || h) + (1 | a/b)")
    assert spec.response == "y" and spec.trials is None
    assert spec.fixed == "1 + x*c"
    assert [(g.expr, g.name, g.correlated) for g in spec.groups] == [
        ("1 + x", "g", True), ("1", "h", False), ("1", "a", True), ("1", "a:b", True)]


def test_parse_trials_and_intercept_only():
    spec = parse_formula("s | trials(n) ~ (1 | g)")
    assert (spec.response, spec.trials, spec.fixed) == ("s", "n", "1")
    assert parse_formula("y ~ 0 + x + (1 | g)").fixed == "0 + x"
    assert parse_formula("y ~ x - 1 + (1 | g)").fixed == "x - 1"


@pytest.mark.parametrize("formula, match", [
    ("y x", "expected exactly one '~'"),
    ("y ~ x + (1 | g", "never closed"),
    ("y ~ x + (1 | g) + (x | g)", "appears in more than one group term"),
    ("log(y) ~ x", "the response 'log\\(y\\)' is not a column name"),
    ("y ~ x + (1 | g + h)", "is not a column name"),
    ("y ~ x +* z", "formulaic cannot read"),
    ("y ~ x - (1 | g)", "cannot be subtracted"),
])
def test_parse_errors(formula, match):
    with pytest.raises(ValueError, match="cannot parse the formula.*" + match):
        parse_formula(formula)


def test_formula_type_error(df):
    with pytest.raises(TypeError, match="formula must be a string"):
        bj.Model(3, df)


# ---------------------------------------------------------------- designs and names


def test_design_and_names(df):
    model = bj.Model("y ~ 1 + x + C(c, contr.treatment(base='b')) + (1 + x | g) + (1 | h)", df)
    spec = model.spec
    assert spec.fixed.intercept
    assert spec.fixed.columns == ("x", "C(c, contr.treatment(base='b'))[T.a]",
                                  "C(c, contr.treatment(base='b'))[T.c]")
    assert [g.encoding.num_groups for g in spec.groups] == [8, 2]
    assert spec.groups[1].encoding.labels == ("p", "q")
    names, coords, dims = model.names()
    assert dims["b"] == ["coef"] and coords["coef"] == list(spec.fixed.columns)
    assert dims["sd_g"] == ["g__sd_term"] and coords["g__sd_term"] == ["Intercept", "x"]
    assert names["cor_g"] == [None, "cor_g[Intercept, x]", None, None]
    assert names["z_g"] == [None] * 16 and names["Intercept_c"] == [None]
    assert dims["r_g"] == ["g", "g__term"] and coords["g__term"] == ["Intercept", "x"]
    data = model.data
    assert data["G_0"] == 8 and isinstance(data["G_0"], int)
    assert data["X"].shape == (len(df), 3) and data["codes_0"].dtype == np.int32


def test_nested_and_crossed(df):
    model = bj.Model("y ~ x + (1 | g/h)", df)
    assert [g.name for g in model.spec.groups] == ["g", "g:h"]
    labels = model.spec.groups[1].encoding.labels
    assert all("_" in str(v) for v in labels)
    assert len(labels) == len(set(zip(df.g, df.h)))


def test_design_of_new_rows(df):
    model = bj.Model("y ~ x + c + (1 + x | g)", df)
    arrays, new = model.design(df)
    np.testing.assert_allclose(arrays["X"], model._arrays["X"])
    np.testing.assert_array_equal(arrays["codes_0"], model.data["codes_0"])
    assert new == {"g": ()}
    fresh = df.iloc[:3].assign(g=[0, 99, 100])
    with pytest.raises(ValueError, match="'g' has 2 level\\(s\\) not seen in training"):
        model.design(fresh)
    arrays, new = model.design(fresh, allow_new_levels=True)
    assert arrays["codes_0"].tolist() == [0, 8, 9] and new["g"] == (99, 100)


def test_linear_predictor_matches_model(df):
    """The eta predict will compute equals the generated model's, on training rows."""
    model = bj.Model("y ~ x + c + (1 + x | g) + (1 | h)", df)
    data = model.data
    tr = handlers.trace(handlers.seed(model.numpyro_model, 1)).get_trace(**data)
    params = {k: v["value"] for k, v in tr.items()}
    arrays, _ = model.design(df)
    eta = linear_predictor(model.spec.structure, params, arrays)
    np.testing.assert_allclose(np.asarray(eta), np.asarray(tr["y"]["fn"].loc), rtol=1e-4, atol=1e-4)


def test_same_structure_same_function(df):
    a = bj.Model("y ~ x + (1 | g)", df)
    b = bj.Model("y ~ x + (1 | g)", df.assign(y=df.y * 10))
    assert a.numpyro_model is b.numpyro_model
    assert bj.Model("y ~ x + (1 | g)", df, parameterization="centered").numpyro_model is not a.numpyro_model


def test_describe_lists_priors(df):
    text = bj.Model("y ~ x + (1 + x | g)", df).describe(verbose=False)
    for piece in ["Intercept", "b[x]", "sigma", "sd_g[Intercept]", "sd_g[x]", "cor_g", "LKJCholesky(2)",
                  "8 groups x 2 columns", "noncentered"]:
        assert piece in text, piece


# ---------------------------------------------------------------- priors


def test_default_priors_scaled_to_data(df):
    model = bj.Model("y ~ x + z + (1 + x | g)", df)
    p, s_y = model.spec.priors, df.y.std(ddof=0)
    args = dict(p["Intercept"].args)
    assert p["Intercept"].kind == "student_t" and float(args["df"]) == 3.0
    np.testing.assert_allclose([args["loc"], args["scale"]], [df.y.mean(), 2.5 * s_y])
    b = dict(p["b"].parts[0][1].args)
    np.testing.assert_allclose(b["scale"], 2.5 * s_y / df[["x", "z"]].std(ddof=0).to_numpy())
    np.testing.assert_allclose(dict(p["sigma"].args)["scale"], 2.5 * s_y)
    sd = dict(p["sd_g"].parts[0][1].args)
    np.testing.assert_allclose(sd["scale"], [2.5 * s_y, 2.5 * s_y / df.x.std(ddof=0)])
    assert float(dict(p["cor_g"].args)["concentration"]) == 2.0


def test_default_priors_logit_scale(df):
    model = bj.Model("s | trials(n) ~ x + (1 | g)", df, family="binomial")
    args = dict(model.spec.priors["Intercept"].args)
    p = (df.s / df.n).mean()
    np.testing.assert_allclose([args["loc"], args["scale"]], [np.log(p / (1 - p)), 2.5])
    np.testing.assert_allclose(dict(model.spec.priors["b"].parts[0][1].args)["scale"], 2.5 / df.x.std(ddof=0))


def test_prior_overrides(df):
    model = bj.Model("y ~ x + z + (1 + x | g)", df, priors={
        "b": dist.Normal(0, 1), "z": dist.Laplace(0, 2), "sd": dist.HalfNormal(1.0),
        "sd_g__x": dist.Exponential(3.0), "cor": 4.0, "sigma": dist.Exponential(1.0)})
    p = model.spec.priors
    assert [(idx, pr.dist.__class__.__name__) for idx, pr in p["b"].parts] == [((0,), "Normal"), ((1,), "Laplace")]
    assert [(idx, pr.dist.__class__.__name__) for idx, pr in p["sd_g"].parts] == [
        ((0,), "HalfNormal"), ((1,), "Exponential")]
    assert float(dict(p["cor_g"].args)["concentration"]) == 4.0
    # the stacked prior is the sum of its parts
    tr = handlers.trace(handlers.seed(model.numpyro_model, 0)).get_trace(**model.data)
    b = tr["b"]["value"]
    assert isinstance(tr["b"]["fn"], Stacked)
    want = dist.Normal(0, 1).log_prob(b[0]) + dist.Laplace(0, 2).log_prob(b[1])
    np.testing.assert_allclose(tr["b"]["fn"].log_prob(b), want, rtol=1e-6)


@pytest.mark.parametrize("priors, error, match", [
    ({"sd_county": dist.HalfNormal(1.0)}, ValueError, "no parameter of this model is named 'sd_county'"),
    ({"sigma": 1.0}, TypeError, "must be a NumPyro distribution"),
    ({"sigma": dist.Normal(0, 1)}, ValueError, "has support .* but the parameter is positive"),
    ({"b": dist.HalfNormal(1.0)}, ValueError, "but the parameter is real"),
    ({"cor": -1.0}, ValueError, "LKJ concentration must be > 0"),
    ({"cor": "x"}, TypeError, "must be an LKJ concentration"),
])
def test_prior_errors(df, priors, error, match):
    with pytest.raises(error, match=match):
        bj.Model("y ~ x + (1 + x | g)", df, priors=priors)


def test_prior_describe_user():
    assert Prior("user", dist=dist.HalfNormal(1.0)).describe() == "HalfNormal(user)"


# ---------------------------------------------------------------- reparameterization


@pytest.mark.parametrize("c", [0.0, 0.3, 1.0, (0.0, 1.0)])
def test_group_effects_covariance(c):
    """Every centeredness gives cov(r[g]) = diag(sd) L L^T diag(sd)."""
    sd = np.array([0.5, 2.0])
    chol = np.linalg.cholesky(np.array([[1.0, 0.6], [0.6, 1.0]]))
    c = c if isinstance(c, tuple) else (c, c)

    def model():
        group_effects("g", sd, 40_000, c, chol)

    tr = handlers.trace(handlers.seed(model, 3)).get_trace()
    r = np.asarray(tr["r_g"]["value"])
    want = np.diag(sd) @ chol @ chol.T @ np.diag(sd)
    np.testing.assert_allclose(np.cov(r.T), want, atol=0.05 * want.max())
    assert ("z_g" in tr) == (c != (1.0, 1.0))


def test_group_effects_uncorrelated_partial():
    sd = np.array([0.5, 3.0])

    def model():
        group_effects("g", sd, 40_000, (0.5, 0.5))

    tr = handlers.trace(handlers.seed(model, 0)).get_trace()
    np.testing.assert_allclose(np.asarray(tr["r_g"]["value"]).std(0), sd, rtol=0.03)
    np.testing.assert_allclose(np.asarray(tr["z_g"]["value"]).std(0), sd ** 0.5, rtol=0.03)


@pytest.mark.parametrize("param, match", [
    ("half", "must be one of \\['centered', 'noncentered'\\]"),
    (1.5, "must lie in \\[0, 1\\]"),
    ({"county": "centered"}, "names the grouping 'county', which is not in the formula"),
    ({"g": [0.0, 1.0, 0.5]}, "has 3 values but the term has 2 columns"),
])
def test_parameterization_errors(df, param, match):
    with pytest.raises(ValueError, match=match):
        bj.Model("y ~ x + (1 + x | g)", df, parameterization=param)


def test_parameterization_float_and_dict(df):
    model = bj.Model("y ~ x + (1 + x | g) + (1 | h)", df, parameterization={"g": 0.25, "h": "centered"})
    assert [g.centeredness for g in model.spec.structure.groups] == [(0.25, 0.25), (1.0,)]


# ---------------------------------------------------------------- bad data


@pytest.mark.parametrize("formula, family, match", [
    ("y ~ flor + (1 | g)", "gaussian", "column 'flor' named in the formula is not in the data"),
    ("y ~ x + (1 | one)", "gaussian", "grouping 'one' has a single level"),
    ("y ~ x + const + (1 | g)", "gaussian", "predictor column 'const' is constant"),
    ("y ~ x + (1 + const | g)", "gaussian", "column 'const' is constant"),
    ("y ~ x + (1 | g)", "bernoulli", "response 'y' must be 0 or 1 for the bernoulli family; row 0"),
    ("x ~ 1 + (1 | g)", "poisson", "response 'x' must hold non-negative integers"),
    ("s ~ x + (1 | g)", "binomial", "the binomial family needs the number of trials"),
    ("k | trials(n) ~ x + (1 | g)", "gaussian", "only used by the binomial family"),
    ("y ~ x", "gama", "unknown family 'gama' \\(did you mean 'gamma'\\?\\)"),
    ("y ~ 0", "gaussian", "has no terms"),
])
def test_bad_models(df, formula, family, match):
    data = df.assign(one="only", const=3.0)
    with pytest.raises(ValueError, match=match):
        bj.Model(formula, data, family=family)


def test_trials_below_successes(df):
    bad = df.assign(n=np.where(np.arange(len(df)) == 7, 0, 5), s=np.where(np.arange(len(df)) == 7, 0, df.s))
    with pytest.raises(ValueError, match="trials column 'n' must hold positive integers; row 7"):
        bj.Model("s | trials(n) ~ x", bad, family="binomial")
    bad = df.assign(s=np.where(np.arange(len(df)) == 4, 9, df.s))
    with pytest.raises(ValueError, match="response 's' exceeds the trials 'n' at row 4"):
        bj.Model("s ~ x", bad, family="binomial", trials="n")


def test_missing_values(df):
    bad = df.copy()
    bad.loc[[3, 10], "x"] = np.nan
    with pytest.raises(ValueError, match="column 'x' has 2 missing value\\(s\\), the first at row 3"):
        bj.Model("y ~ x + (1 | g)", bad)
    with pytest.warns(UserWarning, match="dropped 2 of 120 rows"):
        model = bj.Model("y ~ x + (1 | g)", bad, na_action="drop")
    assert model.num_rows == 118
    bad.loc[5, "z"] = np.nan  # an unused column does not count
    with pytest.warns(UserWarning, match="dropped 2 of 120"):
        bj.Model("y ~ x + (1 | g)", bad, na_action="drop")
    with pytest.raises(ValueError, match="na_action must be one of"):
        bj.Model("y ~ x + (1 | g)", df, na_action="omit")


def test_data_containers(df):
    model = bj.Model("y ~ x + (1 | g)", {c: df[c].to_numpy() for c in ["y", "x", "g"]})
    assert model.num_rows == len(df)
    with pytest.raises(ValueError, match="different lengths"):
        bj.Model("y ~ x + (1 | g)", {"y": df.y.to_numpy(), "x": df.x.to_numpy()[:-1], "g": df.g.to_numpy()})
    with pytest.raises(TypeError, match="must be a data frame .* or a dict"):
        bj.Model("y ~ x", [1, 2, 3])
