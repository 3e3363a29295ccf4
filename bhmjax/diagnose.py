"""``fit.diagnose()``: is this fit trustworthy, and if not, what to do about it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bhmjax._src import diagnostics

if TYPE_CHECKING:  # pragma: no cover
    from bhmjax.fit import Fit

__all__ = ["DiagnosticReport", "Problem", "diagnose", "group_scales"]

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


def _scales_from_model(fit: "Fit") -> dict[str, str]:
    """Run the model at the first draw; match each latent site's ``scale`` to a positive site."""
    from numpyro import handlers

    from bhmjax._src.precision import x64_mode

    first = {k: np.asarray(v[0, 0]) for k, v in fit.draws.items()}
    with x64_mode(fit.settings.get("x64", False)), handlers.block(), handlers.seed(rng_seed=0), \
            handlers.substitute(data=first), handlers.trace() as tr:
        fit.model(**fit.data)
    latent = [k for k, s in tr.items() if s["type"] == "sample" and not s.get("is_observed") and k in first]
    positive = [k for k in latent if np.all(first[k] > 0)]
    found = {}
    for name in latent:
        fn = tr[name]["fn"]
        while hasattr(fn, "base_dist"):
            fn = fn.base_dist
        scale = getattr(fn, "scale", None)
        if scale is None or not np.size(first[name]) > 1:
            continue
        scale = np.asarray(scale)
        for cand in positive:
            try:
                shape = np.broadcast_shapes(scale.shape, first[cand].shape)
            except ValueError:
                continue
            if cand != name and np.allclose(np.broadcast_to(scale, shape), np.broadcast_to(first[cand], shape),
                                            rtol=1e-6, atol=0):
                found[name] = cand
                break
    return found


def group_scales(fit: "Fit") -> dict[str, str]:
    """Which site is the scale of each group effect: ``{"theta": "tau"}``.

    With the model at hand, a latent site with several entries whose distribution's
    ``scale`` equals a positive latent site (a centered effect ``Normal(mu, tau)``) is
    matched to it. Otherwise, or when nothing matches (non-centered effects), and the
    fit has exactly one positive site named like a scale (tau, sigma_*, sd_*), every
    site with several entries is assigned to it.
    """
    found: dict[str, str] = {}
    if fit.model is not None:
        try:
            found = _scales_from_model(fit)
        except Exception:  # noqa: BLE001 - a heuristic: fall back on names if the model will not rerun
            found = {}
    scales = _scale_sites(fit)
    if not found and len(scales) == 1:
        found = {k: scales[0] for k, v in fit.draws.items()
                 if k != scales[0] and int(np.prod(v.shape[2:], dtype=int)) > 1}
    return found


def _suspect_scale(fit: "Fit") -> str | None:
    """The scale whose log correlates most with divergent draws, if any."""
    div = fit.stats["diverging"].reshape(-1).astype(float)
    if div.sum() == 0 or div.all():
        return None
    best, best_gap = None, -np.inf
    for name in dict.fromkeys([*group_scales(fit).values(), *_scale_sites(fit)]):
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


def _problems(fit, r: DiagnosticReport, rhat_threshold, ess_floor, ebfmi_threshold,
              saturation_threshold, max_depth) -> list[Problem]:
    out = []
    target = fit.settings.get("target_accept", 0.8)
    warmup = fit.settings.get("warmup")
    short = (f"Warmup was only {warmup} steps, too few to adapt the step size and mass matrix: "
             f"use warmup=1000 (at least a few hundred) first. " if isinstance(warmup, int) and warmup < 150 else "")
    if r.divergences.sum() > 0:
        scale = _suspect_scale(fit)
        param = "" if fit.spec is None else " (parameterization='noncentered')"
        if scale:
            advice = (f"The divergent draws sit at small values of {scale!r}, the funnel of a hierarchical "
                      f"scale: try the non-centered parameterization{param} for the group effects it "
                      f"scales, or raise target_accept above {target} (e.g. 0.95 or 0.99).")
        else:
            advice = (f"raise target_accept above {target} (e.g. 0.95 or 0.99); if the model has group "
                      f"effects, try the non-centered parameterization{param}; check for parameters on "
                      f"very different scales or hard boundaries.")
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
            "posterior: reparameterize (non-centered) or use tighter priors on scales.",
        ))
    if r.tree_depth_saturation > saturation_threshold:
        out.append(Problem(
            "tree_depth", f"{r.tree_depth_saturation:.1%} of draws hit the maximum tree depth {max_depth}.",
            "trajectories are cut short (an efficiency problem, not bias): raise max_tree_depth, "
            "or rescale/reparameterize strongly correlated parameters (dense_mass=True may help).",
        ))
    return out
