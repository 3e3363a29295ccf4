"""Every JAX trace, lowering and compilation in this process (bhmjax._src.compiles), and fresh caches.

``bhmjax._src.sampling.trace_counts`` counts only the sampler's own programs; these events
also see the model check's jitted program, eager operations (each a small compiled
program) and anything else JAX compiles, whoever asks for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

from bhmjax._src import compiles


@contextlib.contextmanager
def compile_log() -> Iterator[list[tuple[str, str]]]:
    """Record ``(kind, function name)`` of every trace, lowering and compile inside the block
    (filled when the block ends)."""
    log: list[tuple[str, str]] = []
    with compiles.watch() as events:
        yield log
    log.extend((e.kind, e.name) for e in events if e.kind != "cache_hit")


def fresh_programs(monkeypatch) -> None:
    """Swap bhmjax's caches of model checks and compiled programs for empty ones (until the
    monkeypatch is undone), so a model whose code was patched is traced and compiled anew."""
    from bhmjax._src import engine, sampling, trace

    for module, name in [(trace, "_TRACES"), (trace, "_CHECKS"), (sampling, "_PROGRAMS"),
                         (engine, "_EXECUTABLES")]:  # the model trace and check, the programs, the one compile cache
        monkeypatch.setattr(module, name, {})


@contextlib.contextmanager
def fresh_caches(monkeypatch) -> Iterator[None]:
    """Empty JAX's in-memory caches and swap bhmjax's program caches for empty ones.

    Work done earlier in the process (an eager operation, the model check of the same
    model and shapes, a sampler program) is then done, and seen, again inside the block;
    bhmjax's caches are put back afterwards (JAX's own refill on demand).
    """
    jax.clear_caches()
    fresh_programs(monkeypatch)
    try:
        yield
    finally:
        monkeypatch.undo()
