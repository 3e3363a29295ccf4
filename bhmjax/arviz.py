"""Conversion to ArviZ: an ``InferenceData`` under ArviZ 0.x, a ``DataTree`` under 1.x.

The one place that turns a :class:`~bhmjax.Fit` into ArviZ's groups, so that
``az.summary(fit.to_arviz())`` shows the rows of ``fit.summary()`` with the same names
(and ArviZ's ``plot_ppc``, ``loo``, ``loo_pit`` and ``compare`` work on it as it is):

- ``posterior``: the sites users read, with their real dims and labels (``b`` over
  ``coef``, group effects over level and term). Internal sampler sites, whose scalars
  are all unnamed (``Intercept_c``, ``z_g``, ``L_g``), are in no group. A site with
  some hidden scalars (a correlation matrix's diagonal) is exported as a vector of its
  named scalars over ``<site>_entry``, labelled so ArviZ prints the same row names.
- ``sample_stats`` with ArviZ's names, ``observed_data`` (observations over
  ``obs_id``), ``log_likelihood``, ``posterior_predictive``, ``prior`` and
  ``prior_predictive``.

Arrays are handed to ArviZ as they are (float32 stays float32, memory maps stay
mapped); only the vectors of partly hidden sites are copied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from bhmjax._src import stats as sampler_stats
from bhmjax._src.naming import axis_labels, flat_names, valid_labels

if TYPE_CHECKING:  # pragma: no cover
    from bhmjax.fit import Fit

__all__ = ["LOG_LIKELIHOOD_VALUES", "arviz_major", "from_groups", "import_arviz", "to_arviz"]

LOG_LIKELIHOOD_VALUES = 20_000_000
"""``log_likelihood="auto"`` exports the pointwise log-likelihood up to this many values."""
_SAMPLED = ("posterior", "sample_stats", "log_likelihood", "posterior_predictive", "prior",
            "prior_predictive")


def import_arviz():
    """The ``arviz`` module, or an ImportError that says how to install it."""
    try:
        import arviz as az
    except ImportError as err:
        raise ImportError("this needs ArviZ, an optional extra of bhmjax: pip install bhmjax[arviz]") from err
    return az


def arviz_major() -> int:
    """0 for ArviZ 0.x (InferenceData), 1 for ArviZ 1.x (DataTree)."""
    return int(str(import_arviz().__version__).split(".")[0])


def from_groups(groups: Mapping[str, Mapping[str, np.ndarray]], *, coords: Mapping | None = None,
                dims: Mapping | None = None, attrs: Mapping | None = None):
    """ArviZ's ``from_dict`` on either line: ``{group: {var: array}}`` -> InferenceData or DataTree.

    Sampled groups hold (chain, draw, ...) arrays; ``observed_data`` has no sample axes.
    Empty groups are dropped.
    """
    az = import_arviz()
    groups = {g: dict(v) for g, v in groups.items() if v}
    kwargs = dict(coords=dict(coords or {}), dims=dict(dims or {}))
    if arviz_major() >= 1:  # 1.x takes attributes per group
        return az.from_dict(groups, attrs={g: dict(attrs or {}) for g in groups}, **kwargs)
    return az.from_dict(**groups, **kwargs, attrs=dict(attrs or {}))


# --------------------------------------------------------------------------- one site


def _names(fit: "Fit", site: str, shape: tuple[int, ...]) -> list[str | None]:
    names = fit.names.get(site)
    if names is not None and len(names) == int(np.prod(shape, dtype=int)):
        return list(names)
    return list(flat_names(site, shape, fit.coords, fit.dims))


def _site_dims(fit: "Fit", site: str, shape: tuple[int, ...], default: str | None = None) -> list[str]:
    given = list(fit.dims.get(site, ()))[:len(shape)]
    if default is not None and not given and len(shape) == 1:
        return [default]
    return given + [f"{site}_dim_{i}" for i in range(len(given), len(shape))]


def export_site(fit: "Fit", site: str, values: np.ndarray, coords: dict, dims: dict,
                default_dim: str | None = None, sample_axes: int = 2) -> np.ndarray | None:
    """The array ArviZ gets for ``site`` (None for an internal site); fills ``coords``/``dims``.

    Labels follow :func:`bhmjax._src.naming.flat_names`, so ArviZ's flat row names
    (``theta[Choate]``, ``r_g[a, Intercept]``) are the fit's.
    """
    shape = tuple(np.shape(values)[sample_axes:])
    names = _names(fit, site, shape)
    if all(n is None for n in names):
        return None
    site_dims = _site_dims(fit, site, shape, default_dim)
    if names == list(flat_names(site, shape, fit.coords, fit.dims)) and len(set(site_dims)) == len(site_dims):
        for axis, dim in enumerate(site_dims):
            labels = fit.coords.get(dim)
            if labels is not None and valid_labels(labels, shape[axis]):
                coords.setdefault(dim, list(labels))
        if shape:
            dims[site] = site_dims
        return values
    keep = [i for i, n in enumerate(names) if n is not None]  # named scalars only, as a vector
    prefix = f"{site}["
    labels = [n[len(prefix):-1] if n.startswith(prefix) and n.endswith("]") else n for n in (names[i] for i in keep)]
    flat = np.asarray(values).reshape(*np.shape(values)[:sample_axes], -1)
    dims[site] = [f"{site}_entry"]
    coords[f"{site}_entry"] = labels
    return flat[..., keep]


# --------------------------------------------------------------------------- groups


def _observed_dims(observed: Mapping[str, np.ndarray]) -> dict[str, str | None]:
    """``obs_id`` for 1-d observed sites of one common length, else ``<site>_obs_id``."""
    lengths = {np.shape(v)[0] for v in observed.values() if np.ndim(v) == 1}
    return {k: ("obs_id" if len(lengths) == 1 else f"{k}_obs_id") if np.ndim(v) == 1 else None
            for k, v in observed.items()}


def _log_likelihood(fit: "Fit", setting: bool | str, observed: Mapping[str, np.ndarray]) -> dict:
    from bhmjax import io

    stored = getattr(fit, "extras", {}).get("log_likelihood")
    if stored is not None or not setting:
        return dict(stored or {}) if setting else {}
    if setting not in (True, "auto"):
        raise ValueError(f"log_likelihood must be True, False or 'auto', got {setting!r}")
    size = fit.num_chains * fit.num_draws * sum(int(np.size(v)) for v in observed.values())
    if setting == "auto" and size > LOG_LIKELIHOOD_VALUES:
        return {}
    return io.pointwise_log_likelihood(fit)


def _predictive(value: Any, observed: Mapping[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {k: np.asarray(v) for k, v in value.items()}
    if len(observed) != 1:
        raise ValueError(f"{what} given as one array, but the model has {len(observed)} observed sites "
                         f"{list(observed)}; pass a dict of arrays by site name.")
    return {next(iter(observed)): np.asarray(value)}


def _prior(fit: "Fit", prior: Any, observed: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """Prior draws split into latent sites (``prior``) and observed ones (``prior_predictive``)."""
    if prior is None or prior is False:
        return {}, {}
    if prior is True:
        from bhmjax.predict import prior_predictive

        if fit.model is None:
            raise ValueError("prior=True needs fit.model (a loaded fit has none); pass the draws of "
                             "bj.prior_predictive(model) instead.")
        prior = prior_predictive(fit.model, fit.data, draws=fit.num_draws)
    if not isinstance(prior, Mapping):
        raise TypeError(f"prior must be True, or the dict of bj.prior_predictive(...), got {type(prior).__name__}")
    latent = {k: np.asarray(v) for k, v in prior.items() if k not in observed}
    return latent, {k: np.asarray(v) for k, v in prior.items() if k in observed}


def export_groups(fit: "Fit", *, prior: Any = None, posterior_predictive: Any = None,
                  log_likelihood: bool | str = "auto") -> tuple[dict, dict, dict]:
    """Every ArviZ group of ``fit`` as ``({group: {var: array}}, coords, dims)``."""
    from bhmjax import io
    from bhmjax.summary import shown_sites

    extras = getattr(fit, "extras", {})
    observed = {k: np.asarray(v) for k, v in io.observed_data(fit).items()}
    obs_dims = _observed_dims(observed)
    coords: dict = {}
    dims: dict = {}
    posterior = {s: export_site(fit, s, fit.draws[s], coords, dims) for s in shown_sites(fit)}
    stats = sampler_stats.to_arviz(fit.stats)
    if posterior_predictive is True:
        posterior_predictive = fit.posterior_predictive()
    pp = _predictive(posterior_predictive if posterior_predictive is not None
                     else extras.get("posterior_predictive"), observed, "posterior_predictive")
    latent_prior, prior_pp = _prior(fit, prior, observed)
    groups = {"posterior": posterior, "sample_stats": stats,
              "log_likelihood": _log_likelihood(fit, log_likelihood, observed),
              "posterior_predictive": pp,
              "prior": {s: export_site(fit, s, v, coords, dims) for s, v in latent_prior.items()},
              "prior_predictive": prior_pp, "observed_data": observed}
    for group, values in groups.items():
        axes = 0 if group == "observed_data" else 2
        for site, v in values.items():
            if site in observed:
                values[site] = export_site(fit, site, v, coords, dims, obs_dims[site], sample_axes=axes)
        groups[group] = {k: v for k, v in values.items() if v is not None}
    return groups, coords, dims


def to_arviz(fit: "Fit", *, prior: Any = None, posterior_predictive: Any = None,
             log_likelihood: bool | str = "auto"):
    """The fit as ArviZ data: an ``InferenceData`` (ArviZ 0.x) or a ``DataTree`` (ArviZ 1.x).

    Parameters
    ----------
    fit : Fit
    prior : True or dict, optional
        Prior draws for the ``prior`` and ``prior_predictive`` groups: the dict that
        ``bj.prior_predictive(model)`` returns (split into latent and observed sites),
        or True to draw ``fit.num_draws`` of them from ``fit.model`` now.
    posterior_predictive : True, dict or array, optional
        Replicated data (chains, draws, *obs_shape) by observed site (one array for a
        single site), or True to draw them with ``fit.posterior_predictive()``.
        Defaults to draws stored by ``fit.posterior_predictive()`` or in a saved file.
    log_likelihood : bool or "auto"
        Export the pointwise log-likelihood (for ``az.loo``); "auto" does so up to
        :data:`LOG_LIKELIHOOD_VALUES` values (a stored one is always exported).

    Returns
    -------
    arviz.InferenceData or xarray.DataTree
        Groups ``posterior``, ``sample_stats`` (``diverging``, ``energy``, ``step_size``,
        ``tree_depth``, ``n_steps``, ``acceptance_rate``, ``lp``), ``observed_data``,
        ``log_likelihood``, and the predictive groups asked for. Internal sampler sites
        are in no group.

    Raises
    ------
    ImportError
        When ArviZ is not installed (``pip install bhmjax[arviz]``).

    Examples
    --------
    >>> idata = fit.to_arviz(posterior_predictive=True, prior=True)   # doctest: +SKIP
    >>> az.summary(idata)                                               # doctest: +SKIP
    """
    from bhmjax import io

    import_arviz()
    groups, coords, dims = export_groups(fit, prior=prior, posterior_predictive=posterior_predictive,
                                         log_likelihood=log_likelihood)
    attrs = {"inference_library": "bhmjax", **{k: str(v) for k, v in io._versions().items()}}
    return from_groups(groups, coords=coords, dims=dims, attrs=attrs)
