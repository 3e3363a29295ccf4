"""A second process fitting the same model finds the persistent compilation cache.

Compilations are counted (JAX's monitoring events), not timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, numpy as np, jax
from jax import monitoring
counts = {"hits": 0, "misses": 0}
def listen(event, **kwargs):
    if event.endswith("/compilation_cache/cache_hits"):
        counts["hits"] += 1
    elif event.endswith("/compilation_cache/cache_misses"):
        counts["misses"] += 1
monitoring.register_event_listener(listen)
import bhmjax as bj
from tests._ckpt_model import model, data
fit = bj.sample(model, data(), chains=2, warmup=50, draws=50, progress=False)
print(json.dumps({**counts, "cache": bj.compilation_cache_dir(), "mu": float(fit.draws["mu"].mean()),
                  "timings": fit.timings}))
"""


def run(cache: Path) -> dict:
    env = {**os.environ, "BHMJAX_CACHE_DIR": str(cache), "BHMJAX_COMPILATION_CACHE": "1"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_second_process_compiles_nothing_new(tmp_path):
    first = run(tmp_path / "xla")
    second = run(tmp_path / "xla")
    assert first["cache"] == second["cache"] == str(tmp_path / "xla")
    assert first["misses"] >= 2  # the chain program and its initialisation were compiled
    assert second["misses"] == 0 and second["hits"] >= first["misses"]
    assert second["mu"] == first["mu"]  # same seed, same draws
    # the fit reports what its call compiled and fetched, as JAX's own events count them
    assert first["timings"]["programs_compiled"] == first["misses"]
    assert {"jit(init)", "jit(chunk)"} <= set(first["timings"]["compiled"])
    assert second["timings"]["programs_compiled"] == 0 and second["timings"]["compiled"] == {}
    assert second["timings"]["programs_from_cache"] == second["hits"]


def test_a_fit_reports_its_compilations_and_a_repeat_compiles_nothing(monkeypatch):
    """Two chain programs (init and the chunk; the model check where a chain starts badly has its
    own program, compiled only then) and no other: the chain keys are made on the host, no eager operation compiles on the
    way; new data of the same shapes compile nothing."""
    settings = dict(chains=2, warmup=30, draws=30, progress=False)
    first, second = _fit_twice(monkeypatch, settings)
    built = set(first.timings["compiled"]) | set(first.timings["fetched"])  # the disk cache may hold them
    assert built == {"jit(init)", "jit(chunk)"}
    assert first.timings["programs_compiled"] + first.timings["programs_from_cache"] == 2
    assert all(v > 0 for v in first.timings["compiled"].values())
    assert second.timings["programs_compiled"] == 0 and second.timings["compiled"] == {}
    assert second.timings["trace_s"] == 0.0


def _fit_twice(monkeypatch, settings):
    import numpy as np

    import bhmjax as bj
    from bhmjax._src import engine
    from tests._ckpt_model import data, model
    from tests._compiles import fresh_caches

    with fresh_caches(monkeypatch):
        before = engine.compile_counts()
        first = bj.sample(model, data(), **settings)
        made = {k: v - before.get(k, 0) for k, v in engine.compile_counts().items() if v > before.get(k, 0)}
        assert made == {"init": 1, "chunk": 1}
        again = {k: np.asarray(v) + 1.0 if np.asarray(v).dtype.kind == "f" else v for k, v in data().items()}
        second = bj.sample(model, again, **{**settings, "seed": 1})
    return first, second


def test_the_effect_draws_compile_beside_the_sampler(monkeypatch):
    """A marginalized formula fit's effect-draw program is lowered and compiled while the chunk compiles
    (engine.prepare(ahead=)): the call after sampling takes that compile (none left waiting, one generate
    compiled), the same draws as without it; a JAX key as the seed draws them too."""
    import threading

    import jax
    import numpy as np

    import bhmjax as bj
    from bhmjax._src import engine
    from tests._compiles import fresh_caches

    rng = np.random.default_rng(3)
    g = np.arange(60) % 6
    model = bj.Model("y ~ 1 + (1 | g)", {"y": rng.normal(size=60) + g, "g": g})
    settings = dict(chains=2, warmup=40, draws=30, progress=False, seed=5)
    compile, beside = engine._compile, []

    def spy(lowered, options):
        beside.append(threading.current_thread() is not threading.main_thread())
        return compile(lowered, options)

    with fresh_caches(monkeypatch):
        monkeypatch.setattr(engine, "_AHEAD", {})
        monkeypatch.setattr(engine, "_compile", spy)
        before = engine.compile_counts()
        fit = model.fit(**settings)
        made = {k: v - before.get(k, 0) for k, v in engine.compile_counts().items() if v > before.get(k, 0)}
        assert made == {"init": 1, "chunk": 1, "generate": 1} and engine._AHEAD == {}
        assert beside == [True, True, True]  # init, chunk and the effect draws, all on the pool's threads
    # and nothing else: the keys of the effect draws are made on the host, the data staged without a program
    assert set(fit.timings["compiled"]) | set(fit.timings["fetched"]) == {"jit(init)", "jit(chunk)",
                                                                         "jit(generate_draws)"}
    assert fit.timings["programs_compiled"] + fit.timings["programs_from_cache"] == 3
    assert fit.settings["marginalized"]["site"] == "r_g"
    with fresh_caches(monkeypatch):
        monkeypatch.setattr(engine, "_start_ahead", lambda pool, make: None)
        plain = model.fit(**settings)
    np.testing.assert_array_equal(fit.draws["r_g"], plain.draws["r_g"])
    keyed = model.fit(**{**settings, "seed": jax.random.key(5)})
    assert keyed.settings["seed"] == [0, 5] and np.isfinite(keyed.draws["r_g"]).all()


@pytest.mark.slow
def test_cache_can_be_switched_off(tmp_path):
    env = {**os.environ, "BHMJAX_COMPILATION_CACHE": "0"}
    out = subprocess.run([sys.executable, "-c", "import bhmjax as bj; print(bj.compilation_cache_dir())"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "None"


def test_compiled_programs_in_memory_are_bounded():
    """Executables hold memory mappings (Linux allows 65,530): a process that compiles more programs
    than the cache holds keeps only the most recent ones, and a program used again stays."""
    import jax.numpy as jnp
    import numpy as np

    from bhmjax._src import engine
    from bhmjax._src.lru import LRU

    cache = LRU(2)
    cache["a"], cache["b"] = 1, 2
    assert cache["a"] == 1  # a use: "b" is now the oldest
    cache["c"] = 3
    assert list(cache) == ["a", "c"] and cache.get("b") is None
    with pytest.raises(ValueError, match="maxsize"):
        LRU(0)

    saved = dict(engine._EXECUTABLES)
    try:
        first = engine.compiled("bounded", jnp.sin, ("first",), np.ones(3, np.float32))
        for i in range(engine._EXECUTABLES.maxsize + 5):
            engine.compiled("bounded", jnp.cos, (i,), np.ones(3, np.float32))
            assert engine.compiled("bounded", jnp.sin, ("first",), np.ones(3, np.float32)) is first
        assert len(engine._EXECUTABLES) == engine._EXECUTABLES.maxsize
        assert ("bounded", (0,), engine._signature((np.ones(3, np.float32),))) not in engine._EXECUTABLES
    finally:
        engine._EXECUTABLES.clear()
        engine._EXECUTABLES.update(saved)


def test_compiled_programs_are_released_near_the_map_limit(monkeypatch):
    """Past the fraction of vm.max_map_count, every cached program (ours and jax.jit's) is dropped."""
    import jax.numpy as jnp
    import numpy as np

    from bhmjax._src import engine, lru

    engine.compiled("release", jnp.sin, ("x",), np.ones(3, np.float32))
    assert lru.release_if_near_map_limit() is False and len(engine._EXECUTABLES) > 0
    monkeypatch.setattr(lru, "_map_limit", lambda: 10)  # any process is near a limit of 10
    assert lru.release_if_near_map_limit() is True and len(engine._EXECUTABLES) == 0


def test_compile_options_follow_each_programs_expected_run_time():
    """"auto": programs that run once (init) compile fast, the chunk (run every
    step) optimized unless its inputs are small (then fast, or without XLA:CPU's fusion emitters);
    the user's mode wins."""
    import bhmjax as bj
    from bhmjax._src import engine

    limit = engine.FAST_CHUNK_ELEMENTS
    try:
        assert engine.compiler_options("init") == engine.FAST_COMPILE
        assert engine.compiler_options("generate", limit) == engine.FAST_COMPILE
        assert engine.compiler_options("chunk") is None
        assert engine.compiler_options("chunk", limit) == engine.FAST_COMPILE
        assert engine.compiler_options("chunk", limit + 1) == engine.SIMPLE_FUSION
        assert engine.compiler_options("chunk", engine.SIMPLE_CHUNK_ELEMENTS + 1) is None
        bj.set_compile_options("default")
        assert engine.compiler_options("init") is None
        bj.set_compile_options("fast")
        assert engine.compiler_options("chunk") == engine.FAST_COMPILE
        bj.set_compile_options({"xla_backend_optimization_level": 1})
        assert engine.compiler_options("chunk") == {"xla_backend_optimization_level": 1}
        with pytest.raises(ValueError, match="compile options must be 'auto', 'default', 'fast' or a dict"):
            bj.set_compile_options("quick")
    finally:
        bj.set_compile_options("auto")


def test_a_fit_reports_how_its_chunk_was_compiled():
    """The chunk's inputs (state and data) are counted; a small model's chunk compiles fast, a
    larger one's without the fusion emitters, and ``fit.timings`` says which."""
    import numpy as np
    import numpyro
    import numpyro.distributions as dist

    import bhmjax as bj
    from bhmjax._src import engine
    from tests._ckpt_model import data, model

    def normal_mean(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    settings = dict(chains=2, warmup=20, draws=20, progress=False)
    small = bj.sample(model, data(), **settings).timings["compile_options"]
    assert small["chunk"] == "fast" and 0 < small["chunk_inputs"] <= engine.FAST_CHUNK_ELEMENTS
    big = {"y": np.zeros(engine.FAST_CHUNK_ELEMENTS + 1, np.float32)}
    large = bj.sample(normal_mean, big, **settings).timings["compile_options"]
    assert large["chunk"] == "optimized, simple fusion" and large["chunk_inputs"] > engine.FAST_CHUNK_ELEMENTS


def test_a_new_compile_mode_compiles_the_chain_programs_anew():
    """The mode is part of an executable's cache key: the same model and shapes under "fast" are
    compiled again (not served the optimized executable), and "auto" then finds its own."""
    import bhmjax as bj
    from bhmjax._src import engine
    from tests._ckpt_model import data, model

    settings = dict(chains=2, warmup=20, draws=20, progress=False)
    bj.sample(model, data(), **settings)
    before = engine.compile_counts()
    try:
        bj.set_compile_options("fast")
        bj.sample(model, data(), **settings)
        assert engine.compile_counts()["chunk"] == before["chunk"] + 1
    finally:
        bj.set_compile_options("auto")
    bj.sample(model, data(), **settings)
    assert engine.compile_counts()["chunk"] == before["chunk"] + 1


def test_nested_watch_blocks_each_keep_their_log():
    """A fit inside a watched block (the "auto" pre-pass inside a run) sees the same events as the
    block around it; leaving the inner block must not take the outer log away."""
    import jax
    import jax.numpy as jnp

    from bhmjax._src import compiles

    with compiles.watch() as outer:
        with compiles.watch() as inner:
            jax.jit(lambda x: x * 3.0 + 1.0)(jnp.arange(3.0))
        assert inner and inner == outer  # equal logs, distinct blocks
        jax.jit(lambda x: x * 5.0 - 2.0)(jnp.arange(4.0))
    assert len(outer) > len(inner)


def test_options_this_xla_does_not_know_are_left_out():
    """An option another jaxlib lacks (jax 0.12 has no ``xla_cpu_use_fusion_emitters``) is dropped
    with the rest kept, not an error; a bad value of a known option still raises."""
    import jax
    import jax.numpy as jnp

    from bhmjax._src import engine

    lowered = jax.jit(lambda x: x + 1).lower(jnp.zeros(3))
    exe = engine._compile(lowered, {"xla_backend_optimization_level": 0, "xla_no_such_option_here": True})
    assert float(exe(jnp.zeros(3))[0]) == 1.0
    assert "xla_no_such_option_here" in engine._UNKNOWN_OPTIONS
    with pytest.raises(Exception):  # noqa: B017 - jaxlib's own error type
        engine._compile(lowered, {"xla_backend_optimization_level": "not a level"})


def test_an_unknown_option_learned_by_a_concurrent_compile_is_still_dropped(monkeypatch):
    """init and chunk compile in two threads: both pass an option this XLA lacks, one learns it first;
    the other's failure names an option it passed, so it retries without it instead of raising."""
    from bhmjax._src import engine

    monkeypatch.setattr(engine, "_UNKNOWN_OPTIONS", set())

    class Lowered:
        def compile(self, compiler_options=None):
            if "xla_option_x" in (compiler_options or {}):
                engine._UNKNOWN_OPTIONS.add("xla_option_x")  # the other thread got there first
                raise RuntimeError("INVALID_ARGUMENT: No such compile option: 'xla_option_x'")
            return "compiled"

    assert engine._compile(Lowered(), {"xla_option_x": False}) == "compiled"


@pytest.mark.parametrize("formula, family, options, fit_options", [
    ("y ~ 1 + x + (1 + x | g)", "gaussian", {"parameterization": "centered"}, {"marginalize": False}),
    ("yb ~ 1 + c + (1 + c | g)", "bernoulli", {"parameterization": "laplace"}, {}),
    ("y ~ 1 + x + (1 | g) + (1 | h)", "gaussian", {"parameterization": "auto"}, {}),
], ids=["centered-correlated", "laplace-binomial-cells", "auto"])
def test_a_formula_fit_compiles_its_programs_and_nothing_eager(formula, family, options, fit_options, monkeypatch):
    """Formula models build NumPyro distributions while traced; their argument checks (a lower-Cholesky
    scale, a binomial count) and the pre-pass's data staging compiled small eager programs on the way."""
    import numpy as np
    import pandas as pd

    import bhmjax as bj
    from tests._compiles import fresh_caches

    rng = np.random.default_rng(0)
    g, x, c = rng.integers(0, 12, 240), rng.normal(size=240), rng.integers(0, 3, 240)
    eta = 0.3 + 0.5 * x + rng.normal(0, 0.5, 12)[g]
    frame = pd.DataFrame({"y": eta + rng.normal(size=240), "yb": rng.binomial(1, 1 / (1 + np.exp(-eta))),
                          "x": x, "c": c, "g": g, "h": g % 5})
    with fresh_caches(monkeypatch):
        fit = bj.Model(formula, frame, family=family, **options).fit(chains=2, warmup=20, draws=20, seed=0,
                                                                     progress=False, **fit_options)
    built = set(fit.timings["compiled"]) | set(fit.timings["fetched"])
    assert built <= {"jit(init)", "jit(chunk)", "jit(generate_draws)"}, built
    assert {"jit(init)", "jit(chunk)"} <= built
