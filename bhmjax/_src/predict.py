"""Predictions from posterior draws in pure JAX: over draws, new groups, in chunks.

Every function takes the draws as a dict ``params`` of stacked arrays whose leading
axis ``S`` runs over draws (chains and draws flattened), and the rows as design arrays
(``X`` (N, K), ``Z_i`` (N, K_i), ``codes_i`` (N,), ``trials`` and ``y`` (N,)) built by
``Model.design``. One draw gives the linear predictor of
:func:`bhmjax._src.models.linear_predictor`; ``jax.vmap`` maps it over draws and one
jit-compiled function serves every chunk of rows and draws (the last chunk is padded),
so N = 10^6 rows never loop in Python over rows or draws and the working memory of a
chunk stays under ``max_bytes``.

Unseen groups. A level not seen in training (code >= G) takes an effect drawn from
the fitted population, once per draw and level (Gelman and Hill 2007, sec. 12.8;
brms' ``sample_new_levels="gaussian"``)::

    r_new = eps @ (diag(sd) L)^T,   eps ~ Normal(0, I_K),

so ``cov(r_new) = diag(sd) L L^T diag(sd)`` with ``L`` the Cholesky factor of the
correlation (``L = I`` for independent effects).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from bhmjax._src.families import FAMILIES
from bhmjax._src.models import ModelStructure, linear_predictor

__all__ = ["KINDS", "new_group_effects", "extend_group_effects", "population_structure",
           "chunk_sizes", "predict_draws", "log_mean_exp"]

KINDS = ("linear_predictor", "mean", "response", "log_likelihood")


def new_group_effects(key: jax.Array, sd: jax.Array, chol: jax.Array | None, num_new: int) -> jax.Array:
    """Effects of ``num_new`` unseen groups for one draw, shape (num_new, K).

    ``r = eps @ (diag(sd) L)^T`` with ``eps ~ Normal(0, 1)`` of shape (num_new, K);
    ``chol=None`` means independent effects (``r = eps * sd``).
    """
    eps = jax.random.normal(key, (num_new, sd.shape[-1]), dtype=sd.dtype)
    if chol is None:
        return eps * sd
    return eps @ (sd[:, None] * chol).T


@functools.partial(jax.jit, static_argnames=("num_new", "correlated"))
def _new_effects_all(key, sd, chol, num_new: int, correlated: bool):
    keys = jax.random.split(key, sd.shape[0])
    if correlated:
        return jax.vmap(lambda k, s, c: new_group_effects(k, s, c, num_new))(keys, sd, chol)
    return jax.vmap(lambda k, s: new_group_effects(k, s, None, num_new))(keys, sd)


def extend_group_effects(key: jax.Array, structure: ModelStructure, params: Mapping[str, Any],
                         num_new: tuple[int, ...]) -> dict[str, jax.Array]:
    """``params`` with each ``r_<g>`` (S, G, K) extended to (S, G + num_new[i], K).

    The new rows are drawn from the population of each draw (``sd_<g>`` (S, K) and, for
    correlated terms, ``L_<g>`` (S, K, K)); groupings are given independent keys.
    """
    out = dict(params)
    keys = jax.random.split(key, max(len(structure.groups), 1))
    for i, g in enumerate(structure.groups):
        m = int(num_new[i]) if i < len(num_new) else 0
        if m == 0:
            continue
        sd = jnp.asarray(params[f"sd_{g.name}"])
        chol = jnp.asarray(params[f"L_{g.name}"]) if g.correlated else None
        new = _new_effects_all(keys[i], sd, chol, m, g.correlated)
        out[f"r_{g.name}"] = jnp.concatenate([jnp.asarray(params[f"r_{g.name}"]), new], axis=1)
    return out


def population_structure(structure: ModelStructure) -> ModelStructure:
    """The structure without its group terms: every group effect set to zero."""
    return dataclasses.replace(structure, groups=())


def _one_draw(structure: ModelStructure, kind: str, num_rows: int, key, params, rows):
    family = FAMILIES[structure.family]
    eta = linear_predictor(structure, params, {**rows, "N": num_rows})
    if kind == "linear_predictor":
        return eta
    if kind == "mean":
        return family.inverse_link(eta)
    trials = rows.get("trials")
    if kind == "response" and trials is not None:
        trials = trials.astype(jnp.int32)  # NumPyro's binomial sampler indexes tables by the count
    dist = family.likelihood(eta, {p: params[p] for p in family.params}, trials)
    if kind == "log_likelihood":
        return dist.log_prob(rows["y"])
    y = dist.sample(key)
    return y.astype(jnp.int32) if family.kind != "real" else y


@functools.partial(jax.jit, static_argnames=("structure", "kind", "num_rows"))
def _chunk(key, params, rows, *, structure: ModelStructure, kind: str, num_rows: int):
    keys = jax.random.split(key, jax.tree_util.tree_leaves(params)[0].shape[0])
    return jax.vmap(lambda k, p: _one_draw(structure, kind, num_rows, k, p, rows))(keys, params)


def chunk_sizes(num_draws: int, num_rows: int, bytes_per_cell: int, max_bytes: int) -> tuple[int, int]:
    """(draws, rows) per chunk so that draws * rows * bytes_per_cell <= max_bytes.

    All draws go in one chunk when a single row of them fits; rows are then chunked.
    Row chunks are powers of two (the last one padded), so calls with similar numbers
    of rows share one compiled program.
    """
    cells = max(1, int(max_bytes) // max(1, int(bytes_per_cell)))
    draws = max(1, min(num_draws, cells))
    fit_rows = max(1, cells // draws)
    rows = min(1 << (max(num_rows, 1) - 1).bit_length(), 1 << (fit_rows.bit_length() - 1))
    return draws, rows


def _bytes_per_cell(structure: ModelStructure, kind: str, itemsize: int) -> int:
    """Working bytes per (draw, row) cell: gathered effects, the predictor, sampler temporaries."""
    k = sum(len(g.columns) for g in structure.groups) + len(structure.slopes)
    return itemsize * (2 * k + (24 if kind == "response" else 8))


def _slice_pad(array: np.ndarray, start: int, size: int) -> np.ndarray:
    """``array[start:start + size]`` padded to ``size`` rows by repeating its first row."""
    part = array[start:start + size]
    if part.shape[0] < size:
        fill = np.repeat(part[:1], size - part.shape[0], axis=0)
        part = np.concatenate([part, fill], axis=0)
    return part


def _out_dtype(structure: ModelStructure, kind: str, float_dtype) -> np.dtype:
    if kind == "response" and FAMILIES[structure.family].kind != "real":
        return np.dtype(np.int32)
    return np.dtype(float_dtype)


def predict_draws(key: jax.Array, structure: ModelStructure, params: Mapping[str, np.ndarray],
                  rows: Mapping[str, np.ndarray], num_rows: int, *, kind: str = "response",
                  max_bytes: int = 256 * 2**20) -> np.ndarray:
    """Predictions for every draw and row, shape (S, num_rows), computed chunk by chunk.

    Parameters
    ----------
    key : jax.Array
        PRNG key of the response draws (``kind="response"``).
    structure : ModelStructure
        Static; :func:`population_structure` for predictions without group effects.
    params : dict of str -> array (S, ...)
        ``Intercept``, ``b``, ``r_<g>`` (extended for new groups) and the family's
        parameters, stacked over S draws.
    rows : dict of str -> array (num_rows, ...)
        ``X``, ``Z_i``, ``codes_i``; ``trials`` (binomial), ``y`` (log-likelihood).
    kind : {"linear_predictor", "mean", "response", "log_likelihood"}
        Linear predictor; mean of the response (per trial for binomial); a response
        draw (int32 for counts and 0/1); the log density of ``rows["y"]``.
    max_bytes : int
        Bound on the working memory of one chunk on the device.

    Returns
    -------
    np.ndarray, shape (S, num_rows)
        float (the params' dtype) or int32 for discrete responses.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(dict(params))]
    num_draws = leaves[0].shape[0] if leaves else 1
    float_dtype = leaves[0].dtype if leaves else np.float32
    per_cell = _bytes_per_cell(structure, kind, np.dtype(float_dtype).itemsize)
    s_chunk, n_chunk = chunk_sizes(num_draws, num_rows, per_cell, max_bytes)
    out = np.empty((num_draws, num_rows), dtype=_out_dtype(structure, kind, float_dtype))
    rows = {k: np.asarray(v) for k, v in rows.items() if k != "N"}
    row_starts = range(0, num_rows, n_chunk)
    for d, s0 in enumerate(range(0, num_draws, s_chunk)):
        p = jax.tree_util.tree_map(lambda a: _slice_pad(np.asarray(a), s0, s_chunk), dict(params))
        s_len = min(s_chunk, num_draws - s0)
        for r, r0 in enumerate(row_starts):
            chunk_rows = {k: _slice_pad(v, r0, n_chunk) for k, v in rows.items()}
            chunk_key = jax.random.fold_in(jax.random.fold_in(key, d), r)
            values = _chunk(chunk_key, p, chunk_rows, structure=structure, kind=kind, num_rows=n_chunk)
            r_len = min(n_chunk, num_rows - r0)
            out[s0:s0 + s_len, r0:r0 + r_len] = np.asarray(values)[:s_len, :r_len]
    return out


def log_mean_exp(log_lik: np.ndarray, axis=(0, 1)) -> np.ndarray:
    """``log mean_s exp(log_lik)`` over the draw axes, stable (the pointwise lpd)."""
    ll = np.asarray(log_lik, dtype=np.float64)
    m = np.max(ll, axis=axis, keepdims=True)
    n = math.prod(ll.shape[a] for a in (axis if isinstance(axis, tuple) else (axis,)))
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(ll - m), axis=axis) / n)
