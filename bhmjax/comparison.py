"""``bj.compare``: rank fits of the same data by LOO-PSIS, with WAIC beside it.

The expected log pointwise predictive density is estimated by Pareto-smoothed
importance sampling leave-one-out (Vehtari, Gelman and Gabry 2017, "Practical Bayesian
model evaluation using leave-one-out cross-validation and WAIC", Statistics and
Computing 27) through ArviZ's ``az.loo`` and ``az.compare``; WAIC (Watanabe 2010) via
``az.waic``. Observations whose Pareto k exceeds ArviZ's threshold (0.7 for large
samples) make the LOO estimate unreliable: they are counted per model and warned about.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Mapping

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from bhmjax.fit import Fit

__all__ = ["compare"]


def _idata(fit: "Fit"):
    """Posterior and pointwise log-likelihood (chains, draws, rows) as InferenceData."""
    from bhmjax.io import _import_arviz
    from bhmjax.predict import log_likelihood

    az = _import_arviz()
    ll = log_likelihood(fit)
    posterior = {k: np.asarray(v) for k, v in fit.draws.items() if np.asarray(v).dtype.kind == "f"}
    return az.from_dict(posterior=posterior, log_likelihood={"y": ll}), ll.shape[-1]


def _criteria(name: str, fit: "Fit"):
    from bhmjax.io import _import_arviz

    az = _import_arviz()
    idata, n = _idata(fit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's own warnings are summarised below
        loo = az.loo(idata, pointwise=True)
        waic = az.waic(idata, pointwise=True)
    k = np.asarray(loo.pareto_k).reshape(-1)
    good_k = float(getattr(loo, "good_k", 0.7) or 0.7)
    return loo, waic, int(np.sum(k > good_k)), good_k, n


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
    from bhmjax.io import _import_arviz

    az = _import_arviz()
    if not isinstance(fits, Mapping) or len(fits) < 2:
        raise TypeError("compare needs a dict of two or more fits by name, e.g. "
                        "{'pooled': f1, 'hierarchical': f2}; got "
                        f"{type(fits).__name__}{f' of {len(fits)}' if isinstance(fits, Mapping) else ''}.")
    results = {name: _criteria(name, fit) for name, fit in fits.items()}
    sizes = {name: r[4] for name, r in results.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the fits have different numbers of observations {sizes}; LOO and WAIC compare "
                         "models of the same data only.")
    _check_same_y(fits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare({name: r[0] for name, r in results.items()}, ic="loo")
    table["pareto_k_bad"] = [results[m][2] for m in table.index]
    table["elpd_waic"] = [float(results[m][1].elpd_waic) for m in table.index]
    table["p_waic"] = [float(results[m][1].p_waic) for m in table.index]
    table["se_waic"] = [float(results[m][1].se) for m in table.index]
    table["waic_warning"] = [bool(results[m][1].warning) for m in table.index]
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
