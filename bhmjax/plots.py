"""Figures to judge a fit: trace, rank, forest, shrinkage, pair/funnel, PPC, energy and predictions.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (so it works
headless and leaves no global state; in a notebook it shows as a picture when returned)
and saves it when given ``path``. Parameters are
chosen with ``var_names`` (site names such as ``"theta"`` or scalar names such as
``"theta[Choate]"``) and ``pattern`` (a regular expression searched in scalar names).
Layouts cap the number of panels (``max_panels``) and say in the figure what was left
out; the forest plot draws every interval but thins labels past ``max_rows``.

Examples
--------
>>> fig = fit.plot_trace(["mu", "tau"], path="trace.png")    # doctest: +SKIP
>>> fig = fit.plot_forest(pattern=r"^theta\\[", sort=True)   # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure as MplFigure

from bhmjax import summary

if TYPE_CHECKING:  # pragma: no cover
    from bhmjax.fit import Fit

__all__ = ["plot_energy", "plot_forest", "plot_funnel", "plot_pair", "plot_ppc", "plot_predictions", "plot_rank",
           "plot_shrinkage", "plot_trace", "select"]

_DIVERGENT = dict(color="red", s=14, zorder=3, label="divergent")


# --------------------------------------------------------------------------- shared helpers


def select(fit: "Fit", var_names: str | Sequence[str] | None = None,
           pattern: str | None = None, max_columns: int | None = None) -> tuple[list[str], np.ndarray]:
    """Scalar parameters chosen by site or scalar name and by regex: names, (chains, draws, k).

    Names are chosen first and only the chosen columns are read (at most
    ``max_columns`` of them, for plots that cap their panels), so a fit with a
    million scalars costs only what is drawn.
    """
    names, cols = _choose(fit, var_names, pattern)
    if max_columns is not None and len(cols) > max_columns:
        cols = cols.take(range(max_columns))
    return names, np.asarray(summary.gather(fit, cols), dtype=np.float64)


def _choose(fit: "Fit", var_names, pattern) -> tuple[list[str], "summary.Columns"]:
    """All names chosen, and their columns (no draws read)."""
    cols = summary.columns(fit, summary.shown_sites(fit))
    if var_names is not None:
        wanted = [var_names] if isinstance(var_names, str) else list(var_names)
        index = {n: i for i, n in enumerate(cols.names)}
        keep: list[int] = []
        for v in wanted:
            if v in fit.draws:
                site_cols = summary.columns(fit, [v])
                if v not in dict(cols.parts):  # an internal site asked for by name
                    cols = summary.Columns(cols.parts + site_cols.parts, cols.names + site_cols.names)
                    index = {n: i for i, n in enumerate(cols.names)}
                keep += [index[n] for n in site_cols.names]
            elif v in index:
                keep.append(index[v])
            else:
                raise KeyError(f"no site or parameter named {v!r}; sites are {list(fit.draws)} "
                               f"(scalar names look like {list(cols.names[:3])})")
        cols = cols.take(list(dict.fromkeys(keep)))
    if pattern is not None:
        regex = re.compile(pattern)
        keep = [i for i, n in enumerate(cols.names) if regex.search(n)]
        if not keep:
            raise ValueError(f"pattern {pattern!r} matches no parameter; names look like {list(cols.names[:5])}")
        cols = cols.take(keep)
    return list(cols.names), cols


class Figure(MplFigure):
    """A matplotlib Figure that shows itself in a notebook when returned (no pyplot needed)."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=90)
        return buf.getvalue()


def _figure(nrows: int, ncols: int, width: float, height: float, **kw) -> tuple["Figure", np.ndarray]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _finish(fig: "Figure", path: Any = None, note: str | None = None) -> "Figure":
    if note:
        text = fig.suptitle(textwrap.fill(note, 110), fontsize=8, color="dimgray")
        text.set_gid("note")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _cap(names: list[str], max_panels: int) -> tuple[int, str | None]:
    k = min(len(names), max_panels)
    note = None if k == len(names) else (
        f"showing {k} of {len(names)} parameters; choose others with var_names= or pattern=")
    return k, note


def _kde(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density (Silverman's bandwidth) of ``values`` on ``grid``."""
    values = values[np.isfinite(values)]
    sd = values.std()
    iqr = np.subtract(*np.percentile(values, [75, 25])) / 1.34
    spread = min(sd, iqr) if iqr > 0 else sd
    bw = 0.9 * (spread if spread > 0 else 1.0) * values.size ** -0.2
    z = (grid[:, None] - values[None, :]) / bw
    return np.exp(-0.5 * z**2).sum(axis=1) / (values.size * bw * math.sqrt(2 * math.pi))


def _grid(values: np.ndarray, n: int = 160) -> np.ndarray:
    lo, hi = np.nanmin(values), np.nanmax(values)
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    return np.linspace(lo - pad, hi + pad, n)


def _divergent(fit: "Fit") -> np.ndarray:
    return np.asarray(fit.stats["diverging"], dtype=bool)


def _scatter_divergent(ax, x: np.ndarray, y: np.ndarray, div: np.ndarray) -> None:
    """Draws in grey, divergent draws (exactly those) in red with gid 'divergent'."""
    ax.scatter(x[~div], y[~div], s=4, alpha=0.3, color="C0", linewidths=0, label="draws")
    if div.any():
        ax.scatter(x[div], y[div], gid="divergent", **{**_DIVERGENT, "label": f"divergent ({int(div.sum())})"})


# --------------------------------------------------------------------------- trace and rank


def plot_trace(fit: "Fit", var_names: str | Sequence[str] | None = None, *, pattern: str | None = None,
               max_panels: int = 12, divergences: bool = True, path: Any = None) -> "Figure":
    """Trace (right) and density (left) per scalar parameter: one line per chain in each.

    Divergent draws are ticked in red along the bottom of the trace panel. At most
    ``max_panels`` parameters are drawn; the figure notes how many were left out.
    """
    names, x = select(fit, var_names, pattern, max_columns=max_panels)
    k, note = _cap(names, max_panels)
    fig, axes = _figure(k, 2, 10, 1.9 * k + 0.4, gridspec_kw={"width_ratios": [1, 2]})
    div = _divergent(fit)
    draws = np.arange(x.shape[1])
    for i in range(k):
        dens, trace = axes[i]
        grid = _grid(x[..., i])
        for c in range(x.shape[0]):
            dens.plot(grid, _kde(x[c, :, i], grid), color=f"C{c}", lw=1)
            trace.plot(draws, x[c, :, i], color=f"C{c}", lw=0.6, alpha=0.8)
        if divergences and div.any():
            where = np.flatnonzero(div.any(axis=0))
            trace.scatter(where, np.zeros(where.size), transform=trace.get_xaxis_transform(),
                          marker="|", color="red", s=60, gid="divergent")
        dens.set_title(names[i], fontsize=9, loc="left")
        dens.set_yticks([])
    axes[-1, 1].set_xlabel("draw")
    return _finish(fig, path, note)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of all draws pooled over chains, (chains, draws), ties broken by order."""
    flat = x.reshape(-1)
    ranks = np.empty(flat.size)
    ranks[np.argsort(flat, kind="stable")] = np.arange(flat.size)
    return ranks.reshape(x.shape)


def plot_rank(fit: "Fit", var_names: str | Sequence[str] | None = None, *, pattern: str | None = None,
              bins: int = 20, max_panels: int = 16, path: Any = None) -> "Figure":
    """Histograms of pooled ranks per chain (Vehtari et al. 2021): flat when chains mix.

    One step line per chain and a dashed line at the uniform count.
    """
    names, x = select(fit, var_names, pattern, max_columns=max_panels)
    k, note = _cap(names, max_panels)
    ncols = min(4, k)
    nrows = math.ceil(k / ncols)
    fig, axes = _figure(nrows, ncols, 3.2 * ncols, 2.3 * nrows + 0.4)
    edges = np.linspace(0, x.shape[0] * x.shape[1], bins + 1)
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.set_visible(False)
            continue
        ranks = _ranks(x[..., i])
        for c in range(x.shape[0]):
            counts = np.histogram(ranks[c], bins=edges)[0]
            ax.step(edges, np.append(counts, counts[-1]), where="post", color=f"C{c}", lw=1, label=f"chain {c}")
        ax.axhline(x.shape[1] / bins, color="black", ls="--", lw=0.8, gid="uniform")
        ax.set_title(names[i], fontsize=9)
        ax.set_yticks([])
    axes.flat[0].legend(fontsize=7)
    return _finish(fig, path, note)


# --------------------------------------------------------------------------- forest


def plot_forest(fit: "Fit", var_names: str | Sequence[str] | None = None, *, pattern: str | None = None,
                prob: float = 0.94, sort: bool | None = None, max_rows: int = 60,
                rhat_threshold: float = 1.01, path: Any = None) -> "Figure":
    """Posterior mean, 50% and ``prob`` HDI per parameter, chains pooled.

    Up to ``max_rows`` parameters get one labelled row each. Past that (say 500
    groups), every interval is still drawn, sorted by posterior mean (unless
    ``sort=False``), and only about ``max_rows`` evenly spaced rows are labelled; a note
    says so. Rows whose R-hat exceeds ``rhat_threshold`` are drawn in red.
    """
    from matplotlib.collections import LineCollection

    names, cols = _choose(fit, var_names, pattern)  # statistics a block of columns at a time
    n = len(names)
    stats, half = summary.block_stats(fit, cols, prob), summary.block_stats(fit, cols, 0.5)
    mean, rhat = stats["mean"], stats["r_hat"]
    outer = np.stack([stats["hdi_lower"], stats["hdi_upper"]], axis=-1)
    inner = np.stack([half["hdi_lower"], half["hdi_upper"]], axis=-1)
    many = n > max_rows
    order = np.argsort(mean, kind="stable") if (sort or (many and sort is None)) else np.arange(n)
    rows = np.arange(n)[::-1]  # the first parameter on top
    bad = rhat[order] > rhat_threshold
    colors = np.where(bad, "red", "C0")
    fig, axes = _figure(1, 1, 7, 0.22 * min(n, max_rows) + 1.2)
    ax = axes[0, 0]
    seg = lambda iv: [((a, r), (b, r)) for (a, b), r in zip(iv[order], rows)]  # noqa: E731
    ax.add_collection(LineCollection(seg(outer), colors=colors, lw=0.8 if many else 1.2, gid="hdi"))
    ax.add_collection(LineCollection(seg(inner), colors=colors, lw=1.6 if many else 3.5, gid="hdi50"))
    ax.scatter(mean[order], rows, s=4 if many else 16, color="black", zorder=3, gid="mean")
    ax.autoscale_view()
    step = max(1, math.ceil(n / max_rows))
    ax.set_yticks(rows[::step], [names[i] for i in order[::step]], fontsize=7 if many else 8)
    ax.set_ylim(-1, n)
    ax.set_xlabel(f"posterior mean, 50% and {prob:.0%} HDI")
    ax.grid(axis="x", alpha=0.3)
    notes = []
    if many:
        notes.append(f"{n} parameters, all drawn{', sorted by posterior mean' if sort is not False else ''}; "
                     f"every {step}th label shown (select with var_names= or pattern=)")
    if bad.any():
        notes.append(f"{int(bad.sum())} row(s) in red have r_hat > {rhat_threshold}")
    return _finish(fig, path, "; ".join(notes) or None)


# --------------------------------------------------------------------------- shrinkage


def _group_draws(fit: "Fit", site: str | np.ndarray, term: int | str, offset: str | None) -> np.ndarray:
    """Draws (chains, draws, groups) of group means: the site (one term), plus an offset site."""
    if isinstance(site, str):
        if site not in fit.draws:
            raise KeyError(f"no site named {site!r}; sites are {list(fit.draws)}")
        x = np.asarray(fit.draws[site], dtype=np.float64)
    else:
        x = np.asarray(site, dtype=np.float64)
    if x.ndim == 4:
        if isinstance(term, str):
            dims = fit.dims.get(site, ()) if isinstance(site, str) else ()
            labels = [str(v) for v in fit.coords.get(dims[1], [])] if len(dims) > 1 else []
            if term not in labels:
                raise ValueError(f"term {term!r} not among the terms {labels} of {site!r}; pass an integer")
            term = labels.index(term)
        x = x[..., term]
    if x.ndim != 3:
        raise ValueError(f"the group-effect draws must have shape (chains, draws, groups) or "
                         f"(chains, draws, groups, terms); got {x.shape}")
    if offset is not None:
        off = np.asarray(fit.draws[offset], dtype=np.float64)
        off = off[..., term] if off.ndim == 3 else off
        x = x + off[..., None]
    return x


def _shrinkage_inputs(fit: "Fit", site, group, y) -> tuple[Any, Any, Any]:
    if group is not None and y is not None:
        return group, y, None
    provider = getattr(fit.spec, "shrinkage_data", None)
    if fit.spec is None or provider is None:
        raise ValueError(
            "plot_shrinkage needs the data's group codes and response: pass group= (integer codes "
            "0..groups-1, one per row) and y= (the response per row)"
            + ("" if fit.spec is None else "; this fit's spec provides no shrinkage_data(site)") + ".")
    info = provider(site)
    return info["group"], info["y"], info.get("offset")


def plot_shrinkage(fit: "Fit", site: str | np.ndarray, group: Sequence[int] | None = None,
                   y: Sequence[float] | None = None, *, offset: str | None = None, term: int | str = 0,
                   prob: float = 0.94, path: Any = None) -> "Figure":
    """Partial pooling against no pooling per group, and shrinkage against group size.

    Parameters
    ----------
    fit : Fit
    site : str or array (chains, draws, groups[, terms])
        The group means, or group effects to which ``offset`` is added.
    group, y : array of shape (rows,)
        Integer group code (0-based) and response of each data row. Needed unless
        ``fit.spec`` provides ``shrinkage_data(site) -> {"group", "y"[, "offset"]}``.
    offset : str, optional
        A site added to every group (a population intercept), for effects stored as
        deviations.
    term : int or str
        Which column of a (groups, terms) effect to show.

    Left: partial-pooling posterior mean (with ``prob`` HDI) against the group's sample
    mean (no pooling), marker area by group size, identity and complete-pooling lines.
    Right: partial minus no pooling against group size: small groups move most.
    """
    from matplotlib.collections import LineCollection

    from bhmjax._src import diagnostics

    group, y, spec_offset = _shrinkage_inputs(fit, site, group, y)
    x = _group_draws(fit, site, term, offset if offset is not None else spec_offset)
    codes, y = np.asarray(group), np.asarray(y, dtype=np.float64).reshape(-1)
    num_groups = x.shape[-1]
    if not np.issubdtype(codes.dtype, np.integer) or codes.shape != y.shape:
        raise ValueError(f"group must be integer codes with one per row of y; got dtype {codes.dtype}, "
                         f"shape {codes.shape} for y of shape {y.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= num_groups):
        raise ValueError(f"group codes reach {codes.min()}..{codes.max()} but the site has {num_groups} "
                         f"groups; codes are 0-based (did the data use 1-based codes?)")
    size = np.bincount(codes, minlength=num_groups)
    nopool = np.bincount(codes, weights=y, minlength=num_groups) / np.where(size > 0, size, np.nan)
    partial = x.mean(axis=(0, 1))
    hdi = np.asarray(diagnostics.hdi(x, prob))
    seen = size > 0
    fig, axes = _figure(1, 2, 10, 4.2)
    left, right = axes[0]
    area = 12 + 60 * np.sqrt(size / max(size.max(), 1))
    left.add_collection(LineCollection([((a, lo), (a, hi)) for a, (lo, hi) in zip(nopool[seen], hdi[seen])],
                                       colors="C0", alpha=0.35, lw=1, gid="hdi"))
    left.scatter(nopool[seen], partial[seen], s=area[seen], color="C0", zorder=3, gid="groups")
    lims = np.array([np.nanmin([nopool[seen].min(), hdi[seen].min()]), np.nanmax([nopool[seen].max(), hdi[seen].max()])])
    left.plot(lims, lims, color="gray", ls=":", lw=1, label="no shrinkage")
    left.axhline(y.mean(), color="black", ls="--", lw=1, label="complete pooling (mean of y)")
    left.set_xlabel("no pooling: group mean of y")
    left.set_ylabel(f"partial pooling: posterior mean, {prob:.0%} HDI")
    left.legend(fontsize=8)
    right.scatter(size[seen], partial[seen] - nopool[seen], s=16, color="C0", gid="shrinkage")
    right.axhline(0, color="gray", ls=":", lw=1)
    if size[seen].max() > 10 * max(size[seen].min(), 1):
        right.set_xscale("log")
    right.set_xlabel("group size (rows)")
    right.set_ylabel("partial minus no pooling")
    empty = int((~seen).sum())
    note = f"{empty} group(s) without data rows are not shown" if empty else None
    return _finish(fig, path, note)


# --------------------------------------------------------------------------- pair and funnel


def plot_pair(fit: "Fit", var_names: str | Sequence[str] | None = None, *, pattern: str | None = None,
              log: Sequence[str] = (), max_vars: int = 6, divergences: bool = True,
              path: Any = None) -> "Figure":
    """Scatter of every pair of chosen parameters (lower triangle), histograms on the diagonal.

    Names in ``log`` are shown on the log scale (``log(tau)``). Divergent draws are drawn
    in red, exactly those (gid ``"divergent"``).
    """
    names, x = select(fit, var_names, pattern, max_columns=max_vars)
    k, note = _cap(names, max_vars)
    flat = x.reshape(-1, x.shape[-1])[:, :k]
    labels = list(names[:k])
    for i, n in enumerate(labels):
        if n in log or any(n.startswith(f"{s}[") for s in log):
            flat[:, i], labels[i] = np.log(flat[:, i]), f"log({n})"
    div = _divergent(fit).reshape(-1) if divergences else np.zeros(flat.shape[0], bool)
    fig, axes = _figure(k, k, 2.4 * k + 0.6, 2.4 * k + 0.4)
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
            elif i == j:
                ax.hist(flat[:, i], bins=30, color="C0", alpha=0.6)
                ax.set_yticks([])
            else:
                _scatter_divergent(ax, flat[:, j], flat[:, i], div)
            if i == k - 1:
                ax.set_xlabel(labels[j], fontsize=8)
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i], fontsize=8)
    return _finish(fig, path, note)


def plot_funnel(fit: "Fit", effect: str, scale: str | None = None, *, groups: Sequence[int | str] | None = None,
                term: int = 0, max_panels: int = 6, path: Any = None) -> "Figure":
    """A group effect against the log of its group scale, one panel per group.

    A funnel (narrowing as the scale shrinks, divergences at its neck) says the
    centered parameterization fights the geometry; the non-centered one removes it.
    ``scale`` defaults to the scale of ``effect`` found by
    :func:`bhmjax.diagnose.group_scales`. Divergent draws are red (gid ``"divergent"``).
    """
    from bhmjax._src.naming import axis_labels
    from bhmjax.diagnose import group_scales

    if effect not in fit.draws:
        raise KeyError(f"no site named {effect!r}; sites are {list(fit.draws)}")
    if scale is None:
        scale = group_scales(fit).get(effect)
        if scale is None:
            raise ValueError(f"could not tell which site is the scale of {effect!r}; pass scale= by name")
    eff = np.asarray(fit.draws[effect], dtype=np.float64)
    eff = eff[..., term] if eff.ndim == 4 else eff.reshape(*eff.shape[:2], -1)
    sc = np.asarray(fit.draws[scale], dtype=np.float64)
    sc = sc.reshape(*sc.shape[:2], -1)[..., term if sc[0, 0].size > 1 else 0]
    levels = axis_labels(effect, np.shape(fit.draws[effect])[2:], fit.coords, fit.dims)[0]
    labels = [f"{effect}[{v}]" for v in levels]
    if groups is None:
        chosen = list(range(min(eff.shape[-1], max_panels)))
    else:
        unknown = [g for g in groups if not isinstance(g, (int, np.integer)) and str(g) not in levels]
        if unknown:
            raise ValueError(f"unknown group(s) {unknown} of {effect!r}; levels are {levels[:10]}")
        chosen = [int(g) if isinstance(g, (int, np.integer)) else levels.index(str(g)) for g in groups]
    note = None if len(chosen) == eff.shape[-1] else (
        f"showing {len(chosen)} of {eff.shape[-1]} groups; choose with groups=")
    ncols = min(3, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    fig, axes = _figure(nrows, ncols, 3.4 * ncols, 3.0 * nrows + 0.4)
    div = _divergent(fit).reshape(-1)
    log_scale = np.log(sc.reshape(-1))
    for ax, j in zip(axes.flat, chosen):
        _scatter_divergent(ax, eff[..., j].reshape(-1), log_scale, div)
        ax.set_xlabel(labels[j], fontsize=8)
        ax.set_ylabel(f"log({scale})", fontsize=8)
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    return _finish(fig, path, note)


# --------------------------------------------------------------------------- PPC and energy


def _ppc_inputs(fit: "Fit | None", y_rep, y, site: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    if fit is not None and y_rep is None:
        y_rep = fit.extras.get("posterior_predictive")
        if y_rep is None and callable(getattr(fit, "posterior_predictive", None)):
            y_rep = fit.posterior_predictive()
    if fit is not None and y is None:
        from bhmjax.io import observed_data

        y = observed_data(fit)
    if y_rep is None or y is None:
        raise ValueError("plot_ppc needs replicated draws y_rep (chains, draws, n) and observed y (n,)")
    pick = lambda d: d[site] if site is not None else next(iter(d.values()))  # noqa: E731
    name = site or (next(iter(y.keys())) if isinstance(y, Mapping) else "y")
    y_rep = np.asarray(pick(y_rep) if isinstance(y_rep, Mapping) else y_rep, dtype=np.float64)
    y = np.asarray(pick(y) if isinstance(y, Mapping) else y, dtype=np.float64).reshape(-1)
    if y_rep.ndim < 2 or int(np.prod(y_rep.shape[2:])) != y.size:
        raise ValueError(f"y_rep must have shape (chains, draws, *y.shape) = (c, d, {y.size}); got {y_rep.shape}")
    return y_rep.reshape(-1, y.size), y, name


def plot_ppc(fit: "Fit | None" = None, y_rep: Any = None, y: Any = None, *, site: str | None = None,
             num_draws: int = 50, stats: Sequence[str] = ("mean", "sd"), seed: int = 0,
             path: Any = None) -> "Figure":
    """Posterior predictive check: observed data against replicated data sets.

    Left: the observed distribution (thick black) over ``num_draws`` replicated ones
    (thin), as densities or, for integer data, proportions per value. Then one panel per
    test statistic in ``stats`` ("mean", "sd", "min", "max", "median"): its replicated
    distribution, the observed value and the posterior predictive p-value.

    ``y_rep`` is (chains, draws, n) or a dict by site; with a fit, it defaults to stored
    posterior-predictive draws (or ``fit.posterior_predictive()``), and ``y`` to the
    observed data. Without a fit: ``plot_ppc(None, y_rep, y)``.
    """
    funcs = {"mean": np.mean, "sd": lambda a, axis: np.std(a, axis=axis, ddof=1), "min": np.min,
             "max": np.max, "median": np.median}
    unknown = [s for s in stats if s not in funcs]
    if unknown:
        raise ValueError(f"unknown statistic(s) {unknown}; choose from {list(funcs)}")
    reps, y, name = _ppc_inputs(fit, y_rep, y, site)
    rng = np.random.default_rng(seed)
    shown = reps[rng.choice(reps.shape[0], size=min(num_draws, reps.shape[0]), replace=False)]
    fig, axes = _figure(1, 1 + len(stats), 4.2 * (1 + len(stats)), 3.6)
    ax = axes[0, 0]
    discrete = np.all(np.mod(y, 1) == 0) and np.all(np.mod(shown, 1) == 0) and np.ptp(np.append(y, shown)) <= 60
    if discrete:
        values = np.arange(min(y.min(), shown.min()), max(y.max(), shown.max()) + 1)
        share = lambda a: (a[:, None] == values[None, :]).mean(axis=0)  # noqa: E731
        for r in shown:
            ax.plot(values, share(r), color="C0", alpha=0.2, lw=0.8, drawstyle="steps-mid")
        ax.plot(values, share(y), color="black", lw=2, drawstyle="steps-mid", label=f"observed {name}")
    else:
        grid = _grid(np.append(y, shown))
        for r in shown:
            ax.plot(grid, _kde(r, grid), color="C0", alpha=0.2, lw=0.8)
        ax.plot(grid, _kde(y, grid), color="black", lw=2, label=f"observed {name}")
    ax.plot([], [], color="C0", label=f"{len(shown)} replicated")
    ax.legend(fontsize=8)
    ax.set_yticks([])
    for ax, stat in zip(axes[0, 1:], stats):
        t_rep, t_obs = funcs[stat](reps, axis=1), float(funcs[stat](y, axis=0))
        ax.hist(t_rep, bins=30, color="C0", alpha=0.6)
        ax.axvline(t_obs, color="black", lw=2)
        ax.set_title(f"{stat}: p = {np.mean(t_rep >= t_obs):.2f}", fontsize=9)
        ax.set_yticks([])
    return _finish(fig, path)


def plot_energy(fit: "Fit", *, path: Any = None) -> "Figure":
    """Marginal energy against energy transitions (Betancourt 2016), centered, chains pooled.

    When the transition density is much narrower than the marginal one (E-BFMI low),
    momentum resampling cannot move the sampler through the energy levels.
    """
    from bhmjax._src import diagnostics

    energy = np.asarray(fit.stats["energy"], dtype=np.float64)
    marginal = (energy - energy.mean(axis=1, keepdims=True)).reshape(-1)
    transition = np.diff(energy, axis=1).reshape(-1)
    ebfmi = np.asarray(diagnostics.bfmi(energy))
    fig, axes = _figure(1, 1, 6, 3.8)
    ax = axes[0, 0]
    grid = _grid(np.append(marginal, transition))
    ax.fill_between(grid, _kde(marginal, grid), color="C0", alpha=0.3)
    ax.plot(grid, _kde(marginal, grid), color="C0", label="marginal energy")
    ax.plot(grid, _kde(transition, grid), color="C1", label="energy transition")
    ax.set_yticks([])
    ax.set_xlabel("energy (centered per chain)")
    ax.legend(title="E-BFMI per chain: " + " ".join(f"{v:.2f}" for v in ebfmi), fontsize=8, title_fontsize=8)
    return _finish(fig, path)


def plot_predictions(fit: "Fit", effect: str, by: str | None = None, *, path: Any = None, **kwargs) -> "Figure":
    """Conditional effects of ``effect`` (brms' ``plot(conditional_effects(...))``): mean and interval.

    A numeric effect is a line with a band per level of ``by`` (or per mean and mean +- sd
    of a numeric ``by``); a categorical one is points with error bars. Ordinal and
    categorical responses get one panel per response level. Keyword arguments go to
    :func:`bhmjax.conditional.conditional_effects` (``conditions``, ``kind``, ``dpar``,
    ``groups``, ``probs``, ``draws``); the table drawn is what it returns.
    """
    from bhmjax.conditional import conditional_effects

    table = conditional_effects(fit, effect, by, **kwargs)
    lo, hi = [c for c in table.columns if c.startswith("Q")][:2] or ("Estimate", "Estimate")
    panels = list(dict.fromkeys(table["level"])) if "level" in table.columns else [None]
    fig, axes = _figure(1, len(panels), 4.8 * len(panels), 3.8)
    numeric = table[effect].dtype.kind in "iuf"
    lines = list(dict.fromkeys(table[by])) if by is not None else [None]
    for ax, level in zip(axes[0], panels):
        part = table if level is None else table[table["level"] == level]
        for k, value in enumerate(lines):
            rows = part if value is None else part[part[by] == value]
            label = None if value is None else f"{by} = {value:.3g}" if isinstance(value, float) else f"{by} = {value}"
            if numeric:
                ax.plot(rows[effect], rows["Estimate"], color=f"C{k}", label=label)
                ax.fill_between(rows[effect], rows[lo], rows[hi], color=f"C{k}", alpha=0.2)
            else:
                x = np.arange(len(rows)) + (k - (len(lines) - 1) / 2) * 0.12
                ax.errorbar(x, rows["Estimate"], yerr=[rows["Estimate"] - rows[lo], rows[hi] - rows["Estimate"]],
                            fmt="o", color=f"C{k}", capsize=3, label=label)
                ax.set_xticks(np.arange(len(rows)), [str(v) for v in rows[effect]])
        ax.set_xlabel(effect)
        ax.set_ylabel(kwargs.get("dpar") or ("linear predictor" if kwargs.get("kind") == "linear_predictor"
                                             else "expected response"))
        if level is not None:
            ax.set_title(f"P(y = {level})", fontsize=9)
        if by is not None:
            ax.legend(fontsize=8)
    return _finish(fig, path)
