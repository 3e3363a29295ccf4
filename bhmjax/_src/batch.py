"""Many datasets in one compiled program: padding, bucketing, a vmapped (and sharded) chain program.

Padding design
--------------
A :class:`PadSpec` says which arrays are indexed by row (axis 0) and which static
ints count groups (and which arrays hold codes into them). A dataset is padded to
its *bucket*: rows and every group count rounded up (at least ``min_rows`` /
``min_groups``) to a coarse grid, so datasets of many sizes share a few shapes: eight
sizes per doubling (:func:`rounded`: at most 1/8 padded), or powers of two
(``buckets="pow2"``); then neighbouring shapes are joined where one compilation costs
more than the padded work it saves (:func:`plan_buckets`), so a typical stream
compiles once, padded to the largest dataset's rounded shape.

* Padded rows are copies of row 0 (values inside every distribution's support,
  codes that index group 0) and a boolean ``_row_mask`` argument is added; the
  wrapped model (:func:`masked_model`) runs the user's model under
  :class:`RowMask`, which masks the observed sites elementwise along their first
  batch axis, so padded rows add exactly 0 to the log density and its gradient.
* Padded groups have no rows: their effects are drawn from the prior and leave the
  posterior of every real parameter unchanged (the joint density factorises).
  :func:`group_axes` finds which site axes grow with each group count, so the
  user layer drops the padded groups from the returned fits.

Program
-------
A bucket runs through the driver (:mod:`bhmjax._src.engine`) with a "batched"
layout: the per-chain NUTS program vmapped over one flat axis of datasets x chains
(each its own HMC state, adapting its own step size and mass matrix), the data
repeated per chain inside the program, and with several devices the lanes split by
``jax.shard_map`` over a mesh with no communication.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.primitives import Messenger

from bhmjax._src import keys
from bhmjax._src.diagnostics import summary_stats
from bhmjax._src.trace import model_trace

__all__ = [
    "PadSpec",
    "RowMask",
    "batch_summary",
    "bucket_of",
    "dataset_keys",
    "group_axes",
    "masked_model",
    "pad",
    "plan_buckets",
    "rounded",
    "shape_of",
    "site_shapes",
    "units",
]

MASK = "_row_mask"


@dataclass(frozen=True)
class PadSpec:
    """Which data are rows and which static ints count groups.

    Attributes
    ----------
    rows : tuple of str
        Arrays indexed by row on axis 0 (response, predictors, group codes, trials).
    groups : tuple of (str, tuple of str)
        Static int name -> the arrays holding codes into that many groups.
    row_count : str or None
        A static int that holds the number of rows (``"N"`` for formula models).
    observed : tuple of str or None
        Observed sites masked on padded rows (None: every observed site whose first batch
        axis has the padded rows' length; factors and other sites are left alone).
    min_rows, min_groups : int
        Smallest bucket sizes.
    per_group : str or None
        A static int: the rows lie in blocks of that many per group, in group order (the
        blocked pseudo rows of a grouping integrated out, ``reduce.block_gaussian_data``).
        A dataset is then padded by whole groups of zero rows (rows = groups x block,
        codes naming the padded groups; ``row_fill``) instead of copies of row 0: their
        residuals, coordinates and bases are zero, so they add nothing but
        ``n log(2 pi sigma^2)``, which ``dropped`` takes back. Only with one grouping.
    block : int or None
        With ``per_group``: the rows per group of every padded dataset (the largest block of
        the datasets; a smaller block is widened with zero rows, which add nothing either).
    group_arrays : tuple of str
        Arrays indexed by group on axis 0 (padded with zeros).
    row_fill : tuple of (str, str)
        With ``per_group``: row arrays whose zero row is another array's value (a formula
        model's ``X`` enters the mean as ``X - X_mean``: its padded rows hold ``X_mean``).
    dropped : str or None
        A data scalar counting rows in the log density beyond the pseudo rows
        (``reduction:dropped``): lowered by the zero rows added.
    """

    rows: tuple[str, ...]
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    row_count: str | None = None
    observed: tuple[str, ...] | None = None
    min_rows: int = 8
    min_groups: int = 2
    per_group: str | None = None
    block: int | None = None
    group_arrays: tuple[str, ...] = ()
    row_fill: tuple[tuple[str, str], ...] = ()
    dropped: str | None = None


def _pow2(n: int, minimum: int) -> int:
    return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def rounded(n: int, minimum: int = 1) -> int:
    """``n`` (at least ``minimum``) rounded up to the grid of eight sizes per doubling.

    Up to 16 every size is its own; above, the step is 1/8 of the power of two below ``n``
    (17..32 by 2, 33..64 by 4, 65..128 by 8, ...): at most 1/8 of the rounded size is
    padding, and a stream of sizes falls on few values (shared compilations).
    """
    n = max(int(n), int(minimum), 1)
    step = 1 << max(0, (n - 1).bit_length() - 4)
    return -(-n // step) * step


def shape_of(arrays: Mapping[str, np.ndarray], static: Mapping[str, Any], spec: PadSpec) -> tuple:
    """A dataset's own ``(rows, ((group_static, count), ...))``: a bucket tuple before rounding."""
    return int(np.shape(arrays[spec.rows[0]])[0]), tuple((g, int(static[g])) for g, _ in spec.groups)


def bucket_of(arrays: Mapping[str, np.ndarray], static: Mapping[str, Any], spec: PadSpec,
              grid: str = "pow2") -> tuple:
    """``(rows, ((group_static, size), ...))`` rounded up to powers of two (``grid="pow2"``) or to
    eight sizes per doubling (``grid="fine"``, :func:`rounded`)."""
    n, groups = shape_of(arrays, static, spec)
    up = {"pow2": _pow2, "fine": rounded}[grid]
    padded = tuple((g, up(count, spec.min_groups)) for g, count in groups)
    if spec.per_group is not None:  # whole groups of rows: the group count sets the rows
        return padded[0][1] * (spec.block or int(static[spec.per_group])), padded
    return up(n, spec.min_rows), padded


COMPILE_S = 8.0
"""Estimated seconds to compile one bucket's programs: a low estimate (it favours separate shapes).
On the 2-core CPU issue #16 measured 63 s for 8 buckets of ``y ~ 1 + (1 | g)``, and
``python -m benchmarks.batch many 100`` (``benchmarks/results/batch_cpu.json``) 61 s for its
one bucket of ``y ~ 1 + x + (1 | g)``, on a loaded machine."""
ROW_GRADIENT_S = 2e-8
"""Estimated seconds per padded row (or group) and gradient of one chain: a G=50, N=1,000
varying-slopes fit's warmup and sampling seconds over its gradients and 1,050 rows and groups
gives ~30 ns on the 2-core CPU (NUTS overhead included; ``fit.timings``, ``fit.num_grad_evals``)."""
GRADIENTS_PER_STEP = 8  # a tree of depth 3, typical of a well-adapted small model


def units(shape: tuple) -> int:
    """Rows plus groups of a shape (:func:`shape_of`, :func:`bucket_of`): the work of one gradient."""
    rows, groups = shape
    return int(rows) + sum(int(size) for _, size in groups)


def _join_buckets(buckets: Sequence[tuple]) -> tuple:
    rows = max(b[0] for b in buckets)
    names = [g for g, _ in buckets[0][1]]
    return rows, tuple((g, max(dict(b[1])[g] for b in buckets)) for g in names)


def plan_buckets(shapes: Sequence[tuple], steps: int, compile_s: float = COMPILE_S,
                 unit_s: float = ROW_GRADIENT_S) -> dict[tuple, tuple]:
    """Which padded shape each rounded shape runs in: fewer compilations against more padded work.

    The shapes of :func:`bucket_of`, ordered by size, are joined into runs of
    neighbours (each run padded to its elementwise largest shape) to minimise
    ``compile_s`` per run plus ``unit_s`` x ``steps`` (gradients of one dataset's
    chains) x padded rows and groups of every dataset, by dynamic programming over
    the order (quadratic in the number of distinct shapes). A typical stream of small
    ragged datasets becomes one shape; a dataset 100 times larger than the rest keeps its own.

    Parameters
    ----------
    shapes : sequence of bucket tuples, one per dataset (repeats count).
    steps : gradient evaluations expected per dataset (all its chains).
    """
    counts: dict[tuple, int] = {}
    for b in shapes:
        counts[b] = counts.get(b, 0) + 1
    order = sorted(counts, key=lambda b: (units(b), b))
    n = len(order)
    best, cut = [0.0] + [math.inf] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        joined, members = order[j - 1], 0
        for i in range(j - 1, -1, -1):  # the run order[i:j], grown one shape to the left at a time
            joined, members = _join_buckets((joined, order[i])), members + counts[order[i]]
            cost = best[i] + compile_s + unit_s * steps * units(joined) * members
            if cost < best[j]:
                best[j], cut[j] = cost, i
    plan, j = {}, n
    while j > 0:
        i = cut[j]
        joined = _join_buckets(order[i:j])
        plan.update({b: joined for b in order[i:j]})
        j = i
    return plan


def pad(arrays: Mapping[str, np.ndarray], static: Mapping[str, Any], spec: PadSpec,
        bucket: tuple) -> tuple[dict, dict]:
    """Pad one dataset to ``bucket``: row arrays repeat row 0, a row mask is added.

    Row arrays of ``spec`` the dataset lacks are skipped (one dataset's exact reduction
    adds ``Intercept_col``, another's weights)."""
    rows, groups = bucket
    n = int(np.shape(arrays[spec.rows[0]])[0])
    out = dict(arrays)
    if spec.per_group is not None:
        _pad_groups(out, static, spec, rows, dict(groups))
    else:
        for name in (r for r in spec.rows if r in arrays):
            a = np.asarray(arrays[name])
            out[name] = np.concatenate([a, np.repeat(a[:1], rows - n, axis=0)]) if rows > n else a
    out[MASK] = np.arange(rows) < n
    padded_static = dict(static)
    if spec.row_count is not None:
        padded_static[spec.row_count] = rows
    padded_static.update(dict(groups))
    if spec.per_group is not None:
        padded_static[spec.per_group] = rows // dict(groups)[spec.groups[0][0]]
    return out, padded_static


def _pad_groups(out: dict, static: Mapping[str, Any], spec: PadSpec, rows: int, groups: Mapping[str, int]) -> None:
    """Pad blocked rows (``spec.per_group``) in place: each group's block widened to ``rows / groups``
    rows, then whole groups added, every new row zero (codes: its group; see :class:`PadSpec`)."""
    (name, codes), = spec.groups
    block, old, new = int(static[spec.per_group]), int(static[name]), int(groups[name])
    wide = rows // new
    n = int(np.shape(out[spec.rows[0]])[0])
    for key in (r for r in spec.rows if r in out):
        a = np.asarray(out[key])
        if key in codes:
            out[key] = np.repeat(np.arange(new), wide).astype(a.dtype)
            continue
        blocks = np.zeros((new, wide, *a.shape[1:]), a.dtype)
        if key in dict(spec.row_fill):  # rows that add nothing to the mean
            blocks[...] = np.asarray(out[dict(spec.row_fill)[key]], a.dtype)
        blocks[:old, :block] = a.reshape(old, block, *a.shape[1:])
        out[key] = blocks.reshape(rows, *a.shape[1:])
    for key in (g for g in spec.group_arrays if g in out):
        a = np.asarray(out[key])
        out[key] = np.concatenate([a, np.zeros((new - old, *a.shape[1:]), a.dtype)])
    if spec.dropped is not None:
        out[spec.dropped] = np.asarray(np.asarray(out[spec.dropped]) - (rows - n), np.asarray(out[spec.dropped]).dtype)


class RowMask(Messenger):
    """Mask observed sites along their first batch axis (the rows) with ``mask`` of shape (rows,)."""

    def __init__(self, fn=None, mask=None, observed=None):
        self.mask, self.observed = mask, observed
        super().__init__(fn)

    def process_message(self, msg) -> None:
        if msg["type"] != "sample" or not msg.get("is_observed"):
            return
        if self.observed is not None and msg["name"] not in self.observed:
            return
        batch = msg["fn"].batch_shape
        if not batch or batch[0] != self.mask.shape[0]:
            if self.observed is None:  # a factor or an observed site that is not per row
                return
            raise ValueError(
                f"observed site {msg['name']!r} has batch shape {tuple(batch)}, whose first axis is not the "
                f"{self.mask.shape[0]} (padded) rows, so padded rows cannot be masked. Declare the row "
                "arrays in rows=[...] and keep the rows as the first batch axis (no to_event over rows).")
        m = self.mask.reshape(self.mask.shape + (1,) * (len(batch) - 1))
        msg["fn"] = msg["fn"].mask(m)


_WRAPPED: dict[tuple, Callable] = {}


def masked_model(model: Callable, observed: tuple[str, ...] | None = None) -> Callable:
    """``model`` taking an extra ``_row_mask`` argument; one function per model (compile cache key)."""
    key = (model, observed)
    wrapped = _WRAPPED.get(key)
    if wrapped is None:
        def wrapped(_row_mask, **kwargs):
            with RowMask(mask=_row_mask, observed=observed):
                return model(**kwargs)
        wrapped.__name__ = wrapped.__qualname__ = f"masked_{getattr(model, '__name__', 'model')}"
        wrapped.masked, wrapped.observed = model, observed  # its identity is the wrapped model's
        _WRAPPED[key] = wrapped
    return wrapped


def site_shapes(model: Callable, arrays: Mapping[str, Any], static: Mapping[str, Any]) -> dict:
    """Abstract shapes of every latent and deterministic site (from the model's one abstract trace)."""
    return {n: jax.ShapeDtypeStruct(s.shape, s.dtype) for n, s in model_trace(model, arrays, static).stored().items()}


def group_axes(model: Callable, arrays: Mapping[str, Any], static: Mapping[str, Any],
               group_names: Sequence[str]) -> dict[str, dict[int, str]]:
    """``site -> {axis: group static}``: the site axes that grow with each group count."""
    base = site_shapes(model, arrays, static)
    out: dict[str, dict[int, str]] = {}
    for g in group_names:
        grown = site_shapes(model, arrays, {**static, g: static[g] + 1})
        for site, s in base.items():
            for axis, (a, b) in enumerate(zip(s.shape, grown[site].shape)):
                if a != b:
                    out.setdefault(site, {})[axis] = g
    return out


def dataset_keys(key: np.ndarray, indices: Sequence[int], num_chains: int) -> np.ndarray:
    """Chain keys (D, C, 2) of datasets ``indices``: ``split(fold_in(key, d), C)``, as a single fit of
    dataset ``d`` with key ``fold_in(key, d)`` would use (made on the host: :mod:`bhmjax._src.keys`)."""
    return np.stack([keys.split(keys.fold_in(key, int(d)), num_chains) for d in indices])


# ---------------------------------------------------------------- diagnostics, vmapped


def _batch_stats(x, prob):
    return jax.vmap(lambda a: summary_stats(a, prob=prob))(x)


def batch_summary(draws: Mapping[str, np.ndarray], prob: float = 0.94,
                  max_width: int = 64) -> dict[str, dict[str, np.ndarray]]:
    """Per site, summary statistics of every dataset at once: draws (D, C, S, *shape) ->
    ``{site: {stat: (D, *shape)}}`` (mean, sd, hdi, mcse, ess_bulk, ess_tail, r_hat).

    Every site's columns go through one program in blocks of ``max_width`` columns of
    every dataset at most (the caller's memory budget; compiled once per bucket shape and
    run once: compiled fast, see :func:`bhmjax._src.engine.compiler_options`).
    """
    from bhmjax._src import engine

    if not draws:
        return {}
    first = next(iter(draws.values()))
    d, c, s = first.shape[:3]
    widths = [max(1, math.prod(x.shape[3:])) for x in draws.values()]
    total = sum(widths)
    width = min(max(1, int(max_width)), 1 << max(0, total - 1).bit_length())
    flat = np.zeros((d, c, s, total + -total % width), jnp.result_type(float))  # the columns, padded to blocks
    start = 0
    for x, w in zip(draws.values(), widths):
        flat[..., start:start + w] = np.asarray(x).reshape(d, c, s, w)
        start += w
    pieces = []
    for start in range(0, flat.shape[-1], width):
        block = np.ascontiguousarray(flat[..., start:start + width])
        program = engine.compiled("summary", partial(_batch_stats, prob=prob), ("batch_summary", prob), block)
        pieces.append({k: np.asarray(v) for k, v in program(block).items()})
    stats = {k: np.concatenate([p[k] for p in pieces], axis=1)[:, :total] for k in pieces[0]}
    out, start = {}, 0
    for (site, x), w in zip(draws.items(), widths):
        out[site] = {k: v[:, start:start + w].reshape(d, *x.shape[3:]) for k, v in stats.items()}
        start += w
    return out
