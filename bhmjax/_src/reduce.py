"""Exact data reduction: likelihoods from per-cell sufficient statistics.

A *cell* is a set of rows that share every group level (and, for counts, every
covariate). Within a cell the linear predictor of row ``i`` is ``w_i @ beta_cell``
with ``w_i = [1, X_i, Z_i]`` and ``beta_cell`` the population coefficients and the
cell's group effects stacked. Then

* Gaussian: ``sum_i log N(y_i | w_i beta, sigma)`` equals
  ``-n/2 log(2 pi sigma^2) - (yy - 2 beta.s + beta' S beta) / (2 sigma^2)`` summed over
  cells, with ``n`` rows, ``yy = sum y^2``, ``s = sum w y`` and ``S = sum w w'``; a
  gradient costs O(cells k^2) instead of O(rows k).
* Bernoulli/binomial/Poisson rows with identical covariates and groups share one
  success probability or rate, so they add up to one binomial/Poisson count: the
  successes and trials of a cell sum to one ``Binomial(sum n, p)`` row, and ``n``
  Poisson counts to one ``Poisson(n lambda)`` row (log rate plus ``log n``). The sum
  is sufficient (given it, the rows' split does not depend on ``p`` or ``lambda``), so
  the log likelihood changes by a constant only and the posterior is the same; a
  gradient costs O(cells) instead of O(rows).

Everything here is numpy on concrete data (done once, before compiling), except
:func:`gaussian_cell_loglik`, which is the jit-able likelihood.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from scipy.special import gammaln

__all__ = ["GaussianCells", "PseudoRows", "gaussian_cells", "gaussian_cell_loglik", "gaussian_pseudo_rows",
           "gaussian_blocks", "reduce_gaussian_data", "block_gaussian_data", "aggregate_counts", "reduce_count_data",
           "merge_identical_rows", "worth_reducing", "COUNT_FAMILIES"]

#: Families whose rows sum exactly into one count per cell (see :func:`reduce_count_data`).
COUNT_FAMILIES = ("bernoulli", "binomial", "poisson")


class GaussianCells(NamedTuple):
    """Sufficient statistics of a Gaussian response per cell.

    Attributes
    ----------
    n : (C,) rows per cell
    yy : (C,) sum of y^2
    wy : (C, k) sum of w * y
    ww : (C, k, k) sum of w w'
    codes : (C, n_groupings) each cell's group code per grouping
    """

    n: np.ndarray
    yy: np.ndarray
    wy: np.ndarray
    ww: np.ndarray
    codes: np.ndarray


def _cells(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of ``keys`` (N, m) and each row's cell index."""
    if keys.shape[1] == 0:
        return np.zeros((1, 0), keys.dtype), np.zeros(len(keys), np.int64)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    return unique, inverse.reshape(-1)


def gaussian_cells(y: np.ndarray, w: np.ndarray, codes: np.ndarray) -> GaussianCells:
    """Per-cell statistics, accumulated in float64.

    Parameters
    ----------
    y : (N,) response
    w : (N, k) row features: every column the linear predictor multiplies
    codes : (N, m) group codes per grouping (cells are their unique combinations)
    """
    y = np.asarray(y, np.float64)
    w = np.asarray(w, np.float64)
    unique, cell = _cells(np.asarray(codes).reshape(len(y), -1))
    num_cells, k = len(unique), w.shape[1]
    n = np.bincount(cell, minlength=num_cells).astype(np.float64)
    yy = np.bincount(cell, weights=y * y, minlength=num_cells)
    wy = np.zeros((num_cells, k))
    np.add.at(wy, cell, w * y[:, None])
    ww = np.zeros((num_cells, k, k))
    np.add.at(ww, cell, w[:, :, None] * w[:, None, :])
    return GaussianCells(n=n, yy=yy, wy=wy, ww=ww, codes=unique)


def gaussian_cell_loglik(beta: jnp.ndarray, sigma: jnp.ndarray, n: jnp.ndarray, yy: jnp.ndarray,
                         wy: jnp.ndarray, ww: jnp.ndarray) -> jnp.ndarray:
    """Total Gaussian log likelihood from cell statistics.

    Parameters
    ----------
    beta : (C, k) coefficients of each cell (population and group effects stacked)
    sigma : () residual sd
    n, yy, wy, ww : the :class:`GaussianCells` arrays

    Returns
    -------
    () the sum over every row of ``log N(y | w beta, sigma)``.
    """
    quad = yy - 2.0 * jnp.sum(beta * wy, axis=-1) + jnp.einsum("ci,cij,cj->c", beta, ww, beta)
    total_n = jnp.sum(n)
    return -0.5 * total_n * jnp.log(2.0 * jnp.pi * sigma**2) - 0.5 * jnp.sum(quad) / sigma**2


class PseudoRows(NamedTuple):
    """A Gaussian likelihood compressed to at most k rows per cell.

    ``sum_rows log N(y | w beta, sigma)`` equals
    ``sum_pseudo log N(y' | w' beta, sigma) - rss / (2 sigma^2) - (n - n') / 2 log(2 pi sigma^2)``
    for every ``beta`` and ``sigma``: per cell, ``w'`` is a square root of ``W'W``
    (``w'^T w' = W'W``) and ``y'`` solves ``w'^T y' = W'y``, so the pseudo rows
    reproduce every cross-product the likelihood depends on.

    Attributes
    ----------
    y : (M,) pseudo responses
    w : (M, k) pseudo features
    codes : (M, m) the cell's group codes, per pseudo row
    rss : () ``sum y^2 - sum y'^2`` (>= 0), the part of the residual sum of squares no beta can explain
    num_dropped : () ``n - M``, rows the compression removed
    """

    y: np.ndarray
    w: np.ndarray
    codes: np.ndarray
    rss: float
    num_dropped: int


def gaussian_pseudo_rows(y: np.ndarray, w: np.ndarray, codes: np.ndarray, rtol: float = 1e-10) -> PseudoRows:
    """Compress rows that share group levels into at most ``rank(W'W)`` pseudo rows per cell.

    The square root is ``Lambda^{1/2} V'`` of the eigendecomposition ``W'W = V Lambda V'``,
    keeping the eigenvalues above ``rtol`` times the largest (duplicated columns,
    such as a population and a group intercept, leave the rank below k).
    """
    cells = gaussian_cells(y, w, codes)
    vals, vecs = np.linalg.eigh(cells.ww)  # ascending, (C, k), (C, k, k)
    keep = vals > rtol * np.maximum(vals[:, -1:], 1e-300)
    rank = int(keep.sum(axis=1).max())
    vals, vecs, keep = vals[:, -rank:], vecs[:, :, -rank:], keep[:, -rank:]
    root = np.sqrt(np.where(keep, vals, 0.0))
    w_new = np.swapaxes(vecs, 1, 2) * root[:, :, None]  # (C, rank, k) = Lambda^1/2 V'
    proj = np.einsum("ckr,ck->cr", vecs, cells.wy)  # V' s
    y_new = np.where(keep, proj / np.where(keep, root, 1.0), 0.0)  # Lambda^-1/2 V' s
    used = keep.reshape(-1)
    rss = float(cells.yy.sum() - np.sum(y_new**2))
    return PseudoRows(
        y=y_new.reshape(-1)[used], w=w_new.reshape(-1, w.shape[1])[used],
        codes=np.repeat(cells.codes, rank, axis=0)[used],
        rss=max(rss, 0.0), num_dropped=int(len(y) - used.sum()),
    )


def gaussian_blocks(y: np.ndarray, w: np.ndarray, codes: np.ndarray, num_groups: int, lead: int,
                    rtol: float = 1e-10) -> tuple[PseudoRows, int]:
    """Every group's rows as exactly ``k`` pseudo rows whose first ``lead`` features are upper triangular.

    The pseudo rows of a group (``Lambda^{1/2} V'`` of its ``W'W``, zero rows where the
    rank is short, see :func:`gaussian_pseudo_rows`) are rotated by the orthogonal ``Q'``
    of the QR decomposition of their first ``lead`` columns: cross-products are kept, and
    rows ``>= lead`` have those columns exactly 0. A grouping's effects on those columns
    then see each group's residual coordinates as its first ``lead`` rows
    (``marginal.py``, ``block=k``), with no scatter or gather. ``k = max(lead, rank)``;
    groups without rows get zero rows. Returns the rows (group ``j`` in rows
    ``j k .. j k + k - 1``) and ``k``.
    """
    codes = np.asarray(codes).reshape(-1)
    cells = gaussian_cells(y, w, codes[:, None])
    m = w.shape[1]
    vals, vecs = np.linalg.eigh(cells.ww)
    keep = vals > rtol * np.maximum(vals[:, -1:], 1e-300)
    k = max(lead, int(keep.sum(axis=1).max()))
    vals, vecs, keep = vals[:, -k:], vecs[:, :, -k:], keep[:, -k:]
    root = np.sqrt(np.where(keep, vals, 0.0))
    rows = np.swapaxes(vecs, 1, 2) * root[:, :, None]  # (C, k, m)
    proj = np.einsum("ckr,ck->cr", vecs, cells.wy)
    y_new = np.where(keep, proj / np.where(keep, root, 1.0), 0.0)  # (C, k)
    rot = np.linalg.qr(rows[:, :, :lead], mode="complete")[0]  # (C, k, k)
    rows = np.einsum("cji,cjm->cim", rot, rows)
    y_new = np.einsum("cji,cj->ci", rot, y_new)
    rows[:, lead:, :lead] = 0.0
    out_w, out_y = np.zeros((num_groups, k, m)), np.zeros((num_groups, k))
    out_w[cells.codes[:, 0]], out_y[cells.codes[:, 0]] = rows, y_new
    rss = float(cells.yy.sum() - np.sum(y_new**2))
    pseudo = PseudoRows(y=out_y.reshape(-1), w=out_w.reshape(-1, m),
                        codes=np.repeat(np.arange(num_groups), k)[:, None], rss=max(rss, 0.0),
                        num_dropped=int(len(y) - num_groups * k))
    return pseudo, k


def _features(data: dict, intercept: bool, num_terms: int):
    """Rows' features ``[1, X - X_mean, Z_0, ...]`` (float64), group codes, X_mean and term widths."""
    n = len(np.asarray(data["y"]))
    parts = [np.ones((n, 1))] if intercept else []
    x_mean = None
    if "X" in data:  # the model centres X only beside an intercept
        x_mean = np.asarray(data["X_mean"], np.float64) if intercept else np.zeros(np.shape(data["X"])[1])
        parts.append(np.asarray(data["X"], np.float64) - x_mean)
    z = [np.asarray(data[f"Z_{i}"], np.float64) for i in range(num_terms)]
    codes = np.stack([np.asarray(data[f"codes_{i}"]) for i in range(num_terms)], axis=1) if num_terms \
        else np.zeros((n, 0), np.int64)
    return np.concatenate(parts + z, axis=1), codes, x_mean, [zi.shape[1] for zi in z]


def _pseudo_data(data: dict, pseudo: PseudoRows, intercept: bool, x_mean, widths) -> dict:
    """``data`` with its rows replaced by ``pseudo`` (the model's own keys, in ``y``'s dtype)."""
    f = np.asarray(data["y"]).dtype
    out = dict(data)
    out["N"] = len(pseudo.y)
    out["y"] = pseudo.y.astype(f)
    col = 0
    if intercept:
        out["Intercept_col"] = pseudo.w[:, 0].astype(f)
        col = 1
    if x_mean is not None:
        k = x_mean.shape[0]
        out["X"] = (pseudo.w[:, col:col + k] + x_mean).astype(f)
        col += k
    for i, k in enumerate(widths):
        out[f"Z_{i}"] = pseudo.w[:, col:col + k].astype(f)
        out[f"codes_{i}"] = pseudo.codes[:, i].astype(np.int32)
        col += k
    out["reduction:rss"] = np.asarray(pseudo.rss, f)
    out["reduction:dropped"] = np.asarray(pseudo.num_dropped, f)
    return out


def reduce_gaussian_data(data: dict, intercept: bool, num_terms: int, pays_only: bool = True) -> dict | None:
    """Formula-model data (see ``models.py``) with its rows replaced by pseudo rows.

    Returns None when the compression would not pay (see :func:`worth_reducing`) and
    ``pays_only``; there are never more pseudo rows than rows.
    The result is the same model's data: ``Intercept_col`` carries the intercept's
    pseudo feature, ``X`` keeps ``X_mean`` added back (the model centres it again),
    and ``reduction:rss`` / ``reduction:dropped`` feed the likelihood's correction.
    """
    w, codes, x_mean, widths = _features(data, intercept, num_terms)
    num_cells = len(np.unique(codes, axis=0)) if num_terms else 1
    if pays_only and not worth_reducing(len(w), num_cells, w.shape[1]):
        return None
    pseudo = gaussian_pseudo_rows(np.asarray(data["y"], np.float64), w, codes)
    return _pseudo_data(data, pseudo, intercept, x_mean, widths)


def block_gaussian_data(data: dict, intercept: bool) -> dict:
    """Formula-model data of one group term with every group's rows as ``k`` pseudo rows.

    See :func:`gaussian_blocks`: the term's columns lead, so its integrated effects
    (``marginal.py``) read each group's residual coordinates from its first rows. Adds
    ``marginal:block`` = ``k`` (static) to the data of :func:`reduce_gaussian_data`.
    """
    w, codes, x_mean, widths = _features(data, intercept, 1)
    q = widths[0]
    order = np.r_[w.shape[1] - q:w.shape[1], 0:w.shape[1] - q]  # the term's columns first
    pseudo, k = gaussian_blocks(np.asarray(data["y"], np.float64), w[:, order], codes[:, 0], int(data["G_0"]), q)
    pseudo = pseudo._replace(w=pseudo.w[:, np.argsort(order)])
    out = _pseudo_data(data, pseudo, intercept, x_mean, widths)
    out["marginal:block"] = k
    return out


def aggregate_counts(y: np.ndarray, trials: np.ndarray | None, features: np.ndarray,
                     codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Rows that share covariates and group levels merged into one count.

    Returns the summed response, the summed trials (for Bernoulli rows, each row
    is one trial; None for Poisson, whose merged rows carry an ``exposure`` equal to
    the number of rows, returned in place of trials), and the unique features and
    codes.
    """
    codes = np.asarray(codes).reshape(len(y), -1)
    keys = np.concatenate([np.asarray(features, np.float64), codes.astype(np.float64)], axis=1)
    unique, cell = _cells(keys)
    num = len(unique)
    total = np.bincount(cell, weights=np.asarray(y, np.float64), minlength=num)
    if trials is None:
        size = np.bincount(cell, minlength=num).astype(np.float64)
    else:
        size = np.bincount(cell, weights=np.asarray(trials, np.float64), minlength=num)
    k = features.shape[1]
    return total, size, unique[:, :k], unique[:, k:].astype(np.int32)


def reduce_count_data(data: dict, family: str, num_terms: int, pays_only: bool = True) -> dict | None:
    """Formula-model data (see ``models.py``) with rows summed into one count per cell.

    A cell is a unique combination of the population design row ``X``, every
    grouping's code and every group term's columns ``Z_i``: its rows have the same
    linear predictor. ``family`` is "bernoulli", "binomial" or "poisson". The result
    holds one row per cell: ``y`` the summed response and, for bernoulli and
    binomial, ``trials`` the summed trials (the model then uses the binomial
    likelihood, see ``models._glmm``); for poisson, ``reduction:offset`` = log(rows in
    the cell), added to the log rate inside the likelihood only. ``X_mean`` and the
    priors are kept, so the parameters mean what they mean on the rows.

    Returns None when the cells are not well under the rows (see :func:`worth_reducing`)
    and ``pays_only``.
    """
    if family not in COUNT_FAMILIES:
        raise ValueError(f"no count aggregation for the {family!r} family; it applies to {COUNT_FAMILIES}.")
    y = np.asarray(data["y"], np.float64)
    n = len(y)
    x = np.asarray(data["X"], np.float64) if "X" in data else np.zeros((n, 0))
    z = [np.asarray(data[f"Z_{i}"], np.float64) for i in range(num_terms)]
    features = np.concatenate([x] + z, axis=1)
    codes = (np.stack([np.asarray(data[f"codes_{i}"]) for i in range(num_terms)], axis=1) if num_terms
             else np.zeros((n, 0), np.int64))
    trials = np.asarray(data["trials"], np.float64) if family == "binomial" else None
    total, size, unique, ucodes = aggregate_counts(y, trials, features, codes)
    if pays_only and not worth_reducing(n, len(total), 1):
        return None
    f = np.asarray(data["y"]).dtype
    out = dict(data)
    out["N"] = len(total)
    out["y"] = total.astype(f)
    col = x.shape[1]
    if "X" in data:
        out["X"] = unique[:, :col].astype(np.asarray(data["X"]).dtype)
    for i in range(num_terms):
        k = z[i].shape[1]
        out[f"Z_{i}"] = unique[:, col:col + k].astype(np.asarray(data[f"Z_{i}"]).dtype)
        out[f"codes_{i}"] = ucodes[:, i].astype(np.int32)
        col += k
    if family == "poisson":
        out["reduction:offset"] = np.log(size).astype(f)
        log_norm = -gammaln(total + 1.0)
    else:
        out["trials"] = size.astype(f)
        log_norm = gammaln(size + 1.0) - gammaln(total + 1.0) - gammaln(size - total + 1.0)
    out["count:log_norm"] = log_norm.astype(f)  # data-only, computed once (families.counts.KnownNormalizer)
    return out


def worth_reducing(num_rows: int, num_cells: int, k: int) -> bool:
    """A reduction pays when at most ``k`` pseudo rows per cell are well under the rows.

    Count aggregation leaves one row per cell (``k = 1``); the Gaussian compression
    up to ``k`` (the number of columns of the linear predictor) per cell.
    """
    return num_cells * k < 0.5 * num_rows


def merge_identical_rows(data: dict, rows: tuple[str, ...], pays_only: bool = True) -> dict | None:
    """Formula-model data with identical rows merged into one, weighted by their number.

    Rows are identical when every array in ``rows`` (the response, designs, codes,
    offsets, censoring; see ``models.row_keys``) agrees. The merged row's weight is the
    sum of the rows' weights (1 each without ``weights``), and the model multiplies each
    row's log-likelihood by its weight, so the log density is the row-level one for any
    likelihood. Returns None when the merged rows are not well under the rows and ``pays_only``.
    """
    n = int(data["N"])
    keyed = [k for k in rows if k != "weights"]
    keys = np.concatenate([np.asarray(data[k], np.float64).reshape(n, -1) for k in keyed], axis=1)
    _, first, cell = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    cell = cell.reshape(-1)
    if pays_only and not worth_reducing(n, len(first), 1):
        return None
    weights = np.asarray(data["weights"], np.float64) if "weights" in data else np.ones(n)
    out = dict(data)
    out["N"] = len(first)
    for k in keyed:
        out[k] = np.asarray(data[k])[first]
    out["weights"] = np.bincount(cell, weights=weights, minlength=len(first)).astype(np.asarray(data["y"]).dtype)
    return out
