"""fit.to_arviz() and bj.compare under ArviZ 0.x (InferenceData) and 1.x (DataTree).

`make test` runs this file in the main venv (ArviZ 0.x, Python 3.11) and in .venv-az1
(ArviZ 1.x, Python 3.12). ArviZ 1.x ties its tail ESS to ``stats.ci_prob`` (quantiles
0.11 and 0.89 by default); the 5% and 95% quantiles of Vehtari et al. (2021), which
fit.summary() and ArviZ 0.x use, are ArviZ 1.x's with ``ci_prob=0.95``.
"""

import sys
import warnings

import numpy as np
import pytest

import bhmjax as bj
from bhmjax.arviz import arviz_major

from ._models import eight_schools_noncentered as noncentered

az = pytest.importorskip("arviz")
ONE = arviz_major() >= 1
COLUMNS = ["mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]
SCHOOLS = ["Choate", "Deerfield", "Phillips Andover", "Phillips Exeter", "Hotchkiss", "Lawrenceville",
           "St. Paul's", "Mt. Hermon"]


def az_summary(data):
    """ArviZ's summary with fit.summary()'s statistics and column names, raw numbers, on either line."""
    if not ONE:
        return az.summary(data, round_to="none")
    with az.rc_context({"stats.ci_prob": 0.95}):
        table = az.summary(data, ci_kind="hdi", ci_prob=0.94, round_to="none")
    return table.rename(columns={"hdi94_lb": "hdi_3%", "hdi94_ub": "hdi_97%"})[COLUMNS].astype(float)


def group(data, name):
    return data[name] if ONE else getattr(data, name)


@pytest.fixture(scope="module")
def schools(eight_schools):
    return bj.sample(noncentered, eight_schools, chains=4, warmup=300, draws=300, seed=3, progress=False,
                     x64=True, coords={"school": SCHOOLS}, dims={"theta": ["school"], "eta": ["school"]})


def _slopes_data(seed=0, groups=8, per_group=12):
    rng = np.random.default_rng(seed)
    g = np.repeat([f"G{i}" for i in range(groups)], per_group)
    x = rng.normal(size=g.size)
    a, b = rng.normal(0, 0.5, groups), rng.normal(0, 0.3, groups)
    codes = np.repeat(np.arange(groups), per_group)
    return {"y": rng.normal(0.3 + a[codes] + (0.8 + b[codes]) * x, 0.7), "x": x, "z": rng.normal(size=g.size),
            "g": g}


@pytest.fixture(scope="module")
def slopes():
    """A formula fit with every kind of site: Intercept, b, sigma, sd, cor, r and internal ones."""
    model = bj.Model("y ~ 1 + x + z + (1 + x | g)", _slopes_data())
    return model.fit(chains=2, warmup=300, draws=200, seed=1, progress=False, x64=True)


# ----------------------------------------------------------------------- names, groups, labels


def test_groups_names_and_labels(schools):
    data = schools.to_arviz()
    groups = set(data.children) if ONE else set(data.groups())
    assert groups >= {"posterior", "sample_stats", "observed_data", "log_likelihood"}
    stats = group(data, "sample_stats")
    assert {"diverging", "energy", "step_size", "tree_depth", "n_steps", "acceptance_rate", "lp"} <= set(stats.data_vars)
    np.testing.assert_array_equal(stats["lp"].values, -schools.stats["potential_energy"])
    theta = group(data, "posterior")["theta"]
    assert theta.dims == ("chain", "draw", "school") and list(theta.coords["school"].values) == SCHOOLS
    observed = group(data, "observed_data")["y"]
    assert observed.dims == ("obs_id",)
    np.testing.assert_array_equal(observed.values, schools.data["y"])
    assert group(data, "log_likelihood")["y"].dims == ("chain", "draw", "obs_id")


def test_formula_export_has_real_dims_and_no_internal_sites(slopes):
    posterior = group(slopes.to_arviz(), "posterior")
    assert list(posterior.data_vars) == ["Intercept", "b", "sigma", "sd_g", "cor_g", "r_g"]
    assert posterior["b"].dims == ("chain", "draw", "coef") and list(posterior["b"]["coef"].values) == ["x", "z"]
    assert posterior["r_g"].dims == ("chain", "draw", "g", "g__term")
    assert list(posterior["r_g"]["g"].values) == [f"G{i}" for i in range(8)]
    assert list(posterior["r_g"]["g__term"].values) == ["Intercept", "x"]
    assert list(posterior["cor_g"]["cor_g_entry"].values) == ["Intercept, x"]
    np.testing.assert_array_equal(posterior["cor_g"].values[..., 0], slopes.draws["cor_g"][..., 0, 1])
    np.testing.assert_array_equal(posterior["r_g"].values, slopes.draws["r_g"])
    assert not {"Intercept_c", "z_g", "L_g"} & set(posterior.data_vars)


@pytest.mark.parametrize("which", ["schools", "slopes"])
def test_az_summary_equals_fit_summary(which, request):
    fit = request.getfixturevalue(which)
    theirs = az_summary(fit.to_arviz())
    mine = fit.summary(round_to="none")
    assert list(theirs.index) == list(mine.index)  # same rows, same names, same order
    np.testing.assert_allclose(theirs[COLUMNS].to_numpy(), mine[COLUMNS].to_numpy(), rtol=1e-6, atol=1e-6)


def test_default_rounding_matches_arviz_0x(slopes):
    if ONE:
        pytest.skip("ArviZ 1.x rounds to significant digits as strings by default")
    theirs, mine = az.summary(slopes.to_arviz()), slopes.summary()
    assert list(theirs.index) == list(mine.index)
    assert (np.abs(theirs.to_numpy() - mine.to_numpy()) <= 1.001e-3).all()  # a last-digit tie at most


def test_loaded_fit_exports_the_same(schools, tmp_path):
    loaded = bj.load(schools.save(tmp_path / "schools.bhm"))
    theirs = az_summary(loaded.to_arviz())
    np.testing.assert_allclose(theirs[COLUMNS].to_numpy(), az_summary(schools.to_arviz())[COLUMNS].to_numpy())
    assert group(loaded.to_arviz(), "log_likelihood")["y"].shape == (4, 300, 8)


# ----------------------------------------------------------------------- LOO, compare, predictive groups


def test_az_loo_and_compare_run_on_exports(slopes):
    pooled = bj.Model("y ~ 1 + x + z", _slopes_data()).fit(chains=2, warmup=300, draws=200, seed=1,
                                                          progress=False, x64=True)
    exports = {"pooled": pooled.to_arviz(), "slopes": slopes.to_arviz()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = az.loo(exports["slopes"], pointwise=True)
        table = az.compare(exports)
    assert np.isfinite(loo.elpd if ONE else loo.elpd_loo)
    assert set(table.index) == {"pooled", "slopes"}
    ours = bj.compare({"pooled": pooled, "slopes": slopes}, verbose=False)
    assert list(ours.columns[:9]) == ["rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse",
                                      "warning", "scale"]
    elpd = {m: float(loo.elpd if ONE else loo.elpd_loo) for m, loo in [("slopes", loo)]}
    assert ours.loc["slopes", "elpd_loo"] == pytest.approx(elpd["slopes"], rel=1e-6)
    assert ours.loc["slopes", "elpd_loo"] > ours.loc["pooled", "elpd_loo"]  # the data have varying slopes


def test_waic_matches_arviz_0x(slopes):
    if ONE:
        pytest.skip("ArviZ 1.x has no WAIC")
    ll = slopes.log_likelihood()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = az.waic(slopes.to_arviz())
    from bhmjax.comparison import waic

    mine = waic(ll)
    assert mine["elpd_waic"] == pytest.approx(float(theirs.elpd_waic), rel=1e-10)
    assert mine["p_waic"] == pytest.approx(float(theirs.p_waic), rel=1e-10)
    assert mine["se_waic"] == pytest.approx(float(theirs.se), rel=1e-10)
    assert mine["waic_warning"] == bool(theirs.warning)


def test_predictive_groups_feed_arviz(slopes):
    prior = bj.prior_predictive(slopes, draws=100, seed=2)  # its full model: r_g drawn, integrated or not
    data = slopes.to_arviz(prior=prior, posterior_predictive=True)
    groups = set(data.children) if ONE else set(data.groups())
    assert groups >= {"prior", "prior_predictive", "posterior_predictive", "observed_data", "log_likelihood"}
    assert group(data, "prior_predictive")["y"].dims == ("chain", "draw", "obs_id")
    assert group(data, "posterior_predictive")["y"].shape == (2, 200, 96)
    assert set(group(data, "prior").data_vars) == {"Intercept", "b", "sigma", "sd_g", "cor_g", "r_g"}
    np.testing.assert_array_equal(group(data, "prior")["sigma"].values, prior["sigma"])
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ONE:
            az.plot_ppc_dist(data, backend="matplotlib")
            az.plot_ppc_dist(data, group="prior_predictive", backend="matplotlib")
            pit = az.loo_pit(data)
        else:
            az.plot_ppc(data)
            az.plot_ppc(data, group="prior")
            pit = az.loo_pit(data, y="y")
    plt.close("all")
    values = np.asarray(pit["y"] if ONE else pit)
    assert values.shape == (96,) and ((0 <= values) & (values <= 1)).all()


def test_prior_true_draws_from_the_model(schools):
    data = schools.to_arviz(prior=True, log_likelihood=False)
    prior = group(data, "prior")
    assert prior["tau"].shape == (1, 300) and prior["theta"].dims == ("chain", "draw", "school")
    assert group(data, "prior_predictive")["y"].shape == (1, 300, 8)
    assert "log_likelihood" not in (set(data.children) if ONE else set(data.groups()))


def test_predictive_array_needs_one_observed_site(schools):
    y_rep = np.random.default_rng(0).normal(size=(4, 300, 8))
    np.testing.assert_array_equal(group(schools.to_arviz(posterior_predictive=y_rep), "posterior_predictive")["y"]
                                  .values, y_rep)
    with pytest.raises(ValueError, match="log_likelihood must be True, False or 'auto'"):
        schools.to_arviz(log_likelihood="yes")
    with pytest.raises(TypeError, match="prior must be True, or the dict of bj.prior_predictive"):
        schools.to_arviz(prior=[1, 2])


def test_missing_arviz_gives_install_hint(schools, monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)
    with pytest.raises(ImportError, match=r"pip install bhmjax\[arviz\]"):
        schools.to_arviz()
