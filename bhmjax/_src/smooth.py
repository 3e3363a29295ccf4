"""Penalized splines ``s(x)`` in mixed-model form: a fixed linear part and a random wiggly part.

A P-spline (Eilers and Marx 1996) is ``f(x) = B(x) beta`` with ``k`` cubic B-splines
on equally spaced knots over the training range and the penalty ``beta' S beta``,
``S = D'D`` for second-order differences ``D``. With ``S = U Lambda U'`` the
coefficients split into the penalty's null space (for equally spaced knots exactly
the linear functions of x) and ``beta = U_+ Lambda_+^{-1/2} u`` with ``u'u`` the
penalty, so the smoothing prior ``exp(-lambda beta' S beta / 2)`` is
``u ~ Normal(0, sds^2 I)``: the mixed-model form mgcv's ``smooth2random`` gives brms
(Wood 2017, sec. 5.8; Wand and Ormerod 2008). Here

* the linear part is the column ``x`` itself, a population slope (``sx_1`` in ``b``),
  and the intercept absorbs the constant;
* the wiggly part has the ``k - 2`` columns ``Z = B U_+ Lambda_+^{-1/2}`` with the
  constant and linear components removed on the training rows (least squares on
  ``[1, x]``; a change that moves only penalty-free functions, so ``u'u`` is still
  the penalty), coefficients ``s_sx_1 = sds_sx_1 * zs_sx_1``, ``zs ~ Normal(0, 1)``.

New values of x beyond the training range keep the linear trend; the wiggly part is
held at its value at the nearest end of the range (B-splines vanish outside it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SmoothBasis", "smooth_basis", "bspline_basis"]

DEGREE = 3


def bspline_basis(x: np.ndarray, knots: np.ndarray, degree: int = DEGREE) -> np.ndarray:
    """B-splines of ``degree`` on the knot vector ``knots`` at ``x``, shape (n, len(knots) - degree - 1).

    Cox-de Boor recursion; ``x`` must lie in ``[knots[degree], knots[-degree - 1])``.
    """
    x = np.asarray(x, dtype=np.float64)[:, None]
    t = np.asarray(knots, dtype=np.float64)
    basis = ((t[:-1] <= x) & (x < t[1:])).astype(np.float64)
    for d in range(1, degree + 1):
        left = (x - t[:-d - 1]) / (t[d:-1] - t[:-d - 1])
        right = (t[d + 1:] - x) / (t[d + 1:] - t[1:-d])
        basis = left * basis[:, :-1] + right * basis[:, 1:]
    return basis


@dataclass(frozen=True, eq=False)
class SmoothBasis:
    """One fitted ``s(x)``: rebuilds the wiggly columns on new values of x.

    Attributes
    ----------
    variable : str
    knots : np.ndarray, shape (k + 4,)
    lower, upper : float
        The training range of x.
    transform : np.ndarray, shape (k, k - 2)
        ``U_+ Lambda_+^{-1/2}``: penalized coefficients to B-spline coefficients.
    projection : np.ndarray, shape (2, k - 2)
        Least-squares coefficients on ``[1, x]`` (training rows) removed from each column.
    """

    variable: str
    knots: np.ndarray
    lower: float
    upper: float
    transform: np.ndarray
    projection: np.ndarray

    @property
    def size(self) -> int:
        """The number of wiggly columns, ``k - 2``."""
        return self.transform.shape[1]

    def _raw(self, x: np.ndarray) -> np.ndarray:
        span = self.upper - self.lower
        inside = np.clip(np.asarray(x, dtype=np.float64), self.lower, self.upper - 1e-9 * span)
        return bspline_basis(inside, self.knots) @ self.transform

    def columns(self, x: np.ndarray) -> np.ndarray:
        """The wiggly columns Z at ``x``, shape (n, k - 2)."""
        x = np.asarray(x, dtype=np.float64)
        linear = np.stack([np.ones_like(x), x], axis=1)
        return self._raw(x) - linear @ self.projection


def smooth_basis(variable: str, x: np.ndarray, k: int = 10) -> SmoothBasis:
    """The P-spline basis of ``s(variable, k=k)`` on training values ``x`` (numeric, >= 2 distinct values).

    Raises ``ValueError`` naming the column when x is constant or has fewer distinct
    values than the basis needs.
    """
    x = np.asarray(x, dtype=np.float64)
    distinct = len(np.unique(x))
    if distinct < 4:
        raise ValueError(f"s({variable}) needs a numeric column with at least 4 distinct values; "
                         f"{variable!r} has {distinct}. Use it as a linear or categorical term instead.")
    lo, hi = float(x.min()), float(x.max())
    intervals = k - DEGREE
    step = (hi - lo) / intervals
    knots = lo + step * np.arange(-DEGREE, intervals + DEGREE + 1)
    diff = np.diff(np.eye(k), n=2, axis=0)
    values, vectors = np.linalg.eigh(diff.T @ diff)  # ascending: the two null-space vectors first
    transform = vectors[:, 2:] / np.sqrt(values[2:])
    basis = SmoothBasis(variable, knots, lo, hi, transform, np.zeros((2, k - 2)))
    raw = basis._raw(x)
    linear = np.stack([np.ones_like(x), x], axis=1)
    projection = np.linalg.lstsq(linear, raw, rcond=None)[0]
    return SmoothBasis(variable, knots, lo, hi, transform, projection)
