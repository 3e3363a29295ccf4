"""A bounded, least-recently-used map for the caches that keep compiled programs alive.

Every compiled XLA executable holds its own memory mappings (about 15 for a tiny
program, hundreds for a chain program). A process that fits many models, such as a
notebook, a loop over datasets or a test session, would otherwise keep every program
it ever compiled and, past Linux's ``vm.max_map_count`` (65,530), crash inside XLA
with a segmentation fault. Evicted programs are compiled again (or loaded from the
persistent compilation cache) when they are needed again; a run in progress keeps its
own reference. Programs that JAX itself keeps (module-level ``jax.jit`` functions
called on many shapes) are freed by :func:`release_if_near_map_limit`, which the
driver calls before it compiles.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from pathlib import Path
from typing import Generic, Hashable, TypeVar

__all__ = ["LRU", "release_if_near_map_limit"]

V = TypeVar("V")
_ALL: list["LRU"] = []  # every cache of compiled programs, for release_if_near_map_limit


class LRU(OrderedDict, Generic[V]):
    """A dict that keeps at most ``maxsize`` entries, dropping the least recently used.

    ``get`` and ``[]`` count as uses; ``cache[key] = value`` adds or refreshes.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        _ALL.append(self)

    def __getitem__(self, key: Hashable) -> V:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def get(self, key: Hashable, default=None):
        return self[key] if key in self else default

    def __setitem__(self, key: Hashable, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


def _count(path: str) -> int | None:
    try:
        return Path(path).read_bytes().count(b"\n")
    except OSError:  # not Linux
        return None


def _map_limit() -> int:
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return 65530


def release_if_near_map_limit(fraction: float = 0.5) -> bool:
    """Free every compiled program of this process (ours and JAX's caches) when its memory
    mappings pass ``fraction`` of the OS limit; True if it did. A no-op off Linux."""
    count = _count("/proc/self/maps")
    if count is None or count < fraction * _map_limit():
        return False
    import jax

    for cache in _ALL:
        cache.clear()
    jax.clear_caches()
    gc.collect()
    return True
