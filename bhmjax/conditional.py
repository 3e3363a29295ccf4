"""Conditional effects (brms' ``conditional_effects``): predictions over a grid of one predictor.

The grid varies ``effect`` (100 points over its range, or its levels) and ``by`` (its
levels, or a numeric column's mean and mean +- sd) and holds every other predictor at its
reference value; :func:`bhmjax.predict.predict` gives the draws on it and
:func:`bhmjax.effects.posterior_summary` the columns. :func:`bhmjax.plots.plot_predictions`
draws the result.

Examples
--------
>>> fit.conditional_effects("x", by="c")   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from bhmjax.effects import formula_spec, posterior_summary

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from bhmjax.fit import Fit

__all__ = ["conditional_effects", "effect_grid", "RESOLUTION"]

RESOLUTION = 100  # grid points over a numeric effect (brms' ``resolution``)


def _categorical_columns(spec, frame) -> dict[str, tuple]:
    """Columns the designs encode as categories and grouping factors, with their training levels.

    A design's categorical column lists its reference level first; a grouping factor
    its levels as the fit labels them (a nested grouping's factors: their sorted values).
    """
    from bhmjax.design import _variables_in

    out: dict[str, tuple] = {}
    for g in spec.groups:
        factors = g.term.factors
        for f in factors:
            out.setdefault(f, tuple(g.encoding.labels) if len(factors) == 1 else
                           tuple(sorted(frame[f].dropna().unique().tolist(), key=str)))
    model_specs = [p.fixed.model_spec for p in spec.predictors] + [g.model_spec for g in spec.groups]
    for ms in model_specs:
        names = ms.required_variables
        for expr, (kind, state) in ms.encoder_state.items():
            used = _variables_in(expr, names)
            if getattr(kind, "value", kind) == "categorical" and len(used) == 1:
                out.setdefault(used[0], tuple(state.get("categories", ())))
    return out


def _levels(frame, col: str, categorical: dict) -> tuple | None:
    """The levels of a categorical column (None for a numeric one)."""
    if col in categorical:
        return categorical[col]
    values = frame[col]
    if values.dtype.kind in "iuf":
        return None
    if hasattr(values, "cat"):
        return tuple(values.cat.categories)
    return tuple(sorted(values.dropna().unique().tolist(), key=str))


def _values(frame, col: str, categorical: dict, role: str) -> list:
    """Grid values: the effect's 100 points or levels; ``by``'s levels or mean and mean +- sd."""
    levels = _levels(frame, col, categorical)
    if levels is not None:
        return list(levels)
    x = frame[col].to_numpy(dtype=np.float64)
    if role == "effect":
        return list(np.linspace(x.min(), x.max(), RESOLUTION))
    m, s = float(x.mean()), float(x.std(ddof=1))
    return [m - s, m, m + s]


def effect_grid(fit: "Fit", effect: str, by: str | None = None, conditions: Mapping[str, Any] | None = None,
                groups: str | None = None) -> tuple["pd.DataFrame", str]:
    """The rows conditional effects predict on, and the ``groups`` mode they use.

    ``effect`` varies over 100 points of its range (numeric) or its levels; ``by`` over
    its levels (numeric: mean - sd, mean, mean + sd); every other predictor is held at
    its reference value (numeric: the mean; categorical: the first, reference, level),
    or at ``conditions[column]``. Group effects are left out (``groups="population"``,
    brms' ``re_formula=NA``) unless ``effect`` or ``by`` is a grouping factor, whose
    fitted effects are then included (``"existing"``; other grouping factors at their
    first level).
    """
    import pandas as pd

    from bhmjax.design import _columns_needed

    spec = formula_spec(fit, "conditional_effects")
    source = getattr(spec, "source", None)
    if source is None:
        raise ValueError("conditional effects need the training data's columns (spec.source), which this "
                         "model spec does not keep; build the model with bj.Model(formula, data).")
    frame, factors = source.frame, {f for g in spec.groups for f in g.term.factors}
    chosen = [effect] + ([by] if by is not None else [])
    if groups is None:
        groups = "existing" if factors & set(chosen) else "population"
    if groups not in ("population", "existing"):
        raise ValueError(f"groups must be None, 'population' or 'existing' for conditional effects, got {groups!r}")
    needed = _columns_needed(spec, groups, False, None)
    unknown = [c for c in chosen if c not in needed]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a predictor of the model {spec.formula.text!r} (with "
                         f"groups={groups!r}); its predictors are {needed}.")
    if by == effect:
        raise ValueError(f"by={by!r} is the effect itself; choose another predictor to condition on.")
    categorical = _categorical_columns(spec, frame)
    axes = [_values(frame, effect, categorical, "effect")] + ([_values(frame, by, categorical, "by")] if by else [])
    grid = pd.DataFrame(pd.MultiIndex.from_product(axes, names=chosen).to_frame(index=False))
    conditions = dict(conditions or {})
    stray = [c for c in conditions if c not in needed or c in chosen]
    if stray:
        raise ValueError(f"conditions name {stray}, which are not other predictors of the model (with "
                         f"groups={groups!r}); give values for {[c for c in needed if c not in chosen]}.")
    for col in needed:
        if col in chosen:
            continue
        if col in conditions:
            grid[col] = conditions[col]
        else:
            levels = _levels(frame, col, categorical)
            grid[col] = levels[0] if levels is not None else float(frame[col].astype(np.float64).mean())
    return grid, groups


def conditional_effects(fit: "Fit", effect: str, by: str | None = None, *, conditions: Mapping[str, Any] | None = None,
                        kind: str = "mean", dpar: str | None = None, groups: str | None = None,
                        probs: Sequence[float] = (0.025, 0.975), draws: int | None = None) -> "pd.DataFrame":
    """Predictions along one predictor (brms' ``conditional_effects``), with intervals.

    Parameters
    ----------
    fit : Fit
        A formula fit, any family ``predict`` supports.
    effect : str
        The predictor to vary (a data column).
    by : str, optional
        A second column: a line per level (numeric: at mean - sd, mean and mean + sd).
    conditions : dict, optional
        Values for other predictors instead of their reference values.
    kind : {"mean", "linear_predictor"}
        The expected response (brms' default ``posterior_epred``; a binomial's
        probability per trial) or the linear predictor.
    dpar : str, optional
        An auxiliary parameter instead of the mean (see :func:`bhmjax.predict.predict`).
    groups : {None, "population", "existing"}
        None chooses as :func:`effect_grid` says.
    probs : sequence of float
        Quantiles of the interval.
    draws : int, optional
        Draws per chain to use.

    Returns
    -------
    pandas.DataFrame
        The grid (``effect``, ``by`` and every other predictor's value), then Estimate
        (the posterior mean; brms' ``estimate__`` is the median), Est.Error and the
        quantiles; ordinal and categorical families have a row per level of the
        response, named in column ``level``.
    """
    import pandas as pd

    from bhmjax.predict import predict

    if kind not in ("mean", "linear_predictor"):
        raise ValueError(f"kind must be 'mean' or 'linear_predictor' for conditional effects, got {kind!r}")
    grid, groups = effect_grid(fit, effect, by, conditions, groups)
    pred = predict(fit, grid, kind=kind, groups=groups, dpar=dpar, draws=draws)
    stats = posterior_summary(pred.draws, probs)
    if pred.draws.ndim == 4:
        levels = list(pred.categories)
        out = grid.loc[grid.index.repeat(len(levels))].reset_index(drop=True)
        out["level"] = levels * len(grid)
    else:
        out = grid.copy()
    for k, v in stats.items():
        out[k] = np.asarray(v).ravel()
    return pd.DataFrame(out)
