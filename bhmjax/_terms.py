"""Row terms of the response: binomial trials, observation weights and censoring (brms semantics).

Each can be named in the formula (``y | trials(n) + weights(w) + cens(c, upper) ~ ...``)
or as a keyword of ``bj.Model`` (``trials="n"``, ``weights="w"``, ``cens="c"``,
``cens_upper="upper"``). Checked here on concrete values, naming the first bad row.

* **weights**: each row's log-likelihood is multiplied by its weight (brms'
  ``weights()``); weights must be finite and >= 0, not all 0.
* **censoring**: per row "none", "left", "right" or "interval" (unique prefixes and any
  case), brms' codes 0, -1, 1, 2, or booleans (True right, False none); see
  ``bhmjax._src.families.censoring`` for each row's likelihood. Interval-censored rows
  need ``cens_upper`` > y; other rows may leave it missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bhmjax._src.families.censoring import CENSORING_CODES

__all__ = ["RowTerms", "addition_columns", "row_terms", "censoring_codes"]

_KEYWORDS = ("trials", "weights", "cens", "cens_upper")


@dataclass(frozen=True)
class RowTerms:
    """Per-row weights, censoring codes and interval bounds (None when the model has none)."""

    weights: np.ndarray | None = None
    cens: np.ndarray | None = None
    cens_upper: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in (("weights", self.weights), ("cens", self.cens),
                                  ("cens_upper", self.cens_upper)) if v is not None}


def addition_columns(spec, family, **given) -> dict[str, str | None]:
    """The trials, weights, cens and cens_upper columns from the formula and the keywords."""
    formula = {"trials": spec.trials, "weights": spec.weights, "cens": spec.cens, "cens_upper": spec.cens_upper}
    out = {}
    for key in _KEYWORDS:
        value = given.get(key)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{key} must name a column of data, got {type(value).__name__}")
        if value is not None and formula[key] is not None and value != formula[key]:
            raise ValueError(f"{key} given twice: {formula[key]!r} in the formula and {key}={value!r}.")
        out[key] = formula[key] or value
    if out["cens_upper"] and not out["cens"]:
        raise ValueError(f"cens_upper={out['cens_upper']!r} without cens: name the censoring column too, "
                         "cens='c' (or 'y | cens(c, upper) ~ ...').")
    if out["cens"] and not family.censoring:
        from bhmjax._src.families import FAMILIES

        able = sorted(name for name, f in FAMILIES.items() if f.censoring)
        raise ValueError(f"the {family.name} family does not take censored responses (cens={out['cens']!r}); "
                         f"censoring works with {able}.")
    return out


def _numbers(frame, column: str, what: str) -> np.ndarray:
    values = frame[column].to_numpy()
    if values.dtype.kind not in "biuf":
        raise TypeError(f"{what} column {column!r} has dtype {values.dtype}; it needs numbers.")
    return values.astype(np.float64)


def _weights(frame, column: str) -> np.ndarray:
    w = _numbers(frame, column, "weights")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"weights column {column!r} must hold finite numbers >= 0; row {i} is {w[i]:g} "
                         f"({int(bad.sum())} such rows).")
    if not (w > 0).any():
        raise ValueError(f"weights column {column!r} is 0 on every row: nothing would be fitted.")
    return w


def censoring_codes(values, column: str) -> np.ndarray:
    """Codes -1/0/1/2 from brms' spellings; ``ValueError`` naming the first row that is none of them."""
    arr = np.asarray(values, dtype=object)
    out = np.empty(len(arr), dtype=np.float64)
    for i, v in enumerate(arr.tolist()):
        code = None
        if isinstance(v, (bool, np.bool_)):
            code = 1 if v else 0
        elif isinstance(v, (int, float, np.integer, np.floating)) and v in (-1, 0, 1, 2):
            code = int(v)
        elif isinstance(v, str) and v.strip():
            hits = [c for name, c in CENSORING_CODES.items() if name.startswith(v.strip().lower())]
            code = hits[0] if len(hits) == 1 else None
        if code is None:
            raise ValueError(f"censoring column {column!r} has {v!r} at row {i}; use 'none', 'left', 'right' "
                             "or 'interval' (or brms' 0, -1, 1, 2, or True for right-censored).")
        out[i] = code
    return out


def _upper(frame, column: str | None, y: np.ndarray, cens: np.ndarray) -> np.ndarray:
    interval = cens == 2
    if column is None:
        if interval.any():
            i = int(np.flatnonzero(interval)[0])
            raise ValueError(f"row {i} is interval censored, which needs its upper bound: pass "
                             "cens_upper='column' (or write 'y | cens(c, upper) ~ ...').")
        return y.copy()
    upper = _numbers(frame, column, "cens_upper")
    bad = interval & ~(np.isfinite(upper) & (upper > y))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"interval-censored row {i} needs cens_upper {column!r} above the response "
                         f"(the lower bound): got upper {upper[i]:g} for y {y[i]:g} ({int(bad.sum())} such rows).")
    return np.where(interval, upper, y)


def row_terms(family, frame, y: np.ndarray, columns: dict) -> RowTerms:
    """Checked weights, censoring codes and bounds of the rows of ``frame``."""
    weights = _weights(frame, columns["weights"]) if columns["weights"] else None
    if not columns["cens"]:
        return RowTerms(weights=weights)
    cens = censoring_codes(frame[columns["cens"]], columns["cens"])
    return RowTerms(weights=weights, cens=cens, cens_upper=_upper(frame, columns["cens_upper"], y, cens))
