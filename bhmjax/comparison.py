"""``bj.compare``: rank fits of the same data by LOO-PSIS, with WAIC beside it.

The expected log pointwise predictive density is estimated by Pareto-smoothed
importance sampling leave-one-out (Vehtari, Gelman and Gabry 2017, "Practical Bayesian
model evaluation using leave-one-out cross-validation and WAIC", Statistics and
Computing 27) through ArviZ's ``az.loo`` and ``az.compare`` (ArviZ 0.x or 1.x, the table
in 0.x's columns either way); WAIC (Watanabe 2010) by :func:`waic` (ArviZ 1.x has none). Observations whose Pareto k exceeds ArviZ's threshold (0.7 for large
samples) make the LOO estimate unreliable: they are counted per model and warned about.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Mapping

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from bhmjax.fit import Fit

__all__ = ["compare", "waic"]


_COLUMNS = ["rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse", "warning", "scale"]


def waic(log_lik: np.ndarray) -> dict[str, float]:
    """WAIC (Watanabe 2010) of pointwise log-likelihood draws (chains, draws, rows), as ``az.waic``.

    ``elpd_waic = sum_i lppd_i - p_i`` with ``lppd_i = log mean_s p(y_i | theta_s)`` and
    ``p_i = var_s log p(y_i | theta_s)`` (ddof 0); ``se = sqrt(n var_i(elpd_i))``;
    ``warning`` when some ``p_i > 0.4`` (WAIC may fail there). Computed in float64.
    """
    ll = np.asarray(log_lik, dtype=np.float64)
    ll = ll.reshape(-1, ll.shape[-1])
    top = ll.max(axis=0)
    lppd = top + np.log(np.mean(np.exp(ll - top), axis=0))
    p_i = ll.var(axis=0)
    elpd_i = lppd - p_i
    return {"elpd_waic": float(elpd_i.sum()), "p_waic": float(p_i.sum()),
            "se_waic": float(np.sqrt(elpd_i.size * np.var(elpd_i))), "waic_warning": bool(np.any(p_i > 0.4))}


def _criteria(fit: "Fit"):
    """LOO (ArviZ's object for az.compare), WAIC, bad Pareto k count, k threshold, rows."""
    from bhmjax.arviz import export_groups, from_groups, import_arviz
    from bhmjax.predict import log_likelihood

    az = import_arviz()
    ll = log_likelihood(fit)
    groups, coords, dims = export_groups(fit, log_likelihood=False)  # the posterior sets LOO's relative ESS
    idata = from_groups({"posterior": groups["posterior"], "log_likelihood": {"y": ll}}, coords=coords,
                        dims={**dims, "y": ["obs_id"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's own warnings are summarised below
        loo = az.loo(idata, pointwise=True)
    k = np.asarray(loo.pareto_k).reshape(-1)
    good_k = float(getattr(loo, "good_k", 0.7) or 0.7)
    return loo, waic(ll), int(np.sum(k > good_k)), good_k, ll.shape[-1]


def _compare_table(az, loos: dict) -> "pd.DataFrame":
    """``az.compare`` on LOO results, in ArviZ 0.x's columns on either line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if str(az.__version__).startswith("0."):
            return az.compare(loos, ic="loo")[_COLUMNS]
        table = az.compare(loos, round_to="none").rename(columns={"elpd": "elpd_loo", "p": "p_loo"})
    table["warning"] = [bool(loos[m].warning) for m in table.index]
    table["scale"] = "log"
    return table[_COLUMNS]


def compare(fits: Mapping[str, "Fit"], *, verbose: bool = True) -> "pd.DataFrame":
    """Rank fits of the same observations by LOO-PSIS; print and return the table.

    Parameters
    ----------
    fits : dict of str -> Fit
        Two or more fits of the same rows, e.g. ``{"pooled": f1, "unpooled": f2,
        "hierarchical": f3}``.
    verbose : bool
        Print the table.

    Returns
    -------
    pandas.DataFrame
        ``az.compare``'s columns (rank, elpd_loo, p_loo, elpd_diff, weight, se, dse,
        warning, scale) by model, best first, plus ``pareto_k_bad`` (observations with
        k above ``good_k``), ``elpd_waic``, ``p_waic``, ``se_waic`` and ``waic_warning``.

    Warns
    -----
    UserWarning
        Naming each model with Pareto k above the threshold (LOO unreliable there).

    Examples
    --------
    >>> table = bj.compare({"pooled": f1, "hierarchical": f2})   # doctest: +SKIP
    """
    from bhmjax.arviz import import_arviz

    az = import_arviz()
    if not isinstance(fits, Mapping) or len(fits) < 2:
        raise TypeError("compare needs a dict of two or more fits by name, e.g. "
                        "{'pooled': f1, 'hierarchical': f2}; got "
                        f"{type(fits).__name__}{f' of {len(fits)}' if isinstance(fits, Mapping) else ''}.")
    results = {name: _criteria(fit) for name, fit in fits.items()}
    sizes = {name: r[4] for name, r in results.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the fits have different numbers of observations {sizes}; LOO and WAIC compare "
                         "models of the same data only.")
    _check_same_y(fits)
    table = _compare_table(az, {name: r[0] for name, r in results.items()})
    table["pareto_k_bad"] = [results[m][2] for m in table.index]
    for column in ("elpd_waic", "p_waic", "se_waic", "waic_warning"):
        table[column] = [results[m][1][column] for m in table.index]
    bad = {m: r[2] for m, r in results.items() if r[2]}
    if bad:
        thr = min(results[m][3] for m in bad)
        detail = ", ".join(f"{m!r}: {k} of {sizes[m]}" for m, k in bad.items())
        warnings.warn(f"LOO-PSIS may be unreliable: observations with Pareto k > {thr:.2f} ({detail}). "
                      "Their importance weights have too heavy a tail; prefer K-fold cross-validation "
                      "for those models, or check them for influential rows.", UserWarning, stacklevel=2)
    if verbose:
        print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    return table


def _check_same_y(fits: Mapping[str, "Fit"]) -> None:
    ys = {name: np.asarray(f.data["y"], dtype=np.float64) for name, f in fits.items()
          if isinstance(getattr(f, "data", None), Mapping) and "y" in f.data}
    if len(ys) < 2:
        return
    names = list(ys)
    for name in names[1:]:
        if ys[name].shape != ys[names[0]].shape or not np.allclose(ys[name], ys[names[0]]):
            raise ValueError(f"fits {names[0]!r} and {name!r} were fitted to different responses; LOO and "
                             "WAIC compare models of the same observations only.")
