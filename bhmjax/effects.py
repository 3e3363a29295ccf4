"""Reading a formula fit's terms as brms users do: ``fixef``, ``ranef``, ``coef`` and Bayesian ``r2``.

Every function returns a tidy pandas frame with brms' columns ``Estimate`` (posterior
mean), ``Est.Error`` (posterior sd) and one quantile column per probability (``Q2.5``,
``Q97.5``), or, with ``summary=False``, the draws themselves with leading axes
(chains, draws). Terms carry brms' names: the mean's ``Intercept`` and ``x``, an
auxiliary parameter's ``sigma_Intercept`` and ``sigma_x``, a category's ``mub_x``.
Predictions over a grid of one predictor are in :mod:`bhmjax.conditional`.

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

from typing import TYPE_CHECKING, Sequence

import numpy as np

from bhmjax._src import sites

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from bhmjax.fit import Fit

__all__ = ["fixef", "ranef", "coef", "r2", "fixef_draws", "ranef_draws", "coef_draws", "r2_draws",
           "posterior_summary", "term_name", "formula_spec"]


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


def formula_spec(fit: "Fit", what: str):
    """``fit.spec`` of a formula fit; ``TypeError`` naming ``what`` for a NumPyro-function fit."""
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
    spec = formula_spec(fit, "fixef")
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
    spec = formula_spec(fit, "ranef")
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
    return pd.concat(frames, ignore_index=True)


def _grouped(per_group: dict, fit: "Fit", what: str) -> dict:
    if not per_group:
        raise ValueError(f"{what} reads group-level effects, and the model {fit.spec.formula.text!r} has no group "
                         "terms such as (1 | g); fit.fixef() shows its population-level effects.")
    return per_group


def ranef(fit: "Fit", probs: Sequence[float] = (0.025, 0.975), summary: bool = True):
    """Group-level effects (brms' ``ranef``): deviations from the population, per grouping, level and term.

    Returns
    -------
    pandas.DataFrame
        Columns group, level, term, Estimate, Est.Error and the quantiles, one row per
        (grouping, level, term); levels in the order of the fit's labels. With
        ``summary=False`` a dict grouping -> draws (chains, draws, levels, terms).
    """
    return _long(_grouped(ranef_draws(fit), fit, "ranef"), probs, summary)


def coef(fit: "Fit", probs: Sequence[float] = (0.025, 0.975), summary: bool = True):
    """Population plus group-level effects per level (brms' ``coef``), the draws summed before summarizing.

    Returns
    -------
    pandas.DataFrame
        As :func:`ranef`, with every population term per level (``fixef + ranef`` per
        draw; a term without a group effect keeps its population value). With
        ``summary=False`` a dict grouping -> draws (chains, draws, levels, terms).
    """
    return _long(_grouped(coef_draws(fit), fit, "coef"), probs, summary)


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

    spec = formula_spec(fit, "r2")
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
