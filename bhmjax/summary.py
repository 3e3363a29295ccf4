"""Posterior summaries in ArviZ's language, computed block by block within a memory budget.

``fit.summary()``, ``fit.diagnose()`` and the plots read draws through this module:
the scalars they need are listed first (:class:`Columns`, names only), then
gathered a block of columns at a time, cast to float64 one block at a time, and
reduced in JAX (:func:`bhmjax._src.diagnostics.summary_stats`). No step holds a
float64 copy of every draw: the working set is one block, sized so that it and its
intermediates stay under :data:`WORK_BYTES`.

Which sites a summary shows
---------------------------
Every site with at least one named scalar (internal sampler sites such as
``Intercept_c``, ``z_g``, ``L_g``, whose names are all None, are left out unless
asked for by name). A *large* fit, one with more than :data:`LARGE_FIT` shown
scalars, leaves out by default each site with more than :data:`LARGE_SITE` scalars
(the group effects of 100,000 groups, say) and warns which; name them in
``var_names`` to summarize them. Small fits show every site, as ArviZ does.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from bhmjax._src.naming import flat_names

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from bhmjax.fit import Fit

__all__ = ["Columns", "LARGE_FIT", "LARGE_SITE", "WORK_BYTES", "block_stats", "block_width", "columns",
           "gather", "hdi_columns", "select_sites", "summary", "table"]

WORK_BYTES = 256 * 2**20
"""Working memory of one block of summary statistics (bytes), intermediates included."""
LARGE_FIT = 10_000
"""A fit with more shown scalars than this summarizes its big sites only when asked."""
LARGE_SITE = 1_000
"""In a large fit, sites with more scalars than this (group effects) are left out by default."""
_WORK_FACTOR = 32  # bytes of JAX intermediates per float64 input value of summary_stats (measured: ~20)
_FILTERS = (None, "like", "regex")
_KINDS = ("all", "stats", "diagnostics")
_DIAGNOSTICS = ("mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat")


def hdi_columns(prob: float) -> tuple[str, str]:
    """ArviZ's column names for an interval of mass ``prob``: ('hdi_3%', 'hdi_97%')."""
    alpha = 1 - prob
    return f"hdi_{100 * alpha / 2:g}%", f"hdi_{100 * (1 - alpha / 2):g}%"


# --------------------------------------------------------------------------- which sites


def shown_sites(fit: "Fit") -> list[str]:
    """Sites with at least one named scalar that are not sampler internals (``fit.internal``), in the fit's
    order (what ``to_arviz`` exports)."""
    internal = set(getattr(fit, "internal", ()))
    return [s for s in fit.draws if s not in internal and any(n is not None for n in fit.site_names(s))]


def _match(pattern: str, names: Sequence[str], filter_vars: str | None) -> list[str]:
    if filter_vars == "like":
        return [n for n in names if pattern in n]
    if filter_vars == "regex":
        return [n for n in names if re.search(pattern, n)]
    return [pattern] if pattern in names else []


def select_sites(fit: "Fit", var_names: str | Sequence[str] | None, filter_vars: str | None = None) -> list[str]:
    """Sites chosen ArviZ's way: exact names, substrings ("like") or regexes ("regex"); ``~`` excludes.

    Only exclusions (``["~z_g"]``) keep every shown site but those. Internal sites
    (no named scalar) are chosen only by their exact name.
    """
    if filter_vars not in _FILTERS:
        raise ValueError(f"filter_vars must be None, 'like' or 'regex', got {filter_vars!r}")
    shown = shown_sites(fit)
    if var_names is None:
        return shown
    if isinstance(var_names, str):
        var_names = [var_names]
    if not all(isinstance(v, str) for v in var_names):
        raise TypeError(f"var_names must be a site name or a list of site names, got {var_names!r}")
    wanted = [v for v in var_names if not (v.startswith("~") and v not in fit.draws)]
    excluded = [v[1:] for v in var_names if v.startswith("~") and v not in fit.draws]
    chosen: list[str] = []
    for v in wanted:
        found = _match(v, shown, filter_vars) or ([v] if v in fit.draws else [])
        if not found:
            raise KeyError(_unknown(v, fit, filter_vars))
        chosen += found
    if not wanted:
        chosen = list(shown)
    for v in excluded:
        found = _match(v, list(fit.draws), filter_vars)
        if not found:
            raise KeyError(_unknown(v, fit, filter_vars, negated=True))
        chosen = [s for s in chosen if s not in found]
    return list(dict.fromkeys(chosen))


def _unknown(name: str, fit: "Fit", filter_vars: str | None, negated: bool = False) -> str:
    import difflib

    what = {None: "no site named", "like": "no site name contains", "regex": "no site name matches"}[filter_vars]
    hint = difflib.get_close_matches(name, list(fit.draws), n=1)
    return (f"var_names: {what} {('~' if negated else '') + name!r}"
            f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; sites are {list(fit.draws)}. "
            "Use filter_vars='like' or 'regex' to match parts of names.")


def default_sites(fit: "Fit") -> tuple[list[str], list[str]]:
    """The sites a summary shows without ``var_names`` and those it leaves out (large fits only)."""
    shown = shown_sites(fit)
    size = {s: sum(n is not None for n in fit.site_names(s)) for s in shown}
    if sum(size.values()) <= LARGE_FIT:
        return shown, []
    return [s for s in shown if size[s] <= LARGE_SITE], [s for s in shown if size[s] > LARGE_SITE]


# --------------------------------------------------------------------------- columns and blocks


@dataclass(frozen=True)
class Columns:
    """Chosen scalars: per site the flat indices (C order) and, side by side, their names."""

    parts: tuple[tuple[str, np.ndarray], ...]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def take(self, keep: Sequence[int]) -> "Columns":
        """The columns at positions ``keep`` (in that order)."""
        owner = [(site, i) for site, idx in self.parts for i in idx]
        parts: list[tuple[str, list[int]]] = []
        for k in keep:
            site, i = owner[k]
            if parts and parts[-1][0] == site:
                parts[-1][1].append(i)
            else:
                parts.append((site, [i]))
        return Columns(tuple((s, np.asarray(i, dtype=np.int64)) for s, i in parts),
                       tuple(self.names[k] for k in keep))


def columns(fit: "Fit", sites: Sequence[str]) -> Columns:
    """The shown scalars of ``sites``; an internal site (no named scalar) shows all of its own."""
    parts, names = [], []
    for site in sites:
        site_names = fit.site_names(site)
        if all(n is None for n in site_names):
            site_names = flat_names(site, np.shape(fit.draws[site])[2:], {}, {})
        keep = np.asarray([i for i, n in enumerate(site_names) if n is not None], dtype=np.int64)
        if keep.size:
            parts.append((site, keep))
            names += [site_names[i] for i in keep]
    return Columns(tuple(parts), tuple(names))


def _flat(fit: "Fit", site: str) -> np.ndarray:
    x = fit.draws[site]
    return x.reshape(x.shape[0], x.shape[1], -1)  # a view for contiguous arrays and memory maps


def _piece(flat: np.ndarray, idx: np.ndarray, dtype) -> np.ndarray:
    if idx.size and idx[-1] - idx[0] == idx.size - 1 and np.all(np.diff(idx) == 1):
        return np.asarray(flat[..., idx[0]:idx[-1] + 1], dtype=dtype)  # a contiguous run: slice
    return np.asarray(flat[..., idx], dtype=dtype)


def block_width(chains: int, draws: int, max_bytes: int | None = None) -> int:
    """Columns per block: a power of two whose float64 block and intermediates fit ``max_bytes``."""
    budget = WORK_BYTES if max_bytes is None else int(max_bytes)
    width = max(1, budget // (chains * draws * 8 * _WORK_FACTOR))
    return 1 << (width.bit_length() - 1)


def blocks(fit: "Fit", cols: Columns, width: int, dtype=np.float64) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, block)`` pairs: ``block`` (chains, draws, <= width) holds columns ``start:start+k``."""
    pending: list[np.ndarray] = []
    size = start = 0
    for site, idx in cols.parts:
        flat, pos = _flat(fit, site), 0
        while pos < idx.size:
            take = idx[pos:pos + width - size]
            pending.append(_piece(flat, take, dtype))
            size, pos = size + take.size, pos + take.size
            if size == width:
                yield start, _join(pending)
                start, pending, size = start + size, [], 0
    if pending:
        yield start, _join(pending)


def _join(pieces: list[np.ndarray]) -> np.ndarray:
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=-1)


def gather(fit: "Fit", cols: Columns, dtype=None) -> np.ndarray:
    """The chosen columns side by side, (chains, draws, k); only for a few columns (plots)."""
    if not len(cols):
        raise ValueError("no parameters to show: the selected sites are empty or hidden")
    if dtype is None:
        dtype = np.result_type(np.float32, *(fit.draws[s].dtype for s, _ in cols.parts))
    return np.concatenate([_piece(_flat(fit, s), idx, dtype) for s, idx in cols.parts], axis=-1)


def _padded(x: np.ndarray) -> np.ndarray:
    """Pad the columns to a power of two (repeating the first) so few shapes compile."""
    k = x.shape[-1]
    target = 1 << max(0, (k - 1).bit_length())
    return x if target == k else np.concatenate([x, np.repeat(x[..., :1], target - k, axis=-1)], axis=-1)


def block_stats(fit: "Fit", cols: Columns, hdi_prob: float = 0.94,
                max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """Summary statistics of every chosen column in float64, a block at a time.

    Returns ``{stat: (k,)}`` with the keys of :func:`bhmjax._src.diagnostics.summary_stats`
    plus ``finite`` (no NaN or infinite draw) and ``constant`` (all draws equal).
    """
    from bhmjax._src import diagnostics
    from bhmjax._src.precision import x64_mode

    width = block_width(fit.num_chains, fit.num_draws, max_bytes)
    out: dict[str, np.ndarray] = {}
    with x64_mode(True):
        for start, x in blocks(fit, cols, width):
            k = x.shape[-1]
            stats = diagnostics.summary_stats(_padded(x), prob=hdi_prob)
            stats = {name: np.asarray(v)[:k] for name, v in stats.items()}
            stats["finite"] = np.isfinite(x).all(axis=(0, 1))
            stats["constant"] = np.ptp(x, axis=(0, 1)) == 0
            for name, v in stats.items():
                out.setdefault(name, np.empty(len(cols), dtype=v.dtype))[start:start + k] = v
    return out


# --------------------------------------------------------------------------- the table


def _round(table: "pd.DataFrame", round_to) -> "pd.DataFrame":
    if isinstance(round_to, str) and round_to.lower() == "none":
        return table
    if round_to is None:  # ArviZ's default: 3 decimals, integer ESS, R-hat to 2 decimals
        return table.round({c: 0 if c.startswith("ess_") else 2 if c == "r_hat" else 3 for c in table.columns})
    if isinstance(round_to, bool) or not isinstance(round_to, (int, np.integer)):
        raise TypeError(f"round_to must be an int (decimals), None (ArviZ's default) or 'none', got {round_to!r}")
    return table.round(int(round_to))


def _check(hdi_prob, kind) -> float:
    hdi_prob = 0.94 if hdi_prob is None else hdi_prob
    if isinstance(hdi_prob, bool) or not isinstance(hdi_prob, (int, float, np.floating)):
        raise TypeError(f"hdi_prob must be a number in (0, 1), got {hdi_prob!r}")
    if not 0 < hdi_prob < 1:
        raise ValueError(f"hdi_prob must lie in (0, 1), got {hdi_prob!r}")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    return float(hdi_prob)


def summary(fit: "Fit", var_names: str | Sequence[str] | None = None, filter_vars: str | None = None, *,
            hdi_prob: float | None = None, kind: str = "all", round_to: int | str | None = None,
            max_bytes: int | None = None) -> "pd.DataFrame":
    """:meth:`bhmjax.Fit.summary`: one row per scalar, ArviZ's columns and rounding."""
    hdi_prob = _check(hdi_prob, kind)
    if var_names is None:
        sites, left_out = default_sites(fit)
        if left_out:
            warnings.warn(
                f"this fit has more than {LARGE_FIT:,} parameters: the summary leaves out the sites "
                f"{left_out} (more than {LARGE_SITE:,} scalars each); name them in var_names to "
                f"summarize them, e.g. var_names={left_out[:1]}.", UserWarning, stacklevel=3)
    else:
        sites = select_sites(fit, var_names, filter_vars)
    cols = columns(fit, sites)
    if not len(cols):
        raise ValueError(f"no parameters to summarize: the sites {sites} are empty")
    return table(fit, cols, hdi_prob=hdi_prob, kind=kind, round_to=round_to, max_bytes=max_bytes)


def table(fit: "Fit", cols: Columns, *, hdi_prob: float = 0.94, kind: str = "all",
          round_to: int | str | None = None, max_bytes: int | None = None) -> "pd.DataFrame":
    """The summary table of the chosen columns (see :func:`summary`)."""
    import pandas as pd

    stats = block_stats(fit, cols, hdi_prob, max_bytes)
    lo, hi = hdi_columns(hdi_prob)
    out = pd.DataFrame({
        "mean": stats["mean"], "sd": stats["sd"], lo: stats["hdi_lower"], hi: stats["hdi_upper"],
        **{c: stats[c] for c in _DIAGNOSTICS}}, index=pd.Index(list(cols.names), name="parameter"))
    if kind == "stats":
        out = out[["mean", "sd", lo, hi]]
    elif kind == "diagnostics":
        out = out[list(_DIAGNOSTICS)]
    return _round(out, round_to)
