"""Diagnostics in JAX against ArviZ 0.23, the reference implementation.

Each data set stacks several hard cases as sites of one array, so one compiled program
checks them all: iid normal, strongly autocorrelated AR(1), anti-correlated AR(1), chains
with shifted means (R-hat well over 1.1), heavy tails (Cauchy) and heavy ties (Poisson).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bhmjax._src import diagnostics as diag

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

RHAT_METHODS = ["rank", "split", "folded", "z_scale", "identity"]
ESS_METHODS = ["bulk", "tail", "mean", "sd", "median", "mad", "z_scale", "folded", "identity"]
SITE_NAMES = ["iid", "ar1", "anti_ar1", "shifted", "cauchy", "poisson"]
SHIFTED = SITE_NAMES.index("shifted")
# Both compute in float64 from the same formulas, so agreement is near machine precision;
# these are tighter than the 1e-6 (R-hat, HDI, BFMI) and 1e-3 (ESS, MCSE) we promise.
RTOL = 1e-8


@pytest.fixture(scope="module", autouse=True)
def x64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _ar1(rng, chains, draws, phi):
    noise = rng.normal(size=(chains, draws))
    out = np.empty_like(noise)
    out[:, 0] = noise[:, 0] / np.sqrt(1 - phi**2)
    for t in range(1, draws):
        out[:, t] = phi * out[:, t - 1] + noise[:, t]
    return out


def _cases(seed, chains, draws):
    """(chain, draw, 3, 2): the six hard cases of the module docstring as sites."""
    rng = np.random.default_rng(seed)
    sites = [
        rng.normal(size=(chains, draws)),
        _ar1(rng, chains, draws, 0.95),
        _ar1(rng, chains, draws, -0.7),
        rng.normal(size=(chains, draws)) + 0.8 * np.arange(chains)[:, None],
        rng.standard_cauchy(size=(chains, draws)),
        rng.poisson(1.5, size=(chains, draws)).astype(float),
    ]
    return np.stack(sites, axis=-1).reshape(chains, draws, 3, 2)


@pytest.fixture(scope="module")
def draws():
    """(4, 500, 3, 2): the main data set, checked method by method."""
    return _cases(seed=500, chains=4, draws=500)


@pytest.fixture(scope="module")
def small():
    """(4, 100, 3, 2): for jit and vmap (shares compiled programs)."""
    return _cases(seed=100, chains=4, draws=100)


def _az(func, x, **kwargs):
    """ArviZ on a (chain, draw, *shape) array, through its Dataset path."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(func(az.convert_to_dataset(x), **kwargs)["x"].values)


def _site(x, name):
    return np.asarray(x).reshape(-1)[SITE_NAMES.index(name)]


@pytest.mark.parametrize("name,method", [("rhat", m) for m in RHAT_METHODS] + [("ess", m) for m in ESS_METHODS])
def test_rhat_and_ess_match_arviz(draws, name, method):
    ours = getattr(diag, name)(draws, method=method)
    assert ours.shape == draws.shape[2:]
    np.testing.assert_allclose(ours, _az(getattr(az, name), draws, method=method), rtol=RTOL)


def test_rhat_flags_shifted_chains_and_passes_iid(draws):
    r = diag.rhat(draws)
    assert _site(r, "shifted") > 1.1
    assert _site(r, "iid") < 1.01


def test_ess_orders_autocorrelation(draws):
    bulk = diag.ess(draws)
    total = draws.shape[0] * draws.shape[1]
    assert _site(bulk, "ar1") < 0.1 * total
    assert _site(bulk, "anti_ar1") > total  # antithetic chains beat independent draws


@pytest.mark.parametrize("method", ["mean", "sd"])
def test_mcse_matches_arviz(draws, method):
    ours = diag.mcse(draws, method=method)
    np.testing.assert_allclose(ours, _az(az.mcse, draws, method=method), rtol=RTOL)


@pytest.mark.parametrize("prob", [0.94, 0.5])
def test_hdi_matches_arviz(draws, prob):
    ours = diag.hdi(draws, prob=prob)
    assert ours.shape == (*draws.shape[2:], 2)
    np.testing.assert_allclose(ours, _az(az.hdi, draws, hdi_prob=prob), rtol=1e-12)


def test_bfmi_matches_arviz(draws):
    energy = draws[..., 0, 1]  # the AR(1) site, phi = 0.95: a low E-BFMI
    ours = diag.bfmi(energy)
    assert ours.shape == (draws.shape[0],)
    np.testing.assert_allclose(ours, az.bfmi(energy), rtol=RTOL)
    assert np.all(np.asarray(ours) < 0.3)


def _arviz_summary_by_functions(x, prob):
    """ArviZ's functions one by one, in summary_stats' keys."""
    bounds = _az(az.hdi, x, hdi_prob=prob)
    return {
        "mean": x.mean(axis=(0, 1)),
        "sd": x.std(axis=(0, 1), ddof=1),
        "hdi_lower": bounds[..., 0],
        "hdi_upper": bounds[..., 1],
        "mcse_mean": _az(az.mcse, x),
        "mcse_sd": _az(az.mcse, x, method="sd"),
        "ess_bulk": _az(az.ess, x),
        "ess_tail": _az(az.ess, x, method="tail"),
        "r_hat": _az(az.rhat, x),
    }


def test_summary_stats_matches_arviz_summary(draws):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.summary(az.convert_to_dataset(draws), round_to="none")
    columns = {"hdi_lower": "hdi_3%", "hdi_upper": "hdi_97%"}
    stats = diag.summary_stats(draws)
    assert list(stats) == list(diag._SUMMARY_KEYS)
    for key, value in stats.items():
        assert value.shape == (3, 2)
        expected = table[columns.get(key, key)].to_numpy()
        np.testing.assert_allclose(np.ravel(value), expected, rtol=RTOL, err_msg=key)


def test_summary_stats_with_odd_draws_matches_arviz_functions():
    # With an odd number of draws az.summary folds around the median of all draws, while
    # az.rhat (and we, everywhere) fold around the median of the split chains.
    x = _cases(seed=301, chains=3, draws=301)
    stats = diag.summary_stats(x, prob=0.8)
    for key, expected in _arviz_summary_by_functions(x, 0.8).items():
        np.testing.assert_allclose(stats[key], expected, rtol=RTOL, err_msg=key)


def test_short_chains_walk_geyer_edge_cases_like_arviz():
    # 120 short sites from strongly anti-correlated to strongly correlated, a third rounded
    # to create ties: Geyer's truncation stops at every possible pair.
    rng = np.random.default_rng(41)
    sites = [_ar1(rng, 2, 41, phi) for phi in np.linspace(-0.98, 0.98, 120)]
    x = np.stack([np.round(s) if i % 3 == 0 else s for i, s in enumerate(sites)], axis=-1)
    stats = diag.summary_stats(x)
    for key, expected in _arviz_summary_by_functions(x, 0.94).items():
        np.testing.assert_allclose(stats[key], expected, rtol=RTOL, err_msg=key)


def test_summary_stats_equals_the_single_functions(draws):
    stats = diag.summary_stats(draws)
    bounds = diag.hdi(draws)
    singles = {
        "hdi_lower": bounds[..., 0],
        "hdi_upper": bounds[..., 1],
        "mcse_mean": diag.mcse(draws),
        "mcse_sd": diag.mcse(draws, method="sd"),
        "ess_bulk": diag.ess(draws),
        "ess_tail": diag.ess(draws, method="tail"),
        "r_hat": diag.rhat(draws),
    }
    for key, value in singles.items():
        np.testing.assert_allclose(stats[key], value, rtol=1e-12, err_msg=key)


# --------------------------------------------------------------------------- edge cases


def test_single_chain_has_ess_but_no_rhat():
    x = _cases(seed=3, chains=1, draws=200)
    stats = diag.summary_stats(x)
    expected = _arviz_summary_by_functions(x, 0.94)
    for key in ["mcse_mean", "mcse_sd", "ess_bulk", "ess_tail"]:
        np.testing.assert_allclose(stats[key], expected[key], rtol=RTOL, err_msg=key)
    assert np.all(np.isnan(stats["r_hat"])) and np.all(np.isnan(expected["r_hat"]))
    assert np.all(np.isnan(diag.rhat(x)))


def test_constant_site_like_arviz(draws):
    x = draws.copy()
    x[..., 1, 1] = 2.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {
            "rhat": az.rhat(x[..., 1, 1]),
            "ess": az.ess(x[..., 1, 1]),
            "tail": az.ess(x[..., 1, 1], method="tail"),
            "mcse": az.mcse(x[..., 1, 1]),
        }
    assert np.isnan(diag.rhat(x)[1, 1]) and np.isnan(expected["rhat"])
    assert float(diag.ess(x)[1, 1]) == expected["ess"] == 2000.0
    assert float(diag.ess(x, method="tail")[1, 1]) == expected["tail"] == 2000.0
    assert float(diag.mcse(x)[1, 1]) == expected["mcse"] == 0.0
    assert np.isfinite(diag.rhat(x)[0]).all()


def test_nan_in_a_site_gives_nan_only_there(small):
    x = small.copy()
    x[2, 10, 0, 1] = np.nan
    stats = diag.summary_stats(x)
    for key, value in stats.items():
        value = np.asarray(value)
        assert np.isnan(value[0, 1]), key
        assert np.isfinite(np.delete(value.ravel(), 1)).all(), key


def test_fewer_than_four_draws_gives_nan():
    x = np.random.default_rng(0).normal(size=(4, 3, 2))
    assert np.isnan(diag.rhat(x)).all() and np.isnan(diag.ess(x)).all()
    assert np.isnan(diag.mcse(x)).all()
    stats = diag.summary_stats(x)
    assert np.isnan(stats["ess_bulk"]).all() and np.isfinite(stats["mean"]).all()
    assert stats["hdi_lower"].shape == (2,)


# --------------------------------------------------------------------------- jit, vmap, dtypes


def test_vmap_over_fits_equals_a_loop(small):
    batch = np.stack([small, small[:, ::-1], small[::-1] ** 2])
    mapped = jax.vmap(diag.rhat)(batch)
    np.testing.assert_allclose(mapped, np.stack([diag.rhat(x) for x in batch]), rtol=1e-12)
    summaries = jax.vmap(diag.summary_stats)(batch)
    for i, x in enumerate(batch):
        for key, value in diag.summary_stats(x).items():
            np.testing.assert_allclose(summaries[key][i], value, rtol=1e-12, err_msg=key)


def test_jit_equals_eager(small):
    jitted = jax.jit(diag.summary_stats, static_argnames="prob")(small, prob=0.94)
    for key, value in diag.summary_stats(small).items():
        np.testing.assert_allclose(jitted[key], value, rtol=1e-12, err_msg=key)


def test_float32_without_x64_stays_close(draws):
    with jax.enable_x64(False):
        r32, e32 = diag.rhat(draws), diag.ess(draws, method="tail")
    assert r32.dtype == jnp.float32 and e32.dtype == jnp.float32
    np.testing.assert_allclose(r32, _az(az.rhat, draws), rtol=1e-5)
    np.testing.assert_allclose(e32, _az(az.ess, draws, method="tail"), rtol=1e-3)


def test_integer_and_boolean_draws_are_cast_to_float(draws):
    counts = np.random.default_rng(2).poisson(3, size=draws.shape)
    assert diag.ess(counts).dtype == jnp.float64
    np.testing.assert_allclose(diag.ess(counts), _az(az.ess, counts * 1.0), rtol=RTOL)
    np.testing.assert_allclose(diag.rhat(counts > 3), _az(az.rhat, (counts > 3) * 1.0), rtol=RTOL)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fn", [diag.rhat, diag.ess, diag.mcse, diag.hdi, diag.summary_stats])
def test_one_dimensional_draws_are_rejected(fn):
    with pytest.raises(ValueError, match=r"at least 2 dimensions, but received shape \(100,\)"):
        fn(np.zeros(100))


@pytest.mark.parametrize(
    ("fn", "pattern"),
    [
        (diag.rhat, "Unknown rhat method 'bluk'. Valid methods are: 'rank', 'split'"),
        (diag.ess, "Unknown ess method 'bluk'. Valid methods are: 'bulk', 'tail', 'mean'"),
        (diag.mcse, "Unknown mcse method 'bluk'. Valid methods are: 'mean', 'sd'"),
    ],
)
def test_unknown_method_lists_the_valid_ones(fn, pattern):
    with pytest.raises(ValueError, match=pattern):
        fn(np.zeros((2, 10)), method="bluk")


@pytest.mark.parametrize("prob", [0.0, 1.0, 1.5, -0.1, float("nan")])
@pytest.mark.parametrize("fn", [diag.hdi, diag.summary_stats])
def test_prob_outside_unit_interval_is_rejected(fn, prob):
    with pytest.raises(ValueError, match=r"`prob` must lie in the open interval \(0, 1\)"):
        fn(np.zeros((2, 10)), prob=prob)


def test_traced_prob_is_a_type_error():
    with pytest.raises(TypeError, match="not a traced value.*static"):
        jax.jit(diag.hdi)(np.zeros((2, 10)), 0.9)


def test_non_array_draws_are_a_type_error():
    with pytest.raises(TypeError, match="received an object of type object"):
        diag.rhat(object())


@pytest.mark.parametrize("shape", [(100,), (2, 1), (2, 10, 3)])
def test_bfmi_needs_chain_by_draw_energy(shape):
    with pytest.raises(ValueError, match=r"`energy` must have shape \(chain, draw\)"):
        diag.bfmi(np.zeros(shape))
