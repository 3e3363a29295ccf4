"""What JAX traces, lowers and compiles, seen through ``jax.monitoring`` (one listener per process).

:func:`watch` records every event inside a block, whoever asks for the work (our chain
programs, a model's jitted helper, an eager operation: each is a small program), so a
fit reports how many programs it compiled and how long each took (``fit.timings``), and
tests can assert counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

from jax import monitoring

__all__ = ["Event", "summarize", "watch"]

_KINDS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",  # XLA, or a fetch from the persistent cache
}
_CACHE_HIT = "/jax/compilation_cache/cache_hits"


class Event(NamedTuple):
    """One step of JAX's work: ``kind`` "trace", "lower", "compile" or "cache_hit" (the compile
    that follows it was a fetch from the persistent cache), of function ``name``."""

    kind: str
    name: str
    seconds: float


_logs: list[list[Event]] = []


def _on_duration(event: str, duration: float, **kwargs) -> None:
    kind = _KINDS.get(event)
    if kind is not None and _logs:
        for log in _logs:
            log.append(Event(kind, str(kwargs.get("fun_name", "?")), float(duration)))


def _on_event(event: str, **kwargs) -> None:
    if event == _CACHE_HIT and _logs:
        for log in _logs:
            log.append(Event("cache_hit", "?", 0.0))


monitoring.register_event_duration_secs_listener(_on_duration)
monitoring.register_event_listener(_on_event)


@contextlib.contextmanager
def watch() -> Iterator[list[Event]]:
    """Record every trace, lowering and compile (and persistent-cache hit) inside the block."""
    log: list[Event] = []
    _logs.append(log)
    try:
        yield log
    finally:  # by identity: an outer block's log can equal this one (nested blocks see the same events)
        del _logs[next(i for i, other in enumerate(_logs) if other is log)]


def summarize(log: list[Event]) -> dict:
    """``fit.timings`` entries of a watched call.

    ``programs_compiled``: XLA compilations (persistent-cache fetches excluded);
    ``programs_from_cache``: executables fetched from the persistent cache;
    ``compiled``: seconds per compiled program name (XLA only, summed over same-named
    programs); ``fetched``: names of the programs fetched; ``trace_s`` and ``lower_s``: Python tracing and lowering to MLIR.
    """
    compiled: dict[str, float] = {}
    fetched: list[str] = []
    pending = 0
    for event in log:
        if event.kind == "cache_hit":
            pending += 1
        elif event.kind == "compile":
            if pending:  # this compile was the fetch the hit announced
                pending -= 1
                fetched.append(event.name)
                continue
            compiled[event.name] = compiled.get(event.name, 0.0) + event.seconds
    count = sum(1 for e in log if e.kind == "compile") - len(fetched)
    return {"programs_compiled": count, "programs_from_cache": len(fetched),
            "compiled": {k: round(v, 4) for k, v in sorted(compiled.items(), key=lambda kv: -kv[1])},
            "fetched": sorted(set(fetched)),
            "trace_s": round(sum(e.seconds for e in log if e.kind == "trace"), 4),
            "lower_s": round(sum(e.seconds for e in log if e.kind == "lower"), 4)}
