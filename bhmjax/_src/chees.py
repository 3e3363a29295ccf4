"""ChEES-HMC: many chains in lockstep, for accelerators, from BlackJAX on a NumPyro model.

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
sampling (``_restart_stuck``; counted in ``adapted["restarted_chains"]``).

We do not reimplement it: ``blackjax.chees_adaptation`` does the warmup and
``blackjax.mcmc.dynamic_hmc`` the sampling, on the log density of the NumPyro model
from ``numpyro.infer.util.initialize_model(..., dynamic_args=True)`` (data are traced
arguments, so new data of the same shapes reuse both compiled programs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from numpyro.infer.util import initialize_model

__all__ = ["CheesConfig", "CheesResult", "run_chees"]

_EXECUTABLES: dict[tuple, Any] = {}
STUCK_ACCEPTANCE = 0.01  # mean acceptance over the second half of warmup below which a chain restarts


@dataclass(frozen=True)
class CheesConfig:
    """Settings of a ChEES run (all part of the compile key).

    Attributes
    ----------
    num_warmup : int
        Adaptation steps (all chains together).
    target_accept : float
        Target harmonic-mean acceptance over chains (0.651 is optimal for HMC).
    learning_rate : float
        Adam's learning rate on the log trajectory length.
    init_step_size : float
    max_leapfrog_steps : int
        Cap on the leapfrog steps of one transition.
    init_strategy : str or callable
        "uniform", "median", "feasible", "sample" or a NumPyro init strategy (each
        chain gets its own key).
    thinning : int
    keep, drop : tuple of str or None
        Sites to store / never to store (as for NUTS).
    """

    num_warmup: int = 500
    target_accept: float = 0.651
    learning_rate: float = 0.025
    init_step_size: float = 0.1
    max_leapfrog_steps: int = 1000
    init_strategy: Any = "uniform"
    thinning: int = 1
    keep: tuple[str, ...] | None = None
    drop: tuple[str, ...] = ()


class CheesResult(NamedTuple):
    """Host arrays with axes (chain, draw, ...), as :class:`sampling.SampleResult`."""

    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    timings: dict[str, float]
    num_grad_evals: dict[str, int]
    adapted: dict[str, float]  # step_size, num_leapfrog_steps (mean before jitter), restarted_chains


def _log_density(model: Callable, static: Mapping[str, Any], example: Mapping[str, Any], init_fn):
    """``(logdensity(arrays), constrain(arrays), init(key, arrays), site_names)`` of the model.

    Positions are flat vectors (``ravel_pytree`` of the unconstrained sites), so the
    ensemble mass matrix and ChEES criterion see one array of shape (chains, dim).
    """
    info = initialize_model(jax.random.PRNGKey(0), model, init_strategy=init_fn, dynamic_args=True,
                            model_kwargs={**example, **static})
    _, unravel = ravel_pytree(info.param_info.z)
    sites = tuple(name for name, site in info.model_trace.items()
                  if site["type"] in ("sample", "deterministic") and not site.get("is_observed", False))

    def logdensity(arrays):
        potential = info.potential_fn(**arrays, **static)
        return lambda x: -potential(unravel(x))

    def constrain(arrays):
        postprocess = info.postprocess_fn(**arrays, **static)
        return lambda x: postprocess(unravel(x))

    def init(key, arrays):
        z = initialize_model(key, model, init_strategy=init_fn, dynamic_args=True,
                             model_kwargs={**arrays, **static}).param_info.z
        return ravel_pytree(z)[0]

    return logdensity, constrain, init, sites


def _steps_fn(max_bits: int) -> Callable:
    """BlackJAX's jittered trajectory: ceil(halton(i) * mean steps), the same for every chain."""
    from blackjax.mcmc import dynamic_hmc

    return lambda i, n: jnp.asarray(jnp.ceil(dynamic_hmc.halton_sequence(i, max_bits) * n), dtype=int)


def _programs(model, static, config: CheesConfig, example, num_chains: int, num_draws: int):
    """The warmup and sampling functions (pure; compiled by the caller)."""
    import blackjax
    from blackjax.adaptation.base import get_filter_adapt_info_fn

    from bhmjax._src.sampling import _INIT_STRATEGIES

    strategy = config.init_strategy
    init_fn = _INIT_STRATEGIES[strategy]() if isinstance(strategy, str) else strategy
    logdensity_of, constrain_of, init_of, sites = _log_density(model, static, example, init_fn)
    stored = tuple(s for s in sites if s not in config.drop and (config.keep is None or s in config.keep))
    max_bits = int(np.ceil(np.log2(config.num_warmup + num_draws * config.thinning)))
    kernel = blackjax.mcmc.dynamic_hmc.build_kernel(next_random_arg_fn=lambda i: i + 1,
                                                    integration_steps_fn=_steps_fn(max_bits))

    def warmup(key, arrays):
        key_init, key_warmup = jax.random.split(key)
        positions = jax.vmap(lambda k: init_of(k, arrays))(jax.random.split(key_init, num_chains))
        adaptation = blackjax.chees_adaptation(
            logdensity_of(arrays), num_chains, target_acceptance_rate=config.target_accept,
            max_leapfrog_steps=config.max_leapfrog_steps, mass_matrix_estimation="diagonal",
            adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"num_integration_steps", "acceptance_rate"}))
        (states, params), info = adaptation.run(key_warmup, positions, config.init_step_size,
                                                optax.adam(config.learning_rate), config.num_warmup,
                                                max_sampling_steps=num_draws * config.thinning)
        steps = jnp.sum(info.info.num_integration_steps) + num_chains  # + the initial gradients
        states, stuck = _restart_stuck(key_init, states, info.info.acceptance_rate)
        tuned = (params["step_size"], params["inverse_mass_matrix"], params["integration_steps_params"][0])
        return states, tuned, steps, stuck

    def sample(key, states, tuned, arrays):
        step_size, inverse_mass_matrix, num_steps = tuned
        logdensity, constrain = logdensity_of(arrays), constrain_of(arrays)

        def one(state, key):
            return kernel(key, state, logdensity, step_size, inverse_mass_matrix, (num_steps,))

        def draw(states, key):
            def thin(carry, k):
                states, _ = carry
                states, info = jax.vmap(one)(states, jax.random.split(k, num_chains))
                return (states, info), info.num_integration_steps.sum()
            first = jax.vmap(one)(states, jax.random.split(key, num_chains))
            (states, info), grads = lax.scan(thin, first, jax.random.split(key, config.thinning - 1))
            grads = grads.sum() + first[1].num_integration_steps.sum()
            values = jax.vmap(constrain)(states.position)
            stats = {"diverging": info.is_divergent, "num_steps": info.num_integration_steps.astype(jnp.int32),
                     "accept_prob": info.acceptance_rate, "energy": info.energy,
                     "step_size": jnp.full((num_chains,), step_size),
                     "potential_energy": -states.logdensity}
            return states, ({k: v for k, v in values.items() if k in stored}, stats, grads)

        states, (values, stats, grads) = lax.scan(draw, states, jax.random.split(key, num_draws))
        return states, values, stats, grads.sum()

    return warmup, sample


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
    pick = jax.random.choice(jax.random.fold_in(key, 1), stuck.shape[0], stuck.shape,
                             p=healthy / jnp.maximum(healthy.sum(), 1))
    source = jnp.where(stuck & healthy.any(), pick, jnp.arange(stuck.shape[0]))
    return jax.tree.map(lambda x: x[source], states), jnp.sum(stuck & healthy.any())


def _signature(tree) -> tuple:
    return tuple((tuple(np.shape(x)), str(jnp.result_type(x))) for x in jax.tree.leaves(tree))


def run_chees(key: jax.Array, model: Callable, arrays: Mapping[str, np.ndarray], static: Mapping[str, Any],
              config: CheesConfig, *, num_chains: int, num_draws: int) -> CheesResult:
    """Run ``num_chains`` ChEES-HMC chains: ``config.num_warmup`` adaptation steps, ``num_draws`` draws.

    Parameters
    ----------
    key : PRNG key
    model : callable
        A NumPyro model, called as ``model(**arrays, **static)``.
    arrays, static : dict
        Array data (traced) and Python scalars (compiled in).
    config : CheesConfig
    num_chains : int
        Chains (hundreds or thousands on an accelerator; at least 2).
    num_draws : int
        Stored draws per chain (after thinning).

    Returns
    -------
    CheesResult with draws (num_chains, num_draws, *site_shape); ``num_steps`` is the
    leapfrog steps (gradient evaluations) of each transition.

    Examples
    --------
    >>> import jax, numpyro, numpyro.distributions as dist
        >>> def model(y):
    ...     mu = numpyro.sample("mu", dist.Normal(0, 10))
    ...     numpyro.sample("y", dist.Normal(mu, 1), obs=y)
    >>> res = run_chees(jax.random.PRNGKey(0), model, {"y": jnp.ones(3)}, {},
    ...                 CheesConfig(num_warmup=100), num_chains=64, num_draws=50)
    >>> res.draws["mu"].shape
    (64, 50)
    """
    arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
    t0 = time.perf_counter()
    cache_key = (model, tuple(sorted(static.items())), config, num_chains, num_draws, _signature(arrays),
                 tuple(sorted(arrays)))
    exes = _EXECUTABLES.get(cache_key)
    key_warmup, key_sample = jax.random.split(key)
    if exes is None:
        warmup, sample = _programs(model, static, config, arrays, num_chains, num_draws)
        warm_exe = jax.jit(warmup).lower(key_warmup, arrays).compile()
        shapes = jax.eval_shape(warmup, key_warmup, arrays)
        sample_exe = jax.jit(sample).lower(key_sample, shapes[0], shapes[1], arrays).compile()
        exes = _EXECUTABLES[cache_key] = (warm_exe, sample_exe)
    warm_exe, sample_exe = exes
    timings = {"compile": time.perf_counter() - t0}
    t = time.perf_counter()
    states, tuned, warm_grads, stuck = jax.block_until_ready(warm_exe(key_warmup, arrays))
    timings["warmup"] = time.perf_counter() - t
    t = time.perf_counter()
    states, values, stats, grads = jax.block_until_ready(sample_exe(key_sample, states, tuned, arrays))
    timings["sampling"] = time.perf_counter() - t
    swap = lambda x: np.swapaxes(np.asarray(x), 0, 1)  # noqa: E731 - (draw, chain) -> (chain, draw)
    return CheesResult(draws={k: swap(v) for k, v in values.items()},
                       stats={k: swap(v) for k, v in stats.items()}, timings=timings,
                       num_grad_evals={"warmup": int(warm_grads), "sampling": int(grads)},
                       adapted={"step_size": float(tuned[0]), "num_leapfrog_steps": float(tuned[2]),
                                "restarted_chains": int(stuck)})
