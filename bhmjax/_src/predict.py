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

from bhmjax._src import sites
from bhmjax._src.families import DPARS, FAMILIES
from bhmjax._src.families.censoring import Censored
from bhmjax._src.models import (ModelStructure, all_groups, family_parameters, linear_predictors,
                                mean_predictor)

__all__ = ["KINDS", "new_group_effects", "extend_group_effects", "population_structure", "needed_sites",
           "dpars_of", "trailing_shape", "chunk_sizes", "predict_draws", "log_mean_exp"]

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
    """``params`` with each ``r_<g>`` (S, G, K) extended to (S, G + num_new[t], K), t its data term.

    The new rows are drawn from the population of each draw (``sd_<g>`` (S, K) and, for
    correlated terms, ``L_<g>`` (S, K, K)); group terms are given independent keys.
    """
    out = dict(params)
    groups = all_groups(structure)
    keys = jax.random.split(key, max(len(groups), 1))
    for i, g in enumerate(groups):
        m = int(num_new[g.term]) if g.term < len(num_new) else 0
        if m == 0:
            continue
        sd = jnp.asarray(params[f"sd_{g.name}"])
        chol = jnp.asarray(params[f"L_{g.name}"]) if g.correlated else None
        new = _new_effects_all(keys[i], sd, chol, m, g.correlated)
        out[f"r_{g.name}"] = jnp.concatenate([jnp.asarray(params[f"r_{g.name}"]), new], axis=1)
    return out


def population_structure(structure: ModelStructure) -> ModelStructure:
    """The structure without its group terms (in every predictor): every group effect set to zero."""
    dpars = tuple(dataclasses.replace(p, groups=()) for p in structure.dpars)
    return dataclasses.replace(structure, groups=(), dpars=dpars)


def dpars_of(structure: ModelStructure) -> tuple[str, ...]:
    """The parameters ``dpar=`` can ask for: "mu" (or the categories' "mu<level>") and the family's."""
    mean = (sites.MU,) if not structure.categories else structure.categories
    return mean + FAMILIES[structure.family].params


def needed_sites(structure: ModelStructure, kind: str, new_terms: tuple[int, ...] = (),
                 dpar: str | None = None) -> list[str]:
    """The draws a prediction of ``kind`` reads (with ``sd``/``L`` of terms that get new groups)."""
    out = []
    for p in structure.predictors():
        out += [sites.intercept_site(p.dpar)] if p.intercept else []
        out += [sites.b_site(p.dpar)] if p.slopes else []
        for g in p.groups:
            out.append(f"r_{g.name}")
            if g.term in new_terms:
                out += [f"sd_{g.name}"] + ([f"L_{g.name}"] if g.correlated else [])
        out += [f"s_{sm.name}" for sm in p.smooths]
    if kind != "linear_predictor" or dpar not in (None, sites.MU):
        out += [name for name, _ in structure.family_priors]
    return list(dict.fromkeys(out))


def trailing_shape(structure: ModelStructure, kind: str, dpar: str | None) -> tuple[int, ...]:
    """Per-row output shape: (K,) for the category probabilities / logits of the whole response."""
    if dpar is not None or kind in ("response", "log_likelihood"):
        return ()
    if structure.categories:
        return (len(structure.categories) + 1,)
    if structure.thresholds and kind == "mean":
        return (structure.thresholds + 1,)
    return ()


def _dpar_value(structure, kind, dpar, etas, fparams, family, num_rows):
    """A single parameter per row: its linear predictor, or its value (a category's probability)."""
    if dpar in structure.categories:
        if kind == "linear_predictor":
            return etas[dpar]
        probs = family.mean(mean_predictor(structure, etas), fparams)
        return probs[:, structure.categories.index(dpar) + 1]
    if kind == "linear_predictor" and dpar in etas:
        return etas[dpar]
    value = jnp.broadcast_to(fparams[dpar], (num_rows,))
    if kind == "linear_predictor":  # a scalar parameter on its link scale
        return jnp.log(value) if DPARS[dpar][0] == "log" else jnp.log(value) - jnp.log1p(-value)
    return value


def _row_loglik(family, d, rows):
    y = rows["y"]
    if family.kind in ("ordinal", "categorical"):
        y = y.astype(jnp.int32)
    if "cens" in rows:
        d = Censored(d, rows["cens"], rows["cens_upper"])
    ll = d.log_prob(y)
    return ll * rows["weights"] if "weights" in rows else ll  # brms: weighted pointwise log-likelihood


def _one_draw(structure: ModelStructure, kind: str, num_rows: int, dpar, key, params, rows):
    family = FAMILIES[structure.family]
    etas = linear_predictors(structure, params, {**rows, "N": num_rows})
    fparams = {}
    if kind != "linear_predictor" or dpar not in (None, sites.MU):
        fparams = family_parameters(structure, etas, {name: params[name] for name, _ in structure.family_priors})
    if dpar is not None and dpar != sites.MU:
        return _dpar_value(structure, kind, dpar, etas, fparams, family, num_rows)
    eta = mean_predictor(structure, etas)
    if kind == "linear_predictor":
        return eta
    if kind == "mean":
        return family.mean(eta, fparams)
    trials = rows.get("trials")
    if kind == "response" and trials is not None:
        trials = trials.astype(jnp.int32)  # NumPyro's binomial sampler indexes tables by the count
    d = family.likelihood(eta, fparams, trials)
    if kind == "log_likelihood":
        return _row_loglik(family, d, rows)
    y = d.sample(key)
    return y.astype(jnp.int32) if family.discrete else y


@functools.partial(jax.jit, static_argnames=("structure", "kind", "num_rows", "dpar"))
def _chunk(key, params, rows, *, structure: ModelStructure, kind: str, num_rows: int, dpar: str | None):
    keys = jax.random.split(key, jax.tree_util.tree_leaves(params)[0].shape[0])
    return jax.vmap(lambda k, p: _one_draw(structure, kind, num_rows, dpar, k, p, rows))(keys, params)


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
    """Working bytes per (draw, row) cell: gathered effects, the predictors, sampler temporaries."""
    k = sum(len(g.columns) for g in all_groups(structure))
    k += sum(len(p.slopes) + sum(sm.size for sm in p.smooths) for p in structure.predictors())
    levels = max(len(structure.categories) + 1, structure.thresholds + 1, 1)
    return itemsize * (2 * k + levels * (24 if kind == "response" else 8))


def _slice_pad(array: np.ndarray, start: int, size: int) -> np.ndarray:
    """``array[start:start + size]`` padded to ``size`` rows by repeating its first row."""
    part = array[start:start + size]
    if part.shape[0] < size:
        fill = np.repeat(part[:1], size - part.shape[0], axis=0)
        part = np.concatenate([part, fill], axis=0)
    return part


def _out_dtype(structure: ModelStructure, kind: str, float_dtype) -> np.dtype:
    if kind == "response" and FAMILIES[structure.family].discrete:
        return np.dtype(np.int32)
    return np.dtype(float_dtype)


def predict_draws(key: jax.Array, structure: ModelStructure, params: Mapping[str, np.ndarray],
                  rows: Mapping[str, np.ndarray], num_rows: int, *, kind: str = "response",
                  dpar: str | None = None, max_bytes: int = 256 * 2**20) -> np.ndarray:
    """Predictions for every draw and row, shape (S, num_rows), computed chunk by chunk.

    Parameters
    ----------
    key : jax.Array
        PRNG key of the response draws (``kind="response"``).
    structure : ModelStructure
        Static; :func:`population_structure` for predictions without group effects.
    params : dict of str -> array (S, ...)
        The sites of :func:`needed_sites` (``r_<g>`` extended for new groups), stacked
        over S draws.
    rows : dict of str -> array (num_rows, ...)
        ``X<d>``, ``Z_t``, ``codes_t``, ``Zs_t``, ``offset<d>``; ``trials`` (binomial),
        ``y`` (and ``weights``, ``cens``, ``cens_upper``) for the log-likelihood.
    kind : {"linear_predictor", "mean", "response", "log_likelihood"}
        Linear predictor; mean of the response (per trial for binomial; category
        probabilities for ordinal and categorical); a response draw (int32 for counts,
        0/1 and category codes); the (weighted, censored) log density of ``rows["y"]``.
    dpar : str, optional
        One parameter instead of the response: its linear predictor (``kind=
        "linear_predictor"``) or its value per row (``"mean"``); see :func:`dpars_of`.
    max_bytes : int
        Bound on the working memory of one chunk on the device.

    Returns
    -------
    np.ndarray, shape (S, num_rows, *trailing_shape(structure, kind, dpar))
        float (the params' dtype) or int32 for discrete responses.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(dict(params))]
    num_draws = leaves[0].shape[0] if leaves else 1
    float_dtype = leaves[0].dtype if leaves else np.float32
    per_cell = _bytes_per_cell(structure, kind, np.dtype(float_dtype).itemsize)
    s_chunk, n_chunk = chunk_sizes(num_draws, num_rows, per_cell, max_bytes)
    trailing = trailing_shape(structure, kind, dpar)
    out = np.empty((num_draws, num_rows, *trailing), dtype=_out_dtype(structure, kind, float_dtype))
    rows = {k: np.asarray(v) for k, v in rows.items() if k != "N"}
    row_starts = range(0, num_rows, n_chunk)
    for d, s0 in enumerate(range(0, num_draws, s_chunk)):
        p = jax.tree_util.tree_map(lambda a: _slice_pad(np.asarray(a), s0, s_chunk), dict(params))
        s_len = min(s_chunk, num_draws - s0)
        for r, r0 in enumerate(row_starts):
            chunk_rows = {k: _slice_pad(v, r0, n_chunk) for k, v in rows.items()}
            chunk_key = jax.random.fold_in(jax.random.fold_in(key, d), r)
            values = _chunk(chunk_key, p, chunk_rows, structure=structure, kind=kind, num_rows=n_chunk,
                            dpar=dpar)
            r_len = min(n_chunk, num_rows - r0)
            out[s0:s0 + s_len, r0:r0 + r_len] = np.asarray(values)[:s_len, :r_len]
    return out


def log_mean_exp(log_lik: np.ndarray, axis=(0, 1)) -> np.ndarray:
    """``log mean_s exp(log_lik)`` over the draw axes, stable (the pointwise lpd)."""
    ll = np.asarray(log_lik, dtype=np.float64)
    m = np.max(ll, axis=axis, keepdims=True)
    n = math.prod(ll.shape[a] for a in (axis if isinstance(axis, tuple) else (axis,)))
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(ll - m), axis=axis) / n)
