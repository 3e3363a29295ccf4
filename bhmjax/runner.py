"""From a run request to a complete Fit: the one path every entry point takes.

``bj.sample``, ``bj.Model.fit``, ``bj.resume`` and ``Fit.extend`` build a
:class:`RunRequest` (what to run, the config, how to label and keep the result) and
call :func:`execute`; ``bj.fit_many`` runs its buckets through the same driver
(:mod:`bhmjax._src.engine`). Data flow one way: request -> config -> driver -> sinks
-> :func:`make_fit`; nothing patches a Fit after it is built.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from bhmjax import checkpoint as ckpt
from bhmjax import stream
from bhmjax._src import compiles, engine
from bhmjax._src import keys as keys_lib
from bhmjax._src.config import RunConfig, build_config, check_keywords
from bhmjax._src.precision import x64_mode
from bhmjax._src.stats import STATS
from bhmjax._src.trace import ModelTrace, check_initial_point, check_log_densities, model_trace
from bhmjax.fit import Fit

__all__ = ["Progress", "RunRequest", "execute", "extend", "make_fit", "request_options", "resume_checkpoint"]

CONFIG_OPTIONS = tuple(f.name for f in fields(RunConfig))
LABEL_OPTIONS = ("coords", "dims", "names")
SINK_OPTIONS = ("checkpoint", "out", "progress")


@dataclass(frozen=True, eq=False)
class RunRequest:
    """Everything a run needs and everything its Fit holds.

    Attributes
    ----------
    model : callable
        The NumPyro model the sampler runs, called as ``model(**arrays, **static)``.
    arrays, static : dict
        The data it runs on: arrays (traced) and Python scalars (compiled in).
    config : RunConfig
    coords, dims, names : dict
        Labels of the draws (see :class:`~bhmjax.Fit`).
    data : dict, optional
        The data the Fit holds when they differ from the sampled ones (a formula
        model's rows, where the sampler ran on an exact reduction).
    spec : object, optional
        A formula model's specification.
    reduction : dict, optional
        What the exact reduction did (``fit.settings["reduction"]``).
    order : tuple of str
        Sites first in ``fit.draws``, in this order.
    timings : dict
        Seconds spent before sampling (``{"reparam": s}``).
    internal : tuple of str
        Sampler-internal sites (non-centered twins, unconstrained factors), hidden from summaries.
    checkpoint, out : path, optional
        Sinks on disk (see :func:`bhmjax.sample`).
    progress : bool
    generate : callable, optional
        ``generate(key, values, arrays) -> {name: array}``, run for every stored draw
        inside the compiled chunk; its outputs are stored like sites.
    settings : dict
        Entries of ``fit.settings`` known before the run (a model's centeredness and
        its pre-pass: ``parameterization``, ``reparam``).
    run : tuple, optional
        ``(model, arrays)`` the sampler runs where :func:`model_to_run` transformed the
        model (``parameterization=``); ``model`` and ``arrays`` stay what the user gave
        (what the Fit holds and the checkpoint identifies).
    """

    model: Callable
    arrays: dict
    static: dict
    config: RunConfig
    coords: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)
    data: dict | None = None
    spec: Any = None
    reduction: dict | None = None
    order: tuple[str, ...] = ()
    timings: dict = field(default_factory=dict)
    internal: tuple[str, ...] = ()
    checkpoint: Path | None = None
    out: Path | None = None
    progress: bool = True
    generate: Callable | None = None
    settings: dict = field(default_factory=dict)
    run: tuple[Callable, dict] | None = None

    @property
    def sampled(self) -> tuple[Callable, dict]:
        """The model and data the sampler runs."""
        return self.run if self.run is not None else (self.model, self.arrays)


def request_options(options: Mapping[str, Any], where: str) -> tuple[RunConfig, dict, dict]:
    """Split keyword arguments into the config, the labels and the sink options (unknown names refused)."""
    check_keywords(options, CONFIG_OPTIONS + LABEL_OPTIONS + SINK_OPTIONS, where)
    config = build_config(**{k: v for k, v in options.items() if k in CONFIG_OPTIONS})
    labels = {"coords": dict(options.get("coords") or {}),
              "dims": {k: tuple(v) for k, v in (options.get("dims") or {}).items()},
              "names": {k: list(v) for k, v in (options.get("names") or {}).items()}}
    sinks = {"checkpoint": None if options.get("checkpoint") is None else Path(options["checkpoint"]),
             "out": None if options.get("out") is None else Path(options["out"]),
             "progress": bool(options.get("progress", True))}
    if sinks["checkpoint"] is not None and sinks["out"] is not None:
        raise ValueError("out= and checkpoint= cannot be combined: a checkpoint keeps the draws in its "
                         "folder already. Use one of them.")
    return config, labels, sinks


# ---------------------------------------------------------------- the model actually run


def model_to_run(request: RunRequest) -> RunRequest:
    """The request with the model the sampler runs: where the user layer transforms a model.

    ``config.parameterization`` None runs the model as written. Otherwise NumPyro's
    ``LocScaleReparam`` is applied per eligible site (:func:`bhmjax._src.locscale.reparameterize`;
    "auto" learns the values by an SVI pre-pass): the run model goes to ``request.run``,
    the values and the pre-pass to ``fit.settings["parameterization"]`` and
    ``["reparam"]``, the added ``<site>_decentered`` sites to ``internal`` and ``drop``
    (not stored). Values learned before (``request.settings``: a resumed or extended
    run) are applied again without a new pre-pass.
    """
    config = request.config
    if config.parameterization is None or request.run is not None:
        return request
    from bhmjax._src import locscale

    model_trace(request.model, request.arrays, request.static)  # the model as written is checked first
    done = (request.settings.get("reparam") or {}).get("kind") == "sites"
    value = request.settings["parameterization"] if done else config.parameterization
    key = jax.random.fold_in(config.root_key(), 1)
    run_model, run_arrays, info = locscale.reparameterize(key, request.model, request.arrays, request.static, value)
    if not info.sites:
        warnings.warn(info.describe(), UserWarning, stacklevel=4)
    internal = tuple(s for s in info.internal if config.keep is None or s not in config.keep)
    settings = dict(request.settings) if done else {
        **request.settings, "parameterization": info.record(),
        "reparam": {"kind": "sites", "requested": info.requested, "seconds": info.seconds,
                    "internal_sites": list(info.internal), "text": info.describe()}}
    return replace(request, config=replace(config, drop=config.drop + tuple(s for s in internal if s not in config.drop)),
                   run=(run_model, run_arrays), settings=settings,
                   internal=tuple(dict.fromkeys(tuple(request.internal) + internal)))


# ---------------------------------------------------------------- executing


def program_of(model: Callable, static: Mapping[str, Any], config: RunConfig, trace: ModelTrace):
    """The chain program of ``config.sampler`` for ``model``."""
    if config.sampler == "chees":
        from bhmjax._src.chees import chees_program

        return chees_program(model, static, config, trace)
    from bhmjax._src.sampling import nuts_program

    return nuts_program(model, static, config, trace)


def _check_labels(request: RunRequest, trace: ModelTrace) -> None:
    """Names, coords and dims that do not fit the sites they label are refused before sampling."""
    shapes = {n: s.shape for n, s in trace.sites.items()}
    for site, names in request.names.items():
        if site in shapes and len(names) != int(np.prod(shapes[site], dtype=int)):
            raise ValueError(f"names[{site!r}] has {len(names)} entries but site {site!r} has shape "
                             f"{shapes[site]} ({int(np.prod(shapes[site], dtype=int))} values); give one name per "
                             "value in C order.")
    for site, dims in request.dims.items():
        if site not in shapes:
            continue
        if len(dims) > len(shapes[site]):
            raise ValueError(f"dims[{site!r}] names {len(dims)} axes but site {site!r} has shape {shapes[site]}.")
        for axis, dim in enumerate(dims):
            labels = request.coords.get(dim)
            if labels is not None and len(labels) != shapes[site][axis]:
                raise ValueError(f"coords[{dim!r}] has {len(labels)} labels but axis {axis} of site {site!r} "
                                 f"(dims {list(dims)}) has length {shapes[site][axis]}.")


#: Steps x latent elements x lanes of one compiled call, when neither a chunk size, a checkpoint nor
#: progress sets the calls: XLA on CPU holds resident memory for the steps of a call and gives it back
#: when the call returns, so a model with very many latents runs its phases in several calls.
MAX_CALL_WORK = 20_000_000
MIN_CALL_STEPS = 20


def _buffer_len(config: RunConfig, progress: bool, folder: Path | None, latents: int = 0) -> int:
    """Steps per compiled call: ``every`` with a checkpoint, else one call per phase or ~20 progress
    updates, in calls of at most ``MAX_CALL_WORK / (latents x chains)`` steps (``latents``: the
    unconstrained elements of one chain)."""
    if folder is not None:
        return config.every
    if config.chunk_size is not None:
        return config.chunk_size
    total = config.warmup + config.draws
    steps = max(1, total // 20) if progress else max(config.warmup, config.draws)
    bound = MAX_CALL_WORK // max(1, latents * config.chains)
    return max(1, min(steps, max(MIN_CALL_STEPS, bound)))


def execute(request: RunRequest) -> Fit:
    """Run ``request`` (or continue its checkpoint) and return its complete Fit."""
    with compiles.watch() as log:
        request = model_to_run(request)
        folder = request.checkpoint
        lock = None if folder is None else ckpt.Owner.acquire(folder)  # also proves the folder writable, early
        try:
            with x64_mode(request.config.x64):
                values, stats, run, facts = run_request(request, lock=lock)
            fit = make_fit(request, values, stats, timings=run.timings,
                           grads={k: int(np.sum(v)) for k, v in run.grads.items()}, state=run.host_state(),
                           chain_method=run.layout.method, facts=facts)
        finally:
            if lock is not None:
                lock.release()
    fit.timings.update(compiles.summarize(log), compile_options=run.compile_options)
    return fit


def run_request(request: RunRequest, *, lock: ckpt.Owner | None = None, trace: ModelTrace | None = None,
                layout: engine.Layout | None = None, keys=None,
                keep_on_interrupt: bool = True) -> tuple[dict, dict, engine.Run, dict]:
    """Run ``request`` to its targets through its sinks (or continue its checkpoint).

    ``trace``, ``layout`` and ``keys`` default to the request's own (fit_many passes a
    dataset's trace, its batched layout and its chain keys). Ctrl-C keeps the draws made
    so far unless ``keep_on_interrupt`` is False (then it propagates, after the last
    checkpoint). Returns the draws and statistics (lanes, draws, ...), the run and the
    facts for ``fit.settings``.
    """
    config = request.config
    model, arrays = request.sampled
    if trace is None:
        trace = model_trace(model, arrays, request.static)
        _check_labels(request, trace)
    program = program_of(model, request.static, config, trace)
    buffer_len = _buffer_len(config, request.progress, request.checkpoint, trace.latent_size())
    lanes = config.chains if layout is None else layout.lanes
    shapes = _stored_shapes(trace, request, per_dataset=layout is not None and layout.per_dataset > 0)
    stream.check_memory(shapes, chains=lanes, draws=config.draws, buffer_len=buffer_len,
                        streaming=request.out is not None)
    writer = None if request.out is None else stream.DrawWriter(
        request.out, shapes, lanes, config.draws, jax.numpy.result_type(float), program.stats)
    memory = engine.MemorySink()
    saver = None if request.checkpoint is None else ckpt.CheckpointSink(request.checkpoint, request, memory, lock)
    run = _start(request, program, trace, layout, keys, buffer_len, memory)
    return _advance(request, run, memory, writer, saver, keep_on_interrupt)


def _start(request: RunRequest, program, trace: ModelTrace, layout, keys, buffer_len: int,
           memory: engine.MemorySink) -> engine.Run:
    """A fresh run (its first chain's start checked), or the one checkpointed in the request's folder
    (its draws so far put into ``memory``)."""
    folder = request.checkpoint
    model, arrays = request.sampled
    if folder is not None and ckpt.exists(folder):
        meta, stored = ckpt.read(folder)
        ckpt.check_matches(folder, meta, request)
        saved = engine.Layout(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["run"]["layout"].items()})
        if layout is None:  # the run's own layout, where its devices exist (draws do not depend on the devices)
            present = {d.id for d in jax.devices()}
            layout = saved if set(saved.devices) <= present else engine.resolve_layout(
                request.config.chain_method, saved.lanes, program.ensemble)
        state = ckpt.restore_state(meta, stored, program, layout, arrays)
        run = engine.prepare(program, layout, arrays, state=state, buffer_len=buffer_len,
                             generate=request.generate)
        ckpt.restore_progress(run, meta)
        memory.pieces = ckpt.restore_pieces(stored)
        return run
    config = request.config
    layout = layout or engine.resolve_layout(config.chain_method, config.chains, program.ensemble)
    if keys is None:
        keys = keys_lib.split(config.root_key(), config.chains)
    init_name = repr(config.to_dict()["init_strategy"])
    check = None
    if not layout.per_dataset:  # the model check, where this run's chains start
        if program.checks is None:  # a program that cannot check in its init: the model check's own program
            check_initial_point(model, arrays, request.static, config.init_fn(),
                                engine.init_keys(keys[0])[0], init_name, trace)
        else:
            check = partial(check_log_densities, trace, init_name=init_name)
    return engine.prepare(program, layout, arrays, keys=keys, buffer_len=buffer_len,
                          generate=request.generate, check=check, ahead=_after_run(request, trace))


def _after_run(request: RunRequest, trace: ModelTrace) -> list:
    """The programs :func:`make_fit` runs after sampling, to compile beside the sampler's."""
    from bhmjax.marginal import complete_ahead

    stored = trace.stored(request.config.keep, request.config.drop)
    return complete_ahead(request, {n: jax.ShapeDtypeStruct(s.shape, s.dtype) for n, s in stored.items()})


def _stored_shapes(trace: ModelTrace, request: RunRequest, per_dataset: bool = False) -> dict[str, tuple]:
    """``site -> (shape, dtype)`` of everything stored per draw (sites and generated quantities).
    ``per_dataset``: the arrays hold many datasets along a leading axis (fit_many's call)."""
    shapes = {n: (s.shape, s.dtype) for n, s in trace.stored(request.config.keep, request.config.drop).items()}
    if request.generate is not None:
        values = {n: jax.ShapeDtypeStruct(s, d) for n, (s, d) in shapes.items()}
        arrays = {k: jax.ShapeDtypeStruct(np.shape(v)[int(per_dataset):], np.asarray(v).dtype)
                  for k, v in request.sampled[1].items()}
        out = jax.eval_shape(request.generate, keys_lib.ABSTRACT_KEY, values, arrays)
        shapes |= {n: (tuple(v.shape), np.dtype(v.dtype)) for n, v in out.items()}
    return shapes


def _advance(request: RunRequest, run: engine.Run, memory: engine.MemorySink, writer, saver,
             keep_on_interrupt: bool = True):
    """Advance ``run`` to the request's targets through its sinks; Ctrl-C keeps the draws so far."""
    config = request.config
    sinks = [writer if writer is not None else memory] + ([saver] if saver is not None else [])
    with Progress(request.progress, _steps_left(run, config), "sample") as bar:
        try:
            engine.advance(run, warmup=config.warmup, draws=config.draws, thin=config.thin, sinks=tuple(sinks),
                           progress=bar.update)
        except KeyboardInterrupt:
            if run.draws_done == 0 or not keep_on_interrupt:
                raise
            where = f"; bj.resume({str(request.checkpoint)!r}) continues the run" if saver is not None else ""
            warnings.warn(f"sampling interrupted: keeping the {run.draws_done} draws per chain made so far{where}.",
                          RuntimeWarning, stacklevel=5)
    facts: dict[str, Any] = {}
    if run.program.report is not None:
        facts["adapted"] = run.program.report(run.host_state().kernel)
    if saver is not None:
        facts["checkpoint"] = saver.status()
    if writer is not None:
        values, stats = writer.finish({"settings": config.to_dict()})
        facts["out"] = str(writer.path)
    else:
        values, stats = memory.draws()
    return values, stats, run, facts


def _steps_left(run: engine.Run, config: RunConfig) -> int:
    return max(0, config.warmup - run.warmup_done) + max(0, config.draws - run.draws_done) * config.thin


def make_fit(request: RunRequest, values: Mapping[str, np.ndarray], stats: Mapping[str, np.ndarray], *,
             timings: Mapping[str, float], grads: Mapping[str, int], state: Any, chain_method: str,
             facts: Mapping[str, Any]) -> Fit:
    """The Fit of a run: draws (chain, draw, ...) in the request's site order, labels, data, settings."""
    config = request.config
    first = [k for k in request.order if k in values]
    draws = {**{k: values[k] for k in first}, **values}
    stats = {k: stats[k] for k in STATS if k in stats}
    settings = {**config.to_dict(), "requested_chain_method": config.chain_method, "chain_method": chain_method,
                "draws": int(next(iter(stats.values())).shape[1]), **request.settings, **facts}
    if request.reduction is not None:
        settings["reduction"] = dict(request.reduction)
    sampled = {**request.arrays, **request.static}
    fit = Fit(draws=draws, stats=dict(stats), timings={**timings, **request.timings}, num_grad_evals=dict(grads),
              settings=settings, coords=dict(request.coords), dims=dict(request.dims), names=dict(request.names),
              data=sampled if request.data is None else dict(request.data), model=request.model, spec=request.spec,
              state=state, sampled_data=None if request.data is None else sampled, request=request,
              internal=tuple(request.internal))
    if request.spec is not None:  # what a formula model's sampler did not draw: integrated effects (by draw index)
        from bhmjax.marginal import complete_fit

        complete_fit(fit, request.spec)
        wanted = request.settings.get("keep")
        if wanted is not None:
            fit.draws = {k: v for k, v in fit.draws.items() if k in wanted}
    return fit


def _generated_after(fit: Fit) -> set[str]:
    """Sites :func:`make_fit` adds after the run (drawn again for every draw of an extension)."""
    done = fit.settings.get("marginalized")
    return set() if done is None else {done["site"]}


def resume_checkpoint(folder: Path, *, model: Callable | None = None, progress: bool = True,
                      rebuild: Callable | None = None) -> Fit:
    """Continue the run checkpointed in ``folder``.

    A formula model's checkpoint holds the model's record (as a saved fit does), and
    ``rebuild(record, arrays)`` (``bj.Model.from_record``, passed by the user layer)
    builds the same ``bj.Model`` again, whose request gives the full Fit. A function
    model is imported by its ``module:qualname``, or is ``model`` (checked against it).
    """
    meta, stored = ckpt.read(folder)
    return execute(_request_of(folder, meta, stored, model, progress, rebuild))


def _request_of(folder: Path, meta: Mapping[str, Any], stored: Mapping[str, np.ndarray], model: Callable | None,
                progress: bool, rebuild: Callable | None) -> RunRequest:
    """The request a checkpoint was written for."""
    from bhmjax._src.identity import model_identity

    expected, entry = meta["fingerprint"]["model"], meta["model"]
    config, labels, extra = RunConfig.from_dict(meta["config"]), meta["labels"], meta["request"]
    dims = {k: tuple(v) for k, v in labels["dims"].items()}
    if entry["kind"] == "formula":
        built = rebuild(entry["record"], ckpt.group(stored, "model/"))
        # the run may have sampled the model with a grouping integrated out (another function than
        # ``Model.numpyro_model``, the documented ``model=``): either is the checkpoint's model
        if model is not None and model_identity(model) not in (expected, model_identity(built.numpyro_model)):
            raise ValueError(f"the checkpoint in {str(folder)!r} belongs to another model ({expected}); refusing "
                             f"to resume with {model_identity(model)}.")
        marginalize = extra["settings"].get("marginalized") is not None
        return built.run_request(config, reduce=extra["reduction"] is not None, marginalize=marginalize,
                                 coords=labels["coords"], dims=dims,
                                 names=labels["names"], checkpoint=folder, progress=progress)
    if model is None:
        model = ckpt.import_model(entry["reference"])
    if model_identity(model) != expected:
        raise ValueError(f"the checkpoint in {str(folder)!r} belongs to another model ({expected}); refusing to "
                         f"resume with {model_identity(model)}.")
    static = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["static"].items()}
    rows = None
    if meta["rows_static"] is not None:
        rows = {**ckpt.group(stored, "rows/"), **meta["rows_static"]}
    return RunRequest(model=model, arrays=ckpt.group(stored, "data/"), static=static, config=config,
                      coords=labels["coords"], dims=dims, names=labels["names"], data=rows,
                      reduction=extra["reduction"], order=tuple(extra["order"]), timings=extra["timings"],
                      internal=tuple(extra["internal"]), settings=extra["settings"], checkpoint=folder,
                      progress=progress)


def extend(fit: Fit, draws: int, *, progress: bool = False) -> Fit:
    """``draws`` more draws per chain after ``fit``'s last, continuing its chains without new warmup."""
    from bhmjax._src.config import positive_int

    draws = positive_int("draws", draws)
    if fit.request is None or fit.state is None:
        raise ValueError("this fit has no model or sampler state (a loaded fit?), so it cannot be "
                         "extended; sample again, or resume from a checkpoint.")
    config = replace(fit.config, draws=fit.num_draws + draws)
    request = replace(fit.request, config=config, checkpoint=None, out=None, progress=progress)
    with x64_mode(config.x64):
        model, arrays = request.sampled
        trace = model_trace(model, arrays, request.static)
        program = program_of(model, request.static, config, trace)
        layout = engine.resolve_layout(config.chain_method, config.chains, program.ensemble)
        run = engine.prepare(program, layout, arrays, state=fit.state,
                             buffer_len=_buffer_len(replace(config, warmup=0), progress, None, trace.latent_size()),
                             generate=request.generate)
        run.warmup_done, run.draws_done = config.warmup, fit.num_draws
        run.grads = {k: _spread(v, layout.lanes) for k, v in fit.num_grad_evals.items()}
        run.timings = {k: float(fit.timings.get(k, 0.0)) for k in run.timings}
        generated = _generated_after(fit)
        memory = engine.MemorySink([({k: np.asarray(v) for k, v in fit.draws.items() if k not in generated},
                                     {k: np.asarray(v) for k, v in fit.stats.items()})])
        values, stats, run, facts = _advance(request, run, memory, None, None)
    return make_fit(request, values, stats, timings=run.timings, grads={k: int(np.sum(v)) for k, v in run.grads.items()},
                    state=run.host_state(), chain_method=run.layout.method, facts=facts)


def _spread(total: int, lanes: int) -> np.ndarray:
    """A total split over lanes (only sums of per-lane gradient counts are reported)."""
    out = np.zeros(lanes, np.int64)
    out[0] = int(total)
    return out


def _tqdm():
    """tqdm's widget bar in a Jupyter kernel that has ipywidgets, its text bar anywhere else.

    (``tqdm.auto`` warns and prints nothing useful in a kernel without ipywidgets; the text
    bar redraws in place there too.)
    """
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None and "IPKernelApp" in getattr(shell, "config", {}):
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm

            return tqdm
        except ImportError:
            pass
    from tqdm.std import tqdm

    return tqdm


class Progress:
    """A tqdm bar (or nothing) advanced chunk by chunk from the host."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.enabled, self.total, self.desc, self.bar = enabled, total, desc, None

    def __enter__(self):
        if self.enabled:
            self.bar = _tqdm()(total=self.total, desc=self.desc, leave=True, dynamic_ncols=True)
        return self

    def update(self, n: int, phase: str) -> None:
        if self.bar is not None:
            self.bar.set_description(f"{self.desc} [{phase}]")
            self.bar.update(n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

