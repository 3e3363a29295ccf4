"""Predictions for new rows, predictive draws of the data, held-out densities.

The user layer of :mod:`bhmjax._src.predict`: new data are checked and encoded here,
on concrete values and before anything compiles, then one jit-compiled function maps
over draws and chunks of rows. Model comparison lives in :mod:`bhmjax.comparison`.

Examples
--------
>>> import numpy as np, bhmjax as bj
>>> rng = np.random.default_rng(0)
>>> g = np.repeat(np.arange(8), 5); y = rng.normal(0.3 * g, 1.0)
>>> fit = bj.Model("y ~ 1 + (1 | g)", {"y": y, "g": g}).fit(chains=2, warmup=200, draws=200,
...                                                          progress=False)
>>> pred = fit.predict({"g": [0, 7, 99]}, groups="new", seed=1)
>>> pred.draws.shape, list(pred.summary().columns)
((2, 200, 3), ['mean', 'sd', 'hdi_3%', 'hdi_97%'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from bhmjax._src import predict as core
from bhmjax._src.precision import x64_mode
from bhmjax.design import new_design

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from bhmjax.fit import Fit

__all__ = ["Prediction", "predict", "log_likelihood", "log_predictive_density", "posterior_predictive",
           "prior_predictive", "GROUPS", "KINDS"]

KINDS = ("response", "mean", "linear_predictor")
GROUPS = ("existing", "new", "population")
DEFAULT_MAX_BYTES = 256 * 2**20


# --------------------------------------------------------------------------- the result


@dataclass
class Prediction:
    """Predictive draws for the rows of new data.

    Attributes
    ----------
    draws : np.ndarray, shape (chains, draws, rows) or (chains, draws, rows, levels)
        float, or int32 for count, 0/1 and category responses; the category
        probabilities (or logits) of ordinal and categorical families have a last axis
        of levels.
    kind : str
        "response", "mean" or "linear_predictor".
    groups : str
        "existing", "new" or "population".
    index : pandas.Index
        The rows' labels (``new_data``'s index for a DataFrame).
    new_levels : dict of str -> tuple
        Per grouping, the levels not seen in training (drawn from the population).
    categories : tuple
        The response levels of ordinal and categorical families: the labels of the
        last axis of level probabilities, or of the codes of response draws.
    """

    draws: np.ndarray
    kind: str
    groups: str
    index: Any = None
    new_levels: dict = field(default_factory=dict)
    categories: tuple = ()

    @property
    def mean(self) -> np.ndarray:
        """Posterior mean per row, shape (rows,) (or (rows, levels))."""
        return self.draws.mean(axis=(0, 1))

    @property
    def sd(self) -> np.ndarray:
        """Posterior sd per row, shape (rows,) (or (rows, levels))."""
        return self.draws.std(axis=(0, 1), ddof=1)

    def summary(self, prob: float = 0.94) -> "pd.DataFrame":
        """One row per predicted row (and level): mean, sd and the highest-density interval of mass ``prob``."""
        import pandas as pd

        from bhmjax.fit import hdi_columns

        if not 0 < prob < 1:
            raise ValueError(f"prob must lie in (0, 1), got {prob!r}")
        lo, hi = hdi_columns(prob)
        c, d = self.draws.shape[:2]
        flat = self.draws.reshape(c, d, -1)
        bounds = _hdi_rows(flat, prob)
        index = self.index
        if self.draws.ndim == 4:
            rows = self.index if self.index is not None else pd.RangeIndex(self.draws.shape[2])
            index = pd.MultiIndex.from_product([rows, list(self.categories)], names=[rows.name, "level"])
        return pd.DataFrame({"mean": self.mean.reshape(-1), "sd": self.sd.reshape(-1), lo: bounds[:, 0],
                             hi: bounds[:, 1]}, index=index)

    def _repr_html_(self) -> str:
        from bhmjax.display import card

        c, d, n = self.draws.shape
        new = {k: len(v) for k, v in self.new_levels.items() if v}
        lines = [("kind", self.kind), ("groups", self.groups), ("draws", f"{n:,} rows x {c} chains x {d} draws")]
        if new:
            lines.append(("new levels", ", ".join(f"{k}: {v}" for k, v in new.items())))
        head = self.summary().head(10) if n <= 100_000 else None
        return card("bhmjax Prediction", lines, table=head,
                    note=f"first {min(n, 10)} of {n:,} rows; .summary() shows all" if head is not None else None)

    def __repr__(self) -> str:
        c, d, n = self.draws.shape[:3]
        new = {k: len(v) for k, v in self.new_levels.items() if v}
        levels = f" x {self.draws.shape[3]} levels" if self.draws.ndim == 4 else ""
        return (f"Prediction(kind={self.kind!r}, groups={self.groups!r}, {n} rows{levels} x {c} chains x {d} "
                f"draws{f', new levels {new}' if new else ''})")


def _hdi_rows(draws: np.ndarray, prob: float, rows_per_chunk: int = 1 << 16) -> np.ndarray:
    """ArviZ's HDI (the narrowest interval holding ``ceil``-rounded ``prob`` of the draws) per row."""
    flat = draws.reshape(-1, draws.shape[-1])
    n = flat.shape[0]
    inc = int(np.floor(prob * n))
    out = np.empty((flat.shape[1], 2), dtype=np.float64)
    for start in range(0, flat.shape[1], rows_per_chunk):
        x = np.sort(flat[:, start:start + rows_per_chunk].astype(np.float64), axis=0)
        width = x[inc:] - x[:n - inc]
        best = np.argmin(width, axis=0)
        cols = np.arange(x.shape[1])
        out[start:start + x.shape[1]] = np.stack([x[best, cols], x[best + inc, cols]], axis=1)
    return out


# --------------------------------------------------------------------------- checks


def _formula_spec(fit: "Fit", what: str):
    if getattr(fit, "spec", None) is None or not hasattr(fit.spec, "structure"):
        raise TypeError(f"{what} on new data needs a formula fit (bj.Model(...).fit()); this fit came from "
                        "a NumPyro model. Use fit.posterior_predictive() for the observed data, or "
                        "numpyro.infer.Predictive with the model's new arguments.")
    return fit.spec


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


# --------------------------------------------------------------------------- draws


def _draw_index(fit: "Fit", draws: int | None) -> np.ndarray:
    total = fit.num_draws
    if draws is None:
        return np.arange(total)
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise ValueError(f"draws must be a positive integer (draws per chain) or None, got {draws!r}")
    if draws > total:
        raise ValueError(f"draws={draws} but the fit has {total} draws per chain.")
    return np.unique(np.linspace(0, total - 1, int(draws)).round().astype(int))


def _params(fit: "Fit", structure, kind: str, new_terms: tuple[int, ...], idx: np.ndarray,
            dpar: str | None) -> dict[str, np.ndarray]:
    """The sites prediction reads, (chains * draws, ...), in the fit's float precision."""
    names = core.needed_sites(structure, kind, new_terms, dpar)
    missing = [n for n in names if n not in fit.draws]
    if missing:
        raise ValueError(f"the fit has no draws of {missing}, which prediction needs; were they left out "
                         "with sample(keep=..., drop=...)? Refit keeping them.")
    dtype = np.float64 if fit.settings.get("x64", False) else np.float32
    return {n: np.asarray(fit.draws[n])[:, idx].astype(dtype).reshape(-1, *np.shape(fit.draws[n])[2:])
            for n in names}


def _run(fit: "Fit", rows: dict, num_rows: int, new: dict, kind: str, groups: str, draws, seed: int,
         max_bytes: int, dpar: str | None = None) -> np.ndarray:
    import jax

    spec = fit.spec
    structure = core.population_structure(spec.structure) if groups == "population" else spec.structure
    idx = _draw_index(fit, draws)
    num_new = tuple(len(new.get(g.name, ())) for g in spec.groups)
    with x64_mode(fit.settings.get("x64", False)):
        params = _params(fit, structure, kind, tuple(t for t, m in enumerate(num_new) if m), idx, dpar)
        key_new, key_rows = jax.random.split(jax.random.PRNGKey(int(seed)))
        if any(num_new) and groups != "population":
            params = core.extend_group_effects(key_new, structure, params, num_new)
        out = core.predict_draws(key_rows, structure, params, rows, num_rows, kind=kind, dpar=dpar,
                                 max_bytes=max_bytes)
    return out.reshape(fit.num_chains, len(idx), num_rows, *out.shape[2:])


def _needs_trials(spec, kind: str, trials):
    if spec.family.name != "binomial" or kind not in ("response", "log_likelihood"):
        return None
    trials = trials if trials is not None else spec.formula.trials
    if trials is None:
        raise ValueError("binomial responses need the number of trials per row: the formula names no "
                         "trials column, so pass trials='column' or trials=array.")
    return trials


def predict(fit: "Fit", new_data: Any, kind: str = "response", groups: str = "existing", *,
            dpar: str | None = None, draws: int | None = None, seed: int = 0, allow_new_levels: bool = False,
            trials: Any = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Prediction:
    """Posterior predictions for the rows of ``new_data``: :meth:`bhmjax.Fit.predict`.

    Parameters
    ----------
    fit : Fit
        A formula fit (``bj.Model(...).fit()``).
    new_data : pandas.DataFrame, dict of 1-d arrays or None
        The predictor columns (the response is not needed); None: the fitted rows
        (``fit.data``, with their trials).
    kind : {"response", "mean", "linear_predictor"}
        Draws of the response (int32 for counts, 0/1 and category codes), of its mean
        (the success probability for binomial; for ordinal and categorical families
        the probability of each level, an extra last axis labelled by
        ``Prediction.categories``) or of the linear predictor (categorical: the logits
        of every level, the reference's 0).
    groups : {"existing", "new", "population"}
        "existing": fitted group effects; unseen levels raise ``ValueError`` naming
        them. "new": as "existing", and unseen levels draw effects from the fitted
        population, ``r = (diag(sd) L) eps`` per draw. "population": all group
        effects zero.
    dpar : str, optional
        One parameter of the family instead of the response (brms' ``dpar``): "mu",
        an auxiliary parameter ("sigma", "phi", "zi", ...; per row when it has a
        formula, else its scalar draws repeated) or a category's "mu<level>". With
        ``kind="mean"`` its value (a category's probability), with
        ``kind="linear_predictor"`` its link-scale predictor; not with "response".
    draws : int, optional
        Draws per chain to use (evenly spaced); all by default.
    seed : int
        Seed of the response draws and new-group effects.
    allow_new_levels : bool
        Same as ``groups="new"``.
    trials : str or array, optional
        Binomial trials for ``kind="response"`` (default: the formula's trials column).
    max_bytes : int
        Working memory bound of one chunk of (draws x rows).

    Returns
    -------
    Prediction
        ``.draws`` (chains, draws, rows), ``.mean``, ``.summary(prob=0.94)``.
    """
    _check_choice("kind", kind, KINDS)
    _check_choice("groups", groups, GROUPS)
    groups = "new" if allow_new_levels and groups == "existing" else groups
    spec = _formula_spec(fit, "predict")
    _check_dpar(spec, kind, dpar)
    if new_data is None:  # the fitted rows, as brms' newdata = NULL
        rows, n = _training_rows(fit)
        rows.pop("y", None)
        new, index = {}, None
    else:
        rows, n, new, index = new_design(spec, new_data, groups=groups, trials=_needs_trials(spec, kind, trials))
    values = _run(fit, rows, n, new, kind, groups, draws, seed, max_bytes, dpar)
    categories = tuple(spec.categories) if values.ndim == 4 or (kind == "response" and spec.categories) else ()
    return Prediction(values, kind, groups, index, {k: v for k, v in new.items()}, categories)


def _check_dpar(spec, kind: str, dpar: str | None) -> None:
    if dpar is None:
        return
    valid = core.dpars_of(spec.structure)
    if dpar not in valid:
        raise ValueError(f"dpar={dpar!r} is not a parameter of this {spec.family.name} model; choose one of "
                         f"{list(valid)}.")
    if kind == "response":
        raise ValueError(f"dpar={dpar!r} asks for a parameter, which has no response draws; use "
                         "kind='mean' (its value) or kind='linear_predictor' (its link scale).")


def _training_rows(fit: "Fit") -> tuple[dict[str, np.ndarray], int]:
    from bhmjax._src.models import row_keys

    keys = row_keys(fit.spec.structure, fit.data)
    return {k: np.asarray(fit.data[k]) for k in keys}, int(fit.data["N"])


def log_likelihood(fit: "Fit", new_data: Any = None, *, groups: str = "existing", draws: int | None = None,
                   seed: int = 0, trials: Any = None, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Pointwise log-likelihood, shape (chains, draws, rows), of the fitted or of new rows.

    ``new_data`` needs the response column (and trials for binomial). Without it the
    training rows are used: for formula fits, computed chunk by chunk from the linear
    predictor; for NumPyro-model fits, :func:`bhmjax.io.pointwise_log_likelihood` of the
    single observed site. With ``groups="new"`` unseen levels draw their effects.
    """
    _check_choice("groups", groups, GROUPS)
    if new_data is None and getattr(fit, "spec", None) is None:
        from bhmjax.io import pointwise_log_likelihood

        out = pointwise_log_likelihood(fit)
        if len(out) != 1:
            raise ValueError(f"the model has {len(out)} observed sites {list(out)}; use "
                             "bhmjax.io.pointwise_log_likelihood(fit) for a dict by site.")
        ll = next(iter(out.values()))
        return ll[:, _draw_index(fit, draws)]
    spec = _formula_spec(fit, "log_likelihood")
    if new_data is None:
        rows, n = _training_rows(fit)
        new = {}
    else:
        rows, n, new, _ = new_design(spec, new_data, groups=groups, response=True,
                                     trials=_needs_trials(spec, "log_likelihood", trials))
    return _run(fit, rows, n, new, "log_likelihood", groups, draws, seed, max_bytes)


def log_predictive_density(fit: "Fit", new_data: Any = None, **kwargs) -> np.ndarray:
    """Pointwise log predictive density ``log mean_s p(y_i | theta_s)``, shape (rows,).

    Sum it for the (held-out) lpd of the rows; keyword arguments as :func:`log_likelihood`.
    """
    return core.log_mean_exp(log_likelihood(fit, new_data, **kwargs))


# --------------------------------------------------------------------------- predictive checks


def _unobserved(model: Callable) -> Callable:
    """``model`` with every observed site sampled instead (for predictive draws)."""
    from numpyro.primitives import Messenger

    class _Unobserve(Messenger):
        def process_message(self, msg):
            if msg["type"] == "sample" and msg.get("is_observed"):
                msg["is_observed"], msg["value"] = False, None

    return _Unobserve(model)


def posterior_predictive(fit: "Fit", *, draws: int | None = None, seed: int = 0, store: bool = True,
                         max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, np.ndarray]:
    """Replicated data of the observed sites, ``{site: (chains, draws, *obs_shape)}``.

    Formula fits draw ``y`` from the fitted rows chunk by chunk; NumPyro-model fits run
    ``numpyro.infer.Predictive`` vectorized over the draws, with observed sites sampled.
    With all draws and ``store=True`` the result is kept in
    ``fit.extras["posterior_predictive"]``, so ``to_arviz`` and ``plot_ppc`` use it.
    """
    import jax

    idx = _draw_index(fit, draws)
    if getattr(fit, "spec", None) is not None and hasattr(fit.spec, "structure"):
        rows, n = _training_rows(fit)
        rows.pop("y", None)
        out = {"y": _run(fit, rows, n, {}, "response", "existing", draws, seed, max_bytes)}
    else:
        from numpyro.infer import Predictive

        from bhmjax.io import observed_data

        if fit.model is None:
            raise ValueError("posterior_predictive needs fit.model (a loaded fit has none).")
        sites = list(observed_data(fit))
        samples = {k: np.asarray(v)[:, idx] for k, v in fit.draws.items()}
        with x64_mode(fit.settings.get("x64", False)):
            pred = Predictive(_unobserved(fit.model), posterior_samples=samples, batch_ndims=2,
                              return_sites=sites, parallel=True)(jax.random.PRNGKey(int(seed)), **fit.data)
        out = {k: np.asarray(v) for k, v in pred.items()}
    if store and draws is None:
        fit.extras["posterior_predictive"] = dict(out)
    return out


def prior_predictive(model: Any, data: Mapping[str, Any] | None = None, *, draws: int = 500,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Draws of every site from the prior, ``{site: (1, draws, *shape)}``, the data included.

    ``model`` is a ``bj.Model`` (its own data's design; ``data`` unused), a ``Fit`` (its
    model on its data: a formula fit's full model, group effects drawn even where the
    run integrated them out) or a NumPyro model called with ``**data``; observed sites
    are drawn, not fixed.
    """
    import jax
    from numpyro.infer import Predictive

    from bhmjax._src.models import build_model
    from bhmjax.fit import Fit
    from bhmjax.model import Model

    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    if isinstance(model, Fit) and model.spec is None:  # a NumPyro function's fit: its model on its data
        model, data = model.model, model.data
    if isinstance(model, Fit):  # a formula fit: the full model (the run's may integrate effects out)
        fn, kwargs = build_model(model.spec.structure), {**model.data, "y": None}
    elif isinstance(model, Model):
        fn, kwargs = model.numpyro_model, {**model.model_data(), "y": None}
    if isinstance(model, (Model, Fit)):
        if kwargs.get("trials") is not None:  # NumPyro's binomial sampler needs integer counts
            kwargs["trials"] = np.asarray(kwargs["trials"]).astype(np.int32)
    elif callable(model):
        fn, kwargs = model, dict(data or {})
    else:
        raise TypeError(f"model must be a bj.Model or a NumPyro model function, got {type(model).__name__}")
    predictive = Predictive(_unobserved(fn), num_samples=int(draws), parallel=True)
    pred = predictive(jax.random.PRNGKey(int(seed)), **kwargs)
    return {k: np.asarray(v)[None] for k, v in pred.items()}
