"""Predictions, predictive checks and model comparison.

Statistical checks, each with a broken twin that must fail:

* partial pooling: on held-out rows of many small simulated groups the hierarchical
  model's log predictive density beats complete and no pooling, and LOO ranks it first;
  the same fit with its group effects shuffled across groups loses to complete pooling;
* new groups: effects drawn for unseen levels have variance E[sd^2] over the posterior
  (|estimate - E[sd^2]| / MC error < 4, MC error from var(d^2 | sd) = 2 sd^4) and, for
  correlated terms, the fitted correlation; twice the sd is rejected;
* posterior predictive: the observed mean and sd lie in the 94% intervals of their
  replicated values; a fit with sigma shrunk 3-fold is rejected on the sd;
* radon: partial pooling's held-out lpd beats no pooling.

Fits are shared per module; checks that need no sampling run on synthetic draws.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import bhmjax as bj
from bhmjax import comparison
from bhmjax import predict as pred_lib
from bhmjax._src import predict as core

pytestmark = pytest.mark.slow

SETTINGS = dict(chains=2, warmup=300, draws=300, progress=False, chain_method="sequential", seed=3)
FORMULAS = {"pooled": "y ~ 1 + floor", "unpooled": "y ~ 0 + C(county) + floor",
            "hierarchical": "y ~ 1 + floor + (1 | county)"}
TAU, SIGMA = 0.5, 0.8


# --------------------------------------------------------------------------- data and fits


def simulate(groups: int = 85, train: int = 3, test: int = 4, seed: int = 0):
    """Radon-like data: many small groups (``train`` rows each to fit, ``test`` held out)."""
    rng = np.random.default_rng(seed)
    county = np.repeat(np.arange(1, groups + 1), train + test)
    floor = rng.integers(0, 2, county.size).astype(float)
    effect = rng.normal(0.0, TAU, groups)
    y = 1.4 - 0.6 * floor + effect[county - 1] + rng.normal(0.0, SIGMA, county.size)
    frame = pd.DataFrame({"y": y, "floor": floor, "county": county})
    held = np.tile(np.r_[np.zeros(train, bool), np.ones(test, bool)], groups)
    return frame[~held].reset_index(drop=True), frame[held].reset_index(drop=True)


@pytest.fixture(scope="module")
def sim():
    return simulate()


@pytest.fixture(scope="module")
def fits(sim):
    train, _ = sim
    return {name: bj.Model(f, train).fit(**SETTINGS) for name, f in FORMULAS.items()}


def fake_fit(model: bj.Model, chains: int = 2, draws: int = 100, seed: int = 0, sd=0.5, chol=None) -> bj.Fit:
    """A Fit with synthetic draws of the sites prediction reads (no sampling)."""
    rng = np.random.default_rng(seed)
    s = model.spec.structure
    shape = (chains, draws)
    d = {"Intercept": rng.normal(0.5, 0.1, shape), "b": rng.normal(0.2, 0.05, shape + (len(s.slopes),))}
    for g, design in zip(s.groups, model.spec.groups):
        k = len(g.columns)
        d[f"sd_{g.name}"] = np.broadcast_to(np.asarray(sd, float), shape + (k,)).copy()
        d[f"r_{g.name}"] = rng.normal(0, 0.3, shape + (design.encoding.num_groups, k))
        if g.correlated:
            d[f"L_{g.name}"] = np.broadcast_to(np.eye(k) if chol is None else chol, shape + (k, k)).copy()
    d.update({"sigma": np.full(shape, 0.7), "nu": np.full(shape, 5.0), "phi": np.full(shape, 3.0)})
    d = {k: v.astype(np.float32) for k, v in d.items()}
    stats = {"diverging": np.zeros(shape, bool)}
    return bj.Fit(draws=d, stats=stats, timings={}, num_grad_evals={}, settings={}, spec=model.spec,
                  data=model.model_data(), model=model.numpyro_model)


def family_data(family: str, n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, 5, n), "n": rng.integers(3, 9, n)})
    df["y"] = {"gaussian": rng.normal(size=n), "student_t": rng.normal(size=n),
               "bernoulli": rng.integers(0, 2, n), "binomial": rng.binomial(df["n"], 0.4),
               "poisson": rng.poisson(2.0, n), "negative_binomial": rng.poisson(2.0, n)}[family]
    return df


# --------------------------------------------------------------------------- partial pooling


def test_partial_pooling_wins_held_out_and_loo(fits, sim):
    _, test = sim
    lpd = {name: pred_lib.log_predictive_density(fit, test) for name, fit in fits.items()}
    total = {name: float(v.sum()) for name, v in lpd.items()}
    print(f"simulated held-out lpd ({len(test)} rows):", {k: round(v, 1) for k, v in total.items()})
    for other in ("pooled", "unpooled"):
        diff = lpd["hierarchical"] - lpd[other]
        se = float(np.sqrt(diff.size) * diff.std())
        assert total["hierarchical"] > total[other] + se, (total, other, se)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no pooling with 3 rows per county has high Pareto k
        table = bj.compare(fits, verbose=False)
    print(table)
    assert table.index[0] == "hierarchical", table
    assert {"elpd_loo", "elpd_waic", "p_waic", "pareto_k_bad", "weight"} <= set(table.columns)
    assert list(table["rank"]) == [0, 1, 2]


def test_broken_twin_shuffled_group_effects_lose(fits, sim):
    """Group effects attached to the wrong groups must do worse than no group effects."""
    _, test = sim
    fit = fits["hierarchical"]
    perm = np.random.default_rng(1).permutation(fit.draws["r_county"].shape[2])
    broken = bj.Fit(**{**fit.__dict__, "draws": {**fit.draws, "r_county": fit.draws["r_county"][:, :, perm]}})
    pooled = pred_lib.log_predictive_density(fits["pooled"], test).sum()
    assert pred_lib.log_predictive_density(broken, test).sum() < pooled
    population = pred_lib.log_predictive_density(fit, test, groups="population").sum()
    assert population < pred_lib.log_predictive_density(fit, test).sum()


def test_compare_warns_on_pareto_k_and_rejects_different_data(fits, sim, monkeypatch):
    train, _ = sim
    real = comparison._criteria

    def high_k(fit):
        loo, waic, _, good, n = real(fit)
        return loo, waic, 5 if fit is fits["unpooled"] else 0, good, n

    monkeypatch.setattr(comparison, "_criteria", high_k)
    with pytest.warns(UserWarning, match=r"Pareto k > 0\.\d+ \('unpooled': 5 of 255\)"):
        bj.compare(fits, verbose=False)
    with pytest.raises(TypeError, match="dict of two or more fits"):
        bj.compare([fits["pooled"]])
    other = bj.Fit(**{**fits["pooled"].__dict__, "data": {**fits["pooled"].data, "y": -fits["pooled"].data["y"]}})
    with pytest.raises(ValueError, match="different responses"):
        bj.compare({"a": fits["pooled"], "b": other}, verbose=False)


def test_formula_log_likelihood_per_row_equals_numpyro(fits):
    from bhmjax.io import pointwise_log_likelihood

    fit = fits["hierarchical"]
    ours = fit.log_likelihood()
    ref = pointwise_log_likelihood(fit)["y"]
    assert ours.shape == ref.shape == (2, 300, 255)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- new groups


def _new_group_z(fit, scale: float = 1.0, levels: int = 200):
    rows = {"floor": np.zeros(levels), "county": np.arange(1000, 1000 + levels)}
    new = fit.predict(rows, kind="linear_predictor", groups="new", seed=5).draws
    pop = fit.predict(rows, kind="linear_predictor", groups="population").draws
    d2 = (new - pop).astype(np.float64) ** 2
    sd2 = (scale * fit.draws["sd_county"][..., 0].astype(np.float64)) ** 2
    expected = sd2.mean()
    mc_error = np.sqrt(2 * np.mean(sd2 ** 2) / d2.size)
    return abs(d2.mean() - expected) / mc_error


def test_new_groups_wider_and_spread_matches_group_sd(fits):
    fit = fits["hierarchical"]
    rows = pd.DataFrame({"floor": [0.0] * 4, "county": [1, 2, 3, 999]})
    table = fit.predict(rows, groups="new", seed=2).summary()
    width = (table["hdi_97%"] - table["hdi_3%"]).to_numpy()
    assert width[3] > width[:3].max(), table
    assert _new_group_z(fit) < 4
    assert _new_group_z(fit, scale=2.0) > 4  # broken twin: twice the group sd


def test_new_correlated_effects_follow_cholesky():
    df = family_data("gaussian")
    model = bj.Model("y ~ 1 + x + (1 + x | g)", df)
    rho, sd = 0.6, np.array([0.5, 0.3])
    chol = np.linalg.cholesky(np.array([[1, rho], [rho, 1]]))
    fit = fake_fit(model, sd=sd, chol=chol)
    m = 300
    levels = np.repeat(np.arange(100, 100 + m), 2)
    rows = {"x": np.tile([0.0, 1.0], m), "g": levels}
    eta = fit.predict(rows, kind="linear_predictor", groups="new", seed=0, max_bytes=40_000).draws
    r0 = eta[..., 0::2] - fit.draws["Intercept"][..., None]
    r1 = eta[..., 1::2] - eta[..., 0::2] - fit.draws["b"][..., :1]
    r0, r1 = r0.reshape(-1).astype(float), r1.reshape(-1).astype(float)
    n = r0.size
    assert abs(r0.std() - sd[0]) / (sd[0] / np.sqrt(2 * n)) < 4
    assert abs(r1.std() - sd[1]) / (sd[1] / np.sqrt(2 * n)) < 4
    assert abs(np.corrcoef(r0, r1)[0, 1] - rho) / ((1 - rho ** 2) / np.sqrt(n)) < 4


def test_unseen_levels_raise_unless_new(fits):
    fit = fits["hierarchical"]
    with pytest.raises(ValueError, match=r"'county' has 2 level\(s\) not seen in training: 900, 901.*groups='new'"):
        fit.predict({"floor": [0.0, 1.0, 0.0], "county": [900, 901, 1]})
    a = fit.predict({"floor": [0.0], "county": [900]}, allow_new_levels=True, seed=1)
    assert a.groups == "new" and a.new_levels == {"county": (900,)}
    pop = fit.predict({"floor": [0.0]}, kind="mean", groups="population")  # no grouping column needed
    np.testing.assert_allclose(pop.draws[..., 0], fit.draws["Intercept"], rtol=1e-5)


# --------------------------------------------------------------------------- predictive checks


def _ppc_covers(fit) -> dict[str, bool]:
    y = np.asarray(fit.data["y"], dtype=float)
    rep = fit.posterior_predictive(store=False)["y"].reshape(-1, y.size).astype(float)
    out = {}
    for name, stat in {"mean": np.mean, "sd": lambda a, axis=None: np.std(a, axis=axis, ddof=1)}.items():
        lo, hi = np.quantile(stat(rep, axis=1), [0.03, 0.97])
        out[name] = bool(lo <= stat(y) <= hi)
    return out


def test_posterior_predictive_reproduces_mean_and_sd(fits):
    fit = fits["hierarchical"]
    assert _ppc_covers(fit) == {"mean": True, "sd": True}
    broken = bj.Fit(**{**fit.__dict__, "draws": {**fit.draws, "sigma": fit.draws["sigma"] / 3},
                       "extras": {}})
    assert _ppc_covers(broken)["sd"] is False
    pp = fit.posterior_predictive(seed=1)
    assert pp["y"].shape == (2, 300, 255) and "posterior_predictive" in fit.extras
    np.testing.assert_array_equal(fit.posterior_predictive(seed=1, store=False)["y"], pp["y"])
    assert "posterior_predictive" in fit.to_arviz().groups()
    import matplotlib.pyplot as plt

    plt.close(fit.plot_ppc())


def test_numpyro_model_posterior_and_prior_predictive():
    import numpyro
    import numpyro.distributions as dist

    def model(y=None, n=10):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        with numpyro.plate("rows", n):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = np.linspace(-1, 1, 10)
    fit = bj.Fit(draws={"mu": np.full((2, 50), 3.0, np.float32)}, stats={"diverging": np.zeros((2, 50), bool)},
                 timings={}, num_grad_evals={}, settings={}, data={"y": y, "n": 10}, model=model)
    pp = fit.posterior_predictive(seed=0)
    assert pp["y"].shape == (2, 50, 10) and abs(pp["y"].mean() - 3.0) < 0.2  # drawn, not the data
    assert fit.log_likelihood().shape == (2, 50, 10)
    prior = bj.prior_predictive(model, {"y": y, "n": 10}, draws=200, seed=0)
    assert prior["y"].shape == (1, 200, 10) and prior["mu"].shape == (1, 200)
    assert abs(prior["mu"].std() - 1.0) < 0.2
    with pytest.raises(TypeError, match="needs a formula fit"):
        fit.predict({"x": [1.0]})


def test_prior_predictive_of_formula_model():
    model = bj.Model("y ~ 1 + x + (1 | g)", family_data("poisson"), family="poisson")
    prior = bj.prior_predictive(model, draws=30, seed=1)
    assert prior["y"].shape == (1, 30, 40) and np.issubdtype(prior["y"].dtype, np.integer)
    assert prior["r_g"].shape == (1, 30, 5, 1)
    with pytest.raises(ValueError, match="draws must be a positive integer"):
        bj.prior_predictive(model, draws=0)


# --------------------------------------------------------------------------- families and outputs


@pytest.mark.parametrize("family", ["gaussian", "student_t", "bernoulli", "binomial", "poisson",
                                    "negative_binomial"])
def test_every_family_predicts_with_the_right_type(family):
    df = family_data(family)
    formula = ("y | trials(n) ~ 1 + x + (1 | g)" if family == "binomial" else "y ~ 1 + x + (1 | g)")
    fit = fake_fit(bj.Model(formula, df, family=family))
    new = pd.DataFrame({"x": [0.0, 1.0, -1.0], "g": [0, 4, 77], "n": [5, 10, 20]})
    out = fit.predict(new, groups="new", seed=0)
    assert out.draws.shape == (2, 100, 3)
    if family in ("gaussian", "student_t"):
        assert out.draws.dtype.kind == "f"
    else:
        assert out.draws.dtype == np.int32 and (out.draws >= 0).all()
    if family == "bernoulli":
        assert set(np.unique(out.draws)) == {0, 1}
    if family == "binomial":
        assert (out.draws <= new["n"].to_numpy()).all() and out.draws[..., 2].max() > 10
    mean = fit.predict(new, kind="mean", groups="new", seed=0).draws
    assert mean.dtype.kind == "f"
    if family in ("bernoulli", "binomial"):
        assert ((mean > 0) & (mean < 1)).all()
    assert fit.posterior_predictive(store=False)["y"].shape == (2, 100, 40)


def test_binomial_response_needs_trials():
    df = family_data("binomial")
    fit = fake_fit(bj.Model("y ~ 1 + x", df, family="binomial", trials="n"))
    with pytest.raises(ValueError, match="need the number of trials"):
        fit.predict({"x": [0.0]})
    assert fit.predict({"x": [0.0], "m": [4]}, trials="m").draws.max() <= 4
    assert fit.predict({"x": [0.0]}, kind="mean").draws.shape == (2, 100, 1)


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def cat_fit():
    df = family_data("gaussian")
    df["c"] = np.array(["a", "b", "c", "d"])[np.arange(len(df)) % 4]
    return fake_fit(bj.Model("y ~ 1 + x + c + (1 | g)", df))


@pytest.mark.parametrize("rows, error, match", [
    ({"c": ["a"], "g": [1]}, ValueError, r"lacks the column\(s\) \['x'\]"),
    ({"x": [0.0, 1.0], "c": ["a", "zz"], "g": [1, 2]}, ValueError, r"column 'c' .* not seen in training: 'zz'"),
    ({"x": ["1.5", "oops"], "c": ["a", "b"], "g": [1, 2]}, TypeError,
     r"column 'x' .* non-numeric .* row 1: 'oops'"),
    ({"x": [0.0, np.nan], "c": ["a", "b"], "g": [1, 2]}, ValueError, r"column 'x' .*\(NaN/inf\), the first at row 1"),
    ({"x": [0.0], "c": [None], "g": [1]}, ValueError, r"column 'c' .* missing value"),
    ({"x": [0.0], "c": ["a"], "g": [None]}, ValueError, r"group variable 'g' has 1 missing"),
    ({"x": [0.0], "c": ["a"], "g": [55]}, ValueError, r"'g' has 1 level\(s\) not seen in training: 55"),
    ({"x": [], "c": [], "g": []}, ValueError, "no rows"),
])
def test_bad_new_data_raises_before_compiling(cat_fit, monkeypatch, rows, error, match):
    def never(*args, **kwargs):
        raise AssertionError("compiled before checking the data")

    monkeypatch.setattr(core, "predict_draws", never)
    with pytest.raises(error, match=match):
        cat_fit.predict(rows)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="median"), "kind must be one of"),
    (dict(groups="all"), "groups must be one of"),
    (dict(draws=101), "draws=101 but the fit has 100"),
    (dict(draws=0), "draws must be a positive integer"),
])
def test_bad_arguments(cat_fit, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cat_fit.predict({"x": [0.0], "c": ["a"], "g": [1]}, **kwargs)


def test_numeric_strings_are_accepted(cat_fit):
    a = cat_fit.predict({"x": ["0.5"], "c": ["b"], "g": [1]}, kind="mean").draws
    b = cat_fit.predict({"x": [0.5], "c": ["b"], "g": [1]}, kind="mean").draws
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- vectorization


def test_chunks_draws_seed_and_no_retrace(cat_fit):
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"x": rng.normal(size=500), "c": rng.choice(list("abcd"), 500),
                         "g": rng.choice([0, 1, 2, 3, 4, 90, 91], 500)})
    whole = cat_fit.predict(rows, kind="linear_predictor", groups="new", seed=4)
    small = cat_fit.predict(rows, kind="linear_predictor", groups="new", seed=4, max_bytes=20_000)
    np.testing.assert_allclose(small.draws, whole.draws, rtol=1e-6)  # new levels agree across chunks
    assert core.chunk_sizes(200, 500, 40, 20_000)[1] < 500  # it did chunk
    r1 = cat_fit.predict(rows, groups="new", seed=7).draws
    np.testing.assert_array_equal(r1, cat_fit.predict(rows, groups="new", seed=7).draws)
    assert not np.array_equal(r1, cat_fit.predict(rows, groups="new", seed=8).draws)
    sub = cat_fit.predict(rows, groups="new", draws=10, seed=7)
    assert sub.draws.shape == (2, 10, 500) and sub.summary().shape == (500, 4)
    before = core._chunk._cache_size()
    cat_fit.predict(rows.assign(x=rows.x + 1.0), groups="new", seed=9)
    assert core._chunk._cache_size() == before  # new values of the same size reuse the program


def test_summary_matches_arviz_hdi():
    import arviz as az

    draws = np.random.default_rng(0).gamma(2.0, size=(2, 300, 3))
    p = bj.Prediction(draws, "response", "existing", pd.RangeIndex(3))
    table = p.summary(prob=0.9)
    ref = az.hdi(draws, hdi_prob=0.9)
    np.testing.assert_allclose(table[["hdi_5%", "hdi_95%"]].to_numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(table["mean"], draws.mean(axis=(0, 1)))


# --------------------------------------------------------------------------- radon


def test_radon_partial_pooling_beats_no_pooling_held_out(posteriordb):
    d = json.loads((posteriordb / "radon_mn.json").read_text())
    df = pd.DataFrame({"y": d["log_radon"], "floor": np.asarray(d["floor_measure"], float),
                       "county": d["county_idx"]})  # county_idx is 1-based: labels, not codes
    rng = np.random.default_rng(0)
    held = rng.random(len(df)) < 0.2
    for county in df.county[held].unique():  # keep each county in training (no pooling needs it)
        rows = np.flatnonzero((df.county == county).to_numpy())
        if held[rows].all():
            held[rows[0]] = False
    train, test = df[~held].reset_index(drop=True), df[held].reset_index(drop=True)
    partial = bj.Model(FORMULAS["hierarchical"], train).fit(**SETTINGS)
    none = bj.Model(FORMULAS["unpooled"], train).fit(**SETTINGS)
    lpd_partial = pred_lib.log_predictive_density(partial, test)
    lpd_none = pred_lib.log_predictive_density(none, test)
    print(f"radon held-out lpd ({len(test)} homes): partial {lpd_partial.sum():.1f}, none {lpd_none.sum():.1f}")
    assert lpd_partial.sum() > lpd_none.sum()
