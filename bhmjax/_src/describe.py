"""The text of ``Model.describe()``: formulas, terms, site shapes per predictor, every prior."""

from __future__ import annotations

from typing import Any

from bhmjax._src import sites
from bhmjax._src.families import DPARS
from bhmjax._src.models import ModelSpec, PredictorStructure
from bhmjax._src.priors import VectorPrior

__all__ = ["describe"]


def _prior_rows(site: str, prior: Any, labels: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
    if isinstance(prior, VectorPrior):
        rows = []
        for i in range(prior.size):
            p, j = prior.prior_of(i)
            rows.append((f"{site}[{labels[i] if labels else i}]", p.describe(j)))
        return rows
    return [(site, prior.describe())]


def _form(c) -> str:
    if c is None:
        return "auto (centeredness learned by SVI before the first fit)"
    if c == "laplace":
        return "laplace (centred per group on its rows' Gaussian approximation at each step)"
    if isinstance(c, str):
        return "centeredness per group (learned)"
    if all(v == 1 for v in c):
        return "centered"
    return "noncentered" if all(v == 0 for v in c) else f"centeredness {c}"


def _group_lines(p: PredictorStructure, spec: ModelSpec) -> list[str]:
    lines = []
    for g in p.groups:
        d = spec.groups[g.term]
        k, n, c = len(g.columns), d.encoding.num_groups, g.centeredness
        bar = "|" if d.term.correlated else "||"
        lines.append(f"  ({d.term.expr} {bar} {d.name}): {n} groups x {k} columns "
                     f"({', '.join(g.columns)}); {_form(c)}")
        lines.append(f"    sd_{g.name} ({k},)" + (f", L_{g.name} and cor_{g.name} ({k}, {k})"
                                                  if g.correlated else ""))
        centred_on = [col for col in g.columns if col == "Intercept" and p.intercept or col in p.slopes]
        sampled = (f"z_{g.name}" if c is None or isinstance(c, str) or any(v != 1 for v in c)
                   else f"theta_{g.name}" if centred_on else None)
        lines.append(f"    r_{g.name} ({n}, {k})" + ("" if sampled is None else
                                                    f" = transform of {sampled} ({n}, {k})"))
    return lines


def _predictor_lines(p: PredictorStructure, spec: ModelSpec) -> list[str]:
    lines = []
    if p.dpar != sites.MU:
        link = DPARS[p.dpar][0] if p.dpar in DPARS else "softmax"
        lines.append(f"  {p.dpar} (link: {link}), predicted per row:")
    site = sites.intercept_site(p.dpar)
    if p.intercept:
        lines.append(f"  {site + ' ()':<14}population intercept, on the data's scale "
                     f"(sampled as {site}_c for centred slope columns)")
    if p.slopes:
        lines.append(f"  {f'{sites.b_site(p.dpar)} ({len(p.slopes)},)':<14}slopes: {', '.join(p.slopes)}")
    lines += _group_lines(p, spec)
    for sm in p.smooths:
        lines.append(f"  s_{sm.name} ({sm.size},) = sds_{sm.name} * zs_{sm.name}: P-spline wiggly part "
                     f"(its linear part is the slope {sm.name})")
    if p.offset:
        lines.append("  offset: " + " + ".join(next(d.formula.offsets for d in spec.predictors
                                                    if d.dpar == p.dpar)))
    return lines


def _prior_table(spec: ModelSpec) -> list[str]:
    s = spec.structure
    rows = []
    for p in s.predictors():
        if p.intercept:
            rows += _prior_rows(sites.intercept_site(p.dpar), p.intercept_prior)
        if p.slopes:
            rows += _prior_rows(sites.b_site(p.dpar), p.b_prior, p.slopes)
    for name, prior in s.family_priors:
        rows += _prior_rows(name + ("_c" if name == "Intercept" else ""), prior,
                            tuple(f"{k + 1}" for k in range(s.thresholds)) if name == "Intercept" else None)
    for p in s.predictors():
        for g in p.groups:
            rows += _prior_rows(f"sd_{g.name}", g.sd_prior, g.columns)
            if g.correlated:
                rows += _prior_rows(f"cor_{g.name}", g.cor_prior)
        for sm in p.smooths:
            rows += _prior_rows(f"sds_{sm.name}", sm.sds_prior)
    width = max(len(r[0]) for r in rows) if rows else 0
    return [f"  {name:<{width}}  {text}" for name, text in rows]


def describe(spec: ModelSpec, num_rows: int) -> str:
    """The text of ``Model.describe()``: terms, site shapes, groups and every prior."""
    s, fam = spec.structure, spec.family
    lines = [f"formula: {spec.formula.text}"]
    lines += [f"  {d}: {text}" for d, text in spec.dpar_formulas.items()]
    lines.append(f"family:  {fam.name} (link: {fam.link}); {num_rows} rows")
    if spec.categories:
        lines.append(f"levels:  {list(spec.categories)}" + (" (the first is the reference)"
                                                           if s.categories else " (ordered)"))
    extra = [f"{k} {v!r}" for k, v in (("weights", spec.formula.weights), ("censoring", spec.formula.cens),
                                       ("interval bound", spec.formula.cens_upper)) if v]
    if extra:
        lines.append("terms:   " + "; ".join(extra))
    lines += ["", "sites (shape):"]
    for p in s.predictors():
        lines += _predictor_lines(p, spec)
    if s.thresholds:
        lines.append(f"  Intercept ({s.thresholds},) ordered cutpoints, on the data's scale "
                     "(sampled as Intercept_c for centred slope columns)")
    lines += [f"  {p} ()" for p, _ in s.family_priors if p != "Intercept"]
    lines += ["", "priors:"] + _prior_table(spec)
    if s.intercept or s.thresholds or s.dpars:
        lines.append("  (intercept priors apply to the intercepts for centred slope columns)")
    return "\n".join(lines)
