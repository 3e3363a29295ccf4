"""Sampler settings do what they say: checked by their effect, never by "any outcome passes".

* ``chain_method="auto"``: the method chosen for each device count and backend;
* ``dense_mass=True``: on a correlated 3-D normal the adapted inverse mass matrix is dense
  and close to the target's covariance (a diagonal one fails);
* ``init_strategy={...}``: the chains start exactly at the given values (a second dict
  on the same model is not served by the first one's program);
* ``thin=k``: the draws are exactly every k-th draw of the unthinned run with the same
  seed, and every step's gradients are counted.
"""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bhmjax as bj
from bhmjax._src import engine

# ---------------------------------------------------------------- chain_method="auto"


@pytest.mark.parametrize("devices, backend, chains, expected", [
    (1, "cpu", 4, ("sequential", 1)),  # one CPU device: chains one after another
    (2, "cpu", 4, ("parallel", 2)),    # host devices share the chains evenly
    (2, "cpu", 3, ("sequential", 1)),  # 3 chains cannot be split evenly over 2 devices
    (4, "cpu", 6, ("parallel", 3)),    # the most devices that divide the chains
    (8, "cpu", 2, ("parallel", 2)),    # never more devices than chains
    (1, "gpu", 4, ("vectorized", 1)),  # one accelerator: chains side by side
    (4, "gpu", 8, ("parallel", 4)),
])
def test_auto_chain_method_follows_the_devices(monkeypatch, devices, backend, chains, expected):
    fake = [SimpleNamespace(id=i) for i in range(devices)]
    monkeypatch.setattr(engine.jax, "local_devices", lambda: fake)
    monkeypatch.setattr(engine.jax, "default_backend", lambda: backend)

    def chosen(method):
        layout = engine.resolve_layout(method, chains)
        assert layout.lanes == chains
        return layout.method, max(len(layout.devices), 1)

    assert chosen("auto") == expected
    for method in ("sequential", "vectorized"):  # explicit choices are kept
        assert chosen(method) == (method, 1)


# ---------------------------------------------------------------- dense mass matrix

COV = np.array([[1.0, 0.9, -0.5],
                [0.9, 2.0, -0.6],
                [-0.5, -0.6, 0.5]])


def correlated_normal():
    numpyro.sample("x", dist.MultivariateNormal(jnp.zeros(3), covariance_matrix=jnp.asarray(COV)))


def _correlation(cov: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.diag(cov))
    return cov / np.outer(sd, sd)


@pytest.mark.slow
def test_dense_mass_adapts_the_target_covariance():
    """Stan's windowed adaptation estimates the covariance from the last window's draws
    (about 400 of 1,000 warmup steps here): correlations within 0.15, variances within 40%.
    A diagonal matrix (dense_mass ignored) has correlations 0 where the target has 0.9."""
    fit = bj.sample(correlated_normal, chains=2, warmup=1000, draws=300, seed=4, dense_mass=True,
                    progress=False, chain_method="sequential")
    assert fit.settings["adaptation"] == "stan"
    (inverse_mass,) = fit.state.kernel.adapt_state.inverse_mass_matrix.values()
    inverse_mass = np.asarray(inverse_mass)
    assert inverse_mass.shape == (2, 3, 3)
    for chain in inverse_mass:
        np.testing.assert_allclose(_correlation(chain), _correlation(COV), atol=0.15)
        np.testing.assert_allclose(np.diag(chain), np.diag(COV), rtol=0.4)
    x = fit.draws["x"].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(np.cov(x.T), COV, atol=0.25)


# ---------------------------------------------------------------- initial values


def location_scale(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(5.0))
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def _starts(monkeypatch) -> list:
    """Record the unconstrained initial point of every run that sample() prepares."""
    starts, prepare = [], engine.prepare

    def spy(*args, **kwargs):
        run = prepare(*args, **kwargs)
        starts.append(jax.tree.map(np.asarray, run.host_state().kernel.z))
        return run

    monkeypatch.setattr(engine, "prepare", spy)
    return starts


def test_dict_init_strategy_sets_the_start(monkeypatch):
    starts = _starts(monkeypatch)
    y = np.random.default_rng(0).normal(1.0, 1.0, 30)
    settings = dict(chains=3, warmup=5, draws=5, progress=False, chain_method="sequential", seed=1)
    for mu, sigma in [(7.0, 2.0), (-3.0, 0.5)]:  # a second dict on the same model and shapes
        bj.sample(location_scale, {"y": y}, init_strategy={"mu": mu, "sigma": sigma}, **settings)
        z = starts[-1]
        np.testing.assert_allclose(z["mu"], [mu] * 3, rtol=1e-6)
        np.testing.assert_allclose(z["sigma"], [np.log(sigma)] * 3, rtol=1e-5)  # unconstrained: log
    bj.sample(location_scale, {"y": y}, init_strategy="uniform", **settings)
    z = starts[-1]
    assert np.all(np.abs(z["mu"]) <= 2) and len(set(z["mu"].tolist())) == 3  # uniform(-2, 2), per chain


# ---------------------------------------------------------------- thinning


def test_thinning_keeps_exactly_every_kth_draw():
    y = np.random.default_rng(1).normal(1.0, 1.0, 30)
    settings = dict(chains=2, warmup=100, seed=5, progress=False, chain_method="sequential")
    full = bj.sample(location_scale, {"y": y}, draws=150, **settings)
    thinned = bj.sample(location_scale, {"y": y}, draws=50, thin=3, **settings)
    for name in ("mu", "sigma"):
        np.testing.assert_array_equal(thinned.draws[name], full.draws[name][:, 2::3])
    for name in ("num_steps", "diverging", "step_size"):
        np.testing.assert_array_equal(thinned.stats[name], full.stats[name][:, 2::3])
    # gradients of every step are counted, the thinned-out ones included
    assert thinned.num_grad_evals["sampling"] == full.num_grad_evals["sampling"] == int(
        full.stats["num_steps"].sum())
    assert thinned.num_grad_evals["warmup"] == full.num_grad_evals["warmup"]
    assert thinned.settings["thin"] == 3 and thinned.num_draws == 50
