"""parameterization= for hand-written NumPyro models (bhmjax._src.locscale, issue #18).

* Eligible sites: latent location-scale sites whose parameters depend on another
  latent, through plates, expand and to_event; priors with constant parameters,
  observed sites and other families are not.
* Learned values: per element, strong groups (many rows) near 1, weak ones near 0.
* Explicit values are honoured exactly (the decentered site's distribution shows them).
* Agreement: auto, centered and non-centered fits of one model agree within MCSE on
  the hyperparameters; a shifted posterior is rejected (negative control).
* Negative control: a model with no eligible site runs unchanged, draw for draw.
* The pre-pass compiles once: new data of the same shapes do not retrace it.
"""

from __future__ import annotations

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers

import bhmjax as bj
from bhmjax._src import autoreparam, engine, locscale
from bhmjax._src import data as data_lib
from tests._models import eight_schools_centered, eight_schools_noncentered
from tests._stats import agreement_z

SETTINGS = dict(chains=2, warmup=400, draws=500, progress=False, chain_method="sequential")
HYPER = ("mu", "tau", "sigma")


def intercepts_cp(g, num_groups, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    with numpyro.plate("groups", num_groups):
        a = numpyro.sample("a", dist.Normal(mu, tau))
    numpyro.sample("y", dist.Normal(a[g], sigma), obs=y)


def intercepts_ncp(g, num_groups, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    with numpyro.plate("groups", num_groups):
        a = numpyro.deterministic("a", mu + tau * numpyro.sample("a_z", dist.Normal(0.0, 1.0)))
    numpyro.sample("y", dist.Normal(a[g], sigma), obs=y)


def strong_and_weak(strong: int = 4, weak: int = 4, rows: int = 300, noise: float = 3.0, seed: int = 0) -> dict:
    """``strong`` groups of ``rows`` rows, then ``weak`` groups of one row each; group sd 1."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(strong + weak), [rows] * strong + [1] * weak).astype(np.int32)
    y = 1.0 + rng.normal(0.0, 1.0, strong + weak)[g] + rng.normal(0.0, noise, g.size)
    return {"g": g, "num_groups": strong + weak, "y": y.astype(np.float32)}


def _split(data):
    arrays, static = data_lib.split_data(data)
    return arrays, static


# ---------------------------------------------------------------- eligible sites


def mixed_sites(num_groups=3):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))            # constant parameters: no
    tau = numpyro.sample("tau", dist.HalfNormal(1.0))           # not location-scale: no
    numpyro.sample("t", dist.StudentT(4.0, mu, tau))            # StudentT on latents: yes
    numpyro.sample("e", dist.Normal(mu, tau).expand([num_groups, 2]).to_event(2))  # expand/to_event: yes
    numpyro.sample("p", dist.Exponential(tau))                  # depends, but not location-scale: no
    with numpyro.plate("groups", num_groups):
        numpyro.sample("a", dist.Laplace(mu, 1.0))              # only the location depends: yes
        numpyro.sample("obs", dist.Normal(mu, tau), obs=np.zeros(num_groups))  # observed: no


def test_eligible_sites_through_plates_expand_and_to_event():
    sites = locscale.eligible_sites(mixed_sites, {}, {"num_groups": 3})
    assert sites == {"t": (), "e": (3, 2), "a": (3,)}


def test_centered_noncentered_apply_to_every_eligible_site():
    _, arrays, info = locscale.reparameterize(None, mixed_sites, {}, {"num_groups": 3}, "noncentered")
    assert info.centeredness == {"t": 0.0, "e": 0.0, "a": 0.0}
    assert info.internal == ("a_decentered", "e_decentered", "t_decentered")
    model, arrays, info = locscale.reparameterize(None, mixed_sites, {}, {"num_groups": 3}, "centered")
    assert model is mixed_sites and info.internal == () and arrays == {}


# ---------------------------------------------------------------- explicit values


def test_explicit_per_element_and_float_values_are_honoured():
    data = strong_and_weak(strong=2, weak=2, rows=5)
    arrays, static = _split(data)
    c = np.array([1.0, 0.25, 0.0, 0.75])
    model, run_arrays, info = locscale.reparameterize(None, intercepts_cp, arrays, static, {"a": c})
    np.testing.assert_array_equal(info.centeredness["a"], c)
    tr = handlers.trace(handlers.seed(model, 0)).get_trace(**run_arrays, **static)
    mu, tau = tr["mu"]["value"], tr["tau"]["value"]
    fn = tr["a_decentered"]["fn"]
    np.testing.assert_allclose(fn.mean, c * mu, rtol=1e-5)
    np.testing.assert_allclose(fn.variance ** 0.5, tau ** c, rtol=1e-5)
    a = mu + tau ** (1 - c) * (tr["a_decentered"]["value"] - c * mu)
    np.testing.assert_allclose(tr["a"]["value"], a, rtol=1e-5)
    assert tr["a"]["type"] == "deterministic"
    _, _, info = locscale.reparameterize(None, intercepts_cp, arrays, static, {"a": 0.3})
    assert info.centeredness == {"a": 0.3}


@pytest.mark.parametrize("param, error, match", [
    ("automatic", ValueError, "must be 'auto', 'centered', 'noncentered' or a dict"),
    (0.5, TypeError, "must be a str or a dict \\{site: value\\}, got float"),
    ({"mu": "auto"}, ValueError, "names site 'mu', which is not an eligible site of the model; eligible sites "
                                 ".* are \\['a'\\]"),
    ({"a": 1.5}, ValueError, "parameterization\\['a'\\] must lie in \\[0, 1\\]"),
    ({"a": np.zeros(3)}, ValueError, "has shape \\(3,\\) but site 'a' has shape \\(4,\\)"),
    ({"a": "half"}, ValueError, "parameterization\\['a'\\] must be 'auto', 'centered', 'noncentered'"),
    ({"a": None}, TypeError, "parameterization\\['a'\\] must be a str, a float or an array; got NoneType"),
])
def test_parameterization_errors_before_compiling(param, error, match):
    data = strong_and_weak(strong=2, weak=2, rows=5)
    with pytest.raises(error, match=match):
        bj.sample(intercepts_cp, data, parameterization=param, **SETTINGS)


# ---------------------------------------------------------------- learned values


def test_learned_values_per_group_strong_centered_weak_noncentered():
    arrays, static = _split(strong_and_weak())
    _, run_arrays, info = locscale.reparameterize(jax.random.PRNGKey(0), intercepts_cp, arrays, static, "auto")
    raw, c = info.learned.raw["a"], info.centeredness["a"]
    assert c.shape == (8,)
    assert (raw[:4] > 0.8).all() and (raw[4:] < 0.3).all(), raw
    np.testing.assert_array_equal(run_arrays["centeredness:a"], c.astype(np.float32))
    assert "a (8,): (" in info.describe() and "learned by the curvature pre-pass" in info.describe()


def known_scales(g, num_groups, y=None):
    """Group scale 0.5 and noise 1, both known (a prior of sd 0.5%): the best centeredness of a
    group of n rows is n 0.25 / (n 0.25 + 1) exactly (its likelihood's share of the precision)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.LogNormal(np.log(0.5), 0.005))
    with numpyro.plate("groups", num_groups):
        a = numpyro.sample("a", dist.Normal(mu, tau))
    numpyro.sample("y", dist.Normal(a[g], 1.0), obs=y)


def test_learned_values_are_the_likelihood_share_of_the_precision():
    sizes = np.array([1, 2, 4, 8, 16, 64, 256])
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(sizes.size), sizes).astype(np.int32)
    y = (rng.normal(0.0, 0.5, sizes.size)[g] + rng.normal(0.0, 1.0, g.size)).astype(np.float32)
    arrays, static = _split({"g": g, "num_groups": sizes.size, "y": y})
    _, _, info = locscale.reparameterize(jax.random.PRNGKey(0), known_scales, arrays, static, "auto")
    best = sizes * 0.25 / (sizes * 0.25 + 1.0)      # 0.2, 0.33, 0.5, 0.67, 0.8, 0.94, 0.98
    np.testing.assert_allclose(info.learned.raw["a"], best, atol=0.03)
    np.testing.assert_array_equal(info.centeredness["a"], autoreparam.snap(info.learned.raw["a"]))


def test_prepass_compiles_once_for_new_data_of_the_same_shapes():
    arrays, static = _split(strong_and_weak(seed=1))
    key = jax.random.PRNGKey(0)
    locscale.reparameterize(key, intercepts_cp, arrays, static, "auto")
    before = engine.compile_counts().get("prepass", 0)
    arrays2, _ = _split(strong_and_weak(seed=2))
    _, _, info = locscale.reparameterize(key, intercepts_cp, arrays2, static, "auto")
    assert engine.compile_counts().get("prepass", 0) == before
    assert info.learned.num_steps == autoreparam.NUM_STEPS and info.learned.compile_seconds == 0.0


# ---------------------------------------------------------------- no eligible site


def test_no_eligible_site_runs_unchanged_and_says_so(eight_schools):
    with pytest.warns(UserWarning, match="no eligible site .* so it runs as written"):
        fit = bj.sample(eight_schools_noncentered, eight_schools, parameterization="auto", seed=3,
                        chains=1, warmup=100, draws=100, progress=False)
    plain = bj.sample(eight_schools_noncentered, eight_schools, seed=3, chains=1, warmup=100, draws=100,
                      progress=False)
    for k in plain.draws:
        np.testing.assert_array_equal(fit.draws[k], plain.draws[k])
    assert fit.settings["parameterization"] == {}
    assert "no eligible site" in fit.settings["reparam"]["text"]


# ---------------------------------------------------------------- fits


@pytest.fixture(scope="module")
def fits():
    data = strong_and_weak(strong=6, weak=6, rows=40, noise=2.0)
    return {
        # the centered form mixes slowly here: more chains and draws and smaller steps (as a Stan user
        # would), so its R-hat and MCSE mean something
        "centered": bj.sample(intercepts_cp, data, seed=0,
                              **{**SETTINGS, "chains": 4, "draws": 2000, "target_accept": 0.95}),
        "noncentered": bj.sample(intercepts_ncp, data, seed=1, **SETTINGS),
        "auto": bj.sample(intercepts_cp, data, seed=2, parameterization="auto", **SETTINGS),
    }


def _hyper(fit) -> np.ndarray:
    return np.stack([np.asarray(fit.draws[k], np.float64) for k in HYPER], axis=-1)


@pytest.mark.slow
def test_auto_agrees_with_the_fixed_forms(fits):
    for name, fit in fits.items():
        x = _hyper(fit)
        # auto must mix well; the fixed forms only need an MCSE to compare against (the centered
        # form's tau mixes slowly on the weakly identified groups: see the fixture)
        auto = name == "auto"
        assert np.max(bj.rhat(x)) < (1.02 if auto else 1.06) and np.min(bj.ess(x, method="bulk")) > (100 if auto else 50), name
    for other in ("centered", "noncentered"):
        z = agreement_z(_hyper(fits["auto"]), _hyper(fits[other]))
        assert (z < 4).all(), (other, dict(zip(HYPER, z.round(2))))


@pytest.mark.slow
def test_agreement_rejects_a_shifted_posterior(fits):
    a, b = _hyper(fits["auto"]), _hyper(fits["noncentered"])
    shift = 10.0 * np.sqrt(np.asarray(bj.mcse(a)) ** 2 + np.asarray(bj.mcse(b)) ** 2)
    assert (shift < b.std(axis=(0, 1))).all()
    assert (agreement_z(a + shift, b) > 4).all()


@pytest.mark.slow
def test_auto_fit_reports_original_sites_and_its_values(fits):
    fit = fits["auto"]
    assert set(fit.draws) == {"mu", "tau", "sigma", "a"}        # a_decentered is internal: not stored
    assert fit.draws["a"].shape == (2, 500, 12)
    assert "a_decentered" in fit.settings["drop"] and fit.settings["reparam"]["internal_sites"] == ["a_decentered"]
    c = np.asarray(fit.settings["parameterization"]["a"])
    assert c.shape == (12,) and fit.settings["reparam"]["seconds"] > 0
    assert not any(name.startswith("a_decentered") for name in fit.summary().index)
    idata = fit.to_arviz()
    assert "a_decentered" not in idata.posterior and "a" in idata.posterior
    assert fit.log_likelihood().shape == (2, 500, fit.data["y"].shape[0])  # the model as written, on its sites


@pytest.mark.slow
def test_auto_fit_extends_in_the_decentered_space(fits):
    more = fits["auto"].extend(50)
    assert more.draws["a"].shape == (2, 550, 12)
    np.testing.assert_array_equal(more.draws["a"][:, :500], fits["auto"].draws["a"])


@pytest.mark.slow
def test_centered_eight_schools_auto_goes_noncentered(eight_schools):
    fit = bj.sample(eight_schools_centered, eight_schools, parameterization="auto", seed=0, chains=2,
                    warmup=500, draws=500, progress=False, chain_method="sequential")
    assert np.all(np.asarray(fit.settings["parameterization"]["theta"]) < 0.5)
    assert fit.stats["diverging"].mean() < 0.01
