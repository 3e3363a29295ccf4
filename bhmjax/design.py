"""New rows to design arrays with the training encodings, checked before anything compiles.

Missing columns, non-numeric values in numeric predictors, NaN or inf, new levels of a
fixed-effect factor and unseen group levels raise errors that name the column, the
first bad row and the fix. Group levels are coded without a Python loop over rows.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["new_design"]


def _variables_in(expr: str, names) -> list[str]:
    return [v for v in sorted(names) if re.search(rf"(?<![\w.]){re.escape(v)}(?![\w.])", expr)]


def _numeric_column(frame, col: str, where: str) -> None:
    """Make ``frame[col]`` numeric or raise ``TypeError``; NaN/inf raise ``ValueError``."""
    import pandas as pd

    values = frame[col]
    if values.dtype.kind not in "biuf":
        coerced = pd.to_numeric(values, errors="coerce")
        bad = (coerced.isna() & values.notna()).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            v = values.iloc[i]
            raise TypeError(f"column {col!r} of new_data has {int(bad.sum())} non-numeric value(s), the "
                            f"first at row {i}: {v!r} ({type(v).__name__}). The model used {col!r} as a "
                            f"number in the {where}; convert it (pd.to_numeric) or fix those rows.")
        frame[col] = coerced.astype(np.float64)
    x = frame[col].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"column {col!r} of new_data has {int(bad.sum())} missing or infinite value(s) "
                         f"(NaN/inf), the first at row {i}; every predictor needs a value. Drop or impute "
                         "those rows before predicting.")


def _categorical_column(frame, col: str, categories, where: str) -> None:
    import pandas as pd

    values = frame[col]
    missing = values.isna().to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise ValueError(f"column {col!r} of new_data has {int(missing.sum())} missing value(s), the "
                         f"first at row {i}; every predictor needs a value. Drop or fill those rows.")
    levels = pd.unique(values.to_numpy())
    unseen = [v for v, i in zip(levels, pd.Index(list(categories)).get_indexer(levels)) if i < 0]
    if unseen:
        shown = ", ".join(repr(v) for v in unseen[:10])
        raise ValueError(f"column {col!r} of new_data has {len(unseen)} level(s) not seen in training: "
                         f"{shown}{' ...' if len(unseen) > 10 else ''}. In the {where}, the model has coefficients "
                         f"only for the levels {list(categories)[:20]}; a fixed effect cannot predict a new "
                         "level (make the column a grouping, (1 | col), to predict new levels).")


def _check_factors(frame, model_spec, where: str) -> None:
    """Check each column a formulaic design reads, as it was encoded in training."""
    names = model_spec.required_variables
    for expr, (kind, state) in model_spec.encoder_state.items():
        used = _variables_in(expr, names)
        if getattr(kind, "value", kind) == "numerical":
            for col in used:
                _numeric_column(frame, col, where)
        elif getattr(kind, "value", kind) == "categorical" and len(used) == 1:
            _categorical_column(frame, used[0], state.get("categories", ()), where)


def _encode(design, frame, allow_new: bool) -> tuple[np.ndarray, tuple]:
    """Group codes of the rows without a Python loop; unseen levels get G, G + 1, ..."""
    import pandas as pd

    from bhmjax._src.data import _as_label_array
    from bhmjax._src.design import group_values

    enc = design.encoding
    values = _as_label_array(group_values(design.term, frame), enc.name)
    codes = pd.Index(list(enc.labels)).get_indexer(values).astype(np.int32)
    unseen = codes < 0
    new = tuple(pd.unique(values[unseen]).tolist()) if unseen.any() else ()
    if new:
        enc.encode(np.asarray(new, dtype=object), allow_new=allow_new)  # raises naming them
        codes[unseen] = enc.num_groups + pd.Index(list(new)).get_indexer(values[unseen])
    return codes, new


def _columns_needed(spec, groups: str, response: bool, trials: str | None) -> list[str]:
    cols = []
    for p in spec.predictors:
        cols += sorted(p.fixed.model_spec.required_variables) + list(p.fixed.smooths)
        cols += [v for o in p.offsets for v in sorted(o.required_variables)]
    if groups != "population":
        for g in spec.groups:
            cols += sorted(g.model_spec.required_variables) + list(g.term.factors)
    f = spec.formula
    cols += ([f.response] if response else []) + ([trials] if trials else [])
    cols += [c for c in (f.weights, f.cens) if c and response]
    return list(dict.fromkeys(cols))


def _response_rows(spec, frame, n_trials, trials_col) -> dict[str, np.ndarray]:
    """``y`` (codes for ordinal and categorical responses), and the weights and censoring of the rows."""
    from bhmjax._src.families.categories import encode_categories
    from bhmjax._terms import censoring_codes, row_terms

    col, f = spec.formula.response, spec.formula
    if spec.categories:
        y, _ = encode_categories(frame[col], spec.family.name, col, labels=spec.categories)
    else:
        _numeric_column(frame, col, "response")
        y = frame[col].to_numpy(dtype=np.float64)
        spec.family.check_response(y, n_trials, col, trials_col or "trials")
    if f.cens and f.cens_upper and f.cens_upper not in frame.columns and (
            censoring_codes(frame[f.cens], f.cens) == 2).any():
        raise ValueError(f"new_data has interval-censored rows but lacks their upper bound column "
                         f"{f.cens_upper!r}.")
    upper = f.cens_upper if f.cens_upper in frame.columns else None
    terms = row_terms(spec.family, frame, y, {"weights": f.weights, "cens": f.cens, "cens_upper": upper})
    return {"y": y, **terms.arrays()}


def new_design(spec, new_data: Any, *, groups: str = "existing", response: bool = False,
               trials: Any = None) -> tuple[dict[str, np.ndarray], int, dict[str, tuple], Any]:
    """Check and encode ``new_data`` with the training encodings, before anything compiles.

    Returns the design arrays (``X<d>``, ``Z_t``, ``codes_t``, ``Zs_t``, ``offset<d>``; ``y``
    (with the model's weights and censoring columns) if ``response``; ``trials`` if
    given), the number of rows, the unseen levels per grouping and the rows' index.
    Raises ``ValueError`` for missing columns, NaN predictors, new levels of a
    fixed-effect factor and (unless ``groups="new"``) unseen group levels, and
    ``TypeError`` for non-numeric values in a numeric predictor.
    """
    import pandas as pd

    from bhmjax._build import _as_frame
    from bhmjax._src.design import predictor_arrays

    index = new_data.index if isinstance(new_data, pd.DataFrame) else None
    frame = _as_frame(new_data).copy()
    index = index if index is not None else pd.RangeIndex(len(frame))
    trials_col = trials if isinstance(trials, str) else None
    needed = _columns_needed(spec, groups, response, trials_col)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"new_data lacks the column(s) {missing} that the model {spec.formula.text!r} "
                         f"uses; new_data has {list(frame.columns)}.")
    if len(frame) == 0:
        raise ValueError("new_data has no rows; there is nothing to predict.")
    rows: dict[str, np.ndarray] = {}
    for p in spec.predictors:
        _check_factors(frame, p.fixed.model_spec, "population terms")
        for col in list(p.fixed.smooths):
            _numeric_column(frame, col, f"spline s({col})")
        rows.update(predictor_arrays(p, frame))
    new: dict[str, tuple] = {}
    if groups != "population":
        for t, g in enumerate(spec.groups):
            _check_factors(frame, g.model_spec, f"group term ({g.term.expr} | {g.name})")
            rows[f"Z_{t}"] = g.matrix(frame)
            rows[f"codes_{t}"], new[g.name] = _encode(g, frame, allow_new=groups == "new")
    n_trials = None
    if trials is not None:
        if trials_col is not None:
            _numeric_column(frame, trials_col, "binomial trials")
        n_trials = np.asarray(frame[trials_col] if trials_col else trials, dtype=np.float64).reshape(-1)
        if n_trials.shape != (len(frame),):
            raise ValueError(f"trials has {n_trials.size} values for {len(frame)} rows of new_data.")
        rows["trials"] = n_trials
    if response:
        rows.update(_response_rows(spec, frame, n_trials, trials_col))
    return rows, len(frame), new, index
