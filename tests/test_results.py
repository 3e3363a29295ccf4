"""Reading the results: fixef, ranef, coef, hypothesis, Bayesian R2 and conditional effects.

Each check compares with a computation of its own from the draws, so it can fail:

* ``fixef`` equals ``fit.summary``'s rows; ``coef`` equals ``fixef + ranef`` per level and
  per draw, with ``r_g`` read from ``fit.draws`` directly;
* ``hypothesis``: the posterior probability is the share of draws where it holds (and
  the reversed hypothesis gets the complement: a wrong-direction control), the interval
  the draws' quantiles, brms' names the same parameters as the summary rows;
* ``r2`` equals ``var(mu) / (var(mu) + var(y - mu))`` with mu built by hand from the
  draws and the design, and lies within 4 posterior sd of the R2 of the true means on
  the simulated data; the population-only mu (a wrong mu) gives a different R2;
* conditional effects equal ``predict`` on their grid and, for a gaussian and a Poisson
  model, the population-level mean computed from the draws at the reference values.

Two small fits are shared by the module; checks that need no sampling use synthetic draws.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import bhmjax as bj

pytestmark = pytest.mark.slow

SETTINGS = dict(chains=2, warmup=200, draws=200, progress=False, seed=1)


# --------------------------------------------------------------------------- fits


@pytest.fixture(scope="module")
def gauss():
    """y ~ x + c + (1 + x | g): the frame, the true mean per row and the fit."""
    rng = np.random.default_rng(0)
    n, groups = 160, 8
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    c = rng.choice(["a", "b", "c"], n)
    u = rng.normal(0, [0.6, 0.3], size=(groups, 2))
    mu = 1.0 + 0.7 * x + 0.5 * (c == "b") - 0.4 * (c == "c") + u[g, 0] + u[g, 1] * x
    frame = pd.DataFrame({"y": mu + rng.normal(size=n), "x": x, "c": c, "g": g})
    return frame, mu, bj.Model("y ~ x + c + (1 + x | g)", frame).fit(**SETTINGS)


@pytest.fixture(scope="module")
def pois():
    rng = np.random.default_rng(1)
    n = 150
    g = rng.integers(0, 5, n)
    x = rng.uniform(-1, 1, n)
    frame = pd.DataFrame({"k": rng.poisson(np.exp(0.5 + 0.8 * x + rng.normal(0, 0.4, 5)[g])), "x": x, "g": g})
    return frame, bj.Model("k ~ x + (1 | g)", frame, family="poisson").fit(**SETTINGS)


def _synthetic(seed: int = 0) -> bj.Fit:
    """A Fit of a NumPyro model without sampling: mu (scalar) and theta (3,)."""
    rng = np.random.default_rng(seed)
    draws = {"mu": rng.normal(1.0, 1.0, (2, 500)), "theta": rng.normal(0.0, 1.0, (2, 500, 3))}
    return bj.Fit(draws=draws, stats={"diverging": np.zeros((2, 500), bool)}, timings={}, num_grad_evals={},
                  settings={}, coords={"school": ["A", "B", "C"]}, dims={"theta": ["school"]})


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1, *np.shape(a)[2:])


# --------------------------------------------------------------------------- fixef, ranef, coef


def test_fixef_matches_summary_rows(gauss):
    fit = gauss[2]
    table = fit.fixef()
    assert list(table.index) == ["Intercept", "x", "c[T.b]", "c[T.c]"]
    assert list(table.columns) == ["Estimate", "Est.Error", "Q2.5", "Q97.5"]
    rows = fit.summary(["Intercept", "b"], round_to="none")
    np.testing.assert_allclose(table["Estimate"].to_numpy(), rows["mean"].to_numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(table["Est.Error"].to_numpy(), rows["sd"].to_numpy(), rtol=1e-5)
    b = _flat(fit.draws["b"])
    np.testing.assert_allclose(table.loc["x", ["Q2.5", "Q97.5"]].to_numpy(float), np.quantile(b[:, 0], [0.025, 0.975]))


def test_ranef_and_coef_are_the_group_draws_plus_the_population(gauss):
    frame, _, fit = gauss
    r = np.asarray(fit.draws["r_g"], dtype=np.float64)  # (chains, draws, levels, [Intercept, x])
    ranef = fit.ranef()
    assert list(ranef.columns[:3]) == ["group", "level", "term"] and set(ranef["group"]) == {"g"}
    row = ranef[(ranef["level"] == 3) & (ranef["term"] == "x")].iloc[0]
    assert row["Estimate"] == pytest.approx(r[:, :, 3, 1].mean())
    coef = fit.coef(summary=False)["g"]
    assert coef.shape == r.shape[:3] + (4,)
    intercept = np.asarray(fit.draws["Intercept"], dtype=np.float64)
    b = np.asarray(fit.draws["b"], dtype=np.float64)
    for level in range(r.shape[2]):
        np.testing.assert_allclose(coef[:, :, level, 0], intercept + r[:, :, level, 0], rtol=1e-12)
        np.testing.assert_allclose(coef[:, :, level, 1], b[..., 0] + r[:, :, level, 1], rtol=1e-12)
        np.testing.assert_allclose(coef[:, :, level, 2], b[..., 1], rtol=1e-12)  # no group effect on c
    table = fit.coef()
    row = table[(table["level"] == 5) & (table["term"] == "Intercept")].iloc[0]
    assert row["Estimate"] == pytest.approx((intercept + r[:, :, 5, 0]).mean())
    assert row["Estimate"] != pytest.approx(r[:, :, 5, 0].mean())  # not ranef alone
    assert len(table) == 8 * 4 and len(ranef) == 8 * 2


def test_group_readers_refuse_a_model_without_group_terms(gauss):
    from bhmjax._src.predict import population_structure

    fit = gauss[2]
    plain = dataclasses.replace(fit, spec=dataclasses.replace(fit.spec, structure=population_structure(fit.spec.structure)))
    assert list(plain.fixef().index) == ["Intercept", "x", "c[T.b]", "c[T.c]"]
    for method in ("ranef", "coef"):
        with pytest.raises(ValueError, match="has no group terms"):
            getattr(plain, method)()


def test_formula_only_helpers_refuse_a_numpyro_fit():
    fit = _synthetic()
    for method in ("fixef", "ranef", "coef", "r2"):
        with pytest.raises(TypeError, match="formula model"):
            getattr(fit, method)()
    with pytest.raises(TypeError, match="formula model"):
        fit.conditional_effects("x")


# --------------------------------------------------------------------------- hypothesis


def test_hypothesis_is_the_share_of_draws(gauss):
    fit = gauss[2]
    bx = _flat(fit.draws["b"])[:, 0]
    table = fit.hypothesis("x > 0.5", "x < 0.5", "b[x] = 0.5")
    assert list(table["Hypothesis"]) == ["(x)-(0.5) > 0", "(x)-(0.5) < 0", "(b[x])-(0.5) = 0"]
    assert table["Post.Prob"][0] == pytest.approx(np.mean(bx > 0.5))
    assert table["Post.Prob"][1] == pytest.approx(np.mean(bx < 0.5))
    assert table["Post.Prob"][0] + table["Post.Prob"][1] == pytest.approx(1.0)  # wrong direction: the complement
    assert table["Estimate"][0] == pytest.approx(bx.mean() - 0.5)
    assert table["CI.Lower"][0] == pytest.approx(np.quantile(bx - 0.5, 0.05)) and table["CI.Upper"][0] == np.inf
    assert table["CI.Upper"][1] == pytest.approx(np.quantile(bx - 0.5, 0.95)) and table["CI.Lower"][1] == -np.inf
    np.testing.assert_allclose(table.loc[2, ["CI.Lower", "CI.Upper"]].to_numpy(float),
                               np.quantile(bx - 0.5, [0.025, 0.975]))
    assert np.isnan(table["Post.Prob"][2]) and np.isnan(table["Evid.Ratio"][2])
    p = np.mean(bx > 0.5)
    assert table["Evid.Ratio"][0] == pytest.approx(p / (1 - p))


def test_hypothesis_reads_brms_names_and_summary_rows(gauss):
    fit = gauss[2]
    sd = _flat(fit.draws["sd_g"])
    r = _flat(fit.draws["r_g"])
    brms = fit.hypothesis("sd_g__Intercept < 1", "cor_g__Intercept__x > 0", "r_g[2,Intercept] > r_g[4,Intercept]",
                          "c[T.b] - c[T.c] > 0", summary=False)
    rows = fit.hypothesis("sd_g[Intercept] < 1", "cor_g[Intercept, x] > 0", "r_g[2, Intercept] > r_g[4, Intercept]",
                          "b['c[T.b]'] - b['c[T.c]'] > 0", summary=False)
    for a, b in zip(brms.values(), rows.values()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(_flat(list(brms.values())[0]), sd[:, 0] - 1)
    np.testing.assert_allclose(_flat(list(brms.values())[2]), r[:, 2, 0] - r[:, 4, 0])
    cor = _flat(fit.draws["cor_g"])[:, 0, 1]
    np.testing.assert_allclose(_flat(list(brms.values())[1]), cor)


def test_hypothesis_on_a_numpyro_fit_and_its_errors():
    fit = _synthetic()
    mu, theta = fit.draws["mu"], fit.draws["theta"]
    table = fit.hypothesis("exp(mu) > 2 * theta[B]", "mu + theta[A] < 0", "mu^2 > 1")
    assert table["Post.Prob"][0] == pytest.approx(np.mean(np.exp(mu) > 2 * theta[..., 1]))
    assert table["Post.Prob"][1] == pytest.approx(np.mean(mu + theta[..., 0] < 0))
    assert table["Post.Prob"][2] == pytest.approx(np.mean(mu ** 2 > 1))
    with pytest.raises(KeyError, match=r"no parameter named 'muu'.*did you mean.*Names are"):
        fit.hypothesis("muu > 0")
    for bad in ("__import__('os').system('true') > 0", "mu.__class__ > 0", "open('x') > 0"):
        with pytest.raises(KeyError, match="no parameter named"):
            fit.hypothesis(bad)
    with pytest.raises(ValueError, match="only numbers, parameter names"):
        fit.hypothesis("mu % 2 > 0")
    with pytest.raises(ValueError, match="exactly one comparison"):
        fit.hypothesis("mu >= 0")
    with pytest.raises(ValueError, match="exactly one comparison"):
        fit.hypothesis("mu")


# --------------------------------------------------------------------------- R2


def _design_mu(frame: pd.DataFrame, fit, population_only: bool = False) -> np.ndarray:
    """mu per draw and row, (chains * draws, rows), built by hand from the draws."""
    X = np.column_stack([frame["x"], frame["c"] == "b", frame["c"] == "c"]).astype(float)
    mu = _flat(fit.draws["Intercept"])[:, None] + _flat(fit.draws["b"]) @ X.T
    if not population_only:
        codes = pd.Index(list(fit.spec.groups[0].encoding.labels)).get_indexer(frame["g"])
        r = _flat(fit.draws["r_g"])[:, codes]  # (S, rows, 2)
        mu = mu + r[..., 0] + r[..., 1] * frame["x"].to_numpy()
    return mu


def _r2(y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    var_mu = mu.var(axis=-1, ddof=1)
    return var_mu / (var_mu + (y - mu).var(axis=-1, ddof=1))


def test_r2_equals_a_direct_computation_and_the_truth(gauss):
    frame, true_mu, fit = gauss
    y = frame["y"].to_numpy()
    draws = fit.r2(summary=False)
    assert draws.shape == (2, 200)
    np.testing.assert_allclose(draws.reshape(-1), _r2(y, _design_mu(frame, fit)), rtol=1e-4)
    wrong = _r2(y, _design_mu(frame, fit, population_only=True))  # a broken twin: group effects left out
    assert abs(wrong.mean() - draws.mean()) > 0.05
    table = fit.r2()
    assert list(table.index) == ["R2"] and table["Estimate"].iloc[0] == pytest.approx(draws.mean())
    truth = _r2(y, true_mu[None])[0]
    assert abs(table["Estimate"].iloc[0] - truth) < 4 * table["Est.Error"].iloc[0], (table, truth)


# --------------------------------------------------------------------------- conditional effects


def test_conditional_effects_equal_predictions_on_the_grid(gauss):
    frame, _, fit = gauss
    ce = fit.conditional_effects("x", by="c")
    assert len(ce) == 100 * 3 and set(ce["c"]) == {"a", "b", "c"}
    assert ce["x"].min() == pytest.approx(frame["x"].min()) and ce["x"].max() == pytest.approx(frame["x"].max())
    pred = fit.predict(ce[["x", "c"]], kind="mean", groups="population")
    np.testing.assert_allclose(ce["Estimate"], pred.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ce["Q97.5"], np.quantile(_flat(pred.draws), 0.975, axis=0), rtol=1e-6)
    # the population mean from the draws: Intercept + b_x x + b_c, group effects left out
    X = np.column_stack([ce["x"], ce["c"] == "b", ce["c"] == "c"]).astype(float)
    direct = _flat(fit.draws["Intercept"])[:, None] + _flat(fit.draws["b"]) @ X.T
    np.testing.assert_allclose(ce["Estimate"], direct.mean(axis=0), rtol=1e-4, atol=1e-5)
    other = fit.conditional_effects("x")  # c at its reference level
    assert set(other["c"]) == {"a"}
    np.testing.assert_allclose(other["Estimate"], ce.loc[ce["c"] == "a", "Estimate"], rtol=1e-6)
    fixed = fit.conditional_effects("x", conditions={"c": "c"})
    np.testing.assert_allclose(fixed["Estimate"], ce.loc[ce["c"] == "c", "Estimate"], rtol=1e-6)


def test_conditional_effects_of_a_poisson_model_and_by_group(pois):
    frame, fit = pois
    ce = fit.conditional_effects("x")
    eta = _flat(fit.draws["Intercept"])[:, None] + _flat(fit.draws["b"])[:, :1] * ce["x"].to_numpy()[None]
    np.testing.assert_allclose(ce["Estimate"], np.exp(eta).mean(axis=0), rtol=1e-4)
    assert not np.allclose(ce["Estimate"], eta.mean(axis=0), rtol=1e-2)  # the mean, not the link scale
    by = fit.conditional_effects("x", by="g")  # a grouping factor: its fitted effects included
    r = _flat(fit.draws["r_g"])[:, :, 0]
    for level in (0, 3):
        rows = by[by["g"] == level]
        eta_g = (_flat(fit.draws["Intercept"])[:, None] + r[:, level, None]
                 + _flat(fit.draws["b"])[:, :1] * rows["x"].to_numpy()[None])
        np.testing.assert_allclose(rows["Estimate"], np.exp(eta_g).mean(axis=0), rtol=1e-4)
    with pytest.raises(ValueError, match="not a predictor"):
        fit.conditional_effects("z")
    with pytest.raises(ValueError, match="groups must be None, 'population' or 'existing'"):
        fit.conditional_effects("x", groups="new")
    with pytest.raises(ValueError, match="kind must be 'mean' or 'linear_predictor'"):
        fit.conditional_effects("x", kind="response")
    with pytest.raises(ValueError, match=r"conditions name \['z'\]"):
        fit.conditional_effects("x", conditions={"z": 1.0})
    fig = fit.plot_predictions("x", by="g")
    assert len(fig.axes[0].lines) == 5


def test_plot_predictions_draws_levels_of_a_categorical_effect(gauss):
    fig = gauss[2].plot_predictions("c", by="x")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert len(ax.get_legend().get_texts()) == 3  # x at mean - sd, mean, mean + sd


def test_an_ordinal_model_cutpoints_per_level_and_level_probabilities():
    rng = np.random.default_rng(2)
    n = 120
    g = rng.integers(0, 4, n)
    x = rng.normal(size=n)
    o = np.digitize(x + rng.normal(0, 0.5, 4)[g] + rng.logistic(size=n), [-1.0, 0.5, 2.0])
    fit = bj.Model("o ~ x + (1 | g)", pd.DataFrame({"o": o, "x": x, "g": g}), family="cumulative").fit(
        **{**SETTINGS, "warmup": 150, "draws": 100})
    assert list(fit.fixef().index) == ["Intercept[1]", "Intercept[2]", "Intercept[3]", "x"]
    coef = fit.coef(summary=False)["g"]  # brms: a cutpoint per level is Intercept[k] - r_g (cutpoint - eta)
    cut, r = np.asarray(fit.draws["Intercept"], float), np.asarray(fit.draws["r_g"], float)[..., 0]
    assert coef.shape[-1] == 4
    np.testing.assert_allclose(coef[:, :, 2, 1], cut[..., 1] - r[:, :, 2], rtol=1e-12)
    ce = fit.conditional_effects("x")
    assert list(ce["level"][:4]) == [0, 1, 2, 3] and len(ce) == 100 * 4
    np.testing.assert_allclose(ce.groupby("x")["Estimate"].sum(), 1.0, rtol=1e-5)
    eta = _flat(fit.draws["b"])[:, 0, None] * ce["x"].to_numpy()[None, ::4]  # population: no r_g
    p_low = 1 / (1 + np.exp(-(_flat(cut)[:, :1] - eta)))  # P(y = 0) = logistic(Intercept[1] - eta)
    np.testing.assert_allclose(ce["Estimate"].to_numpy()[::4], p_low.mean(axis=0), rtol=1e-4)
    with pytest.raises(ValueError, match="r2 is not defined for the cumulative family"):
        fit.r2()
    fig = fit.plot_predictions("x")
    assert len(fig.axes) == 4
