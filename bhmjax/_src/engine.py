"""The driver: every run (sample, resume, extend, fit_many buckets; NUTS or ChEES) goes through it.

A sampler is a :class:`ChainProgram`, shaped the way BlackJAX shapes an algorithm:
``init`` gives a state, ``step(state, arrays) -> (state, info)`` advances it with
explicit state and :class:`~bhmjax._src.stats.SampleInfo` tuples. A per-chain
program (NUTS) moves one chain and the driver maps it over the *lanes* (chains,
or datasets x chains) as the :class:`Layout` says: one after another (``lax.map``),
vectorized (``vmap``), and split over devices (``shard_map`` over a mesh). An
ensemble program (ChEES) moves every chain at once and is not mapped.

The driver wraps the program's state in a :class:`LoopState` (the generated
quantities' key and the stored-draw counter), compiles one chunk function per
program, layout and shapes (:func:`compiled`, the one place that lowers and caches
executables), advances the run chunk by chunk (:func:`advance`) and hands every
chunk to its *sinks* (:class:`Sink`): memory, checkpoint, stream to disk. Draws do
not depend on the chunking: every step's randomness comes from the state.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bhmjax._src.lru import LRU, release_if_near_map_limit
from bhmjax._src.stats import STATS

__all__ = ["ChainProgram", "Layout", "LoopState", "MemorySink", "Run", "Sink", "advance", "compiled",
           "compile_counts", "compiler_options", "init_keys", "prepare", "resolve_layout", "set_compile_options",
           "trace_counts"]

GENERATE_STREAM = 0x67656E  # fold_in data: a chain's key -> the key stream of its generated quantities


class ChainProgram(NamedTuple):
    """A sampler as the driver runs it.

    Attributes
    ----------
    init : callable
        Per-chain: ``init(key, arrays) -> state`` of one chain. Ensemble:
        ``init(keys, arrays) -> state`` of all chains (keys shape (chains, 2)).
    step : callable
        ``step(state, arrays) -> (state, SampleInfo)``: one transition (of every chain of an ensemble).
    values : callable
        ``values(state, arrays) -> {site: value}``: the stored sites, constrained.
    valid : callable
        ``valid(state) -> bool``: the initial density and gradient are finite (per chain for an ensemble).
    key : tuple
        Names the chunk executables (the settings the step depends on).
    init_key : Any
        Names the init executable together with ``key`` (the init strategy).
    ensemble : bool
        The state holds every chain (not mapped by the layout).
    warmup : callable, optional
        Ensemble programs whose warmup runs in one call: ``warmup(state, arrays) -> (state, grads)``.
    stats : tuple of str
        The statistics its ``SampleInfo`` reports.
    report : callable, optional
        ``report(host_state) -> dict``: what the run adapted, for ``fit.settings["adapted"]``.
    checks : callable, optional
        ``checks(state, arrays) -> {site: log density}`` where a chain starts (every chain
        of an ensemble): the model check, computed where a chain starts badly, to name the site.
    info : callable, optional
        ``info(state) -> SampleInfo`` as the step that made ``state`` reports it: the
        chunk takes the statistics' shapes from it instead of tracing a whole step
        (the model's gradient) only for them.
    """

    init: Callable
    step: Callable
    values: Callable
    valid: Callable
    key: tuple
    init_key: Any = None
    ensemble: bool = False
    warmup: Callable | None = None
    stats: tuple[str, ...] = tuple(STATS)
    report: Callable | None = None
    checks: Callable | None = None
    info: Callable | None = None


class LoopState(NamedTuple):
    """The driver's state of one lane (or of an ensemble): the program's state and the draw counter.

    ``gen_key`` seeds the generated quantities: stored draw ``i`` uses
    ``fold_in(gen_key, i)``, so they do not depend on chunking and resume bit for bit.
    """

    kernel: Any
    gen_key: Any
    draw: Any


def init_keys(chain_key) -> tuple:
    """``(key_init, key_kernel)`` of one chain: where its initial point and its sampler's keys come from."""
    key_init, key_kernel = jax.random.split(chain_key)
    return key_init, key_kernel


# ---------------------------------------------------------------- layouts


@dataclass(frozen=True)
class Layout:
    """How lanes (chains, or datasets x chains) are spread over calls and devices.

    Attributes
    ----------
    method : {"sequential", "vectorized", "parallel", "batched", "ensemble"}
    lanes : int
        Chains, or datasets x chains (``batched``), in lane order dataset-major.
    devices : tuple of int
        Ids of the devices the lanes are split over (empty: the default device).
    per_dataset : int
        ``batched``: chains per dataset; the data have a leading dataset axis.
    """

    method: str
    lanes: int
    devices: tuple[int, ...] = ()
    per_dataset: int = 0

    @property
    def inner(self) -> str:
        """How one device runs its lanes: "map" (one after another) or "vmap"."""
        if self.method == "sequential" or (self.method == "parallel" and jax.default_backend() == "cpu"):
            return "map"
        return "vmap"

    def mesh(self) -> Mesh | None:
        if len(self.devices) <= 1:
            return None
        by_id = {d.id: d for d in jax.devices()}
        return Mesh(np.asarray([by_id[i] for i in self.devices]), ("lanes",))


def resolve_layout(chain_method: str, chains: int, ensemble: bool = False) -> Layout:
    """The layout of ``chains`` chains for a chain method ("auto" picks one; see below).

    "auto" picks, from measurements on a 2-core CPU (``python -m benchmarks.overhead
    --quick``, varying intercepts G=200, N=10,000, 4 chains): "parallel" wherever two or
    more devices can share the chains evenly (GPUs, or CPU host devices, each running its
    chains one after another: 68.8 gradients/ms on 2 cores); else "sequential" on CPU
    (36.9; vectorized chains compile more slowly and their batched gathers cost more there:
    14.5) and "vectorized" on a single accelerator, where width is nearly free.
    """
    if ensemble:
        return Layout("ensemble", chains)
    devices = jax.local_devices()
    usable = max(d for d in range(1, min(len(devices), chains) + 1) if chains % d == 0)
    method = chain_method
    if chain_method == "auto":
        method = "parallel" if usable > 1 else ("sequential" if jax.default_backend() == "cpu" else "vectorized")
    if method == "parallel" and usable > 1:
        return Layout("parallel", chains, tuple(d.id for d in devices[:usable]))
    return Layout(method, chains)


def _over_lanes(fn: Callable, layout: Layout, inner: str, num_rest: int) -> Callable:
    """``fn(lane_input, arrays, *rest)`` of one lane, mapped over the leading lane axis of ``lane_input``."""
    c = layout.per_dataset

    def per_device(lane_input, arrays, *rest):
        if c:  # data per dataset: each of its chains gets a copy
            arrays = jax.tree.map(lambda x: jnp.repeat(x, c, axis=0), arrays)
            one = lambda pair: fn(pair[0], pair[1], *rest)  # noqa: E731
            return jax.vmap(one)((lane_input, arrays)) if inner == "vmap" else lax.map(one, (lane_input, arrays))
        one = lambda x: fn(x, arrays, *rest)  # noqa: E731
        return jax.vmap(one)(lane_input) if inner == "vmap" else lax.map(one, lane_input)

    mesh = layout.mesh()
    if mesh is None:
        return per_device
    data = P("lanes") if c else P()
    return jax.shard_map(per_device, mesh=mesh, in_specs=(P("lanes"), data) + (P(),) * num_rest,
                         out_specs=P("lanes"), check_vma=False)


def stage(tree):
    """Host arrays onto the default device without compiling (``jnp.asarray`` compiles a small program per shape)."""
    return jax.tree.map(jax.device_put, tree)


def abstract_arrays(arrays: Mapping[str, Any]) -> dict[str, jax.ShapeDtypeStruct]:
    """The shapes and dtypes of named host arrays, to trace with (nothing placed, nothing compiled)."""
    return {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in arrays.items()}


def place(tree, layout: Layout, per_lane: bool):
    """Host arrays onto the layout's devices: split along the lane axis, or replicated.

    ``make_array_from_callback`` lets each process materialise only its addressable
    shards, so the same call works across hosts (every host holds the host data).
    """
    mesh = layout.mesh()
    if mesh is None:
        return stage(tree)
    sharding = NamedSharding(mesh, P("lanes") if per_lane else P())

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
    return jax.tree.map(put, tree)


def to_host(tree):
    """Device arrays to numpy; across hosts the shards are gathered first."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)


# ---------------------------------------------------------------- the chunk


def _generated(generate: Callable | None, ensemble: bool, state: LoopState, values: dict, arrays) -> dict:
    if generate is None:
        return values
    if ensemble:
        keys = jax.vmap(lambda k: jax.random.fold_in(k, state.draw))(state.gen_key)
        extra = jax.vmap(generate, in_axes=(0, 0, None))(keys, values, arrays)
    else:
        extra = generate(jax.random.fold_in(state.gen_key, state.draw), values, arrays)
    return {**values, **extra}


def _collect(program: ChainProgram, generate: Callable | None, buffer_len: int) -> Callable:
    """``collect(state, arrays, n, thin, store) -> (state, grads, buffer)`` of one lane (or the ensemble).

    Runs ``n * thin`` steps; with ``store`` it records every ``thin``-th draw (values,
    generated quantities and statistics) into a buffer of ``buffer_len`` draws. Warmup
    runs through it too (``store`` False), so the step is compiled once.
    """
    def record(state: LoopState, info, arrays):
        values = _generated(generate, program.ensemble, state, program.values(state.kernel, arrays), arrays)
        return values, info.as_dict()

    def collect(state: LoopState, arrays, n, thin, store):
        if program.info is not None:
            info0 = jax.eval_shape(program.info, state.kernel)
        else:
            _, info0 = jax.eval_shape(program.step, state.kernel, arrays)
        # zeros that vary by lane when the lanes are vmapped (0 * the lane's draw counter): a loop whose
        # carries start batched is batched in one pass, not re-batched (nested NUTS loops and all) until
        # its carries' batching settles
        lane = state.draw * 0

        def zeros(shape, dtype):
            return jnp.zeros(shape, dtype) + lane.astype(dtype)

        info0 = jax.tree.map(lambda s: zeros(s.shape, s.dtype), info0)

        def one_step(_, carry):
            kernel, _, grads = carry
            kernel, info = program.step(kernel, arrays)
            return kernel, info, grads + info.num_steps.astype(jnp.int32)

        def body(i, carry):
            state, grads, buffer = carry
            kernel, info, grads = lax.fori_loop(0, thin, one_step, (state.kernel, info0, grads))
            state = state._replace(kernel=kernel)
            buffer = lax.cond(store, lambda b: jax.tree.map(lambda x, v: x.at[i].set(v), b,
                                                            record(state, info, arrays)), lambda b: b, buffer)
            return state._replace(draw=state.draw + store.astype(jnp.int32)), grads, buffer

        shapes = jax.eval_shape(record, state, info0, arrays)
        buffer = jax.tree.map(lambda s: zeros((buffer_len, *s.shape), s.dtype), shapes)
        grads = zeros(info0.num_steps.shape, jnp.int32)
        return lax.fori_loop(0, n, body, (state, grads, buffer))

    return collect


_TRACES: dict[str, int] = {"init": 0, "collect": 0}


def trace_counts() -> dict[str, int]:
    """How many times a chain program's init and chunk were traced (compiled) in this process."""
    return dict(_TRACES)


def _chunk_fn(program: ChainProgram, layout: Layout, generate: Callable | None, buffer_len: int) -> Callable:
    collect = _collect(program, generate, buffer_len)
    if program.ensemble:
        def ensemble(state, arrays, n, thin, store):
            state, grads, buffer = collect(state, arrays, n, thin, store)
            return state, grads, jax.tree.map(lambda b: jnp.moveaxis(b, 0, 1), buffer)  # (chain, draw, ...)
        mapped = ensemble
    else:
        mapped = _over_lanes(collect, layout, layout.inner, 3)

    def chunk(state, arrays, n, thin, store):
        _TRACES["collect"] += 1
        return mapped(state, arrays, n, thin, store)
    return chunk


def _init_fn(program: ChainProgram, layout: Layout) -> Callable:
    """``init(keys, arrays) -> (state, valid)``: the lanes' initial states and whether each starts finite."""
    def init_one(key, arrays):
        gen_key = jax.random.fold_in(key, GENERATE_STREAM)
        kernel = program.init(key, arrays)
        return LoopState(kernel, gen_key, jnp.zeros((), jnp.int32)), program.valid(kernel)

    def ensemble(keys, arrays):
        gen_keys = jax.vmap(lambda k: jax.random.fold_in(k, GENERATE_STREAM))(keys)
        kernel = program.init(keys, arrays)
        return LoopState(kernel, gen_keys, jnp.zeros((), jnp.int32)), program.valid(kernel)

    mapped = ensemble if program.ensemble else _over_lanes(init_one, layout, "vmap", 0)

    def init(keys, arrays):
        _TRACES["init"] += 1
        return mapped(keys, arrays)
    return init, mapped


def state_shapes(program: ChainProgram, layout: Layout, arrays: Mapping[str, Any]) -> LoopState:
    """The shapes and dtypes of a run's state (its tree structure, for restoring one from leaves)."""
    keys = jax.ShapeDtypeStruct((layout.lanes, 2), jnp.uint32)
    return jax.eval_shape(_init_fn(program, layout)[1], keys, abstract_arrays(arrays))[0]


# ---------------------------------------------------------------- compiling, in one place

_EXECUTABLES: LRU[Any] = LRU(64)  # compiled code held alive: bounded (see lru.py)
_COMPILES: dict[str, int] = {}


def compile_counts() -> dict[str, int]:
    """Executables compiled by :func:`compiled` in this process, by tag."""
    return dict(_COMPILES)


def _signature(tree) -> tuple:
    return tuple((tuple(np.shape(x)), str(jnp.result_type(x))) for x in jax.tree.leaves(tree))


FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True,
                "xla_cpu_use_fusion_emitters": False}
"""XLA options that compile fastest and run slower: LLVM's optimizations and XLA:CPU's fusion emitters off."""
SIMPLE_FUSION = {"xla_cpu_use_fusion_emitters": False}
"""LLVM's optimizations on, XLA:CPU's fusion emitters off: compiles in about 60% of the time; as fast to run
until the arrays are large (measured: ``benchmarks/compile_options.py``)."""
FAST_CHUNK_ELEMENTS = 3_000
"""Chunks whose inputs (state and data) hold at most this many numbers compile with :data:`FAST_COMPILE` under "auto"."""
SIMPLE_CHUNK_ELEMENTS = 100_000
"""Chunks with at most this many compile with :data:`SIMPLE_FUSION`, larger ones with XLA's defaults."""
_COMPILE_MODE: list = ["auto"]
# programs whose run time grows with their inputs (the rest: a gradient or a few): chunks, the effect draws
# over a block of draws, fit_many's summary of every dataset's draws (compiled fast, 100 datasets' summary
# ran 3.3x slower than with XLA's defaults: 4.75 against 1.43 s a block, compiled in 1.0 against 2.0 s)
_BY_SIZE = ("chunk", "warmup", "generate", "summary")


def set_compile_options(mode: str | Mapping[str, Any]) -> None:
    """How chain programs are compiled.

    "auto" (the default) picks per program from its expected run time. Programs that
    run once (init: one gradient or a few) compile with :data:`FAST_COMPILE`, and so do
    chunks (and generated quantities over a block of draws, fit_many's summaries) whose
    inputs hold at most :data:`FAST_CHUNK_ELEMENTS` numbers, where a gradient costs little
    next to the sampler's own bookkeeping. Those up to :data:`SIMPLE_CHUNK_ELEMENTS`
    numbers keep LLVM's optimizations but not XLA:CPU's fusion emitters
    (:data:`SIMPLE_FUSION`); larger ones, and fit_many's chunks over datasets (whose draws
    are kept equal to an unbatched run's within float tolerance), XLA's defaults. The choice depends on the
    shapes alone, so the same call gives the same draws. "default" uses XLA's defaults
    for every program, "fast" :data:`FAST_COMPILE`, a dict gives XLA options for every
    program. Measured in fresh processes: ``benchmarks/compile_options.py``.
    """
    if not (isinstance(mode, Mapping) or mode in ("auto", "default", "fast")):
        raise ValueError(f"compile options must be 'auto', 'default', 'fast' or a dict of XLA options, got {mode!r}")
    _COMPILE_MODE[0] = dict(mode) if isinstance(mode, Mapping) else mode


def compiler_options(tag: str, elements: int | None = None) -> dict | None:
    """The XLA options of program ``tag`` ("init", "chunk", "warmup", "generate", "summary") under the
    current mode; ``elements``: how many numbers its inputs hold (None: many)."""
    mode = _COMPILE_MODE[0]
    if isinstance(mode, dict):
        return dict(mode)
    if mode == "default":
        return None
    if mode == "fast" or tag not in _BY_SIZE or (elements is not None and elements <= FAST_CHUNK_ELEMENTS):
        return dict(FAST_COMPILE)
    return dict(SIMPLE_FUSION) if elements is not None and elements <= SIMPLE_CHUNK_ELEMENTS else None


def _elements(args) -> int:
    return int(sum(np.prod(np.shape(x), dtype=np.int64) for x in jax.tree.leaves(args)))


def compiled(tag: str, fn: Callable, key: tuple, *args) -> Callable:
    """The executable of ``fn`` for these arguments' shapes, compiled once per process per ``key``.

    Every chain program's executables come from here (the place to count compilations
    and to choose XLA options per program: :func:`compiler_options`). ``key`` names what ``fn`` computes beyond its
    arguments' shapes (program, layout, buffer length). ``args`` may be ``jax.ShapeDtypeStruct``.
    """
    return _Compiling(None, tag, fn, key, args).result()


class _Compiling:
    """An executable on its way: fetched from the in-process cache, or lowered here and compiled on
    ``pool``'s thread (XLA releases the GIL; here when ``pool`` is None), so the caller can trace and
    lower the next program meanwhile. Tracing stays on the caller's thread: NumPyro's effect handlers
    are process-wide, so models are never traced concurrently."""

    def __init__(self, pool: ThreadPoolExecutor | None, tag: str, fn: Callable, key: tuple, args: tuple,
                 by_size: bool = True, start: bool = True) -> None:
        self.tag, self.full = tag, (tag, key, _signature(args), repr(_COMPILE_MODE[0]))
        self.elements = _elements(args)
        self.options = compiler_options(tag, self.elements if by_size else None)
        self.exe = _EXECUTABLES.get(self.full)
        self.pool, self.future, self.traced = pool, None, None
        ahead = None if self.exe is not None else _AHEAD.pop(self.full, None)
        if ahead is not None:  # started by an earlier prepare(ahead=...): wait for that compile
            self.lowered, self.future = ahead.lowered, ahead.future
        elif self.exe is None:
            release_if_near_map_limit()
            self.traced = jax.jit(fn).trace(*args)
            if start:
                self.start()

    def start(self) -> None:
        """Lower the traced program and start its compile (``start=False``: the caller starts it later,
        having traced what depends on its outputs' shapes first)."""
        if self.future is None and self.exe is None:
            self.lowered = self.traced.lower()
            self.future = (self.pool.submit(_compile, self.lowered, self.options) if self.pool is not None
                           else _Done(_compile(self.lowered, self.options)))

    @property
    def out_info(self):
        """The outputs' shapes and dtypes (``jax.ShapeDtypeStruct``)."""
        if self.exe is not None:
            return self.exe.out_info
        return self.traced.out_info if self.traced is not None else self.lowered.out_info

    def result(self) -> Callable:
        self.start()
        if self.exe is None:
            self.exe = self.future.result()
            _EXECUTABLES[self.full] = self.exe
            _COMPILES[self.tag] = _COMPILES.get(self.tag, 0) + 1
        return self.exe


# Compiles started ahead of their first call, by their cache key; bounded: an entry outlives its
# call only when a run stopped between its prepare and that call.
_AHEAD: LRU[_Compiling] = LRU(8)


def _start_ahead(pool: ThreadPoolExecutor, make: Callable[[], tuple]) -> None:
    """Lower the program ``make()`` gives, ``(tag, fn, key, args)``, and compile it on ``pool``: a later
    :func:`compiled` of the same key and shapes takes it from there. Nothing is started where ``make``
    fails: that call then fails in its own place, with its own error."""
    try:
        ahead = _Compiling(pool, *make())
    except Exception:  # noqa: BLE001 - an optimization only; the program's real call reports the error
        return
    if ahead.exe is None:
        _AHEAD[ahead.full] = ahead


class _Done(NamedTuple):
    """A compile already finished (on the caller's thread), shaped like a future."""

    exe: Any

    def result(self) -> Any:
        return self.exe


_UNKNOWN_OPTIONS: set[str] = set()  # options this jaxlib's XLA does not have (another version), left out


def _compile(lowered, options: dict | None):
    """``lowered.compile`` with ``options``, less any this XLA does not know (it names them one at a time)."""
    while True:
        known = None if options is None else {k: v for k, v in options.items() if k not in _UNKNOWN_OPTIONS}
        try:
            return lowered.compile(compiler_options=known)
        except Exception as err:  # noqa: BLE001 - jaxlib raises its own runtime error type
            unknown = re.search(r"No such compile option: '([^']+)'", str(err))
            if unknown is None or unknown.group(1) not in (known or {}):  # not one this call passed: a real error
                raise
            _UNKNOWN_OPTIONS.add(unknown.group(1))  # (another thread's compile may have learned it meanwhile)


def _abstract(tree, layout: Layout, per_lane: bool):
    """Shapes, dtypes and (on a mesh) shardings of ``tree`` placed as :func:`place` would place it."""
    mesh = layout.mesh()
    sharding = None if mesh is None else NamedSharding(mesh, P("lanes") if per_lane else P())
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding, weak_type=s.weak_type),
                        tree)


# ---------------------------------------------------------------- runs


class Sink(Protocol):
    """Where chunks go: memory, a checkpoint, a stream to disk.

    ``chunk(run, piece)`` is called after every chunk, with the run consistent at its
    end; ``piece`` is ``(values, stats)``, host arrays of shape (lanes, draws, ...) of
    the draws the chunk stored, or None for a warmup chunk.
    """

    def chunk(self, run: "Run", piece: tuple[dict, dict] | None) -> None: ...


class MemorySink:
    """Keeps every stored draw in host memory (``pieces`` restores the draws of an earlier run)."""

    def __init__(self, pieces: list | None = None) -> None:
        self.pieces = list(pieces or [])

    def chunk(self, run: "Run", piece) -> None:
        if piece is not None:
            self.pieces.append(piece)

    def draws(self) -> tuple[dict, dict]:
        """Values and statistics so far, (lanes, draws, ...)."""
        if not self.pieces:
            return {}, {}
        if len(self.pieces) > 1:  # join once, keep the joined piece
            self.pieces = [jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *self.pieces)]
        values, stats = self.pieces[0]
        return dict(values), dict(stats)


@dataclass
class Run:
    """A run in progress: where every lane is, what it cost, and the compiled chunk that advances it.

    All lanes advance together, so ``warmup_done`` and ``draws_done`` are per run.
    ``grads`` holds gradient evaluations per lane and phase.
    """

    program: ChainProgram
    layout: Layout
    arrays: dict
    state: LoopState
    chunk: Callable
    buffer_len: int
    warmup_done: int = 0
    draws_done: int = 0
    grads: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=lambda: {"compile": 0.0, "warmup": 0.0, "sampling": 0.0})
    compile_options: dict[str, Any] = field(default_factory=dict)

    def host_state(self) -> LoopState:
        """The state as host arrays with a leading lane axis (or the ensemble's own layout)."""
        return to_host(self.state)


def prepare(program: ChainProgram, layout: Layout, arrays: Mapping[str, np.ndarray], *, keys=None,
            state: LoopState | None = None, buffer_len: int, generate: Callable | None = None,
            check: Callable[[dict], None] | None = None, ahead: Sequence[Callable[[], tuple]] = ()) -> Run:
    """Compile the program's chunk (and init) for these shapes; a run from ``keys`` (lanes, 2) or ``state``.

    ``ahead``: functions giving ``(tag, fn, key, args)`` of programs the caller runs after
    sampling (as :func:`compiled` takes them); they are lowered once the chunk's compile has
    started and compiled beside it, so their first call finds them done.

    A fresh run's initial points are checked: where a chain starts with a log density or
    gradient that is not finite, ``check({site: log density})`` sees where the first such
    chain starts and may raise naming a site; else those chains are named (``ValueError``).
    """
    t0 = time.perf_counter()
    per_lane = layout.per_dataset > 0
    device_arrays = place(dict(arrays), layout, per_lane)
    run_key = (program.key, layout, buffer_len, generate)
    one, yes = np.int32(1), np.bool_(True)  # host scalars: replicated, on one host or many
    chunk_fn = _chunk_fn(program, layout, generate, buffer_len)
    if state is None:
        keys = place(np.asarray(keys), layout, True) if not program.ensemble else stage(np.asarray(keys))
        # the chunk (the longer compile) is traced from the init's output shapes and starts compiling
        # first; the init is lowered and compiled beside it
        pool = ThreadPoolExecutor(max_workers=2)
        try:
            init = _Compiling(pool, "init", _init_fn(program, layout)[0], run_key + (program.init_key,),
                              (keys, device_arrays), start=False)
            state_spec = _abstract(init.out_info[0], layout, per_lane=not program.ensemble)
            chunk = _Compiling(pool, "chunk", chunk_fn, run_key, (state_spec, device_arrays, one, one, yes),
                               by_size=not per_lane)
            init.start()
            options = _described(chunk)
            for make in ahead:
                _start_ahead(pool, make)
            state, valid = init.result()(keys, device_arrays)
            bad = np.flatnonzero(~np.asarray(to_host(valid)).reshape(-1))
            if bad.size and check is not None and program.checks is not None:
                check(_site_checks(program, state, arrays, int(bad[0])))
            _refuse_bad_starts(bad)
            chunk = chunk.result()
        finally:  # an error found at the start does not wait for the chunk's compile
            pool.shutdown(wait=False)
    else:
        state = place(state, layout, True) if not program.ensemble else stage(state)
        chunk = _Compiling(None, "chunk", chunk_fn, run_key, (state, device_arrays, one, one, yes),
                           by_size=not per_lane)
        options = _described(chunk)
        chunk = chunk.result()
    jax.block_until_ready(state)
    lanes = layout.lanes
    run = Run(program, layout, device_arrays, state, chunk, buffer_len,
              grads={"warmup": np.zeros(lanes, np.int64), "sampling": np.zeros(lanes, np.int64)})
    run.timings["compile"] = time.perf_counter() - t0
    run.compile_options = options
    return run


def _described(chunk: _Compiling) -> dict[str, Any]:
    """``fit.timings["compile_options"]``: how the chunk was compiled, and the size that chose it."""
    names = {None: "optimized", repr(FAST_COMPILE): "fast", repr(SIMPLE_FUSION): "optimized, simple fusion"}
    return {"chunk": names.get(None if chunk.options is None else repr(chunk.options), "custom"),
            "chunk_inputs": chunk.elements}


def _site_checks(program: ChainProgram, state: LoopState, arrays: Mapping[str, np.ndarray], lane: int) -> dict:
    """Each site's log density where lane ``lane`` starts (``program.checks``), to name the site at fault.

    A program of its own, compiled only when a chain starts where its log density or gradient
    is not finite: where every chain starts finite, so does every site's log density (the
    potential is their sum), and a first fit compiles no checks.
    """
    kernel = to_host(state.kernel)
    if not program.ensemble:
        kernel = jax.tree.map(lambda x: x[lane], kernel)  # indexed on the host: no eager program
    arrays = dict(arrays)
    out = to_host(compiled("checks", program.checks, (program.key, program.ensemble), kernel, arrays)(kernel, arrays))
    return {k: v[lane] for k, v in out.items()} if program.ensemble else out


def _refuse_bad_starts(bad: np.ndarray) -> None:
    if bad.size:
        raise ValueError(
            f"no valid initial point was found for chain(s) {bad.tolist()}: the log density or its gradient "
            "is not finite at every point tried. Try init_strategy='median' or a dict of initial values, "
            "and check the priors' supports against the data.")


def advance(run: Run, *, warmup: int, draws: int, thin: int, sinks: tuple = (),
            progress: Callable[[int, str], None] | None = None) -> Run:
    """Advance every lane to ``warmup`` warmup steps and ``draws`` stored draws, chunk by chunk.

    After each chunk ``run`` is updated, then every sink's ``chunk`` is called and
    ``progress(steps, phase)``; an interruption (Ctrl-C) leaves ``run`` consistent at the
    last finished chunk.
    """
    size, one, no = run.buffer_len, np.int32(1), np.bool_(False)
    while run.warmup_done < warmup:
        t = time.perf_counter()
        if run.program.warmup is not None:  # an ensemble whose adaptation runs in one call
            n = warmup - run.warmup_done
            warm = compiled("warmup", run.program.warmup, (run.program.key, run.layout), run.state.kernel,
                            run.arrays)
            run.timings["compile"] += time.perf_counter() - t
            t = time.perf_counter()
            kernel, grads = warm(run.state.kernel, run.arrays)
            state = run.state._replace(kernel=kernel)
        else:
            n = min(size, warmup - run.warmup_done)
            state, grads, _ = run.chunk(run.state, run.arrays, np.int32(n), one, no)
        run.grads["warmup"] = run.grads["warmup"] + _per_lane(grads, run.layout.lanes)
        jax.block_until_ready(state)
        run.timings["warmup"] += time.perf_counter() - t
        run.state, run.warmup_done = state, run.warmup_done + n
        _after_chunk(run, sinks, progress, None, n, "warmup")
    thin_ = np.int32(thin)
    while run.draws_done < draws:
        n = min(size, draws - run.draws_done)
        t = time.perf_counter()
        state, grads, buffer = run.chunk(run.state, run.arrays, np.int32(n), thin_, np.bool_(True))
        buffer = jax.tree.map(lambda b: b[:, :n], to_host(buffer))
        run.grads["sampling"] = run.grads["sampling"] + _per_lane(grads, run.layout.lanes)
        run.timings["sampling"] += time.perf_counter() - t
        run.state, run.draws_done = state, run.draws_done + n
        _after_chunk(run, sinks, progress, buffer, n * thin, "sampling")
    return run


def _per_lane(grads, lanes: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(to_host(grads), np.int64).reshape(-1), (lanes,))


def _after_chunk(run: Run, sinks, progress, piece, steps: int, phase: str) -> None:
    for sink in sinks:
        sink.chunk(run, piece)
    if progress is not None:
        progress(steps, phase)
