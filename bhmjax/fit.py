"""The ``Fit`` users hold: draws, sampler statistics, timings, and what to do with them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from bhmjax._src.naming import flat_names
from bhmjax.summary import hdi_columns  # noqa: F401 - the one owner of ArviZ's interval names

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from bhmjax.diagnose import DiagnosticReport

__all__ = ["Fit"]


@dataclass
class Fit:
    """The result of sampling a model.

    Attributes
    ----------
    draws : dict of str -> np.ndarray
        Posterior draws, each of shape (chains, draws, *site_shape).
    stats : dict of str -> np.ndarray
        Sampler statistics of shape (chains, draws): ``diverging``, ``num_steps``
        (leapfrog steps = gradient evaluations), ``tree_depth``, ``accept_prob``,
        ``energy``, ``step_size``, ``potential_energy``.
    timings : dict
        Seconds spent in ``compile`` (building and compiling the run's programs), ``warmup``
        and ``sampling``; what the call compiled: ``programs_compiled`` (XLA compilations,
        every program JAX built on the way), ``programs_from_cache`` (fetched from the
        persistent cache), ``compiled`` (XLA seconds per program name), ``trace_s`` and
        ``lower_s`` (Python tracing and lowering).
    num_grad_evals : dict of str -> int
        Gradient evaluations in ``warmup`` and ``sampling`` (all chains).
    settings : dict
        The sampler settings (chains, warmup, draws, seed, chain method, ...).
    coords, dims : dict
        ArviZ-style labels: ``coords[name]`` lists the labels of a dimension and
        ``dims[site]`` names the dimension of each axis of a site.
    names : dict of str -> list of (str or None)
        Explicit row names for the scalars of a site in C order, overriding
        coords/dims (``{"b": ["floor", "x"]}``); a None entry hides that scalar
        from summaries (the unit diagonal of a correlation matrix, say).
    data : dict
        The data arrays the model was fitted to.
    model : callable
        The NumPyro model.
    spec : object, optional
        The model specification when the fit came from ``bj.Model``.
    state : object
        The final sampler state (leading chain axis), to extend the run.
    extras : dict of str -> dict of str -> np.ndarray
        Further ArviZ groups by group name, each site (chains, draws, *shape):
        ``log_likelihood``, ``posterior_predictive``, ``observed_data`` (no chain and
        draw axes). Filled by ``bj.load`` from a saved file; used by ``to_arviz``.
    sampled_data : dict, optional
        The data the sampler ran on where it differs from ``data`` (the exact
        reduction of a formula model); ``extend`` continues on it.
    request : RunRequest, optional
        What was run (model, data, config, labels, generated quantities); ``extend``
        continues it. ``config`` is its config (``settings`` shows it).
    internal : tuple of str
        Sites that are sampler internals (a non-centered twin, an unconstrained
        factor): stored, but not parameters a user reads.
    """

    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    timings: dict[str, Any]
    num_grad_evals: dict[str, int]
    settings: dict[str, Any]
    coords: dict[str, Sequence] = field(default_factory=dict)
    dims: dict[str, tuple[str, ...]] = field(default_factory=dict)
    names: dict[str, list[str | None]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    model: Callable | None = None
    spec: Any = None
    state: Any = None
    extras: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    sampled_data: dict[str, Any] | None = field(default=None, repr=False)
    request: Any = field(default=None, repr=False)
    internal: tuple[str, ...] = field(default=(), repr=False)

    @property
    def config(self):
        """The RunConfig the run ran under (None for a loaded fit)."""
        return None if self.request is None else self.request.config

    def __post_init__(self) -> None:
        for site, names in self.names.items():
            if site in self.draws:
                size = int(np.prod(np.shape(self.draws[site])[2:], dtype=int))
                if len(names) != size:
                    raise ValueError(f"names[{site!r}] has {len(names)} entries but site {site!r} has "
                                     f"{size} values per draw (shape {np.shape(self.draws[site])[2:]}).")

    # ------------------------------------------------------------------ shape

    @property
    def num_chains(self) -> int:
        return int(self.stats["diverging"].shape[0])

    @property
    def num_draws(self) -> int:
        return int(self.stats["diverging"].shape[1])

    def __repr__(self) -> str:
        sites = ", ".join(f"{k}{list(v.shape[2:])}" for k, v in self.draws.items())
        return (f"Fit({self.num_chains} chains x {self.num_draws} draws; sites: {sites}; "
                f"{int(self.stats['diverging'].sum())} divergences)")

    def _repr_html_(self) -> str:
        """A compact card: what ran, divergences, and the first rows of the summary."""
        from bhmjax import summary
        from bhmjax.display import card

        s = self.settings
        spec = self.spec
        model = getattr(getattr(spec, "formula", None), "text", None)
        lines = [("model", f"{model} ({spec.family.name})" if model else
                  getattr(self.model, "__name__", "NumPyro model") if self.model else "loaded from a file"),
                 ("ran", f"{self.num_chains} chains x {self.num_draws} draws after {s.get('warmup', '?')} warmup"
                  f" ({s.get('chain_method', '?')}); {sum(self.timings.get(k, 0.0) for k in ('warmup', 'sampling')):.1f} s"
                  f" sampling, {self.timings.get('compile', 0.0):.1f} s compiling")]
        sites, left_out = summary.default_sites(self)
        cols = summary.columns(self, sites)
        shown = cols.take(range(min(len(cols), 10)))
        divergences = int(np.sum(self.stats["diverging"]))
        table = summary.table(self, shown) if len(shown) else None
        note = (f"first {len(shown)} of {len(cols) + sum(len(summary.columns(self, [s])) for s in left_out)} "
                "parameters; fit.summary() shows them, fit.diagnose() checks all") if len(shown) < len(cols) or left_out \
            else "fit.diagnose() checks convergence"
        return card("bhmjax Fit", lines, verdict=(f"{divergences} divergent transitions", divergences == 0),
                    table=table, note=note)

    # ------------------------------------------------------------------ names

    def param_names(self, var_names: Sequence[str] | None = None) -> list[str]:
        """Scalar parameter names, e.g. ``['mu', 'theta[school_1]', ...]`` (no draws are read)."""
        from bhmjax import summary

        return list(summary.columns(self, self._sites(var_names)).names)

    def site_names(self, site: str) -> list[str | None]:
        """Row names of every scalar of ``site`` in C order (None: hidden)."""
        shape = self.draws[site].shape[2:]
        names = self.names.get(site)
        if names is not None:  # lengths are checked when the Fit is built
            return list(names)
        return list(flat_names(site, shape, self.coords, self.dims))

    def _sites(self, var_names: Sequence[str] | str | None) -> list[str]:
        from bhmjax import summary

        if var_names is None:
            return summary.shown_sites(self)
        if isinstance(var_names, str):
            var_names = [var_names]
        unknown = [v for v in var_names if v not in self.draws]
        if unknown:
            raise KeyError(f"no site named {unknown} in this fit; sites are {list(self.draws)}")
        return list(var_names)

    def flat_draws(self, var_names: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        """Scalar parameters side by side: names and an array (chains, draws, n_params).

        This copies every chosen draw: for large fits choose sites (``var_names``), or
        use :mod:`bhmjax.summary`, which reads a block of columns at a time.
        """
        from bhmjax import summary

        cols = summary.columns(self, self._sites(var_names))
        return list(cols.names), summary.gather(self, cols)

    # ------------------------------------------------------------------ summaries

    def summary(self, var_names: str | Sequence[str] | None = None, filter_vars: str | None = None, *,
                hdi_prob: float | None = None, kind: str = "all", round_to: int | str | None = None,
                max_bytes: int | None = None) -> "pd.DataFrame":
        """A table with one row per scalar parameter, as ``arviz.summary`` makes it.

        Parameters
        ----------
        var_names : str or list of str, optional
            Sites to show; ``"~name"`` excludes one. Default: every site users read
            (internal sampler sites such as ``z_g`` are left out; a fit with more than
            ``bhmjax.summary.LARGE_FIT`` parameters also leaves out its sites with more
            than ``LARGE_SITE`` scalars, the group effects, and warns).
        filter_vars : {None, "like", "regex"}
            Read ``var_names`` as exact names, substrings or regular expressions.
        hdi_prob : float, default 0.94
            Mass of the highest-density interval (columns ``hdi_3%``, ``hdi_97%``).
        kind : {"all", "stats", "diagnostics"}
            All columns, or mean, sd and the interval, or mcse_mean, mcse_sd,
            ess_bulk, ess_tail and r_hat.
        round_to : int, None or "none"
            Decimals; None rounds as ArviZ does (3 decimals, integer ESS, R-hat to 2
            decimals); "none" keeps every digit.
        max_bytes : int, optional
            Working memory of one block of columns (``bhmjax.summary.WORK_BYTES``).

        Returns
        -------
        pandas.DataFrame
            Rows named as ``arviz.summary(fit.to_arviz())`` names them; statistics
            computed in float64 by ``bhmjax.diagnostics``, a block of columns at a time.

        Examples
        --------
        >>> fit.summary(["~theta"], hdi_prob=0.9, round_to="none")   # doctest: +SKIP
        >>> fit.summary("^sd_", filter_vars="regex", kind="diagnostics")   # doctest: +SKIP
        """
        from bhmjax import summary

        return summary.summary(self, var_names, filter_vars, hdi_prob=hdi_prob, kind=kind,
                               round_to=round_to, max_bytes=max_bytes)

    def extend(self, draws: int, *, progress: bool = False) -> "Fit":
        """``draws`` more draws per chain, continuing the chains without new warmup.

        Returns a new Fit with the old and the new draws (see :func:`bhmjax.sampler.extend`).
        """
        from bhmjax.sampler import extend

        return extend(self, draws, progress=progress)

    def diagnose(self, *, verbose: bool = True, **thresholds) -> "DiagnosticReport":
        """Check convergence and sampler health; prints the report and returns it.

        See :func:`bhmjax.diagnose.diagnose` for the checks and ``thresholds``.
        """
        from bhmjax.diagnose import diagnose

        from bhmjax.display import current_cell

        report = diagnose(self, **thresholds)
        if verbose:
            print(report)
            report._printed_in = current_cell()  # a notebook then shows it once, not echoed again
        return report

    # ------------------------------------------------------------------ predictions (bhmjax.predict)

    def predict(self, new_data, kind: str = "response", groups: str = "existing", **kwargs):
        """Predictions for new rows, a :class:`~bhmjax.predict.Prediction`; see :func:`bhmjax.predict.predict`."""
        from bhmjax.predict import predict

        return predict(self, new_data, kind, groups, **kwargs)

    def posterior_predictive(self, **kwargs) -> dict[str, np.ndarray]:
        """Replicated observed data by site; see :func:`bhmjax.predict.posterior_predictive`."""
        from bhmjax.predict import posterior_predictive

        return posterior_predictive(self, **kwargs)

    def log_likelihood(self, new_data=None, **kwargs) -> np.ndarray:
        """Pointwise log-likelihood (chains, draws, rows); see :func:`bhmjax.predict.log_likelihood`."""
        from bhmjax.predict import log_likelihood

        return log_likelihood(self, new_data, **kwargs)

    # ------------------------------------------------------------------ reading the results (effects, conditional, hypothesis)

    def fixef(self, probs: Sequence[float] = (0.025, 0.975), summary: bool = True):
        """Population-level effects, a frame by term; see :func:`bhmjax.effects.fixef`."""
        from bhmjax import effects

        return effects.fixef(self, probs, summary)

    def ranef(self, probs: Sequence[float] = (0.025, 0.975), summary: bool = True):
        """Group-level deviations per grouping, level and term; see :func:`bhmjax.effects.ranef`."""
        from bhmjax import effects

        return effects.ranef(self, probs, summary)

    def coef(self, probs: Sequence[float] = (0.025, 0.975), summary: bool = True):
        """Population plus group-level effects per level; see :func:`bhmjax.effects.coef`."""
        from bhmjax import effects

        return effects.coef(self, probs, summary)

    def r2(self, probs: Sequence[float] = (0.025, 0.975), summary: bool = True, **kwargs):
        """Bayesian R2 (Gelman et al. 2019); see :func:`bhmjax.effects.r2`."""
        from bhmjax import effects

        return effects.r2(self, probs, summary, **kwargs)

    def conditional_effects(self, effect: str, by: str | None = None, **kwargs) -> "pd.DataFrame":
        """Predictions over a grid of one predictor; see :func:`bhmjax.conditional.conditional_effects`."""
        from bhmjax.conditional import conditional_effects

        return conditional_effects(self, effect, by, **kwargs)

    def hypothesis(self, *hypotheses: str, alpha: float = 0.05, summary: bool = True):
        """Posterior probabilities and intervals of hypotheses; see :func:`bhmjax.hypothesis.hypothesis`."""
        from bhmjax.hypothesis import hypothesis

        return hypothesis(self, *hypotheses, alpha=alpha, summary=summary)

    # ------------------------------------------------------------------ export and plots (bhmjax.io, bhmjax.plots)

    def to_arviz(self, **kwargs):
        """ArviZ data (InferenceData on ArviZ 0.x, DataTree on 1.x); see :func:`bhmjax.arviz.to_arviz`."""
        from bhmjax.arviz import to_arviz

        return to_arviz(self, **kwargs)

    def save(self, path, **kwargs):
        """Save to one portable file, atomically; see :func:`bhmjax.io.save` and ``bj.load``."""
        from bhmjax import io

        return io.save(self, path, **kwargs)

    def plot_trace(self, *args, **kwargs):
        """Trace and density per parameter; see :func:`bhmjax.plots.plot_trace`."""
        from bhmjax import plots

        return plots.plot_trace(self, *args, **kwargs)

    def plot_rank(self, *args, **kwargs):
        """Rank histograms per chain; see :func:`bhmjax.plots.plot_rank`."""
        from bhmjax import plots

        return plots.plot_rank(self, *args, **kwargs)

    def plot_forest(self, *args, **kwargs):
        """Posterior intervals; see :func:`bhmjax.plots.plot_forest`."""
        from bhmjax import plots

        return plots.plot_forest(self, *args, **kwargs)

    def plot_shrinkage(self, *args, **kwargs):
        """Partial against no pooling per group; see :func:`bhmjax.plots.plot_shrinkage`."""
        from bhmjax import plots

        return plots.plot_shrinkage(self, *args, **kwargs)

    def plot_pair(self, *args, **kwargs):
        """Pairwise scatter with divergences; see :func:`bhmjax.plots.plot_pair`."""
        from bhmjax import plots

        return plots.plot_pair(self, *args, **kwargs)

    def plot_funnel(self, *args, **kwargs):
        """Group effect against its log scale; see :func:`bhmjax.plots.plot_funnel`."""
        from bhmjax import plots

        return plots.plot_funnel(self, *args, **kwargs)

    def plot_ppc(self, *args, **kwargs):
        """Observed against replicated data; see :func:`bhmjax.plots.plot_ppc`."""
        from bhmjax import plots

        return plots.plot_ppc(self, *args, **kwargs)

    def plot_energy(self, *args, **kwargs):
        """Energy and energy-transition distributions; see :func:`bhmjax.plots.plot_energy`."""
        from bhmjax import plots

        return plots.plot_energy(self, *args, **kwargs)

    def plot_predictions(self, *args, **kwargs):
        """Conditional effects with intervals; see :func:`bhmjax.plots.plot_predictions`."""
        from bhmjax import plots

        return plots.plot_predictions(self, *args, **kwargs)
