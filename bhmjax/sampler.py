"""``bj.sample``: any NumPyro model and a data dict to a :class:`~bhmjax.Fit`."""

from __future__ import annotations

import numbers
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bhmjax._src import data as data_lib
from bhmjax import checkpoint as ckpt
from bhmjax._src import adapt, sampling
from bhmjax._src.precision import x64_mode
from bhmjax.fit import Fit

__all__ = ["sample", "resume", "extend", "check_model"]


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


_CHECKS: dict[tuple, tuple[Callable, dict]] = {}


def _check_program(model: Callable, arrays: Mapping[str, Any], static: Mapping[str, Any]) -> tuple[Callable, dict]:
    """The jitted model run of :func:`check_model` and the site facts its trace records.

    Kept per model, static data, array shapes and float precision, so a second fit
    in the same process neither retraces nor recompiles it.
    """
    from numpyro import handlers

    key = (model, tuple(sorted(static.items())), jnp.result_type(float).name,
           tuple((k, np.shape(v), np.asarray(v).dtype.str) for k, v in sorted(arrays.items())))
    try:
        hit = _CHECKS.get(key)
    except TypeError:  # unhashable static data: no reuse
        key, hit = None, None
    if hit is not None:
        return hit
    sites: dict[str, dict] = {}

    def run(arrays):
        with handlers.block(), handlers.trace() as tr, handlers.seed(rng_seed=0):
            model(**arrays, **static)
        log_densities = {}
        for name, site in tr.items():
            if site["type"] != "sample":
                continue
            support = getattr(site["fn"], "support", None)
            sites[name] = {"is_observed": bool(site.get("is_observed")), "value_shape": jnp.shape(site["value"]),
                           "dist_shape": tuple(site["fn"].shape()), "dist": type(site["fn"]).__name__,
                           "discrete": bool(getattr(support, "is_discrete", False))
                           and (site.get("infer") or {}).get("enumerate") is None}
            try:
                log_densities[name] = site["fn"].log_prob(site["value"])
            except Exception:  # noqa: BLE001 - a site we cannot evaluate is left to the sampler
                pass
        return log_densities

    hit = (jax.jit(run), sites)
    if key is not None:
        _CHECKS[key] = hit
    return hit


def check_model(model: Callable, arrays: Mapping[str, np.ndarray], static: Mapping[str, Any]) -> None:
    """Run the model once on the data to catch shape errors and impossible log densities.

    An observed site whose data would be broadcast to a larger shape, or a model
    that fails on the data, raises ``ValueError`` naming the data lengths. The run
    is one jitted program (found in the persistent compilation cache on a repeat
    run) rather than one small compiled program per operation.
    """
    lengths = data_lib.describe_lengths(arrays)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run, sites = _check_program(model, arrays, static)
            log_densities = run(dict(arrays))
    except jax.errors.ConcretizationTypeError as err:
        raise ValueError(
            f"the model branches in Python on a value that is only known while sampling ({err}). "
            "Use jnp.where or lax.cond instead of `if` on data or parameters, and pass sizes as Python ints."
        ) from err
    except (TypeError, ValueError, IndexError) as err:
        text = str(err)
        shapes = any(w in text.lower() for w in ("shape", "broadcast", "incompatible", "index", "size"))
        hint = ("arrays of mismatched length are the usual cause" if shapes
                else "check the data and the model's parameters")
        raise ValueError(
            f"the model failed when run on the data ({type(err).__name__}: {text}). "
            f"Data lengths: {lengths or 'no arrays'}; {hint}."
        ) from err
    for name, site in sites.items():
        if name in log_densities:
            _check_log_density(name, site, np.asarray(log_densities[name]))
        if not site["is_observed"]:
            if site["discrete"]:
                raise ValueError(
                    f"site {name!r} is a discrete latent variable ({site['dist']}): NUTS moves only "
                    "continuous parameters. Sum it out of the model (e.g. a mixture: "
                    "dist.MixtureSameFamily), or pass its values as observed data."
                )
            continue
        value_shape, dist_shape = site["value_shape"], site["dist_shape"]
        try:
            joint = np.broadcast_shapes(value_shape, dist_shape)
        except ValueError:
            joint = None
        if joint != value_shape:
            raise ValueError(
                f"observed site {name!r} has data of shape {value_shape} but its distribution "
                f"has shape {dist_shape}; data lengths: {lengths}. Arrays of mismatched length?"
            )


def _check_log_density(name: str, site: dict, lp: np.ndarray) -> None:
    """A site whose log density ``lp`` is NaN or inf where the sampler would start is named."""
    bad = ~np.isfinite(lp)
    if not bad.any():
        return
    what = "NaN" if np.isnan(lp).any() else "infinite"
    role = "observed data" if site.get("is_observed") else "initial value"
    where = ""
    if lp.ndim >= 1:
        where = f", first at index {int(np.flatnonzero(bad.reshape(-1))[0])}"
    raise ValueError(
        f"the log density of site {name!r} is {what} at its {role} ({int(bad.sum())} value(s){where}): "
        f"{site['dist']} cannot produce it. Check the data for values outside the "
        "distribution's support (a negative count, a 2 for a Bernoulli) and the parameters for "
        "invalid values (a negative scale)."
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
        ``theta[Choate]``.
    names : dict, optional
        Explicit row names per site (see :class:`Fit`), overriding coords/dims.
    chunk_size : int, optional
        Steps per compiled call (the granularity of the progress bar). Draws do
        not depend on it.
    checkpoint : path, optional
        A folder where the draws so far and the full sampler state are written
        atomically every ``every`` steps; :func:`resume` continues from it after a
        crash or Ctrl-C. Sampling into a folder that already holds a checkpoint of
        the same model, data and settings resumes it; one of another run is refused.
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
        warmup=500, draws=100``). ``target_accept`` is then the harmonic-mean
        acceptance over chains (default 0.651 when left at 0.8); ``chain_method``,
        ``max_tree_depth``, ``dense_mass``, ``checkpoint`` and ``out`` do not apply.
        ``tree_depth`` in the stats is the NUTS depth with the same leapfrog steps.
    parameterization : None, "auto", "centered", "noncentered" or dict
        None runs the model as written. Otherwise every eligible site (a latent
        Normal, StudentT, Cauchy, Laplace, Logistic, Gumbel or SoftLaplace site whose
        parameters depend on another latent, through plates, expand and to_event) gets
        a centeredness: "centered" (1, the site as written), "noncentered" (0), or
        "auto": one value per element (per group), learned by a short SVI pre-pass
        (Gorinova, Moore and Hoffman 2020). A dict gives per site "auto", a float in
        [0, 1] or an array of the site's shape (sites not named stay as written). NUTS
        runs the model through NumPyro's ``LocScaleReparam``; the draws hold the
        original sites (the internal ``<site>_decentered`` ones are not stored). The
        values are in ``fit.settings["parameterization"]``, the pre-pass seconds and a
        description in ``fit.settings["reparam"]``. See ``bhmjax._src.locscale``.

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
    adaptation = adapt.resolve_adaptation(adaptation, bool(dense_mass))
    if isinstance(init_strategy, str) and init_strategy not in sampling._INIT_STRATEGIES:
        raise ValueError(f"init_strategy must be one of {sorted(sampling._INIT_STRATEGIES)}, "
                         f"a NumPyro init function or a dict of values; got {init_strategy!r}")
    if checkpoint is not None:
        every = _positive_int("every", every)
    arrays, static = data_lib.split_data({} if data is None else data)
    data_lib.check_data(arrays)
    settings = dict(chains=chains, warmup=warmup, draws=draws, seed=seed,
                    requested_chain_method=chain_method, target_accept=float(target_accept),
                    max_tree_depth=max_tree_depth, dense_mass=bool(dense_mass), adaptation=adaptation,
                    thin=thin, x64=bool(x64),
                    init_strategy=init_strategy if isinstance(init_strategy, str) else "custom",
                    keep=None if keep is None else list(keep), drop=list(drop),
                    every=every if checkpoint is not None else None)
    labels = dict(coords=dict(coords or {}), dims={k: tuple(v) for k, v in (dims or {}).items()},
                  names={k: list(v) for k, v in (names or {}).items()})
    with x64_mode(x64):
        check_model(model, arrays, static)
        run_model, run_arrays, reparam = _reparameterized(model, arrays, static, parameterization, seed)
    settings.update(reparam)
    if reparam.get("reparam"):
        internal = [s for s in reparam["reparam"]["internal_sites"] if keep is None or s not in keep]
        settings["drop"] = list(drop) + [s for s in internal if s not in drop]
    if sampler != "nuts":
        return _chees_fit(model, arrays, static, settings, labels, init_strategy, sampler=sampler,
                          checkpoint=checkpoint, out=out, run=(run_model, run_arrays))
    config = _config(settings, init_strategy)
    settings["chain_method"] = sampling.resolve_chain_method(chain_method, chains)[0]
    folder = None if checkpoint is None else Path(checkpoint)
    if folder is not None and (folder / ckpt.CHECKPOINT_FILE).exists():
        meta, _ = ckpt.read(folder)
        if meta["fingerprint"] != ckpt.fingerprint(model, arrays, static, settings):
            raise ValueError(
                f"the checkpoint in {str(folder)!r} was written by a different model, data or settings "
                f"(model {meta['model']}); choose a new checkpoint folder or delete the old one.")
        return resume(folder, model=model, progress=progress)
    with x64_mode(x64):
        buffer_len = every if folder is not None else sampling.default_buffer_len(warmup, draws, progress, chunk_size)
        writer = _writer_for(run_model, run_arrays, static, config, chains, draws, buffer_len, out, folder)
        run, runner = sampling.prepare(jax.random.PRNGKey(seed), run_model, run_arrays, static, config,
                                       num_chains=chains, chain_method=chain_method, buffer_len=buffer_len)
        return _drive(model, run, runner, config, settings, labels, arrays, static, folder, progress,
                      writer=writer)


def _reparameterized(model: Callable, arrays: Mapping[str, Any], static: Mapping[str, Any], parameterization: Any,
                     seed: int) -> tuple[Callable, dict, dict]:
    """The model and data NUTS runs for ``parameterization`` and the settings that record it.

    None leaves the model as written. Otherwise :func:`bhmjax._src.locscale.reparameterize`
    (the values it records in ``settings["parameterization"]`` rebuild the same run model
    in :func:`resume` and :func:`extend`, without a new pre-pass).
    """
    if parameterization is None:
        return model, dict(arrays), {"parameterization": None}
    from bhmjax._src import locscale

    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    run_model, run_arrays, info = locscale.reparameterize(key, model, arrays, static, parameterization)
    if not info.sites:
        warnings.warn(info.describe(), UserWarning, stacklevel=3)
    return run_model, run_arrays, {
        "parameterization": info.record(),
        "reparam": {"kind": "sites", "requested": info.requested, "seconds": info.seconds,
                    "internal_sites": list(info.internal), "text": info.describe()}}


def _rerun_model(model: Callable, arrays: Mapping[str, Any], static: Mapping[str, Any],
                 settings: Mapping[str, Any]) -> tuple[Callable, dict]:
    """The run model and data of a finished or checkpointed ``bj.sample`` run, from its settings."""
    if (settings.get("reparam") or {}).get("kind") != "sites":
        return model, dict(arrays)
    return _reparameterized(model, arrays, static, settings["parameterization"], settings["seed"])[:2]


def _chees_fit(model, arrays, static, settings, labels, init_strategy, *, sampler, checkpoint, out, run) -> Fit:
    """``sampler="chees"``: many chains of ChEES-HMC (``bhmjax._src.chees``) as an ordinary Fit."""
    from bhmjax._src import chees

    if sampler != "chees":
        raise ValueError(f"sampler must be 'nuts' or 'chees', got {sampler!r}")
    if checkpoint is not None or out is not None:
        raise ValueError("sampler='chees' runs every chain in one compiled program, so it has no "
                         "checkpoint= or out=; sample with the default sampler='nuts' for those.")
    if settings["chains"] < 2:
        raise ValueError(f"sampler='chees' adapts from the spread between chains, so it needs at least 2 "
                         f"chains (hundreds are typical); got chains={settings['chains']}.")
    accept = 0.651 if settings["target_accept"] == 0.8 else settings["target_accept"]
    config = chees.CheesConfig(num_warmup=settings["warmup"], target_accept=accept,
                               init_strategy=init_strategy if isinstance(init_strategy, str) or callable(
                                   init_strategy) else _config(settings, init_strategy).init_fn(),
                               thinning=settings["thin"], keep=_config(settings).keep, drop=tuple(settings["drop"]))
    with x64_mode(settings["x64"]):
        result = chees.run_chees(jax.random.PRNGKey(settings["seed"]), run[0], run[1], static, config,
                                 num_chains=settings["chains"], num_draws=settings["draws"])
    stats = dict(result.stats)
    stats["tree_depth"] = tree_depth(stats["num_steps"])
    settings = dict(settings, sampler="chees", chain_method="vectorized", target_accept=accept,
                    adapted=result.adapted)
    return Fit(draws=result.draws, stats=stats, timings=result.timings, num_grad_evals=result.num_grad_evals,
               settings=settings, **labels, data={**arrays, **static}, model=model, state=None)


def _writer_for(model, arrays, static, config, chains, draws, buffer_len, out, folder):
    """Refuse draws that cannot fit in memory; a DrawWriter when ``out`` is given."""
    from bhmjax import stream

    if out is not None and folder is not None:
        raise ValueError("out= and checkpoint= cannot be combined: a checkpoint keeps the draws in its "
                         "folder already. Use one of them.")
    shapes = stream.site_shapes(model, arrays, static, config.keep, config.drop)
    stream.check_memory(shapes, chains=chains, draws=draws, buffer_len=buffer_len, streaming=out is not None)
    if out is None:
        return None
    return stream.DrawWriter(out, shapes, chains, draws, jax.numpy.result_type(float))


def _config(settings: Mapping[str, Any], init_strategy: Any = "uniform") -> sampling.NutsConfig:
    return sampling.NutsConfig(
        num_warmup=settings["warmup"], target_accept=settings["target_accept"],
        max_tree_depth=settings["max_tree_depth"], dense_mass=settings["dense_mass"],
        adaptation=settings.get("adaptation", "stan"), init_strategy=init_strategy, thinning=settings["thin"],
        keep=None if settings["keep"] is None else tuple(settings["keep"]), drop=tuple(settings["drop"]),
    )


def _drive(model, run, runner, config, settings, labels, arrays, static, folder, progress, writer=None) -> Fit:
    """Advance a prepared run to its targets, checkpointing; Ctrl-C keeps the draws so far."""
    on_chunk = None
    if folder is not None:
        print_ = ckpt.fingerprint(model, arrays, static, settings)

        def on_chunk(r):
            ckpt.write(folder, r, arrays=arrays, static=static, settings=settings, labels=labels,
                       model=model, print_=print_)
    if writer is not None:
        on_chunk = writer.on_chunk
    try:
        sampling.advance(run, runner, num_warmup=config.num_warmup, num_draws=settings["draws"],
                         thinning=config.thinning, progress=progress, on_chunk=on_chunk)
    except KeyboardInterrupt:
        kept = min(run.draws_done)
        if kept == 0:
            raise
        where = f"; bj.resume({str(folder)!r}) continues the run" if folder is not None else ""
        warnings.warn(f"sampling interrupted: keeping the {kept} draws per chain made so far{where}.",
                      RuntimeWarning, stacklevel=3)
    if writer is not None:
        return _streamed_fit(run, writer, model, settings, labels, arrays, static)
    return _fit_of(run, model, settings, labels, arrays, static)


def _streamed_fit(run, writer, model, settings, labels, arrays, static) -> Fit:
    """The Fit of a run streamed to disk: its draws are memory maps of the written files."""
    draws, stats = writer.finish({"settings": settings})
    stats = dict(stats)
    stats["tree_depth"] = tree_depth(np.asarray(stats["num_steps"]))
    return Fit(draws=draws, stats=stats, timings=dict(run.timings), num_grad_evals=dict(run.grads),
               settings=dict(settings, draws=int(stats["num_steps"].shape[1]), out=str(writer.path)),
               **labels, data={**arrays, **static}, model=model, state=run.chain_states())


def _fit_of(run, model, settings, labels, arrays, static) -> Fit:
    result = sampling.result_of(run)
    stats = dict(result.stats)
    stats["tree_depth"] = tree_depth(stats["num_steps"])
    return Fit(draws=result.draws, stats=stats, timings=result.timings, num_grad_evals=result.num_grad_evals,
               settings=dict(settings, draws=int(stats["num_steps"].shape[1])), **labels,
               data={**arrays, **static}, model=model, state=result.state)


def resume(checkpoint: str | os.PathLike, *, model: Callable | None = None, progress: bool = True) -> Fit:
    """Continue a checkpointed run after a crash or Ctrl-C.

    Yields exactly the draws an uninterrupted run with the same seed, settings and
    device would have. ``model`` defaults to the function the checkpoint names
    (``module:qualname``), which must be importable; a model, data or settings
    that differ from the checkpoint's (fingerprint mismatch) are refused.
    """
    folder = Path(checkpoint)
    meta, stored = ckpt.read(folder)
    model = ckpt.import_model(meta["model"]) if model is None else model
    arrays = {k[len("data/"):]: v for k, v in stored.items() if k.startswith("data/")}
    static, settings = meta["static"], meta["settings"]
    if ckpt.fingerprint(model, arrays, static, settings) != meta["fingerprint"]:
        raise ValueError(f"the checkpoint in {str(folder)!r} belongs to another model, data or settings "
                         f"(it names model {meta['model']}); refusing to resume with "
                         f"{ckpt.model_reference(model)}.")
    config = _config(settings)
    info = meta["run"]
    labels = {k: meta["labels"].get(k, {}) for k in ("coords", "dims", "names")}
    with x64_mode(settings["x64"]):
        run_model, run_arrays = _rerun_model(model, arrays, static, settings)
        program = sampling.build_program(run_model, static, config, run_arrays)
        keys = jax.ShapeDtypeStruct((info["num_chains"], 2), np.uint32)
        shapes = jax.eval_shape(program.init, keys, {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
                                                     for k, v in run_arrays.items()})
        leaves = [jnp.asarray(stored[f"state/{i:04d}"]) for i in range(info["num_leaves"])]
        state = jax.tree.unflatten(jax.tree.structure(shapes), leaves)
        run, runner = sampling.prepare(None, run_model, run_arrays, static, config, num_chains=info["num_chains"],
                                       chain_method=info["method"], buffer_len=settings["every"], state=state)
        compile_s = run.timings["compile"]
        run.warmup_done, run.draws_done = list(info["warmup_done"]), list(info["draws_done"])
        run.pieces = ckpt.restore_pieces(meta, stored)
        run.grads, run.timings = dict(info["grads"]), dict(info["timings"])
        run.timings["compile"] += compile_s
        return _drive(model, run, runner, config, settings, labels, arrays, static, folder, progress)


def extend(fit: Fit, draws: int, *, progress: bool = False) -> Fit:
    """``draws`` more draws per chain after ``fit``'s last, without new warmup.

    Returns a new Fit holding the old and new draws; the chains continue from the
    stored sampler state (adapted step size and mass matrix kept).
    """
    draws = _positive_int("draws", draws)
    if fit.model is None or fit.state is None:
        raise ValueError("this fit has no model or sampler state (a loaded fit?), so it cannot be "
                         "extended; sample again, or resume from a checkpoint.")
    settings = dict(fit.settings)
    sampled = fit.data if fit.sampled_data is None else fit.sampled_data
    arrays, static = data_lib.split_data(sampled)
    config = _config(settings)
    with x64_mode(settings["x64"]):
        buffer_len = sampling.default_buffer_len(0, draws, progress, settings.get("every"))
        run_model, run_arrays = _rerun_model(fit.model, arrays, static, settings)
        run, runner = sampling.prepare(None, run_model, run_arrays, static, config, num_chains=fit.num_chains,
                                       chain_method=settings["chain_method"], buffer_len=buffer_len,
                                       state=fit.state)
        run.warmup_done = [config.num_warmup] * len(run.states)
        sampling.advance(run, runner, num_warmup=config.num_warmup, num_draws=draws,
                         thinning=config.thinning, progress=progress)
    more = _fit_of(run, fit.model, settings, dict(coords=fit.coords, dims=fit.dims, names=fit.names),
                   arrays, static)
    if fit.spec is not None:  # draws a formula fit adds after sampling (bhmjax.marginal), continuing the draw index
        from bhmjax.marginal import complete_fit

        more.sampled_data, more.data = fit.sampled_data, fit.data
        complete_fit(more, fit.spec, first_draw=fit.num_draws)
    join = lambda a, b: {k: np.concatenate([a[k], b[k]], axis=1) for k in a}  # noqa: E731
    timings = {k: fit.timings[k] + more.timings.get(k, 0.0) for k in fit.timings}
    grads = {k: fit.num_grad_evals[k] + more.num_grad_evals[k] for k in fit.num_grad_evals}
    return Fit(draws=join(fit.draws, more.draws), stats=join(fit.stats, more.stats), timings=timings,
               num_grad_evals=grads, settings=dict(settings, draws=fit.num_draws + draws),
               coords=fit.coords, dims=fit.dims, names=fit.names, data=fit.data, model=fit.model,
               spec=fit.spec, state=more.state, sampled_data=fit.sampled_data)


def tree_depth(num_steps: np.ndarray) -> np.ndarray:
    """NUTS tree depth from leapfrog steps: a tree of depth d takes < 2**d steps."""
    return np.floor(np.log2(np.maximum(num_steps, 1))).astype(np.int32) + 1
