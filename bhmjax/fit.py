"""The ``Fit`` users hold: draws, sampler statistics, timings, and what to do with them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from bhmjax._src import diagnostics
from bhmjax._src.naming import flat_names
from bhmjax._src.precision import x64_mode

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from bhmjax.diagnose import DiagnosticReport

__all__ = ["Fit"]


def hdi_columns(prob: float) -> tuple[str, str]:
    """ArviZ's column names for an interval of mass ``prob``: ('hdi_3%', 'hdi_97%')."""
    lo = 100 * (1 - prob) / 2
    hi = 100 - lo
    fmt = lambda v: f"{v:g}"  # noqa: E731
    return f"hdi_{fmt(lo)}%", f"hdi_{fmt(hi)}%"


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
    timings : dict of str -> float
        Seconds spent in ``compile``, ``warmup`` and ``sampling``.
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
    timings: dict[str, float]
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

    # ------------------------------------------------------------------ names

    def param_names(self, var_names: Sequence[str] | None = None) -> list[str]:
        """Scalar parameter names, e.g. ``['mu', 'theta[school_1]', ...]``."""
        return self.flat_draws(var_names)[0]

    def site_names(self, site: str) -> list[str | None]:
        """Row names of every scalar of ``site`` in C order (None: hidden)."""
        shape = self.draws[site].shape[2:]
        names = self.names.get(site)
        if names is not None:  # lengths are checked when the Fit is built
            return list(names)
        return list(flat_names(site, shape, self.coords, self.dims))

    def _sites(self, var_names: Sequence[str] | str | None) -> list[str]:
        if var_names is None:
            return list(self.draws)
        if isinstance(var_names, str):
            var_names = [var_names]
        unknown = [v for v in var_names if v not in self.draws]
        if unknown:
            raise KeyError(f"no site named {unknown} in this fit; sites are {list(self.draws)}")
        return list(var_names)

    def flat_draws(self, var_names: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        """All scalar parameters side by side: names and an array (chains, draws, n_params)."""
        names, columns = [], []
        for site in self._sites(var_names):
            x = self.draws[site]
            x = x.reshape(x.shape[0], x.shape[1], -1)
            shown = [i for i, n in enumerate(self.site_names(site)) if n is not None]
            names += [self.site_names(site)[i] for i in shown]
            columns.append(x[..., shown].astype(np.float64 if x.dtype == np.float64 else np.float32))
        if not columns:
            raise ValueError("no parameters to show: the selected sites are empty or hidden")
        return names, np.concatenate(columns, axis=-1)

    # ------------------------------------------------------------------ summaries

    def summary(self, var_names: Sequence[str] | None = None, prob: float = 0.94) -> "pd.DataFrame":
        """A table with one row per scalar parameter, in ArviZ's column names.

        Columns: mean, sd, hdi_3%, hdi_97% (for ``prob=0.94``), mcse_mean, mcse_sd,
        ess_bulk, ess_tail, r_hat. Computed in JAX by ``bhmjax.diagnostics``.
        """
        import pandas as pd

        names, x = self.flat_draws(var_names)
        with x64_mode(x.dtype == np.float64):  # float64 draws are summarised in float64
            stats = {k: np.asarray(v) for k, v in diagnostics.summary_stats(x, prob=prob).items()}
        lo, hi = hdi_columns(prob)
        table = pd.DataFrame({
            "mean": stats["mean"], "sd": stats["sd"], lo: stats["hdi_lower"], hi: stats["hdi_upper"],
            "mcse_mean": stats["mcse_mean"], "mcse_sd": stats["mcse_sd"],
            "ess_bulk": stats["ess_bulk"], "ess_tail": stats["ess_tail"], "r_hat": stats["r_hat"],
        }, index=pd.Index(names, name="parameter"))
        return table

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

        report = diagnose(self, **thresholds)
        if verbose:
            print(report)
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

    # ------------------------------------------------------------------ export and plots (bhmjax.io, bhmjax.plots)

    def to_arviz(self, **kwargs):
        """An ArviZ InferenceData; see :func:`bhmjax.io.to_arviz`."""
        from bhmjax import io

        return io.to_arviz(self, **kwargs)

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
