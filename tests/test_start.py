"""Where chains start (bhmjax._src.start): the uniform strategy drawn on the unconstrained sites."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import init_to_median, init_to_uniform
from numpyro.infer.util import initialize_model

from bhmjax._src.start import initial_point
from bhmjax._src.trace import model_trace


def scales(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(2.0))
    with numpyro.plate("groups", 3):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
    w = numpyro.sample("w", dist.Dirichlet(jnp.ones(4)))  # 4 on its own scale, 3 unconstrained
    numpyro.sample("y", dist.Normal(theta.sum() + w[0], 1.0), obs=y)


def _points(model, kwargs, init_fn, n=4000):
    trace = model_trace(model, kwargs, {})
    keys = jax.random.split(jax.random.PRNGKey(1), n)
    return trace, jax.jit(jax.vmap(lambda k: initial_point(k, trace, kwargs, init_fn)))(keys)


@pytest.mark.parametrize("radius", [2.0, 0.5])
def test_uniform_start_is_uniform_on_the_unconstrained_scale(radius):
    kwargs = {"y": jnp.asarray(0.3)}
    trace, info = _points(scales, kwargs, init_to_uniform(radius=radius))
    assert {k: v.shape[1:] for k, v in info.z.items()} == {"mu": (), "tau": (), "theta": (3,), "w": (3,)}
    for name, z in info.z.items():
        z = np.asarray(z).reshape(len(z), -1)
        assert (np.abs(z) <= radius).all(), name
        n = z.shape[0]  # mean 0, variance r^2/3, within 5 standard errors
        assert np.abs(z.mean(0)).max() < 5 * radius / np.sqrt(3 * n), name
        assert np.abs(z.var(0) / (radius**2 / 3) - 1).max() < 5 * np.sqrt(0.8 / n), name
    # the potential and its gradient are the model's, at that point
    one = {k: v[0] for k, v in info.z.items()}
    potential, grad = jax.value_and_grad(trace.potential_fn(**kwargs))(one)
    np.testing.assert_allclose(info.potential_energy[0], potential, rtol=1e-5)
    for k in one:
        np.testing.assert_allclose(info.z_grad[k][0], grad[k], rtol=1e-4, atol=1e-5)


def half_wall(y):
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("wall", jnp.where(x < 0.5, -jnp.inf, 0.0))  # finite only for x >= 0.5: a quarter of (-2, 2)
    numpyro.sample("y", dist.Normal(x, 1.0), obs=y)


def test_uniform_start_draws_again_until_the_density_is_finite():
    _, info = _points(half_wall, {"y": jnp.asarray(1.0)}, init_to_uniform(), n=500)
    x = np.asarray(info.z["x"])
    assert (x >= 0.5).all() and (x <= 2.0).all() and np.isfinite(np.asarray(info.potential_energy)).all()
    assert np.unique(x).size == x.size  # each chain's own draw, not one shared fallback


def test_no_finite_start_is_reported_not_hidden():
    def hopeless():
        numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.factor("wall", -jnp.inf)

    _, info = _points(hopeless, {}, init_to_uniform(), n=3)
    assert not np.isfinite(np.asarray(info.potential_energy)).any()  # after MAX_ATTEMPTS draws


def test_other_strategies_are_numpyros_own():
    kwargs = {"y": jnp.asarray(0.3)}
    trace = model_trace(scales, kwargs, {})
    key = jax.random.PRNGKey(3)
    ours = jax.jit(lambda k: initial_point(k, trace, kwargs, init_to_median(num_samples=15)))(key)
    theirs = jax.jit(lambda k: initialize_model(k, scales, init_strategy=init_to_median(num_samples=15),
                                                dynamic_args=True, model_kwargs=kwargs).param_info)(key)
    for k in ours.z:
        np.testing.assert_allclose(ours.z[k], theirs.z[k], rtol=1e-6)
    np.testing.assert_allclose(ours.potential_energy, theirs.potential_energy, rtol=1e-6)
