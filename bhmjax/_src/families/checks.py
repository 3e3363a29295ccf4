"""Response checks on concrete values, before anything compiles: each names the column and first bad row."""

from __future__ import annotations

import numpy as np

__all__ = ["check_response"]

_RANGES = {  # kind -> (test of a bad value, what the values must be)
    "positive": (lambda y: ~(y > 0), "be positive (> 0)"),
    "unit": (lambda y: ~((y > 0) & (y < 1)), "lie strictly between 0 and 1"),
}


def _first(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def _check_range(family, y, column) -> None:
    test, what = _RANGES[family.kind]
    bad = test(y)
    if bad.any():
        i = _first(bad)
        fix = (" Rescale proportions of exactly 0 or 1, e.g. (y * (n - 1) + 0.5) / n, or model the zeros "
               "and ones separately." if family.kind == "unit" else
               " Zeros need a hurdle or a shifted response; negative values a family on the real line.")
        raise ValueError(f"response {column!r} must {what} for the {family.name} family; row {i} is "
                         f"{y[i]:g} ({int(bad.sum())} such rows).{fix}")


def _check_counts(family, y, column) -> None:
    if family.kind == "binary":
        bad = (y != 0) & (y != 1)
        if bad.any():
            i = _first(bad)
            raise ValueError(f"response {column!r} must be 0 or 1 for the bernoulli family; row {i} "
                             f"is {y[i]:g} ({int(bad.sum())} such rows). For counts out of n use "
                             "family='binomial' with 'y | trials(n) ~ ...'.")
    if family.kind in ("count", "binomial"):
        bad = (y < 0) | (y != np.round(y))
        if bad.any():
            i = _first(bad)
            raise ValueError(f"response {column!r} must hold non-negative integers for the "
                             f"{family.name} family; row {i} is {y[i]:g} ({int(bad.sum())} such rows).")


def _check_trials(family, y, trials, column, trials_column) -> None:
    if family.kind == "binomial":
        if trials is None:
            raise ValueError("the binomial family needs the number of trials: write "
                             "'y | trials(n) ~ ...' or pass trials='n'.")
        n = np.asarray(trials, dtype=np.float64)
        bad = (n < 1) | (n != np.round(n))
        if bad.any():
            i = _first(bad)
            raise ValueError(f"trials column {trials_column!r} must hold positive integers; row {i} "
                             f"is {n[i]:g}.")
        bad = y > n
        if bad.any():
            i = _first(bad)
            raise ValueError(f"response {column!r} exceeds the trials {trials_column!r} at row {i} "
                             f"({y[i]:g} successes of {n[i]:g} trials; {int(bad.sum())} such rows).")
    elif trials is not None:
        raise ValueError(f"trials ({trials_column!r}) are only used by the binomial family, "
                         f"not {family.name!r}.")


def check_response(family, y: np.ndarray, trials, column: str, trials_column: str | None) -> None:
    """Raise ``ValueError`` (or for non-numbers, naming the dtype) on a response ``family`` cannot take.

    Ordinal and categorical responses arrive here as category codes (see
    :func:`bhmjax._src.families.categories.encode_categories`, which checks the labels).
    """
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise ValueError(f"response {column!r} has dtype {y.dtype}; the {family.name} family needs "
                         "numbers" + (" coded 0/1" if family.kind == "binary" else "") + ".")
    y = y.astype(np.float64)
    if family.kind in _RANGES:
        _check_range(family, y, column)
    _check_counts(family, y, column)
    _check_trials(family, y, trials, column, trials_column)
