"""Where a chain starts: the initial point of the run's init strategy, in one place.

Every program that needs a chain's starting point (NUTS's init, the ChEES ensemble's,
the model check that evaluates each site there) takes it from :func:`initial_point`,
so the check always looks at the point the run starts from.

The default strategy, NumPyro's ``init_to_uniform`` (each latent value uniform on
``(-radius, radius)`` on the unconstrained scale, tried again while the potential or
its gradient is not finite), is drawn here directly on the unconstrained sites of the
model's abstract trace: the same distribution as ``initialize_model`` gives, without
its extra runs of the model (a prototype trace, the strategy's substituted run beside
the potential's), so the init program traces and compiles little more than one
gradient. Other strategies (median, feasible, sample, values, a user's function) go
through NumPyro's ``initialize_model``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from bhmjax._src.trace import ModelTrace

__all__ = ["MAX_ATTEMPTS", "finite", "initial_point"]

MAX_ATTEMPTS = 100
"""Draws of the uniform strategy before a chain is reported as starting where the density is not finite
(NumPyro's ``find_valid_initial_params`` tries as often)."""


def _uniform_radius(init_fn: Callable) -> float | None:
    """The radius of NumPyro's ``init_to_uniform`` (as ``init_to_uniform(radius=r)`` returns it), else None."""
    from numpyro.infer import init_to_uniform

    if isinstance(init_fn, partial) and init_fn.func is init_to_uniform and not init_fn.args:
        return float(init_fn.keywords.get("radius", 2.0))
    return None


def finite(potential: jax.Array, grad: Any) -> jax.Array:
    """Whether a start is valid: the potential energy and every gradient leaf are finite."""
    return jnp.isfinite(potential) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grad)]))


def initial_point(key: jax.Array, trace: ModelTrace, kwargs: Mapping[str, Any], init_fn: Callable):
    """The point a chain with init key ``key`` starts from (traceable; NumPyro's ``ParamInfo``).

    Parameters
    ----------
    key : PRNG key
        The chain's init key (``engine.init_keys(chain_key)[0]``).
    trace : ModelTrace
        The model's abstract trace: its latent sites, their unconstrained shapes, its potential.
    kwargs : dict
        The model's data (arrays and static values).
    init_fn : callable
        The NumPyro init strategy (``RunConfig.init_fn()``).

    Returns
    -------
    ParamInfo
        ``z`` (unconstrained latent values, ``{site: array}``), the potential energy there and its
        gradient. Not finite after :data:`MAX_ATTEMPTS` draws where no valid start was found.
    """
    radius = _uniform_radius(init_fn)
    if radius is None:
        from numpyro.infer.util import initialize_model

        return initialize_model(key, trace.model, init_strategy=init_fn, dynamic_args=True,
                                model_kwargs=dict(kwargs)).param_info
    return _uniform_start(key, trace, kwargs, radius)


def _uniform_start(key: jax.Array, trace: ModelTrace, kwargs: Mapping[str, Any], radius: float):
    from numpyro.infer.util import ParamInfo

    value_and_grad = jax.value_and_grad(trace.potential_fn(**kwargs))
    shapes = {n: s.shape for n, s in trace.unconstrained.items()}
    dtype = jnp.result_type(float)  # as NumPyro's draw: the default float (float64 under x64)

    def draw(k) -> dict:
        keys = jax.random.split(k, len(shapes))
        return {n: jax.random.uniform(kk, shape, dtype, -radius, radius)
                for kk, (n, shape) in zip(keys, sorted(shapes.items()))}

    def attempt(carry):
        i, k, _, _, _ = carry
        k, sub = jax.random.split(k)
        z = draw(sub)
        return (i + 1, k, z) + tuple(value_and_grad(z))

    def again(carry):
        i, _, _, potential, grad = carry
        return (i < MAX_ATTEMPTS) & ~finite(potential, grad)

    zeros = {n: jnp.zeros(shape, dtype) for n, shape in shapes.items()}
    potential, grad = jax.eval_shape(value_and_grad, zeros)  # the carry's types: the model's own
    first = (jnp.zeros((), jnp.int32), key, zeros, jnp.full((), jnp.inf, potential.dtype),
             jax.tree.map(lambda g: jnp.zeros(g.shape, g.dtype), grad))
    _, _, z, potential, grad = lax.while_loop(again, attempt, first)
    return ParamInfo(z, potential, grad)
