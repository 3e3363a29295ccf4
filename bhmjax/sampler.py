"""``bj.sample``: any NumPyro model and a data dict to a :class:`~bhmjax.Fit`."""

from __future__ import annotations

import numbers
from contextlib import contextmanager
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from bhmjax._src import data as data_lib
from bhmjax._src import sampling
from bhmjax.fit import Fit

__all__ = ["sample", "check_model"]


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


@contextmanager
def x64_mode(enabled: bool):
    """Run a block with JAX's 64-bit mode set as asked, restoring it afterwards."""
    before = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", bool(enabled))
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def check_model(model: Callable, arrays: Mapping[str, np.ndarray], static: Mapping[str, Any]) -> None:
    """Run the model once on the concrete data (no compiling) to catch shape errors.

    An observed site whose data would be broadcast to a larger shape, or a model
    that fails on the data, raises ``ValueError`` naming the data lengths.
    """
    from numpyro import handlers

    lengths = data_lib.describe_lengths(arrays)
    try:
        with handlers.block(), handlers.trace() as tr, handlers.seed(rng_seed=0):
            model(**arrays, **static)
    except (TypeError, ValueError, IndexError) as err:
        raise ValueError(
            f"the model failed when run on the data ({type(err).__name__}: {err}). "
            f"Data lengths: {lengths or 'no arrays'}; arrays of mismatched length are the usual cause."
        ) from err
    for name, site in tr.items():
        if site["type"] != "sample" or not site.get("is_observed"):
            continue
        value_shape = np.shape(site["value"])
        dist_shape = tuple(site["fn"].shape())
        try:
            joint = np.broadcast_shapes(value_shape, dist_shape)
        except ValueError:
            joint = None
        if joint != value_shape:
            raise ValueError(
                f"observed site {name!r} has data of shape {value_shape} but its distribution "
                f"has shape {dist_shape}; data lengths: {lengths}. Arrays of mismatched length?"
            )


def sample(
    model: Callable,
    data: Mapping[str, Any] | None = None,
    *,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    seed: int = 0,
    chain_method: str = "auto",
    progress: bool = True,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    init_strategy: Any = "uniform",
    thin: int = 1,
    keep: Sequence[str] | None = None,
    drop: Sequence[str] = (),
    x64: bool = False,
    coords: Mapping[str, Sequence] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    names: Mapping[str, Sequence[str | None]] | None = None,
    chunk_size: int | None = None,
) -> Fit:
    """Sample the posterior of a NumPyro model with jit-compiled NUTS across chains.

    Parameters
    ----------
    model : callable
        A NumPyro model function.
    data : dict
        Keyword arguments the model is called with. Arrays (and lists) are data:
        new values of the same shapes reuse the compiled program. Python scalars
        and strings are compiled in (use them for sizes such as a number of groups).
    chains, warmup, draws : int
        Number of chains, warmup steps per chain, stored draws per chain.
    seed : int
        Seed of the run: same seed, device and settings give identical draws.
    chain_method : {"auto", "parallel", "vectorized", "sequential"}
        How chains share devices; "auto" spreads them over devices where there are
        several (host devices on CPU), else runs them one after the other on CPU
        and vectorized on an accelerator.
    progress : bool
        Show a progress bar (warmup and sampling, every chain method).
    target_accept, max_tree_depth, dense_mass, init_strategy
        NUTS settings; ``init_strategy`` is "uniform", "median", "feasible",
        "sample", a NumPyro init strategy or a dict of initial values.
    thin : int
        Keep every ``thin``-th draw (``draws`` stored draws are kept after thinning).
    keep, drop : list of str
        Sites to store (default: all latent and deterministic sites) and sites never
        to store (large deterministic sites).
    x64 : bool
        Sample in 64-bit floating point.
    coords, dims : dict
        ArviZ-style labels used in parameter names, e.g.
        ``coords={"school": names}, dims={"theta": ["school"]}`` names rows
        ``theta[Choate]``.
    names : dict, optional
        Explicit row names per site (see :class:`Fit`), overriding coords/dims.
    chunk_size : int, optional
        Steps per compiled call (the granularity of the progress bar).

    Returns
    -------
    Fit
        Draws of shape (chains, draws, *site_shape), sampler statistics and timings.

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> def model(y):
    ...     mu = numpyro.sample("mu", dist.Normal(0, 10))
    ...     numpyro.sample("y", dist.Normal(mu, 1), obs=y)
    >>> fit = sample(model, {"y": [0.1, -0.3, 0.4]}, chains=2, warmup=200, draws=200, progress=False)
    >>> fit.draws["mu"].shape
    (2, 200)
    """
    if not callable(model):
        raise TypeError(f"model must be a callable NumPyro model, got {type(model).__name__}")
    chains = _positive_int("chains", chains)
    warmup = _positive_int("warmup", warmup)
    draws = _positive_int("draws", draws)
    thin = _positive_int("thin", thin)
    seed = _positive_int("seed", seed, minimum=0)
    max_tree_depth = _positive_int("max_tree_depth", max_tree_depth)
    if not 0 < float(target_accept) < 1:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    if chain_method not in sampling.CHAIN_METHODS:
        raise ValueError(f"chain_method must be one of {sampling.CHAIN_METHODS}, got {chain_method!r}")
    if isinstance(init_strategy, str) and init_strategy not in sampling._INIT_STRATEGIES:
        raise ValueError(f"init_strategy must be one of {sorted(sampling._INIT_STRATEGIES)}, "
                         f"a NumPyro init function or a dict of values; got {init_strategy!r}")
    arrays, static = data_lib.split_data({} if data is None else data)
    data_lib.check_data(arrays)
    config = sampling.NutsConfig(
        num_warmup=warmup, target_accept=float(target_accept), max_tree_depth=max_tree_depth,
        dense_mass=bool(dense_mass), init_strategy=init_strategy, thinning=thin,
        keep=None if keep is None else tuple(keep), drop=tuple(drop),
    )
    with x64_mode(x64):
        check_model(model, arrays, static)
        result = sampling.run_chains(
            jax.random.PRNGKey(seed), model, arrays, static, config, num_chains=chains,
            num_draws=draws, chain_method=chain_method, progress=progress, chunk_size=chunk_size,
        )
    stats = dict(result.stats)
    stats["tree_depth"] = tree_depth(stats["num_steps"])
    settings = dict(chains=chains, warmup=warmup, draws=draws, seed=seed,
                    chain_method=result.chain_method, requested_chain_method=chain_method,
                    target_accept=float(target_accept), max_tree_depth=max_tree_depth,
                    dense_mass=bool(dense_mass), thin=thin, x64=bool(x64),
                    init_strategy=init_strategy if isinstance(init_strategy, str) else "custom",
                    keep=None if keep is None else list(keep), drop=list(drop))
    return Fit(draws=result.draws, stats=stats, timings=result.timings,
               num_grad_evals=result.num_grad_evals, settings=settings,
               coords=dict(coords or {}), dims={k: tuple(v) for k, v in (dims or {}).items()},
               names={k: list(v) for k, v in (names or {}).items()},
               data={**arrays, **static}, model=model, state=result.state)


def tree_depth(num_steps: np.ndarray) -> np.ndarray:
    """NUTS tree depth from leapfrog steps: a tree of depth d takes < 2**d steps."""
    return np.floor(np.log2(np.maximum(num_steps, 1))).astype(np.int32) + 1
