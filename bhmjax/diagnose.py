"""``fit.diagnose()``: is this fit trustworthy, and if not, what to do about it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bhmjax._src import diagnostics

if TYPE_CHECKING:  # pragma: no cover
    from bhmjax.fit import Fit

__all__ = ["DiagnosticReport", "Problem", "diagnose", "group_scales", "group_terms"]

_SCALE_PATTERN = re.compile(r"^(sd|sigma|tau|scale|sd_)|(_sd|_sigma|_tau|_scale)$|^sd_", re.IGNORECASE)


@dataclass(frozen=True)
class Problem:
    """One failed check: a short name, what was measured, and advice in plain words."""

    check: str
    message: str
    advice: str


@dataclass
class DiagnosticReport:
    """Convergence and sampler-health checks of one fit.

    Attributes
    ----------
    divergences : np.ndarray of int, shape (chains,)
    divergence_share : float
    max_rhat : float
    rhat_over : dict of parameter -> R-hat, for those over ``rhat_threshold``
    min_ess_bulk, min_ess_tail : float
    ess_under : dict of parameter -> (bulk, tail) for those under ``ess_per_chain * chains``
    ebfmi : np.ndarray, shape (chains,)
    tree_depth_saturation : float
        Share of draws that hit the maximum tree depth.
    step_size : np.ndarray, shape (chains,)
    problems : list of Problem
    """

    num_chains: int
    num_draws: int
    divergences: np.ndarray
    divergence_share: float
    max_rhat: float
    rhat_over: dict[str, float]
    min_ess_bulk: float
    min_ess_tail: float
    ess_under: dict[str, tuple[float, float]]
    ebfmi: np.ndarray
    tree_depth_saturation: float
    step_size: np.ndarray
    problems: list[Problem] = field(default_factory=list)
    _printed_in: int | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.problems

    @property
    def verdict(self) -> str:
        return "converged: no problems found" if self.ok else (
            f"NOT converged: {len(self.problems)} problem(s): " + ", ".join(p.check for p in self.problems))

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        per_chain = lambda a, fmt: " ".join(fmt.format(v) for v in np.asarray(a))  # noqa: E731
        lines = [
            f"Diagnostics ({self.num_chains} chains x {self.num_draws} draws): {self.verdict}",
            f"  divergences       {int(self.divergences.sum())} ({self.divergence_share:.2%}); per chain: "
            + per_chain(self.divergences, "{:d}"),
            f"  max r_hat         {self.max_rhat:.4g}" + (f" ({len(self.rhat_over)} over threshold)" if self.rhat_over else ""),
            f"  min ess bulk/tail {self.min_ess_bulk:.0f} / {self.min_ess_tail:.0f}",
            "  E-BFMI per chain  " + per_chain(self.ebfmi, "{:.2f}"),
            f"  tree depth at max {self.tree_depth_saturation:.1%} of draws",
            "  step size         " + per_chain(self.step_size, "{:.3g}"),
        ]
        for p in self.problems:
            lines += [f"- {p.check}: {p.message}", f"    advice: {p.advice}"]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from bhmjax.display import card

        fmt = lambda a, f: " ".join(f.format(v) for v in np.asarray(a))  # noqa: E731
        lines = [("divergences", f"{int(self.divergences.sum())} ({self.divergence_share:.2%}); per chain "
                  + fmt(self.divergences, "{:d}")),
                 ("max r_hat", f"{self.max_rhat:.4g}"),
                 ("min ess bulk / tail", f"{self.min_ess_bulk:.0f} / {self.min_ess_tail:.0f}"),
                 ("E-BFMI per chain", fmt(self.ebfmi, "{:.2f}")),
                 ("tree depth at max", f"{self.tree_depth_saturation:.1%} of draws"),
                 ("step size", fmt(self.step_size, "{:.3g}"))]
        return card(f"Diagnostics ({self.num_chains} chains x {self.num_draws} draws)", lines,
                    verdict=(self.verdict, self.ok),
                    problems=[f"{p.check}: {p.message} Advice: {p.advice}" for p in self.problems])

    def _ipython_display_(self) -> None:
        """Show the report, unless ``fit.diagnose()`` printed it in this very cell."""
        from IPython.display import display

        from bhmjax.display import echo_suppressed

        if not echo_suppressed(self._printed_in):
            display({"text/plain": str(self), "text/html": self._repr_html_()}, raw=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "divergences": self.divergences.tolist(), "divergence_share": self.divergence_share,
            "max_rhat": self.max_rhat, "rhat_over": self.rhat_over, "min_ess_bulk": self.min_ess_bulk,
            "min_ess_tail": self.min_ess_tail, "ess_under": self.ess_under, "ebfmi": self.ebfmi.tolist(),
            "tree_depth_saturation": self.tree_depth_saturation, "step_size": self.step_size.tolist(),
            "problems": [p.__dict__ for p in self.problems],
        }


def _scale_sites(fit: "Fit") -> list[str]:
    """Sites that look like hierarchical scales: positive and named like one."""
    found = []
    for name, x in fit.draws.items():
        if _SCALE_PATTERN.search(name) and np.all(x >= 0):
            found.append(name)
    return found


def _form(centeredness: tuple[float, ...] | str | None) -> str:
    if centeredness == "laplace":
        return "laplace"
    if centeredness is not None and all(v == 1 for v in centeredness):
        return "centered"
    if centeredness is not None and all(v == 0 for v in centeredness):
        return "noncentered"
    return "partial"


def _matches(a: np.ndarray, b: np.ndarray) -> bool:
    try:
        shape = np.broadcast_shapes(np.shape(a), np.shape(b))
    except ValueError:
        return False
    return bool(np.allclose(np.broadcast_to(a, shape), np.broadcast_to(b, shape), rtol=1e-5, atol=0))


def _terms_from_model(fit: "Fit") -> dict[str, tuple[str, str | None]]:
    """Run the model at the first draw; find each group effect's scale and form.

    A latent site with several entries whose distribution's ``scale`` equals a
    positive latent site is a centered effect (``Normal(mu, tau)``). A standard
    normal one is a non-centered ``z``: its effect is the deterministic site equal to
    ``loc + tau * z``, else (when the model has exactly one positive latent site named
    like a scale that is not the scale of an observed site) ``z`` itself. The scale
    of an observed site (a residual ``sigma``) is never a group scale.
    """
    from numpyro import handlers

    from bhmjax._src.precision import x64_mode

    first = {k: np.asarray(v[0, 0]) for k, v in fit.draws.items()}
    with x64_mode(fit.settings.get("x64", False)), handlers.block(), handlers.seed(rng_seed=0), \
            handlers.substitute(data=first), handlers.trace() as tr:
        fit.model(**fit.data)
    base = {k: _base(s["fn"]) for k, s in tr.items() if s["type"] == "sample"}
    latent = [k for k, s in tr.items() if s["type"] == "sample" and not s.get("is_observed") and k in first]
    observed_scales = [np.asarray(base[k].scale) for k, s in tr.items() if s["type"] == "sample"
                       and s.get("is_observed") and getattr(base[k], "scale", None) is not None]
    positive = [k for k in latent if np.all(first[k] > 0)
                and not any(_matches(first[k], s) for s in observed_scales)]
    named = [k for k in positive if _SCALE_PATTERN.search(k)]
    found: dict[str, tuple[str, str | None]] = {}
    for name in latent:
        scale = getattr(base[name], "scale", None)
        if scale is None or not np.size(first[name]) > 1:
            continue
        cand = next((c for c in positive if c != name and _matches(np.asarray(scale), first[c])), None)
        if cand is not None:
            found[name] = (cand, "centered")
        elif _matches(np.asarray(scale), 1.0) and _matches(np.asarray(base[name].loc), 0.0):
            found.update(_noncentered(name, first[name], tr, positive, named))
    return found


def _base(fn):
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _noncentered(z_name, z, tr, positive, named) -> dict[str, tuple[str, str]]:
    """The effect ``loc + tau * z`` a standard normal site ``z`` makes, and its scale ``tau``."""
    for name, site in tr.items():
        if site["type"] != "deterministic" or np.shape(site["value"]) != np.shape(z):
            continue
        value = np.asarray(site["value"], dtype=np.float64)
        for cand in positive:
            rest = value - np.asarray(tr[cand]["value"], dtype=np.float64) * z
            if np.ptp(rest) <= 1e-5 * (np.abs(value).max() + 1.0):
                return {name: (cand, "noncentered")}
    return {z_name: (named[0], "noncentered")} if len(named) == 1 else {}


def group_terms(fit: "Fit") -> dict[str, tuple[str, str | None]]:
    """Each group effect's scale and parameterization: ``{"theta": ("tau", "centered")}``.

    The form is "centered", "noncentered", "partial" (a centeredness between), "laplace" or
    None (unknown). A formula fit knows them (``r_<g>`` scaled by ``sd_<g>``); a
    NumPyro-function fit is read by rerunning its model (see
    :func:`_terms_from_model`). Without a model, when the fit has exactly one
    positive site named like a scale (tau, sigma_*, sd_*), every site with several
    entries is assigned to it, form unknown.
    """
    if fit.spec is not None and hasattr(fit.spec, "structure"):
        return {f"r_{g.name}": (f"sd_{g.name}", _form(g.centeredness)) for g in fit.spec.structure.groups}
    if fit.model is not None:
        try:
            return _terms_from_model(fit)
        except Exception:  # noqa: BLE001 - a heuristic: fall back on names if the model will not rerun
            pass
    scales = _scale_sites(fit)
    if len(scales) != 1:
        return {}
    return {k: (scales[0], None) for k, v in fit.draws.items()
            if k != scales[0] and int(np.prod(v.shape[2:], dtype=int)) > 1}


def group_scales(fit: "Fit") -> dict[str, str]:
    """Which site is the scale of each group effect: ``{"theta": "tau"}`` (see :func:`group_terms`)."""
    return {effect: scale for effect, (scale, _) in group_terms(fit).items()}


def _suspect_scale(fit: "Fit", terms: dict[str, tuple[str, str | None]]) -> str | None:
    """The group scale whose log is smallest at divergent draws against the rest, if any is."""
    div = fit.stats["diverging"].reshape(-1).astype(float)
    if div.sum() == 0 or div.all():
        return None
    best, best_gap = None, 0.0
    for name in dict.fromkeys(scale for scale, _ in terms.values()):
        x = np.log(np.maximum(fit.draws[name].reshape(div.size, -1), 1e-300)).mean(axis=1)
        sd = x.std() or 1.0
        gap = (x[div == 0].mean() - x[div == 1].mean()) / sd  # divergences sit at small scales
        if gap > best_gap:
            best, best_gap = name, gap
    return best


def diagnose(fit: "Fit", *, rhat_threshold: float = 1.01, ess_per_chain: float = 100.0,
             ebfmi_threshold: float = 0.3, saturation_threshold: float = 0.01) -> DiagnosticReport:
    """Run every check on ``fit`` and collect problems with advice.

    Checks: divergent transitions, R-hat over ``rhat_threshold``, bulk or tail ESS
    under ``ess_per_chain`` per chain, E-BFMI under ``ebfmi_threshold`` in any chain,
    and the share of draws at the maximum tree depth over ``saturation_threshold``.
    """
    for label, value in [("rhat_threshold", rhat_threshold), ("ess_per_chain", ess_per_chain),
                         ("ebfmi_threshold", ebfmi_threshold), ("saturation_threshold", saturation_threshold)]:
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{label} must be a non-negative number, got {value!r}")
    from bhmjax import summary

    stats = fit.stats
    chains, draws = stats["diverging"].shape
    cols = summary.columns(fit, summary.shown_sites(fit))  # every parameter, a block at a time
    names, summ = cols.names, summary.block_stats(fit, cols)
    rhat, ess_b, ess_t = summ["r_hat"], summ["ess_bulk"], summ["ess_tail"]
    divergences = stats["diverging"].sum(axis=1).astype(int)
    ebfmi = np.asarray(diagnostics.bfmi(stats["energy"]))
    max_depth = fit.settings.get("max_tree_depth", 10)
    saturation = float(np.mean(stats["tree_depth"] >= max_depth)) if "tree_depth" in stats else 0.0
    step_size = stats["step_size"][:, -1]
    ess_floor = ess_per_chain * chains
    nonfinite = [n for n, ok in zip(names, summ["finite"]) if not ok]
    constant = summ["constant"]  # fixed values: no R-hat, nothing to converge
    finite_rhat = np.where(np.isnan(rhat) & ~constant, np.inf, rhat)
    rhat_over = {n: float(r) for n, r in zip(names, finite_rhat) if r > rhat_threshold} if chains > 1 else {}
    ess_under = {n: (float(b), float(t)) for n, b, t in zip(names, ess_b, ess_t)
                 if not (b >= ess_floor and t >= ess_floor)}
    report = DiagnosticReport(
        num_chains=chains, num_draws=draws, divergences=divergences,
        divergence_share=float(divergences.sum() / (chains * draws)),
        max_rhat=float(np.nanmax(rhat)) if np.isfinite(rhat).any() else float("nan"),
        rhat_over=rhat_over, min_ess_bulk=_nanmin(ess_b), min_ess_tail=_nanmin(ess_t),
        ess_under=ess_under, ebfmi=ebfmi, tree_depth_saturation=saturation, step_size=step_size,
    )
    report.problems = _problems(fit, report, rhat_threshold, ess_floor, ebfmi_threshold,
                                saturation_threshold, max_depth)
    if nonfinite:
        report.problems.insert(0, Problem(
            "nonfinite", f"{len(nonfinite)} parameter(s) have NaN or infinite draws: {', '.join(nonfinite[:5])}"
            + (" ..." if len(nonfinite) > 5 else "") + ".",
            "the model produces invalid values (a zero scale, an overflow, log of a negative): check the "
            "priors and constraints of these sites, or sample with x64=True.",
        ))
    if chains < 2:
        report.problems.append(Problem(
            "chains", "only 1 chain: R-hat cannot compare chains, so convergence cannot be judged.",
            "run at least 4 chains (chains=4) started from different points.",
        ))
    return report


def _nanmin(values: np.ndarray) -> float:
    return float(np.nanmin(values)) if np.isfinite(values).any() else float("nan")


def _worst(items: dict, n: int = 5, reverse: bool = True) -> str:
    ordered = sorted(items.items(), key=lambda kv: kv[1] if not isinstance(kv[1], tuple) else min(kv[1]),
                     reverse=reverse)
    fmt = lambda v: f"{v:.3f}" if abs(v) < 100 else f"{v:.3g}"  # noqa: E731
    shown = ", ".join(f"{k} ({fmt(v)})" if not isinstance(v, tuple) else f"{k} ({min(v):.0f})"
                      for k, v in ordered[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _switch(forms: set, formula: bool) -> str:
    """Advice on the parameterization, for group effects now in ``forms``."""
    if forms == {"noncentered"}:
        how = " (parameterization='centered', or 'auto' to learn it per column)" if formula else ""
        return ("these group effects are already non-centered, so that is not the cure: with plenty of data "
                f"per group, try the centered parameterization{how}")
    if forms == {"laplace"}:
        how = " (or parameterization='noncentered' to compare)" if formula else ""
        return ("these group effects are already centred per group on what their rows say (the laplace form): "
                f"try target_accept=0.95 and more warmup{how}")
    if forms <= {"centered", "partial"}:
        how = (" (parameterization='noncentered', or 'auto' to learn it per column)" if formula else
               " (sample z ~ Normal(0, 1) and use loc + scale * z)")
        word = "centered" if forms == {"centered"} else "partly centered"
        return f"these group effects are {word}: try the non-centered parameterization{how}"
    return ("if these group effects are centered, try the non-centered parameterization; if they already "
            "are non-centered and groups have plenty of data, try the centered one")


def _problems(fit, r: DiagnosticReport, rhat_threshold, ess_floor, ebfmi_threshold,
              saturation_threshold, max_depth) -> list[Problem]:
    out = []
    target = fit.settings.get("target_accept", 0.8)
    warmup = fit.settings.get("warmup")
    short = (f"Warmup was only {warmup} steps, too few to adapt the step size and mass matrix: "
             f"use warmup=1000 (at least a few hundred) first. " if isinstance(warmup, int) and warmup < 150 else "")
    terms = group_terms(fit)
    if r.divergences.sum() > 0:
        scale = _suspect_scale(fit, terms)
        ask = f"raise target_accept above {target} (e.g. 0.95 or 0.99)"
        if scale:
            forms = {form for s, form in terms.values() if s == scale}
            effects = ", ".join(repr(e) for e, (s, _) in terms.items() if s == scale)
            advice = (f"The divergent draws sit at small values of {scale!r}, the group scale of {effects}: "
                      f"{_switch(forms, fit.spec is not None)}, or {ask}.")
        else:
            switch = (_switch({form for _, form in terms.values()}, fit.spec is not None) if terms
                      else "" if fit.spec is not None else "if the model has centered group effects, try the "
                      "non-centered parameterization")
            advice = (f"R{ask[1:]}; " + (f"{switch}; " if switch else "") +
                      "check for parameters on very different scales or hard boundaries.")
        out.append(Problem(
            "divergences",
            f"{int(r.divergences.sum())} divergent transitions ({r.divergence_share:.2%} of draws; per chain "
            f"{r.divergences.tolist()}); the posterior is biased where the sampler cannot go.",
            short + advice,
        ))
    if r.rhat_over:
        out.append(Problem(
            "r_hat", f"{len(r.rhat_over)} parameter(s) with r_hat > {rhat_threshold}: {_worst(r.rhat_over)}.",
            short + "chains disagree: run longer (more warmup and draws), check for multimodality, "
            "and reparameterize if there are also divergences.",
        ))
    if r.ess_under:
        out.append(Problem(
            "ess", f"{len(r.ess_under)} parameter(s) with bulk or tail ESS under {ess_floor:.0f}: "
            f"{_worst(r.ess_under, reverse=False)}.",
            "draws are too autocorrelated for reliable estimates: draw more, or reparameterize "
            "(non-centered for weakly identified groups, centered for strongly identified ones).",
        ))
    low = np.flatnonzero(r.ebfmi < ebfmi_threshold)
    if low.size:
        out.append(Problem(
            "e_bfmi", f"E-BFMI under {ebfmi_threshold} in chain(s) {low.tolist()} "
            f"({', '.join(f'{v:.2f}' for v in r.ebfmi[low])}).",
            "momentum resampling explores the energy poorly, usually a heavy-tailed or funnel-shaped "
            "posterior: " + (_switch({form for _, form in terms.values()}, fit.spec is not None)
                             if terms else "reparameterize") + "; or use tighter priors on scales.",
        ))
    if r.tree_depth_saturation > saturation_threshold:
        out.append(Problem(
            "tree_depth", f"{r.tree_depth_saturation:.1%} of draws hit the maximum tree depth {max_depth}.",
            "trajectories are cut short (an efficiency problem, not bias): raise max_tree_depth, "
            "or rescale/reparameterize strongly correlated parameters (dense_mass=True may help).",
        ))
    far = _far_from_zero(fit) if out else {}
    if far:
        shown = ", ".join(f"{k!r} (mean {m:.4g}, sd {sd:.3g})" for k, (m, sd) in far.items())
        out.append(Problem(
            "data_location", f"the data sit far from zero: {shown}; a posterior that narrow, that far from "
            "zero, leaves the sampler a step size too small to move.",
            "centre them (subtract the mean; divide by the sd too if it is far from 1) and set the priors "
            "on that scale; running longer will not help.",
        ))
    return out


def _far_from_zero(fit: "Fit", ratio: float = 100.0) -> dict[str, tuple[float, float]]:
    """Numeric data arrays whose mean is more than ``ratio`` standard deviations from zero.

    A formula model centres its predictors itself, so only its response is looked at.
    """
    data = fit.data or {}
    names = ["y"] if fit.spec is not None else list(data)
    far = {}
    for name in names:
        x = data.get(name)
        if not isinstance(x, (np.ndarray, list, tuple)) and not hasattr(x, "__array__"):
            continue
        x = np.asarray(x)
        if x.size < 2 or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.signedinteger)
                              or np.issubdtype(x.dtype, np.unsignedinteger)):
            continue
        x = x.astype(np.float64)
        mean, sd = float(np.nanmean(x)), float(np.nanstd(x))
        if sd > 0 and abs(mean) > ratio * sd:
            far[name] = (mean, sd)
    return far
