"""A bounded, least-recently-used map for the caches that keep compiled programs alive.

Every compiled XLA executable holds its own memory mappings (about 15 for a tiny
program, hundreds for a chain program). A process that fits many models, such as a
notebook, a loop over datasets or a test session, would otherwise keep every program
it ever compiled and, past Linux's ``vm.max_map_count`` (65,530), crash inside XLA
with a segmentation fault. Evicted programs are compiled again (or loaded from the
persistent compilation cache) when they are needed again; a run in progress keeps its
own reference.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, Hashable, TypeVar

__all__ = ["LRU"]

V = TypeVar("V")


class LRU(OrderedDict, Generic[V]):
    """A dict that keeps at most ``maxsize`` entries, dropping the least recently used.

    ``get`` and ``[]`` count as uses; ``cache[key] = value`` adds or refreshes.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize

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
