"""Warmup adaptation from draws and gradients (bhmjax._src.adapt)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bhmjax as bj
from benchmarks.overhead import eight_schools_ncp
from bhmjax._src import adapt

from tests._stats import mcse_z

SCALES = np.array([0.01, 0.3, 1.0, 20.0, 500.0])  # Stan's 1e-3 shrinkage would inflate far smaller scales


def scaled_normals():
    numpyro.sample("x", dist.Normal(0.0, jnp.asarray(SCALES)))


def test_running_moments_match_numpy():
    x = np.random.default_rng(0).normal(size=(50, 4)) * [1.0, 10.0, 1e-3, 5.0] + 3.0
    m = adapt._empty(jnp.zeros(4))
    for row in x:
        m = adapt._add(m, jnp.asarray(row))
    np.testing.assert_allclose(m.mean, x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(adapt._variance(m), x.var(axis=0, ddof=1), rtol=1e-4)


def test_schedule_follows_nutpie_fractions():
    assert adapt.schedule(1000) == (300, 850)
    assert adapt.schedule(400) == (120, 340)


@pytest.mark.parametrize("adaptation", ["nutpie", "hybrid"])
def test_mass_matrix_learns_scales_spanning_five_orders(adaptation):
    """On independent normals the adapted inverse mass matrix is the variance (within 2x)."""
    fit = bj.sample(scaled_normals, chains=2, warmup=500, draws=1000, seed=3, progress=False,
                    adaptation=adaptation, chain_method="sequential")
    inverse_mass = np.asarray(next(iter(fit.state.kernel.adapt_state.inverse_mass_matrix.values())))
    ratio = inverse_mass / SCALES**2
    assert np.all(np.abs(np.log(ratio)) < np.log(2.0)), ratio
    x = fit.draws["x"].astype(np.float64)
    assert (mcse_z(x, 0.0) < 4).all()
    sd = x.reshape(-1, SCALES.size).std(axis=0)
    np.testing.assert_allclose(sd, SCALES, rtol=0.1)
    assert int(fit.stats["diverging"].sum()) == 0


@pytest.mark.slow
def test_hybrid_beats_stan_per_gradient_on_eight_schools(eight_schools):
    """The point of the scheme: more ESS per gradient and fewer warmup gradients (3 seeds)."""
    data = {"y": eight_schools["y"], "sigma": eight_schools["sigma"]}

    def per_gradient(adaptation):
        ess, warm = [], []
        for seed in range(3):
            fit = bj.sample(eight_schools_ncp, data, chains=4, warmup=1000, draws=1000, seed=seed,
                            progress=False, adaptation=adaptation, chain_method="sequential")
            draws = np.concatenate([fit.draws[k].reshape(4, 1000, -1) for k in ("mu", "tau", "theta_z")], -1)
            ess.append(1000 * float(np.min(bj.ess(draws))) / fit.num_grad_evals["sampling"])
            warm.append(fit.num_grad_evals["warmup"])
        return np.mean(ess), np.mean(warm)

    hybrid, stan = per_gradient("hybrid"), per_gradient("stan")
    assert hybrid[0] > 1.1 * stan[0], (hybrid, stan)
    assert hybrid[1] < stan[1], (hybrid, stan)


def test_adaptation_names_and_dense_mass_are_checked():
    with pytest.raises(ValueError, match="adaptation must be one of"):
        bj.sample(scaled_normals, adaptation="windowed", progress=False)
    with pytest.raises(ValueError, match="dense_mass=True needs adaptation='stan'"):
        bj.sample(scaled_normals, adaptation="nutpie", dense_mass=True, progress=False)
    assert adapt.resolve_adaptation("auto", dense_mass=True) == "stan"
    assert adapt.resolve_adaptation("auto", dense_mass=False) == "hybrid"


def test_adaptation_stops_after_warmup():
    """Sampling steps leave step size and mass matrix alone (the chain is a fixed kernel)."""
    fit = bj.sample(scaled_normals, chains=1, warmup=200, draws=50, seed=0, progress=False)
    steps = fit.stats["step_size"][0]
    assert np.all(steps == steps[0])
    state = fit.state
    more = fit.extend(50, progress=False)
    np.testing.assert_array_equal(
        jax.tree.leaves(state.kernel.adapt_state.inverse_mass_matrix),
        jax.tree.leaves(more.state.kernel.adapt_state.inverse_mass_matrix))
