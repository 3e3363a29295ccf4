"""NUTS as a chain program: NumPyro's functional kernel, our warmup adaptation.

The pieces are the initial point of the run's init strategy (:mod:`bhmjax._src.start`)
and NumPyro's ``hmc(algo="NUTS")`` (``init_kernel``, ``sample_kernel``) on the
potential of the model's abstract trace (data as arguments, so new data of the same
shapes reuse the compiled program). With ``adaptation`` "hybrid" or "nutpie" the
step size and mass matrix are learned by :mod:`bhmjax._src.adapt` between steps;
"stan" keeps NumPyro's windowed adaptation. The driver (:mod:`bhmjax._src.engine`)
maps the program over chains and runs it in chunks.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from bhmjax._src import adapt
from bhmjax._src.config import RunConfig
from bhmjax._src.engine import ChainProgram, init_keys, trace_counts
from bhmjax._src.start import finite, initial_point
from bhmjax._src.stats import SampleInfo, tree_depth
from bhmjax._src.trace import ModelTrace, site_log_densities

__all__ = ["nuts_program", "trace_counts"]

_PROGRAMS: dict[tuple, ChainProgram] = {}


def _kernel_key(config: RunConfig) -> tuple:
    """The settings the NUTS step depends on (the init strategy only shapes ``init``)."""
    return ("nuts", config.warmup, config.target_accept, config.max_tree_depth, config.dense_mass,
            config.adaptation, config.keep, config.drop)


def _init_id(config: RunConfig) -> Any:
    strategy = config.init_strategy
    return strategy if callable(strategy) else repr(config.to_dict()["init_strategy"])


def nuts_program(model: Callable, static: Mapping[str, Any], config: RunConfig, trace: ModelTrace) -> ChainProgram:
    """The NUTS chain program of ``model(**arrays, **static)`` under ``config`` (one chain; cached).

    ``trace`` is the model's abstract trace (its potential and constraining functions
    and its sites); the state is NumPyro's ``HMCState`` of one chain.
    """
    key = (model, tuple(sorted(static.items())), _kernel_key(config))
    init_id = _init_id(config)
    try:
        program = _PROGRAMS.get((key, init_id))
    except TypeError:  # unhashable static data or init strategy: no reuse
        program = None
    if program is not None:
        return program
    init_kernel, sample_kernel = hmc_kernels(trace)
    draw_grad = config.adaptation != "stan"
    dense_mass = [trace.latent] if config.dense_mass else []
    stored = tuple(trace.stored(config.keep, config.drop))
    init_fn = config.init_fn()

    def kwargs_of(arrays):
        return {**arrays, **static}

    def init(key, arrays):
        key_init, key_kernel = init_keys(key)
        kwargs = kwargs_of(arrays)
        params = initial_point(key_init, trace, kwargs, init_fn)
        state = init_kernel(params, config.warmup, dense_mass=dense_mass, target_accept_prob=config.target_accept,
                            max_tree_depth=config.max_tree_depth, adapt_step_size=not draw_grad,
                            adapt_mass_matrix=not draw_grad, model_kwargs=kwargs, rng_key=key_kernel)
        return adapt.init_draw_grad(state) if draw_grad else state

    def step(state, arrays):
        new = sample_kernel(state, model_kwargs=kwargs_of(arrays))
        if draw_grad:
            new = lax.cond(state.i < config.warmup,
                           lambda s: adapt.update_draw_grad(state.i, s, config.warmup, config.target_accept,
                                                             config.adaptation),
                           lambda s: s, new)
        return new, transition_info(new)

    def values(state, arrays):
        constrained = trace.constrain_fn(**kwargs_of(arrays))(state.z)
        return {k: constrained[k] for k in stored if k in constrained}

    def valid(state):
        return finite(state.potential_energy, state.z_grad)

    def checks(state, arrays):
        kwargs = kwargs_of(arrays)
        return site_log_densities(model, kwargs, trace.constrain_fn(**kwargs)(state.z))

    program = ChainProgram(init=init, step=step, values=values, valid=valid, key=key, init_key=init_id,
                           checks=checks, info=transition_info)
    try:
        _PROGRAMS[(key, init_id)] = program
    except TypeError:
        pass
    return program


def transition_info(state) -> SampleInfo:
    """The statistics of the NUTS transition that made ``state`` (NumPyro's ``HMCState``)."""
    steps = state.num_steps.astype(jnp.int32)
    return SampleInfo(diverging=state.diverging, num_steps=steps, tree_depth=tree_depth(steps),
                      accept_prob=state.accept_prob, energy=state.energy, step_size=state.adapt_state.step_size,
                      potential_energy=state.potential_energy)


def hmc_kernels(trace) -> tuple[Callable, Callable]:
    """NumPyro's NUTS ``init_kernel`` and ``sample_kernel`` on the model's potential."""
    from numpyro.infer.hmc import hmc

    return hmc(potential_fn_gen=trace.potential_fn, algo="NUTS")
