"""``bj.sample``, ``bj.resume`` and ``extend``: the entry points into the driver."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from bhmjax import runner
from bhmjax._src import data as data_lib
from bhmjax._src.config import build_config, check_keywords
from bhmjax._src.engine import init_keys
from bhmjax._src.precision import x64_mode
from bhmjax._src.trace import check_initial_point, model_trace
from bhmjax.fit import Fit
from bhmjax.model import Model

__all__ = ["sample", "resume", "extend", "check_model"]


def check_model(model: Callable, arrays: Mapping[str, np.ndarray], static: Mapping[str, Any], *,
                init_strategy: Any = "uniform", seed: Any = 0) -> None:
    """Run the model's checks on the data without sampling (what ``bj.sample`` checks first).

    The model is traced abstractly (shape errors, Python branching on traced values) and
    its log density is evaluated, site by site, where the run with ``init_strategy`` and
    ``seed`` would start; a ``ValueError`` names the data lengths or the site at fault.
    """
    config = build_config(init_strategy=init_strategy, seed=seed)
    trace = model_trace(model, arrays, static)
    key = jax.random.split(config.root_key(), config.chains)[0]
    check_initial_point(model, arrays, static, config.init_fn(), init_keys(key)[0],
                        repr(config.to_dict()["init_strategy"]), trace)


def sample(
    model: Callable,
    data: Mapping[str, Any] | None = None,
    *,
    chains: int = 4,
    warmup: int = 1000,
    draws: int = 1000,
    seed: Any = 0,
    chain_method: str = "auto",
    progress: bool = True,
    target_accept: float | None = None,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    adaptation: str = "auto",
    init_strategy: Any = "uniform",
    thin: int = 1,
    keep: Sequence[str] | None = None,
    drop: Sequence[str] = (),
    x64: bool = False,
    coords: Mapping[str, Sequence] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    names: Mapping[str, Sequence[str | None]] | None = None,
    chunk_size: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    every: int = 200,
    out: str | os.PathLike | None = None,
    sampler: str = "nuts",
    parameterization: Any = None,
    **unknown: Any,
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
    seed : int, JAX PRNG key, numpy Generator or None
        Seed of the run: same seed, device and settings give identical draws. A
        Generator gives a seed drawn from it; None one drawn from the OS. The seed used
        is in ``fit.settings["seed"]`` (a key's two words for a key).
    chain_method : {"auto", "parallel", "vectorized", "sequential"}
        How chains share devices; "auto" spreads them over devices where there are
        several (host devices on CPU), else runs them one after the other on CPU
        and vectorized on an accelerator.
    progress : bool
        Show a progress bar (warmup and sampling, every chain method).
    target_accept : float, optional
        Target acceptance of the step-size adaptation: 0.8 for NUTS and the harmonic-mean
        acceptance over chains 0.651 for ChEES when not given.
    max_tree_depth, dense_mass, init_strategy
        NUTS settings; ``init_strategy`` is "uniform", "median", "feasible",
        "sample", a NumPyro init strategy or a dict of initial values.
    adaptation : {"auto", "hybrid", "nutpie", "stan"}
        How warmup learns the mass matrix. "nutpie": from draws and gradients,
        ``sqrt(var(x) / var(grad))`` (Seyboldt et al.), re-estimated every step on
        overlapping windows; "hybrid": like "nutpie" for the first 30% of warmup,
        then Stan's regularized variance of the draws on longer windows; "stan":
        NumPyro's windowed adaptation (Stan's schedule). "auto" is "hybrid" for a
        diagonal mass matrix and "stan" for ``dense_mass=True``. On eight schools
        (non-centered) "hybrid" gives about 85 ESS per 1,000 gradients against 65
        for "stan", with a fifth fewer warmup gradients; see ``benchmarks/adaptation.py``.
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
        ``theta[Choate]``. Labels that do not fit their site are refused.
    names : dict, optional
        Explicit row names per site (see :class:`Fit`), overriding coords/dims.
    chunk_size : int, optional
        Steps per compiled call (the granularity of the progress bar). Draws do
        not depend on it.
    checkpoint : path, optional
        A folder where the draws so far and the full sampler state are written
        atomically every ``every`` steps; :func:`resume` continues from it after a
        crash or Ctrl-C. Sampling into a folder that holds a checkpoint of the same
        model, data and settings resumes it; one of another run is refused, naming
        what differs. While a process writes the folder, another is refused.
    every : int
        Steps between checkpoints.
    out : path, optional
        Stream the draws to disk chunk by chunk while sampling (a folder of ``.npy``
        files, or ``.nc``), dropping each chunk from memory; the Fit's draws are then
        read-only memory maps of the files (see :mod:`bhmjax.stream`). Without it,
        a run whose stored draws cannot fit in memory is refused before sampling.
    sampler : {"nuts", "chees"}
        ``"chees"``: ChEES-HMC (Hoffman, Radul and Sountsov 2021) from BlackJAX, all
        chains in lockstep with one adapted, jittered trajectory length; meant for
        hundreds or thousands of chains on an accelerator (``chains=1024,
        warmup=500, draws=100``). ``chain_method``, ``max_tree_depth`` and
        ``dense_mass`` do not apply, and its stats have no ``tree_depth`` (it builds no
        tree). Its warmup runs as one compiled call, so checkpoints start after it.
    parameterization : None, "auto", "centered", "noncentered" or dict
        None runs the model as written. Otherwise every eligible site (a latent
        Normal, StudentT, Cauchy, Laplace, Logistic, Gumbel or SoftLaplace site whose
        parameters depend on another latent, through plates, expand and to_event) gets
        a centeredness: "centered" (1, the site as written), "noncentered" (0), or
        "auto": one value per element (per group), learned by a short pre-pass
        (``bhmjax._src.autoreparam``: the data's share of each element's precision). A dict gives per site "auto", a float in
        [0, 1] or an array of the site's shape (sites not named stay as written). NUTS
        runs the model through NumPyro's ``LocScaleReparam``; the draws hold the
        original sites (the internal ``<site>_decentered`` ones are not stored). The
        values are in ``fit.settings["parameterization"]``, the pre-pass seconds and a
        description in ``fit.settings["reparam"]``. See ``bhmjax._src.locscale`` and
        :func:`bhmjax.runner.model_to_run`.

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
    options = {k: v for k, v in locals().items() if k not in ("model", "data", "unknown")}
    check_keywords(unknown, [*options, "model", "data"], "sample()")
    if not callable(model):
        raise TypeError(f"model must be a callable NumPyro model, got {type(model).__name__}")
    config, labels, sinks = runner.request_options(options, "sample()")
    arrays, static = data_lib.split_data({} if data is None else data)
    data_lib.check_data(arrays)
    return runner.execute(runner.RunRequest(model=model, arrays=arrays, static=static, config=config, **labels,
                                            **sinks))


def resume(checkpoint: str | os.PathLike, *, model: Callable | None = None, progress: bool = True) -> Fit:
    """Continue a checkpointed run after a crash or Ctrl-C.

    Yields exactly the draws an uninterrupted run with the same seed, settings and
    device would have, and the same Fit: a formula model's checkpoint rebuilds its
    ``bj.Model`` (spec, original data, predictions, LOO). ``model`` defaults to the
    function the checkpoint names (``module:qualname``), which must be importable; a
    model that differs from the checkpoint's is refused.
    """
    return runner.resume_checkpoint(Path(checkpoint), model=model, progress=progress, rebuild=Model.from_record)


def extend(fit: Fit, draws: int, *, progress: bool = False) -> Fit:
    """``draws`` more draws per chain after ``fit``'s last, without new warmup.

    Returns a new Fit holding the old and new draws; the chains continue from the
    stored sampler state (adapted step size and mass matrix kept).
    """
    return runner.extend(fit, draws, progress=progress)
