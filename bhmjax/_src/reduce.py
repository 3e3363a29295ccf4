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
  success probability or rate, so they add up to one binomial/Poisson count; the
  log likelihood changes by a constant only (the posterior is the same).

Everything here is numpy on concrete data (done once, before compiling), except
:func:`gaussian_cell_loglik`, which is the jit-able likelihood.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["GaussianCells", "gaussian_cells", "gaussian_cell_loglik", "aggregate_counts", "worth_reducing"]


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


def worth_reducing(num_rows: int, num_cells: int, k: int) -> bool:
    """A reduction pays when the cell work (k^2 per cell) is well under the row work (k per row)."""
    return num_cells * k * k < 0.5 * num_rows * k
