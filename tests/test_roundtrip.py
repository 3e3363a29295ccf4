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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bhmjax as bj
from bhmjax import io
from bhmjax.design import new_design

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
    from bhmjax._src.describe import describe

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


# ----------------------------------------------------------------------- every kind of fit (property)

TINY = dict(chains=2, warmup=50, draws=50, progress=False)
FAMILIES = {  # family -> (formula, response drawn from the linear predictor eta)
    "gaussian": ("y ~ 1 + x + (1 | g)", lambda rng, eta: rng.normal(eta, 1.0)),
    "student_t": ("y ~ 1 + x + (1 | g)", lambda rng, eta: eta + rng.standard_t(4, eta.size)),
    "bernoulli": ("y ~ 1 + x + (1 | g)", lambda rng, eta: rng.binomial(1, 1 / (1 + np.exp(-eta)))),
    "binomial": ("y | trials(n) ~ 1 + x + (1 | g)", lambda rng, eta: rng.binomial(8, 1 / (1 + np.exp(-eta)))),
    "poisson": ("y ~ 1 + x + (1 | g)", lambda rng, eta: rng.poisson(np.exp(0.5 * eta))),
    "negative_binomial": ("y ~ 1 + x + (1 | g)", lambda rng, eta: rng.poisson(np.exp(0.5 * eta) * rng.gamma(5, 0.2, eta.size))),
}


def _family_frame(family: str, seed: int = 0, reducible: bool = False) -> pd.DataFrame:
    """A few groups with labels of several kinds (str with a comma, int, bool) and one predictor."""
    rng = np.random.default_rng(seed)
    g = np.repeat(["a,1", "b", "c [2]"], 8)
    x = np.tile([0.0, 1.0], 12) if reducible else rng.normal(size=g.size)
    eta = 0.3 + 0.5 * x + np.repeat(rng.normal(0.0, 0.5, 3), 8)
    return pd.DataFrame({"y": FAMILIES[family][1](rng, eta), "x": x, "g": g, "n": 8,
                         "k": np.repeat([3, 1], 12), "flag": np.tile([True, False, False], 8)})


def mixed_data(x0, counts, flag, group, num_groups: int, y=None):
    """A NumPyro model of 0-d, int and bool data and string-labelled groups (importable by name)."""
    mu = numpyro.sample("mu", dist.Normal(x0, 2.0))
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))
    with numpyro.plate("groups", num_groups):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    numpyro.deterministic("a_scaled", tau * a)
    eta = mu + tau * a[group] + 0.1 * counts + 0.5 * flag
    numpyro.sample("y", dist.Normal(eta, 1.0), obs=y)


def _mixed_kwargs(seed: int = 0, labels=("x,y", "b[1]", "it's")):
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(3), 6)
    data = {"x0": np.asarray(0.5), "counts": rng.integers(0, 5, group.size), "flag": rng.random(group.size) < 0.5,
            "group": group, "num_groups": 3, "y": rng.normal(size=group.size)}
    return dict(data=data, coords={"g": list(labels)}, dims={"a": ["g"], "a_scaled": ["g"]})


def _kind(kind: str, tmp: Path) -> bj.Fit:
    if kind == "function":
        kw = _mixed_kwargs()
        return bj.sample(mixed_data, kw["data"], coords=kw["coords"], dims=kw["dims"], seed=3, **TINY)
    if kind in FAMILIES:
        frame = _family_frame(kind)
        return bj.Model(FAMILIES[kind][0], frame, kind).fit(seed=4, reduce=False, **TINY)
    if kind == "gaussian, reduced":
        return bj.Model("y ~ 1 + x + (1 | g)", _family_frame("gaussian", reducible=True)).fit(seed=5, reduce=True,
                                                                                            **TINY)
    if kind == "bool predictor, int groups":
        return bj.Model("y ~ 1 + flag + (1 | k)", _family_frame("poisson"), "poisson",
                        parameterization="centered").fit(seed=6, **TINY)
    if kind == "fit_many member":
        fits = bj.fit_many("y ~ 1 + x + (1 | g)", [_family_frame("gaussian", s) for s in (1, 2)], seed=7,
                           **{k: v for k, v in TINY.items()})
        return fits[1]
    if kind == "chees":
        kw = _mixed_kwargs()
        return bj.sample(mixed_data, kw["data"], coords=kw["coords"], dims=kw["dims"], seed=8, sampler="chees",
                         chains=4, warmup=50, draws=50, progress=False)
    if kind == "resumed":
        kw = _mixed_kwargs()
        bj.sample(mixed_data, kw["data"], coords=kw["coords"], dims=kw["dims"], seed=9, checkpoint=tmp / "ck",
                  every=25, **TINY)
        return bj.resume(tmp / "ck", progress=False)
    if kind == "extended":  # the gaussian kind's fit (its programs are compiled), 20 draws more
        return _BUILT.get("gaussian", _kind("gaussian", tmp)).extend(20)
    raise AssertionError(kind)


KINDS = ["function", *FAMILIES, "gaussian, reduced", "bool predictor, int groups", "fit_many member", "chees",
         "resumed", "extended"]


_BUILT: dict[str, bj.Fit] = {}


@pytest.fixture(scope="module", params=KINDS)
def any_fit(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kinds")
    fit = _BUILT[request.param] = _kind(request.param, tmp)
    return fit, bj.load(fit.save(tmp / "fit.bhm"))


def _same_tree(a, b, where: str) -> None:
    assert type(a) is type(b) or np.isscalar(a), where
    if isinstance(a, dict):
        assert (list(a) == list(b)) if where != "data" else (set(a) == set(b)), where  # keyword order is moot
        for k in a:
            _same_tree(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, np.ndarray) or hasattr(a, "__array__") and not isinstance(a, (list, tuple)):
        _same(np.asarray(b), np.asarray(a))
    else:
        assert a == b, where


@pytest.mark.slow
def test_every_fit_kind_round_trips(any_fit):
    """Draws, stats, labels and data come back bit for bit; the loaded fit predicts, scores and exports alike."""
    fit, loaded = any_fit
    for name in ("draws", "stats", "data"):
        _same_tree(getattr(fit, name), getattr(loaded, name), name)
    assert loaded.coords == {k: list(v) for k, v in fit.coords.items()} or loaded.coords == fit.coords
    assert {k: tuple(v) for k, v in loaded.dims.items()} == {k: tuple(v) for k, v in fit.dims.items()}
    assert loaded.param_names() == fit.param_names()
    assert loaded.summary().equals(fit.summary())
    _same(loaded.posterior_predictive(seed=1)["y"], fit.posterior_predictive(seed=1)["y"])
    _same(loaded.log_likelihood(), fit.log_likelihood())
    _same_arviz(fit, loaded)


_LABEL = st.one_of(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=6),
                   st.sampled_from(["a,b", "[x]", "it's", " pad ", "0"]))


@st.composite
def _frames(draw):
    """A formula model's data: group labels of one kind (text with commas/brackets, ints or bools), a bool
    predictor, an int column and a float response."""
    kind = draw(st.sampled_from(["text", "int", "bool"]))
    if kind == "bool":
        levels = [True, False]
    else:
        element = _LABEL if kind == "text" else st.integers(-10**6, 10**6)
        levels = draw(st.lists(element, min_size=2, max_size=4, unique_by=str))
    rows = draw(st.integers(len(levels) + 2, 12))
    codes = np.array([i % len(levels) for i in range(rows)])
    draw(st.randoms()).shuffle(codes)
    g = np.array(levels, dtype=object)[codes] if kind == "text" else np.array(levels)[codes]
    y = draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=rows, max_size=rows))
    flag = np.arange(rows) % 2 == 0
    return pd.DataFrame({"y": y, "g": g, "flag": flag, "k": np.arange(rows) % 3})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=_frames(), parameterization=st.sampled_from(["centered", "noncentered"]))
def test_saved_formula_fit_keeps_any_data_and_labels(frame, parameterization, tmp_path_factory):
    """Property: save -> load of a formula fit (draws made up, nothing sampled) gives the same labels, names,
    data and design, for labels of any type and text."""
    model = bj.Model("y ~ 1 + flag + (1 | g)", frame, parameterization=parameterization)
    n = model.spec.groups[0].encoding.num_groups
    rng = np.random.default_rng(0)
    draws = {"Intercept": rng.normal(size=(1, 2)), "b": rng.normal(size=(1, 2, 1)), "sigma": rng.random((1, 2)) + 0.1,
             "sd_g": rng.random((1, 2, 1)) + 0.1, "r_g": rng.normal(size=(1, 2, n, 1))}
    fit = bj.Fit(draws=draws, stats={"diverging": np.zeros((1, 2), bool)}, timings={}, num_grad_evals={},
                 settings={}, data=model.model_data(), model=model.numpyro_model, spec=model.spec,
                 coords={"g": list(model.spec.groups[0].encoding.labels), "g_term": ["Intercept"]},
                 dims={"r_g": ["g", "g_term"]})
    path = fit.save(tmp_path_factory.mktemp("prop") / "f.bhm", log_likelihood=False)
    loaded = bj.load(path)
    assert loaded.spec.groups[0].encoding.labels == model.spec.groups[0].encoding.labels
    assert [type(v) for v in loaded.spec.groups[0].encoding.labels] == [type(v) for v in
                                                                        model.spec.groups[0].encoding.labels]
    assert loaded.param_names() == fit.param_names() and len(set(fit.param_names())) == len(fit.param_names())
    for key, value in fit.data.items():
        _same(np.asarray(loaded.data[key]), np.asarray(value))
    rows = new_design(model.spec, frame.iloc[::-1])[0]
    for key, value in new_design(loaded.spec, frame.iloc[::-1])[0].items():
        _same(value, rows[key])


def test_learned_per_group_centeredness_is_saved_and_loaded(tmp_path):
    """A formula fit whose learned centeredness differs between groups (form PER_GROUP, values in the
    model data) saves and loads with the same values: the record stores them as arrays."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"y": rng.poisson(2.0, 60), "g": np.arange(60) % 6})
    model = bj.Model("y ~ 1 + (1 | g)", frame, "poisson", parameterization="auto")
    learned = np.linspace(0.0, 1.0, 6)[:, None]
    model.use_centeredness({"g": learned})
    fit = model.fit(seed=1, chains=1, warmup=30, draws=10, progress=False)
    loaded = bj.load(fit.save(tmp_path / "per_group.bhm"))
    np.testing.assert_array_equal(np.asarray(loaded.settings["parameterization"]["g"]), learned)
    assert loaded.spec.structure.groups[0].centeredness == fit.spec.structure.groups[0].centeredness
    rebuilt = bj.Model.from_record(*model.to_record())
    np.testing.assert_array_equal(rebuilt.centeredness["g"], learned)  # set again, not learned again
    _same(loaded.log_likelihood(), fit.log_likelihood())
    _same(loaded.predict(frame.iloc[:5], seed=3).draws, fit.predict(frame.iloc[:5], seed=3).draws)
