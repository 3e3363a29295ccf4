"""Reading a formula fit as brms users do: ``fixef``, ``ranef``, ``coef``, ``r2``, conditional effects.

Every function returns a tidy pandas frame with brms' columns ``Estimate`` (posterior
mean), ``Est.Error`` (posterior sd) and one quantile column per probability (``Q2.5``,
``Q97.5``), or, with ``summary=False``, the draws themselves with leading axes
(chains, draws). Terms carry brms' names: the mean's ``Intercept`` and ``x``, an
auxiliary parameter's ``sigma_Intercept`` and ``sigma_x``, a category's ``mub_x``.

Examples
--------
>>> import numpy as np, bhmjax as bj
>>> rng = np.random.default_rng(0)
>>> g = np.repeat(np.arange(8), 5); x = rng.normal(size=40); y = rng.normal(0.3 * g + x, 1.0)
>>> fit = bj.Model("y ~ x + (1 | g)", {"y": y, "x": x, "g": g}).fit(chains=2, warmup=200, draws=200,
...                                                                   progress=False)
>>> list(fit.fixef().index), list(fit.coef().columns[:3])
(['Intercept', 'x'], ['group', 'level', 'term'])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from bhmjax._src import sites

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from bhmjax.fit import Fit

__all__ = ["fixef", "ranef", "coef", "r2", "conditional_effects", "posterior_summary", "term_name"]

RESOLUTION = 100  # grid points over a numeric effect (brms' ``resolution``)


# --------------------------------------------------------------------------- shared


def posterior_summary(draws: np.ndarray, probs: Sequence[float] = (0.025, 0.975)) -> dict[str, np.ndarray]:
    """brms' columns of draws (chains, draws, *shape): Estimate, Est.Error, Q<100 p> per ``probs``.

    Each value has shape ``shape``: the mean, the sd (ddof=1) and the quantiles over
    chains and draws together, in float64.
    """
    probs = _check_probs(probs)
    x = np.asarray(draws, dtype=np.float64)
    x = x.reshape(-1, *x.shape[2:])
    out = {"Estimate": x.mean(axis=0), "Est.Error": x.std(axis=0, ddof=1)}
    for p, q in zip(probs, np.quantile(x, probs, axis=0)):
        out[f"Q{100 * p:g}"] = q
    return out


def _check_probs(probs: Sequence[float]) -> tuple[float, ...]:
    probs = tuple(float(p) for p in np.atleast_1d(probs))
    if any(not 0 <= p <= 1 for p in probs):
        raise ValueError(f"probs must be probabilities in [0, 1], got {probs!r}")
    return probs


def term_name(dpar: str, column: str) -> str:
    """brms' name of a predictor's term: ``x`` for the mean, ``sigma_x`` for sigma's formula."""
    return column if dpar == sites.MU else f"{dpar}_{column}"


def _spec(fit: "Fit", what: str):
    spec = getattr(fit, "spec", None)
    if spec is None or not hasattr(spec, "structure"):
        raise TypeError(f"{what} reads a formula model's terms, and this fit came from a NumPyro model "
                        "function (fit.spec is None). Use fit.summary() for its parameters, or fit the "
                        "model with bj.Model(formula, data).fit().")
    return spec


def _site(fit: "Fit", name: str, what: str) -> np.ndarray:
    if name not in fit.draws:
        raise ValueError(f"{what} needs the draws of {name!r}, which this fit does not hold (left out with "
                         f"sample(keep=..., drop=...)?); sites are {list(fit.draws)}. Refit keeping them.")
    return np.asarray(fit.draws[name])


# --------------------------------------------------------------------------- population and group terms


def fixef_draws(fit: "Fit") -> tuple[list[str], np.ndarray]:
    """The population-level terms and their draws, (chains, draws, K), in the order of :func:`fixef`.

    Cumulative cutpoints are ``Intercept[1]``, ``Intercept[2]``, ...; spline coefficients
    are not population terms here (``fit.summary("s_", filter_vars="like")`` shows them).
    """
    spec = _spec(fit, "fixef")
    names, cols = [], []
    if spec.structure.thresholds:
        cut = _site(fit, "Intercept", "fixef")
        names += [f"Intercept[{k + 1}]" for k in range(cut.shape[2])]
        cols += [cut[..., k] for k in range(cut.shape[2])]
    for p in spec.structure.predictors():
        if p.intercept:
            names.append(term_name(p.dpar, "Intercept"))
            cols.append(_site(fit, sites.intercept_site(p.dpar), "fixef"))
        if p.slopes:
            b = _site(fit, sites.b_site(p.dpar), "fixef")
            names += [term_name(p.dpar, c) for c in p.slopes]
            cols += [b[..., j] for j in range(len(p.slopes))]
    if not cols:
        return [], np.zeros((fit.num_chains, fit.num_draws, 0))
    return names, np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=-1)


def ranef_draws(fit: "Fit") -> dict[str, tuple[tuple, list[str], np.ndarray]]:
    """Per grouping: its level labels, its terms and the draws (chains, draws, levels, terms).

    The terms of every predictor with a group term on that grouping are side by side
    (``Intercept``, ``x``, ``sigma_Intercept``), the deviations ``r`` from the population.
    """
    spec = _spec(fit, "ranef")
    out: dict[str, tuple[tuple, list[str], list[np.ndarray]]] = {}
    for p in spec.structure.predictors():
        for g in p.groups:
            design = spec.groups[g.term]
            r = np.asarray(_site(fit, f"r_{g.name}", "ranef"), dtype=np.float64)
            labels, terms, parts = out.setdefault(design.name, (tuple(design.encoding.labels), [], []))
            terms += [term_name(p.dpar, c) for c in g.columns]
            parts.append(r)
    return {k: (labels, terms, np.concatenate(parts, axis=-1)) for k, (labels, terms, parts) in out.items()}


def coef_draws(fit: "Fit") -> dict[str, tuple[tuple, list[str], np.ndarray]]:
    """Per grouping, population plus group terms per level: (labels, terms, (chains, draws, levels, terms)).

    As brms' ``coef``: every population term (plus the group's deviation where it has
    one), then group terms without a population term (their deviation alone). A
    cumulative model's group ``Intercept`` shifts the linear predictor, which enters
    as ``cutpoint - eta``: it moves into every cutpoint, ``Intercept[k] - r``.
    """
    names, fixed = fixef_draws(fit)
    cutpoints = [t for t in names if t.startswith("Intercept[")]
    out = {}
    for group, (labels, terms, r) in ranef_draws(fit).items():
        shifted = "Intercept" in terms and bool(cutpoints)
        all_terms = names + [t for t in terms if t not in names and not (shifted and t == "Intercept")]
        value = np.zeros(r.shape[:3] + (len(all_terms),))
        for j, t in enumerate(all_terms):
            if t in names:
                value[..., j] += fixed[:, :, None, names.index(t)]
            if t in terms:
                value[..., j] += r[..., terms.index(t)]
            elif shifted and t in cutpoints:
                value[..., j] -= r[..., terms.index("Intercept")]
        out[group] = (labels, all_terms, value)
    return out


def fixef(fit: "Fit", probs: Sequence[float] = (0.025, 0.975), summary: bool = True):
    """Population-level effects (brms' ``fixef``): a frame indexed by term.

    Parameters
    ----------
    fit : Fit
        A formula fit.
    probs : sequence of float
        Quantiles to report (columns ``Q2.5``, ``Q97.5``).
    summary : bool
        False: the draws instead, an array (chains, draws, terms) in the frame's row order.

    Returns
    -------
    pandas.DataFrame
        Index ``term`` (``Intercept``, ``x``, ``sigma_Intercept``, ...); columns Estimate,
        Est.Error and the quantiles.
    """
    import pandas as pd

    names, draws = fixef_draws(fit)
    if not summary:
        return draws
    return pd.DataFrame(posterior_summary(draws, probs), index=pd.Index(names, name="term"))


def _long(per_group: dict, probs, summary: bool):
    import pandas as pd

    if not summary:
        return {g: draws for g, (_, _, draws) in per_group.items()}
    frames = []
    for group, (labels, terms, draws) in per_group.items():
        stats = posterior_summary(draws, probs)  # each (levels, terms)
        level, term = np.meshgrid(np.arange(len(labels)), np.arange(len(terms)), indexing="ij")
        frame = pd.DataFrame({"group": group, "level": np.asarray(labels, dtype=object)[level.ravel()],
                              "term": np.asarray(terms, dtype=object)[term.ravel()]})
        for k, v in stats.items():
            frame[k] = v.ravel()
        frames.append(frame)
    columns = ["group", "level", "term", *posterior_summary(np.zeros((1, 2)), probs)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def ranef(fit: "Fit", probs: Sequence[float] = (0.025, 0.975), summary: bool = True):
    """Group-level effects (brms' ``ranef``): deviations from the population, per grouping, level and term.

    Returns
    -------
    pandas.DataFrame
        Columns group, level, term, Estimate, Est.Error and the quantiles, one row per
        (grouping, level, term); levels in the order of the fit's labels. With
        ``summary=False`` a dict grouping -> draws (chains, draws, levels, terms).
    """
    return _long(ranef_draws(fit), probs, summary)


def coef(fit: "Fit", probs: Sequence[float] = (0.025, 0.975), summary: bool = True):
    """Population plus group-level effects per level (brms' ``coef``), the draws summed before summarizing.

    Returns
    -------
    pandas.DataFrame
        As :func:`ranef`, with every population term per level (``fixef + ranef`` per
        draw; a term without a group effect keeps its population value). With
        ``summary=False`` a dict grouping -> draws (chains, draws, levels, terms).
    """
    return _long(coef_draws(fit), probs, summary)


# --------------------------------------------------------------------------- Bayesian R2


def r2_draws(fit: "Fit", draws: int | None = None) -> np.ndarray:
    """Bayesian R2 per draw, (chains, draws): ``var(mu) / (var(mu) + var(y - mu))`` over the fitted rows.

    ``mu`` is the expected response of each row (``kind="mean"``, group effects
    included; a binomial's mean count, trials times the probability), as brms'
    ``bayes_R2`` computes it from ``posterior_epred`` with residuals ``y - mu`` for
    every family (Gelman, Goodrich, Gabry & Vehtari 2019, "R-squared for Bayesian
    regression models", The American Statistician 73(3)). Not defined for ordinal and
    categorical families.
    """
    from bhmjax.predict import predict

    spec = _spec(fit, "r2")
    if spec.categories:
        raise ValueError(f"r2 is not defined for the {spec.family.name} family: its expected response is a "
                         "probability per level, not a number to compare with y (brms refuses categorical "
                         "models, and warns that reading ordinal levels as numbers is likely invalid).")
    mu = np.asarray(predict(fit, None, kind="mean", draws=draws).draws, dtype=np.float64)
    if spec.family.name == "binomial":
        mu = mu * np.asarray(fit.data["trials"], dtype=np.float64)
    y = np.asarray(fit.data["y"], dtype=np.float64)
    var_mu = mu.var(axis=-1, ddof=1)
    var_e = (y - mu).var(axis=-1, ddof=1)
    return var_mu / (var_mu + var_e)


def r2(fit: "Fit", probs: Sequence[float] = (0.025, 0.975), summary: bool = True, *, draws: int | None = None):
    """Bayesian R2 (brms' ``bayes_R2``): one row ``R2`` with Estimate, Est.Error and the quantiles.

    See :func:`r2_draws` for the definition; ``summary=False`` returns those draws
    (chains, draws); ``draws`` thins to that many draws per chain.
    """
    import pandas as pd

    values = r2_draws(fit, draws)
    if not summary:
        return values
    return pd.DataFrame({k: [v] for k, v in posterior_summary(values, probs).items()}, index=["R2"])


# --------------------------------------------------------------------------- conditional effects


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

    spec = _spec(fit, "conditional_effects")
    source = getattr(spec, "source", None)
    if source is None:
        raise ValueError("conditional effects need the training data's columns (spec.source), which this "
                         "model spec does not keep; build the model with bj.Model(formula, data).")
    frame, factors = source.frame, {f for g in spec.groups for f in g.term.factors}
    chosen = [effect] + ([by] if by is not None else [])
    if groups is None:
        groups = "existing" if factors & set(chosen) else "population"
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
