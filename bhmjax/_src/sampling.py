"""Chains on NumPyro's functional NUTS core: compiled once, run in chunks.

The pieces are NumPyro's ``initialize_model`` (potential and constraining
functions with the data as arguments) and ``hmc(algo="NUTS")`` (``init_kernel``
and ``sample_kernel``). This module only decides how chains are mapped onto
devices and how steps are grouped into compiled chunks:

* ``collect(state, data, n)`` runs ``n * thinning`` steps into a fixed-size
  buffer; warmup runs through it too (thinning 1, buffer dropped), so the
  NUTS kernel is compiled once.

Both take the data as traced arguments, so new data of the same shapes reuse
the compiled executables (kept in ``_EXECUTABLES``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from numpyro.infer import init_to_feasible, init_to_median, init_to_sample, init_to_uniform, init_to_value
from numpyro.infer.hmc import hmc
from numpyro.infer.util import initialize_model

from . import adapt

__all__ = [
    "ChainMethod",
    "NutsConfig",
    "ChainProgram",
    "SampleResult",
    "build_program",
    "resolve_chain_method",
    "run_chains",
    "trace_counts",
]

CHAIN_METHODS = ("auto", "parallel", "vectorized", "sequential")
ChainMethod = str
STAT_NAMES = ("diverging", "num_steps", "accept_prob", "energy", "step_size", "potential_energy")

_INIT_STRATEGIES = {
    "uniform": init_to_uniform,
    "median": init_to_median,
    "feasible": init_to_feasible,
    "sample": init_to_sample,
}


@dataclass(frozen=True)
class NutsConfig:
    """Settings that change the compiled program (part of the compile key).

    Attributes
    ----------
    num_warmup : int
        Warmup (adaptation) steps per chain.
    target_accept : float
        Target mean acceptance probability of the step-size adaptation.
    max_tree_depth : int
        Maximum NUTS tree depth (at most ``2**depth - 1`` leapfrog steps a draw).
    dense_mass : bool
        Adapt a dense mass matrix instead of a diagonal one.
    init_strategy : str or callable
        ``"uniform"``, ``"median"``, ``"feasible"``, ``"sample"``, a NumPyro init
        strategy, or a dict of initial values (``init_to_value``), hashed by id.
    thinning : int
        Keep every ``thinning``-th draw.
    keep : tuple of str or None
        Sites stored in the draws (None: all sample and deterministic sites).
    drop : tuple of str
        Sites never stored (large deterministic sites, say).
    adaptation : str
        ``"hybrid"``: a diagonal mass matrix from draws and gradients early, from
        the draws later, on nutpie's schedule; ``"nutpie"``: draws and gradients
        throughout (see :mod:`bhmjax._src.adapt`); ``"stan"``: NumPyro's windowed
        adaptation (Stan's schedule, draws only; the one that adapts a dense matrix).
    """

    num_warmup: int = 1000
    target_accept: float = 0.8
    max_tree_depth: int = 10
    dense_mass: bool = False
    init_strategy: Any = "uniform"
    thinning: int = 1
    keep: tuple[str, ...] | None = None
    drop: tuple[str, ...] = ()
    adaptation: str = "hybrid"

    def init_fn(self) -> Callable:
        strategy = self.init_strategy
        if isinstance(strategy, str):
            return _INIT_STRATEGIES[strategy]()
        if isinstance(strategy, Mapping):
            return init_to_value(values=dict(strategy))
        return strategy

    def compile_key(self) -> tuple:
        strategy = self.init_strategy
        if isinstance(strategy, Mapping):
            strategy = ("value", id(strategy))
        return self.kernel_key() + (strategy,)

    def kernel_key(self) -> tuple:
        """The settings the NUTS chunk depends on (the init strategy only shapes ``init``)."""
        return (self.num_warmup, self.target_accept, self.max_tree_depth, self.dense_mass,
                self.thinning, self.keep, self.drop, self.adaptation)


class ChainProgram(NamedTuple):
    """The compiled pieces for one model, static data and configuration.

    ``init(keys, arrays) -> state`` is batched over chains (keys shape (chains, 2));
    ``collect(state, arrays, n, thin, buffer_len) -> (state, grads, buffer)`` runs
    ``n * thin`` steps of one chain, storing every ``thin``-th, and is mapped by the chain method. Warmup runs
    through ``collect`` too (its buffer is dropped), so NUTS is compiled once.
    """

    init: Callable
    collect: Callable
    site_names: tuple[str, ...]
    key: tuple = ()  # the cache key it was built under (names its executables)


class SampleResult(NamedTuple):
    """Raw output of :func:`run_chains` (host numpy arrays, axes (chain, draw, ...))."""

    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    timings: dict[str, float]
    num_grad_evals: dict[str, int]
    state: Any  # final HMCState, leaves with a leading chain axis
    chain_method: str


# ---------------------------------------------------------------- program building

_PROGRAMS: dict[tuple, ChainProgram] = {}
_EXECUTABLES: dict[tuple, Any] = {}
_TRACES: dict[str, int] = {"init": 0, "collect": 0}


def trace_counts() -> dict[str, int]:
    """How many times each chain function was traced (compiled) in this process."""
    return dict(_TRACES)


def _keep_site(name: str, config: NutsConfig) -> bool:
    if name in config.drop:
        return False
    return config.keep is None or name in config.keep


def _model_info(model: Callable, config: NutsConfig, kwargs_of: Callable, example_arrays: Mapping[str, Any]):
    """NumPyro's ``ModelInfo`` (sites, potential and constraining functions) from an abstract run.

    ``jax.eval_shape`` traces the model once instead of running it op by op (each
    eager operation is a small compiled program: about a second on a repeat run).
    The potential and constraining functions take the data as arguments
    (``dynamic_args``), and transforms of supports that depend on the data are
    rebuilt from it (NumPyro replays the model then), so nothing traced is kept.
    """
    captured = {}

    def probe(key, arrays):
        captured["info"] = initialize_model(key, model, init_strategy=config.init_fn(), dynamic_args=True,
                                            model_kwargs=kwargs_of(arrays))
        return captured["info"].param_info.potential_energy

    jax.eval_shape(probe, jax.random.PRNGKey(0), dict(example_arrays))
    return captured["info"]


def build_program(model: Callable, static: Mapping[str, Any], config: NutsConfig,
                  example_arrays: Mapping[str, np.ndarray]) -> ChainProgram:
    """Build (or fetch from cache) the chain functions for ``model``.

    The cache key is the model function, its static arguments, the configuration
    and the data tree structure; array values and shapes are not in it (shapes
    are handled by the executable cache).
    """
    key = (model, tuple(sorted(static.items(), key=lambda kv: kv[0])), config.compile_key(),
           tuple(sorted(example_arrays)))
    program = _PROGRAMS.get(key)
    if program is not None:
        return program

    def kwargs_of(arrays):
        return {**arrays, **static}

    info = _model_info(model, config, kwargs_of, example_arrays)
    latent_names = tuple(sorted(info.param_info.z))
    init_kernel, sample_kernel = hmc(potential_fn_gen=info.potential_fn, algo="NUTS")
    draw_grad = config.adaptation != "stan"
    dense_mass = [latent_names] if config.dense_mass else []
    site_names = tuple(
        name for name, site in info.model_trace.items()
        if site["type"] in ("sample", "deterministic")
        and not site.get("is_observed", False) and _keep_site(name, config)
    )

    def init(keys, arrays):
        _TRACES["init"] += 1
        kwargs = kwargs_of(arrays)

        def one(key):
            key_init, key_kernel = jax.random.split(key)
            params = initialize_model(key_init, model, init_strategy=config.init_fn(),
                                      dynamic_args=True, model_kwargs=kwargs).param_info
            state = init_kernel(params, config.num_warmup, dense_mass=dense_mass,
                                target_accept_prob=config.target_accept,
                                max_tree_depth=config.max_tree_depth,
                                adapt_step_size=not draw_grad, adapt_mass_matrix=not draw_grad,
                                model_kwargs=kwargs, rng_key=key_kernel)
            return adapt.init_draw_grad(state) if draw_grad else state

        return jax.vmap(one)(keys)

    def step(state, arrays):
        new = sample_kernel(state, model_kwargs=kwargs_of(arrays))
        if not draw_grad:
            return new
        return lax.cond(state.i < config.num_warmup,
                        lambda s: adapt.update_draw_grad(state.i, s, config.num_warmup, config.target_accept,
                                                          config.adaptation),
                        lambda s: s, new)

    def collect(state, arrays, n, thin, buffer_len):
        _TRACES["collect"] += 1
        constrain = info.postprocess_fn(**kwargs_of(arrays))

        def record(state):
            values = constrain(state.z)
            values = {k: v for k, v in values.items() if k in site_names}
            stats = {
                "diverging": state.diverging,
                "num_steps": state.num_steps.astype(jnp.int32),
                "accept_prob": state.accept_prob,
                "energy": state.energy,
                "step_size": state.adapt_state.step_size,
                "potential_energy": state.potential_energy,
            }
            return values, stats

        def thin_step(_, carry):
            state, grads = carry
            state = step(state, arrays)
            return state, grads + state.num_steps.astype(jnp.int32)

        def body(i, carry):
            state, grads, buffer = carry
            state, grads = lax.fori_loop(0, thin, thin_step, (state, grads))
            buffer = jax.tree.map(lambda b, x: b.at[i].set(x), buffer, record(state))
            return state, grads, buffer

        shapes = jax.eval_shape(record, state)
        buffer = jax.tree.map(lambda s: jnp.zeros((buffer_len, *s.shape), s.dtype), shapes)
        state, grads, buffer = lax.fori_loop(0, n, body, (state, jnp.zeros((), jnp.int32), buffer))
        return state, grads, buffer

    program = ChainProgram(init=init, collect=collect, site_names=site_names, key=key)
    _PROGRAMS[key] = program
    return program


# ---------------------------------------------------------------- chain methods


def resolve_chain_method(chain_method: str, num_chains: int) -> tuple[str, int]:
    """The chain method to use and the number of devices it spreads chains over.

    "auto" picks, from measurements on a 2-core CPU (``python -m benchmarks.overhead
    --quick``, varying intercepts G=200, N=10,000, 4 chains):

    * "parallel" wherever two or more devices can share the chains evenly: GPUs, or
      CPU host devices (``bhmjax.set_host_device_count``; one per core by default),
      each running its chains one after another (68.8 gradients/ms on 2 cores);
    * else "sequential" on CPU (36.9 gradients/ms): vectorized chains wait for the
      longest tree of every step (14.5 gradients/ms) and compile more slowly;
    * else "vectorized" on a single accelerator, where width is nearly free.

    "parallel" runs each device's chains one after another on CPU (``lax.map``) and
    vectorized on an accelerator.
    """
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"chain_method must be one of {CHAIN_METHODS}, got {chain_method!r}")
    devices = jax.local_device_count()
    usable = max(d for d in range(1, min(devices, num_chains) + 1) if num_chains % d == 0)
    if chain_method == "parallel":
        return "parallel", usable
    if chain_method in ("vectorized", "sequential"):
        return chain_method, 1
    if usable > 1:
        return "parallel", usable
    return ("sequential" if jax.default_backend() == "cpu" else "vectorized"), 1


def _mapped(program: ChainProgram, method: str) -> Callable:
    """``collect`` mapped over the chain axis for the chosen method."""
    collect = program.collect
    if method == "sequential":
        return collect
    v_col = jax.vmap(collect, in_axes=(0, None, None, None, None))
    if method == "vectorized":
        return v_col
    if jax.default_backend() == "cpu":  # one chain after another on each device
        def per_device(state, arrays, n, thin, buffer_len):
            return lax.map(lambda st: collect(st, arrays, n, thin, buffer_len), state)
    else:
        per_device = v_col
    return jax.pmap(per_device, in_axes=(0, None, None, None, None), static_broadcasted_argnums=(4,),
                    axis_name="chain_device")


def _signature(tree) -> tuple:
    return tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(tree))


def _compiled(tag: str, fn: Callable, program_key: tuple, *args, static_argnums=()) -> Callable:
    """AOT-compile ``fn`` for these argument shapes, once per process."""
    key = (tag, program_key, _signature(args[:3]), tuple(args[i] for i in static_argnums))
    exe = _EXECUTABLES.get(key)
    if exe is None:
        jitted = fn if tag.startswith("p") else jax.jit(fn, static_argnums=static_argnums)
        lowered = jitted.lower(*args)
        exe = lowered.compile()
        _EXECUTABLES[key] = exe
    if static_argnums:
        return lambda *a: exe(*(x for i, x in enumerate(a) if i not in static_argnums))
    return exe


def _chunks(total: int, size: int):
    done = 0
    while done < total:
        n = min(size, total - done)
        yield n
        done += n


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


@dataclass
class _Progress:
    """A tqdm bar (or nothing) advanced chunk by chunk from the host."""

    enabled: bool
    total: int
    desc: str
    bar: Any = field(default=None, init=False)

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


@dataclass
class ChainRun:
    """A run in progress, resumable: chain states and what each has done so far.

    A *slot* is what one compiled call advances: one chain ("sequential") or all
    chains ("vectorized", "parallel"). ``states[s]`` is the slot's HMCState in the
    method's layout; ``pieces[s]`` its stored draws so far as host chunks.
    """

    method: str
    num_devices: int
    num_chains: int
    states: list
    warmup_done: list[int]
    draws_done: list[int]
    pieces: list[list]
    grads: dict[str, int] = field(default_factory=lambda: {"warmup": 0, "sampling": 0})
    timings: dict[str, float] = field(default_factory=lambda: {"compile": 0.0, "warmup": 0.0, "sampling": 0.0})

    def chain_states(self):
        """The states with one leading chain axis, whatever the method."""
        if self.method == "sequential":
            return jax.tree.map(lambda *xs: jnp.stack(xs), *self.states)
        if self.method == "parallel":
            return jax.tree.map(lambda a: a.reshape(self.num_chains, *a.shape[2:]), self.states[0])
        return self.states[0]

    def draws_so_far(self) -> tuple[dict, dict]:
        """Stored draws and stats, chains cut to the shortest (chain, draw, ...)."""
        per_slot = [_concat(chunks) for chunks in self.pieces]
        done = min(self.draws_done)
        out = [jax.tree.map(lambda a: a[:, :done], p) for p in per_slot if p is not None]
        if not out:
            return {}, {}
        values, stats = jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *out) if len(out) > 1 else out[0]
        return dict(values), dict(stats)


class Runner(NamedTuple):
    """What advancing a run needs: the compiled chunk and the data on device."""

    program: ChainProgram
    collect: Callable
    arrays: dict
    buffer_len: int


def _layout(state, method: str, num_chains: int, num_devices: int) -> list:
    """Chain-axis states to the method's slots."""
    if method == "sequential":
        return [jax.tree.map(lambda a, c=c: a[c], state) for c in range(num_chains)]
    if method == "parallel":
        return [jax.tree.map(lambda a: a.reshape(num_devices, -1, *a.shape[1:]), state)]
    return [state]


def _check_initial_points(state) -> None:
    """Every chain starts where the log density and its gradient are finite."""
    energy = np.asarray(state.potential_energy)
    grads = np.stack([np.isfinite(np.asarray(g)).reshape(energy.shape[0], -1).all(axis=1)
                      for g in jax.tree.leaves(state.z_grad)], axis=1).all(axis=1)
    bad = np.flatnonzero(~(np.isfinite(energy) & grads))
    if bad.size:
        raise ValueError(
            f"no valid initial point was found for chain(s) {bad.tolist()}: the log density or its gradient "
            "is not finite at every point tried. Try init_strategy='median' or a dict of initial values, "
            "and check the priors' supports against the data.")


def prepare(key: jax.Array, model: Callable, arrays: Mapping[str, np.ndarray], static: Mapping[str, Any],
            config: NutsConfig, *, num_chains: int, chain_method: str, buffer_len: int,
            state=None) -> tuple[ChainRun, Runner]:
    """Build and compile the chain program; a fresh run from ``key`` (or from ``state``).

    ``state`` (leading chain axis, e.g. from a checkpoint) replaces the initial state.
    """
    method, num_devices = resolve_chain_method(chain_method, num_chains)
    t0 = time.perf_counter()
    program = build_program(model, static, config, arrays)
    program_key = program.key
    device_arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
    if state is None:
        chain_keys = jax.random.split(key, num_chains)
        init = _compiled("init", program.init, program_key, chain_keys, device_arrays)
        state = init(chain_keys, device_arrays)
        _check_initial_points(state)
    slots = _layout(state, method, num_chains, num_devices)
    one = jnp.asarray(1, jnp.int32)
    kernel_key = (program_key[:2] + (config.kernel_key(),) + program_key[3:], num_devices)
    col = _compiled({"sequential": "s", "vectorized": "v", "parallel": "p"}[method] + "col",
                    _mapped(program, method), kernel_key, slots[0], device_arrays,
                    one, one, buffer_len, static_argnums=(4,))
    jax.block_until_ready(slots)
    run = ChainRun(method=method, num_devices=num_devices, num_chains=num_chains, states=slots,
                   warmup_done=[0] * len(slots), draws_done=[0] * len(slots), pieces=[[] for _ in slots])
    run.timings["compile"] = time.perf_counter() - t0
    return run, Runner(program, col, device_arrays, buffer_len)


def advance(run: ChainRun, runner: Runner, *, num_warmup: int, num_draws: int, thinning: int,
            progress: bool = False, on_chunk: Callable[[ChainRun], None] | None = None) -> ChainRun:
    """Advance every slot to ``num_warmup`` warmup steps and ``num_draws`` stored draws.

    Works chunk by chunk (``runner.buffer_len`` steps a call), updating ``run`` in
    place after each, and calls ``on_chunk(run)`` then (a checkpoint, say). An
    interruption (Ctrl-C) leaves ``run`` consistent at the last finished chunk.
    """
    size, one = runner.buffer_len, jnp.asarray(1, jnp.int32)
    thin = jnp.asarray(thinning, jnp.int32)
    todo = sum(num_warmup - w + (num_draws - d) * thinning for w, d in zip(run.warmup_done, run.draws_done))
    with _Progress(progress, todo, "sample") as bar:
        for s in range(len(run.states)):
            while run.warmup_done[s] < num_warmup:
                n = min(size, num_warmup - run.warmup_done[s])
                t = time.perf_counter()
                st, g, _ = runner.collect(run.states[s], runner.arrays, jnp.asarray(n, jnp.int32), one, size)
                run.grads["warmup"] += int(np.sum(g))
                run.timings["warmup"] += time.perf_counter() - t
                run.states[s], run.warmup_done[s] = st, run.warmup_done[s] + n
                bar.update(n, "warmup")
                if on_chunk is not None:
                    on_chunk(run)
            while run.draws_done[s] < num_draws:
                n = min(size, num_draws - run.draws_done[s])
                t = time.perf_counter()
                st, g, buf = runner.collect(run.states[s], runner.arrays, jnp.asarray(n, jnp.int32), thin, size)
                piece = _take(buf, n, run.method)
                run.grads["sampling"] += int(np.sum(g))
                run.timings["sampling"] += time.perf_counter() - t
                run.pieces[s].append(piece)
                run.states[s], run.draws_done[s] = st, run.draws_done[s] + n
                bar.update(n * thinning, "sampling")
                if on_chunk is not None:
                    on_chunk(run)
    return run


def default_buffer_len(num_warmup: int, num_draws: int, progress: bool, chunk_size: int | None) -> int:
    """Steps per compiled call: one call per phase, or about 20 progress updates."""
    if chunk_size is not None:
        return int(chunk_size)
    return max(1, (num_warmup + num_draws) // 20) if progress else max(num_warmup, num_draws)


def result_of(run: ChainRun) -> SampleResult:
    draws, stats = run.draws_so_far()
    return SampleResult(draws=draws, stats=stats, timings=dict(run.timings), num_grad_evals=dict(run.grads),
                        state=run.chain_states(), chain_method=run.method)


def run_chains(key: jax.Array, model: Callable, arrays: Mapping[str, np.ndarray],
               static: Mapping[str, Any], config: NutsConfig, *, num_chains: int,
               num_draws: int, chain_method: str = "auto", progress: bool = False,
               chunk_size: int | None = None) -> SampleResult:
    """Run ``num_chains`` NUTS chains of ``config.num_warmup`` + ``num_draws`` steps.

    Parameters
    ----------
    key : PRNG key
        Split into one key per chain.
    model : callable
        A NumPyro model, called as ``model(**arrays, **static)``.
    arrays, static : dict
        Array data (traced) and Python scalars (compiled in), see ``split_data``.
    num_draws : int
        Stored draws per chain (after thinning).
    chunk_size : int, optional
        Steps per compiled call; defaults to one call per phase without a progress
        bar and about 20 updates with one. Draws do not depend on it.

    Returns
    -------
    SampleResult with draws of shape (num_chains, num_draws, *site_shape).
    """
    buffer_len = default_buffer_len(config.num_warmup, num_draws, progress, chunk_size)
    run, runner = prepare(key, model, arrays, static, config, num_chains=num_chains,
                          chain_method=chain_method, buffer_len=buffer_len)
    advance(run, runner, num_warmup=config.num_warmup, num_draws=num_draws,
            thinning=config.thinning, progress=progress)
    return result_of(run)


def _take(buffer, n: int, method: str):
    """The first ``n`` draws of a chunk buffer, as host arrays (chain, draw, ...)."""
    def take(b):
        b = np.asarray(b)
        if method == "sequential":
            return b[None, :n]
        if method == "parallel":
            b = b.reshape(-1, *b.shape[2:])
        return b[:, :n]
    return jax.tree.map(take, buffer)


def _concat(chunks: list):
    """Chunks of one slot joined along draws; None when there are none."""
    if not chunks:
        return None
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *chunks)
