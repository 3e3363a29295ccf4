"""Fits that survive a file: save -> load gives a fit that predicts, scores and exports as the original.

A formula fit brings its ``bj.Model`` back (formula, family, priors, encodings, design,
centeredness: bhmjax.records); a NumPyro-function fit finds its model again by
``module:qualname`` or takes it from ``bj.load(path, model=f)``.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
import pytest

import bhmjax as bj
from bhmjax import io

from ._models import eight_schools_centered, eight_schools_noncentered

V1_FILE = Path(__file__).parent / "data" / "eight_schools_v1.bhm"  # written by format-1 bhmjax (commit 1e5cb38)
SMALL = dict(chains=2, warmup=100, draws=50, progress=False)


def _gaussian_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(6), 10)
    x = rng.normal(size=g.size)
    return pd.DataFrame({"y": rng.normal(0.5 * g + x, 1.0), "x": x, "g": [f"school {v}" for v in g],
                         "unused": "not stored"})


def _binomial_frame() -> pd.DataFrame:
    """Categoricals whose order is not alphabetical: the reference level and group order must survive."""
    rng = np.random.default_rng(1)
    rows = 120
    arm = pd.Categorical(rng.choice(["placebo", "low", "high"], rows), categories=["placebo", "low", "high"])
    site = pd.Categorical(rng.choice([30, 10, 20, 40], rows), categories=[40, 30, 20, 10])
    n = rng.integers(5, 15, rows)
    p = 1 / (1 + np.exp(-(0.3 * arm.codes - 0.5 + 0.1 * site.codes)))
    return pd.DataFrame({"r": rng.binomial(n, p), "n": n, "arm": arm, "site": site})


@pytest.fixture(scope="module")
def gaussian(tmp_path_factory):
    model = bj.Model("y ~ 1 + x + (1 + x | g)", _gaussian_frame(),
                     priors={"sigma": dist.HalfNormal(2.0), "x": dist.Normal(0.0, 5.0), "cor": 3.0})
    fit = model.fit(seed=0, **SMALL)
    return fit, bj.load(fit.save(tmp_path_factory.mktemp("fits") / "gaussian.bhm"))


@pytest.fixture(scope="module")
def binomial(tmp_path_factory):
    model = bj.Model("r | trials(n) ~ 1 + arm + (1 | site)", _binomial_frame(), "binomial",
                     parameterization="centered", priors={"sd_site": dist.Exponential(1.0)})
    fit = model.fit(seed=1, **SMALL)
    assert fit.settings["reduction"]["kind"] == "counts"  # sampled on summed cells, data kept as rows
    return fit, bj.load(fit.save(tmp_path_factory.mktemp("fits") / "binomial.bhm"))


@pytest.fixture(scope="module")
def schools(eight_schools, tmp_path_factory):
    fit = bj.sample(eight_schools_noncentered, eight_schools, seed=2, **SMALL)
    return fit, fit.save(tmp_path_factory.mktemp("fits") / "schools.bhm")


def _same(a, b) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _same_arviz(fit, loaded) -> None:
    import arviz as az

    mine, theirs = fit.to_arviz(), loaded.to_arviz()
    assert mine.groups() == theirs.groups()
    for group in mine.groups():
        assert mine[group].equals(theirs[group]), group
    assert az.loo(mine)["elpd_loo"] == az.loo(theirs)["elpd_loo"]


# ----------------------------------------------------------------------- formula fits


@pytest.mark.parametrize("which", ["gaussian", "binomial"])
def test_loaded_formula_fit_has_the_same_model(which, request):
    fit, loaded = request.getfixturevalue(which)
    assert loaded.spec is not None and loaded.model is not None
    assert loaded.spec.formula == fit.spec.formula and loaded.spec.family is fit.spec.family
    for mine, theirs in zip(fit.spec.groups, loaded.spec.groups):
        assert mine.encoding.labels == theirs.encoding.labels and mine.columns == theirs.columns
    assert [g.centeredness for g in loaded.spec.structure.groups] == [g.centeredness for g in fit.spec.structure.groups]
    assert loaded.spec.fixed.columns == fit.spec.fixed.columns
    _same(loaded.spec.fixed.means, fit.spec.fixed.means)
    from bhmjax._src.models import describe

    assert describe(loaded.spec, 1) == describe(fit.spec, 1)  # priors (user ones too), forms and shapes
    for k, v in fit.draws.items():
        _same(loaded.draws[k], np.asarray(v))


def test_loaded_gaussian_fit_predicts_identically(gaussian):
    fit, loaded = gaussian
    new = pd.DataFrame({"x": [0.0, 1.5, -2.0], "g": ["school 0", "school 5", "a new school"]})
    for groups in ("existing", "new", "population"):
        rows = new if groups != "existing" else new.iloc[:2]
        for kind in ("response", "mean"):
            _same(loaded.predict(rows, kind, groups, seed=7).draws, fit.predict(rows, kind, groups, seed=7).draws)
    _same(loaded.posterior_predictive(seed=3)["y"], fit.posterior_predictive(seed=3)["y"])


def test_loaded_gaussian_fit_scores_and_exports_identically(gaussian):
    fit, loaded = gaussian
    _same(loaded.log_likelihood(), fit.log_likelihood())
    held_out = _gaussian_frame().iloc[::7]
    _same(loaded.log_likelihood(held_out), fit.log_likelihood(held_out))
    _same_arviz(fit, loaded)


def test_loaded_binomial_fit_predicts_scores_and_exports_identically(binomial):
    fit, loaded = binomial
    new = pd.DataFrame({"arm": ["high", "placebo"], "site": [10, 99], "n": [10, 20]})
    for groups in ("new", "population"):
        _same(loaded.predict(new, groups=groups, seed=5).draws, fit.predict(new, groups=groups, seed=5).draws)
    _same(loaded.predict(new.iloc[:1], seed=5).draws, fit.predict(new.iloc[:1], seed=5).draws)
    _same(loaded.log_likelihood(), fit.log_likelihood())
    _same_arviz(fit, loaded)


def test_record_keeps_priors_columns_and_centeredness():
    """Without sampling: wrapped priors, LKJ, partial and learned-later centeredness, bool/int/str columns."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"y": rng.normal(size=40), "flag": np.tile([True, False], 20),
                          "k": np.repeat(np.arange(4), 10), "h": pd.Series(list("abcd") * 10, dtype=object),
                          "x": rng.normal(size=40)})
    priors = {"Intercept": dist.StudentT(3.0, jnp.asarray(1.0), 2.0), "sd_k": dist.FoldedDistribution(dist.StudentT(3.0)),
              "sd_h": dist.Gamma(np.float32(2.0), 1.0), "sigma": dist.LogNormal(0.0, 1.0),
              "cor": dist.LKJCholesky(2, 4.0)}
    model = bj.Model("y ~ 1 + flag + (1 + x | k) + (1 | h)", frame, priors=priors,
                     parameterization={"k": (1.0, 0.25), "h": "auto"})
    record, arrays = model.to_record()
    rebuilt = bj.Model.from_record(record, arrays)
    assert rebuilt.spec.source.frame.dtypes.to_dict() == model.spec.source.frame.dtypes.to_dict()
    assert [g.centeredness for g in rebuilt.spec.structure.groups] == [(1.0, 0.25), None]
    assert rebuilt.describe(verbose=False) == model.describe(verbose=False)
    for k, v in model.model_data().items():
        assert np.array_equal(rebuilt.model_data()[k], v), k
    for key, prior in priors.items():
        (mine, tree), (theirs, tree_again) = jax.tree.flatten(prior), jax.tree.flatten(rebuilt.spec.source.priors[key])
        assert tree_again == tree and all(np.array_equal(a, b) for a, b in zip(mine, theirs)), key


class _MyHalfNormal(dist.HalfNormal):
    """A user's own distribution class: not one bhmjax can store by name."""


def test_prior_that_cannot_be_stored_is_refused_at_save(tmp_path):
    model = bj.Model("y ~ 1 + (1 | g)", _gaussian_frame(), priors={"sd_g": _MyHalfNormal(1.0)})
    fit = bj.Fit(draws={}, stats={"diverging": np.zeros((2, 5), bool)}, timings={}, num_grad_evals={},
                 settings={}, model=model.numpyro_model, spec=model.spec)  # what model.fit() returns, less the draws
    path = tmp_path / "refused.bhm"
    with pytest.raises(TypeError, match=r"cannot store the prior priors\['sd_g'\] = _MyHalfNormal: its class "
                                        r".*_MyHalfNormal is not one of numpyro.distributions"):
        fit.save(path)
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_prior_that_does_not_rebuild_is_refused():
    """BetaProportion keeps ``mean`` as a property computed back from its concentrations (rounded)."""
    from bhmjax.records import _prior_record

    with pytest.raises(ValueError, match=r"priors\['p'\] = BetaProportion: built again from its class and the "
                                         "arguments it keeps, it is not the same distribution"):
        _prior_record("p", dist.BetaProportion(0.3, 10.0), "prior/0", {})
    with pytest.raises(TypeError, match=r"priors\['q'\] = ImproperUniform: its argument 'support' is a "):
        _prior_record("q", dist.ImproperUniform(dist.constraints.positive, (), ()), "prior/1", {})


def test_column_that_cannot_be_stored_is_refused():
    frame = pd.DataFrame({"y": np.arange(8.0), "x": pd.Series([1, "a"] * 4, dtype=object)})
    model = bj.Model("y ~ 1 + x", frame)
    with pytest.raises(TypeError, match=r"cannot store the data column 'x'.*types \['int', 'str'\].*astype\(str\)"):
        model.to_record()


def test_record_that_builds_other_data_is_refused():
    """The rebuilt model must give the fitted data bit for bit (a formulaic coding change would not)."""
    from bhmjax.records import restore_model

    model = bj.Model("y ~ 1 + x + (1 | g)", _gaussian_frame())
    record, arrays = model.to_record()
    entry, data = {"kind": "formula", "record": record}, model.model_data()
    fn, spec = restore_model(entry, arrays, {}, data, x64=False, where="here")
    assert spec.formula == model.spec.formula and fn is not None
    shifted = dict(arrays, **{"column/1": arrays["column/1"] + 1.0})  # x moved: X differs, y does not
    with pytest.raises(bj.FitFileError, match=r"here: its formula model, built again, gives data\['X'\] different"):
        restore_model(entry, shifted, {}, data, x64=False, where="here")
    with pytest.raises(bj.FitFileError, match=r"here: its formula model cannot be built again .*'zz'"):
        restore_model({"kind": "formula", "record": dict(record, formula="y ~ zz")}, arrays, {}, data,
                      x64=False, where="here")


def test_formula_fit_refuses_a_model_argument(gaussian, tmp_path):
    path = gaussian[0].save(tmp_path / "g.bhm")
    with pytest.raises(ValueError, match="holds a formula model.*without model="):
        bj.load(path, model=eight_schools_noncentered)


# ----------------------------------------------------------------------- NumPyro-function fits


def test_function_fit_finds_its_model_by_name(schools):
    fit, path = schools
    loaded = bj.load(path)
    assert io.read_meta(path)["model"] == {"kind": "function",
                                           "reference": "tests._models:eight_schools_noncentered"}
    assert loaded.model is eight_schools_noncentered
    _same(loaded.posterior_predictive(seed=4)["y"], fit.posterior_predictive(seed=4)["y"])
    _same(loaded.log_likelihood(), fit.log_likelihood())
    _same_arviz(fit, loaded)


def test_function_fit_of_a_local_model_warns_and_takes_model_argument(eight_schools, tmp_path):
    def local_schools(J, y, sigma):
        eight_schools_noncentered(J, y, sigma)

    fit = bj.sample(local_schools, eight_schools, seed=2, **SMALL)
    path = fit.save(tmp_path / "local.bhm")
    with pytest.warns(UserWarning, match=r"local_schools, which cannot be used here .*<locals>.*"
                                         r"bj.load\(path, model=my_model\)"):
        anonymous = bj.load(path)
    assert anonymous.model is None and anonymous.summary().equals(fit.summary())
    with pytest.raises(ValueError, match="needs fit.model"):
        anonymous.posterior_predictive()
    loaded = bj.load(path, model=local_schools)
    _same(loaded.posterior_predictive(seed=4)["y"], fit.posterior_predictive(seed=4)["y"])
    _same_arviz(fit, loaded)


def test_wrong_model_argument_is_refused(schools):
    with pytest.raises(ValueError, match=r"is not the model of fit file .*: it has no site 'eta'"):
        bj.load(schools[1], model=eight_schools_centered)

    def scalar_theta(J, y, sigma):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        tau = numpyro.sample("tau", dist.HalfCauchy(5))
        eta = numpyro.sample("eta", dist.Normal(0, 1).expand([J]).to_event(1))
        theta = numpyro.deterministic("theta", mu + tau * eta[0])
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)

    with pytest.raises(ValueError, match=r"its site 'theta' has shape \(\), the draws \(8,\)"):
        bj.load(schools[1], model=scalar_theta)


# ----------------------------------------------------------------------- format 1


def test_format_1_files_still_load(eight_schools):
    assert io.read_meta(V1_FILE)["format_version"] == 1 < io.FORMAT_VERSION
    old = bj.load(V1_FILE)
    assert old.model is None and old.spec is None and old.num_draws == 20
    assert list(old.to_arviz().log_likelihood["y"].shape) == [2, 20, 8]
    loaded = bj.load(V1_FILE, model=eight_schools_noncentered)
    assert loaded.posterior_predictive(seed=1)["y"].shape == (2, 20, 8)
    _same(loaded.draws["theta"], old.draws["theta"])
