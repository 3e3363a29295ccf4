"""ChEES-HMC as an ensemble chain program: many chains in lockstep, for accelerators, from BlackJAX.

NUTS builds a tree whose size depends on each chain's position, so vectorized chains
wait for the slowest. ChEES-HMC (Hoffman, Radul and Sountsov 2021, "An Adaptive MCMC
Scheme for Setting Trajectory Lengths in Hamiltonian Monte Carlo", AISTATS) runs
plain HMC with one jittered trajectory length shared by all chains: warmup tunes the
step size by dual averaging (harmonic mean acceptance 0.651 over chains) and the
trajectory length by Adam on the ChEES criterion (the change in the cross-chain
estimate of E[|x - E x|^2]), with an ensemble-estimated diagonal mass matrix. With
hundreds or thousands of chains each step is one batched gradient per leapfrog step.
A chain that accepted almost nothing in the second half of warmup (stuck where the
shared step size is far too large) restarts from a healthy chain's state before
sampling (``_restart_stuck``; counted in ``fit.settings["adapted"]["restarted_chains"]``).

We do not reimplement it: ``blackjax.chees_adaptation`` does the warmup (one compiled
call: BlackJAX runs it as one scan, so the driver checkpoints after it) and
``blackjax.mcmc.dynamic_hmc`` the sampling steps, on the log density of the model's
abstract trace (data as arguments: new data of the same shapes reuse both programs).
Keys: chain ``c`` starts from ``split(key_c)[0]`` (as NUTS does); the ensemble's
warmup, restart and sampling keys come from ``split(key_0)[1]``; step ``i`` of
sampling uses ``fold_in(key_sample, i)``, so draws do not depend on the chunking.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from bhmjax._src.config import RunConfig
from bhmjax._src.engine import ChainProgram, init_keys
from bhmjax._src.start import initial_point
from bhmjax._src.stats import STATS, SampleInfo
from bhmjax._src.trace import ModelTrace

__all__ = ["CheesState", "chees_program"]

STUCK_ACCEPTANCE = 0.01  # mean acceptance over the second half of warmup below which a chain restarts
LEARNING_RATE = 0.025  # Adam's learning rate on the log trajectory length
INIT_STEP_SIZE = 0.1
MAX_LEAPFROG_STEPS = 1000


class CheesState(NamedTuple):
    """Every chain's HMC state and the ensemble's tuned parameters and keys."""

    hmc: Any  # blackjax DynamicHMCState, leaves with a leading chain axis
    step_size: Any  # ()
    inverse_mass_matrix: Any  # (dim,)
    num_steps: Any  # () mean leapfrog steps before jitter
    keys: Any  # (3, 2): warmup, restart, sampling
    i: Any  # () sampling steps taken
    restarted: Any  # () chains restarted after warmup


def _steps_fn(max_bits: int) -> Callable:
    """BlackJAX's jittered trajectory: ceil(halton(i) * mean steps), the same for every chain."""
    from blackjax.mcmc import dynamic_hmc

    return lambda i, n: jnp.asarray(jnp.ceil(dynamic_hmc.halton_sequence(i, max_bits) * n), dtype=int)


def _restart_stuck(key, states, acceptance):
    """Chains that accepted (almost) nothing in the second half of warmup restart from others.

    One shared step size cannot move a chain that started somewhere the adapted step
    is far too large (a dispersed start in a narrow corner): it would sit still for
    the whole run and ruin R-hat. Such a chain explores nothing, so it is replaced
    by the final warmup state of a randomly chosen healthy chain (its own momentum and
    key make it a separate chain from there). Returns the states and how many restarted.
    """
    half = acceptance[acceptance.shape[0] // 2:]
    stuck = jnp.mean(jnp.nan_to_num(half), axis=0) < STUCK_ACCEPTANCE
    healthy = ~stuck
    pick = jax.random.choice(key, stuck.shape[0], stuck.shape, p=healthy / jnp.maximum(healthy.sum(), 1))
    source = jnp.where(stuck & healthy.any(), pick, jnp.arange(stuck.shape[0]))
    return jax.tree.map(lambda x: x[source], states), jnp.sum(stuck & healthy.any())


def chees_program(model: Callable, static: Mapping[str, Any], config: RunConfig, trace: ModelTrace) -> ChainProgram:
    """The ChEES ensemble program of ``model`` under ``config`` (all ``config.chains`` chains at once)."""
    import blackjax
    from blackjax.adaptation.base import get_filter_adapt_info_fn
    from blackjax.mcmc import dynamic_hmc
    num_chains = config.chains
    init_fn = config.init_fn()
    _, unravel = ravel_pytree({k: jnp.zeros(v.shape, v.dtype) for k, v in trace.unconstrained.items()})
    stored = tuple(trace.stored(config.keep, config.drop))
    max_bits = int(np.ceil(np.log2(config.warmup + config.draws * config.thin)))
    kernel = dynamic_hmc.build_kernel(next_random_arg_fn=lambda i: i + 1, integration_steps_fn=_steps_fn(max_bits))

    def logdensity_of(arrays):
        potential = trace.potential_fn(**arrays, **static)
        return lambda x: -potential(unravel(x))

    def init(keys, arrays):
        def position(key):
            z = initial_point(init_keys(key)[0], trace, {**arrays, **static}, init_fn).z
            return ravel_pytree({k: z[k] for k in trace.latent})[0]
        positions = jax.vmap(position)(keys)
        hmc = jax.vmap(lambda p: dynamic_hmc.init(p, logdensity_of(arrays), 0))(positions)
        dim = positions.shape[1]
        dtype = positions.dtype
        return CheesState(hmc, jnp.asarray(INIT_STEP_SIZE, dtype), jnp.ones(dim, dtype), jnp.asarray(1.0, dtype),
                          jax.random.split(init_keys(keys[0])[1], 3), jnp.zeros((), jnp.int32),
                          jnp.zeros((), jnp.int32))

    def warmup(state, arrays):
        adaptation = blackjax.chees_adaptation(
            logdensity_of(arrays), num_chains, target_acceptance_rate=config.target_accept,
            max_leapfrog_steps=MAX_LEAPFROG_STEPS, mass_matrix_estimation="diagonal",
            adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"num_integration_steps", "acceptance_rate"}))
        (hmc, params), adapt_info = adaptation.run(state.keys[0], state.hmc.position, INIT_STEP_SIZE,
                                                   optax.adam(LEARNING_RATE), config.warmup,
                                                   max_sampling_steps=config.draws * config.thin)
        hmc, restarted = _restart_stuck(state.keys[1], hmc, adapt_info.info.acceptance_rate)
        grads = jnp.sum(adapt_info.info.num_integration_steps, axis=0) + 1  # + the initial gradient
        like = lambda new, old: jnp.asarray(new, old.dtype).reshape(old.shape)  # noqa: E731 - keep the state's types
        return state._replace(hmc=hmc, step_size=like(params["step_size"], state.step_size),
                              inverse_mass_matrix=like(params["inverse_mass_matrix"], state.inverse_mass_matrix),
                              num_steps=like(params["integration_steps_params"][0], state.num_steps),
                              restarted=like(restarted, state.restarted)), grads.astype(jnp.int32)

    def step(state, arrays):
        logdensity = logdensity_of(arrays)
        keys = jax.random.split(jax.random.fold_in(state.keys[2], state.i), num_chains)
        one = lambda s, k: kernel(k, s, logdensity, state.step_size, state.inverse_mass_matrix,  # noqa: E731
                                  (state.num_steps,))
        hmc, out = jax.vmap(one)(state.hmc, keys)
        return state._replace(hmc=hmc, i=state.i + 1), SampleInfo(
            diverging=out.is_divergent, num_steps=out.num_integration_steps.astype(jnp.int32), tree_depth=None,
            accept_prob=out.acceptance_rate, energy=out.energy,
            step_size=jnp.full((num_chains,), state.step_size), potential_energy=-hmc.logdensity)

    def values(state, arrays):
        constrain = trace.constrain_fn(**arrays, **static)
        out = jax.vmap(lambda x: constrain(unravel(x)))(state.hmc.position)
        return {k: out[k] for k in stored if k in out}

    def valid(state):
        finite = jnp.all(jnp.isfinite(state.hmc.logdensity_grad), axis=-1)
        return jnp.isfinite(state.hmc.logdensity) & finite

    def report(state) -> dict:
        return {"step_size": float(state.step_size), "num_leapfrog_steps": float(state.num_steps),
                "restarted_chains": int(state.restarted)}

    key = ("chees", model, tuple(sorted(static.items())), config.warmup, config.draws, config.thin,
           config.target_accept, config.keep, config.drop, num_chains)
    return ChainProgram(init=init, step=step, values=values, valid=valid, key=key,
                        init_key=repr(config.to_dict()["init_strategy"]), ensemble=True, warmup=warmup,
                        stats=tuple(s for s in STATS if s != "tree_depth"), report=report)
