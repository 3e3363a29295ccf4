"""Rows stored group by group: group effects gathered and summed without indexing.

On CPU, XLA runs a gather ``r[codes]`` and its gradient, a scatter-add into the
groups, one element at a time. When the rows of a grouping are stored group-major,
padded to ``C`` rows a group (``N = G C``), the gather is a broadcast and a per-group
sum a reshape and a sum: both fuse with the elementwise work around them (and vectorize).
Padded rows copy a real row with weight 0 (``models._observe`` masks them), so the log
density is unchanged.

This suits reduced data, whose rows are already not the user's (a count reduction leaves
a few cells a group): :func:`group_major` builds the layout when the padding is small.
``Model.fit`` builds it for a grouping in the laplace form, whose per-group sums at every
gradient are what it removes (elsewhere it measured no gain: ``benchmarks.batch gradient``).
The model data then carry ``rows_per_group_<t>`` (a static int, ``C``) for every group
term ``t`` whose codes are the grouping's; :func:`group_index` reads it.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["GroupIndex", "group_index", "group_major", "per_group_key", "MAX_PADDING"]

#: The layout is built when the padded rows are at most this many times the rows: the padding
#: is elementwise work, cheap beside a scatter of the same rows, but not free.
MAX_PADDING = 1.25


def per_group_key(term: int) -> str:
    return f"rows_per_group_{term}"


class GroupIndex(NamedTuple):
    """Which group each row belongs to, and how to gather and sum over groups.

    Attributes
    ----------
    codes : int array, shape (N,)
    num_groups : int
        G (static).
    per_group : int
        C when the rows are group-major (row ``g C + j`` is in group g; N = G C), else 0.
    """

    codes: jnp.ndarray
    num_groups: int
    per_group: int = 0

    def take(self, values: jnp.ndarray) -> jnp.ndarray:
        """Each row's value of its group: (G, ...) -> (N, ...)."""
        if self.per_group:
            shape = (self.num_groups, self.per_group) + values.shape[1:]
            return jnp.broadcast_to(values[:, None], shape).reshape((-1,) + values.shape[1:])
        return values[self.codes]

    def sum(self, values: jnp.ndarray) -> jnp.ndarray:
        """Sums of the rows' values per group: (N, ...) -> (G, ...)."""
        if self.per_group:
            return values.reshape((self.num_groups, self.per_group) + values.shape[1:]).sum(axis=1)
        return jax.ops.segment_sum(values, self.codes, num_segments=self.num_groups)


def group_index(data: Mapping[str, Any], term: int, num_groups: int | None = None) -> GroupIndex:
    """Group term ``term``'s :class:`GroupIndex` from the model data (``num_groups``: where
    the data carry no ``G_<term>``, as a prediction's design)."""
    groups = int(data[f"G_{term}"]) if num_groups is None else num_groups
    return GroupIndex(data[f"codes_{term}"], groups, int(data.get(per_group_key(term), 0)))


def group_major(data: Mapping[str, Any], rows: tuple[str, ...], term: int, max_padding: float = MAX_PADDING
                ) -> dict[str, Any] | None:
    """``data`` with its rows ordered by group term ``term``'s grouping and padded to ``C`` a group.

    Parameters
    ----------
    data : dict
        Model data (numpy): ``N``, ``codes_t``/``G_t`` per group term, per-row arrays.
    rows : tuple of str
        The keys of ``data`` indexed by row (``models.row_keys``).
    term : int
        The group term whose grouping orders the rows.
    max_padding : float
        Build the layout only when ``G C <= max_padding N``.

    Returns
    -------
    The data with every row array reordered and padded (padded rows copy their group's first
    row, or row 0 for a group without rows, with weight 0; ``weights`` is added when absent),
    ``N = G C`` and ``rows_per_group_<t> = C`` for every term ``t`` with the grouping's codes;
    or None when the padding does not pay.
    """
    n = int(data["N"])
    if n == 0:
        return None
    terms = sorted(int(k[2:]) for k in data if k.startswith("G_") and f"codes_{k[2:]}" in data)
    groups = int(data[f"G_{term}"])
    codes = np.asarray(data[f"codes_{term}"])
    sizes = np.bincount(codes, minlength=groups)
    per_group = int(sizes.max())
    if groups * per_group > max_padding * n:
        return None
    order = np.argsort(codes, kind="stable")
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    slot = np.arange(per_group)[None, :]
    real = slot < sizes[:, None]  # (G, C)
    first = np.where(sizes > 0, order[np.minimum(start, n - 1)], 0)
    source = np.where(real, order[np.minimum(start[:, None] + slot, n - 1)], first[:, None]).reshape(-1)
    out = dict(data)
    for key in rows:
        out[key] = np.asarray(data[key])[source]
    weights = np.asarray(data["weights"])[source] if "weights" in data else np.ones(len(source),
                                                                                      np.asarray(data["y"]).dtype)
    out["weights"] = np.where(real.reshape(-1), weights, 0).astype(weights.dtype)
    out["N"] = groups * per_group
    same = [t for t in terms if t == term or (int(data[f"G_{t}"]) == groups
                                              and np.array_equal(np.asarray(data[f"codes_{t}"]), codes))]
    for t in same:
        out[f"codes_{t}"] = np.repeat(np.arange(groups, dtype=codes.dtype), per_group)
        out[per_group_key(t)] = per_group
    return out
