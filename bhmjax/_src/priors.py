"""Priors: weakly informative defaults scaled to the data, and the user's overrides.

Defaults follow rstanarm's autoscaled priors and brms' choices, on the scale of the
linear predictor (``s_y`` = sd of the response for identity links (of log y for
lognormal), 1 for the logit and log links; ``s_x`` = sd of a design column):

=====================  ============================================================
Intercept              StudentT(3, loc, 2.5 s_y), for centred predictors; ``loc`` is
                       the mean response on the link scale (mean y; logit of the mean
                       proportion; log of the mean count)
b (each slope)         Normal(0, 2.5 s_y / s_x)
sd_<g> (each)          HalfStudentT(3, 2.5 s_y / s_z), s_z the sd of the term's column
                       (1 for its intercept)
cor_<g>                LKJ(2) on the Cholesky factor of the correlation matrix
sds_<s> (splines)      HalfStudentT(3, 2.5 s_y), the sd of the spline's wiggly part
family parameters      see the family modules: sigma HalfStudentT(3, 2.5 s_y), nu and
                       the negative binomial's phi Gamma(2, 0.1), shape and the beta's
                       phi HalfStudentT(1, 1) (a HalfCauchy), zi and hu Beta(1, 1)
cutpoints (ordinal)    StudentT(3, 0, 2.5) each, ordered
predicted parameter    on its link scale, s_y = 1: its Intercept StudentT(3, loc, 2.5)
(``sigma="~ x"``)      (loc = log sd(y) for sigma, else 0), slopes Normal(0, 2.5 / s_x),
                       sds HalfStudentT(3, 2.5 / s_z)
=====================  ============================================================

Default parameters are passed to the model as data arrays, so refitting new data
(of the same shapes) reuses the compiled program; overrides are NumPyro
distributions closed over by the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints

__all__ = ["Prior", "VectorPrior", "Stacked", "PriorSlot", "GroupColumns", "predictor_priors", "half_student_t", "make_vector",
           "resolve_priors"]


def half_student_t(df, scale) -> dist.Distribution:
    """|T| for T ~ StudentT(df, 0, scale): NumPyro's folded Student t."""
    return dist.FoldedDistribution(dist.StudentT(df, 0.0, scale))


_KINDS = {
    "normal": (dist.Normal, ("loc", "scale")),
    "student_t": (dist.StudentT, ("df", "loc", "scale")),
    "half_student_t": (half_student_t, ("df", "scale")),
    "gamma": (dist.Gamma, ("concentration", "rate")),
    "exponential": (dist.Exponential, ("rate",)),
    "beta": (dist.Beta, ("concentration1", "concentration0")),
    "lkj": (None, ("concentration",)),
}
_LABELS = {"normal": "Normal", "student_t": "StudentT", "half_student_t": "HalfStudentT",
           "gamma": "Gamma", "exponential": "Exponential", "beta": "Beta", "lkj": "LKJCholesky"}


@dataclass(frozen=True, eq=False)
class Prior:
    """A default prior (``kind`` with numeric ``args``) or the user's distribution.

    Attributes
    ----------
    kind : str
        "normal", "student_t", "half_student_t", "gamma", "exponential", "lkj" or "user".
    args : tuple of (str, np.ndarray)
        Parameters of a default prior, by name (arrays for vector sites).
    dist : numpyro Distribution, optional
        The user's prior (kind "user").
    """

    kind: str
    args: tuple[tuple[str, np.ndarray], ...] = ()
    dist: Any = None

    @classmethod
    def default(cls, kind: str, **args) -> "Prior":
        names = _KINDS[kind][1]
        return cls(kind, tuple((n, np.asarray(args[n], dtype=np.float64)) for n in names))

    def key(self) -> tuple:
        """The part of the prior that shapes the program (parameter values excluded)."""
        return (self.kind, tuple((n, np.shape(v)) for n, v in self.args), id(self.dist))

    def __eq__(self, other):  # equal programs, whatever the default parameter values
        return isinstance(other, Prior) and self.key() == other.key()

    def __hash__(self):
        return hash(self.key())

    def make(self, values: Mapping[str, Any]) -> dist.Distribution:
        """The distribution, with default parameters taken from ``values`` (traced)."""
        if self.kind == "user":
            return self.dist
        return _KINDS[self.kind][0](*(values[n] for n, _ in self.args))

    def arrays(self, site: str) -> dict[str, np.ndarray]:
        """The default parameters as model data: ``prior:<site>:<arg>``."""
        return {f"prior:{site}:{n}": v for n, v in self.args}

    def describe(self, index=None) -> str:
        if self.kind == "user":
            return f"{type(self.dist).__name__}(user)"
        parts = []
        for name, value in self.args:
            v = np.asarray(value)
            v = v if index is None or v.ndim == 0 else v[index]
            parts.append(f"{float(v):.3g}")
        return f"{_LABELS[self.kind]}({', '.join(parts)})"


@dataclass(frozen=True, eq=False)
class VectorPrior:
    """Priors of the entries of a vector site: (entry indices, Prior) parts.

    One part covering every entry is the usual case; overrides of single
    coefficients (``priors={"floor": ...}``) split it. ``positive`` marks sites
    whose support is (0, inf) (group sds).
    """

    parts: tuple[tuple[tuple[int, ...], Prior], ...]
    size: int
    positive: bool = False

    def key(self) -> tuple:
        return (self.size, self.positive, tuple((idx, p.key()) for idx, p in self.parts))

    def __eq__(self, other):
        return isinstance(other, VectorPrior) and self.key() == other.key()

    def __hash__(self):
        return hash(self.key())

    def arrays(self, site: str) -> dict[str, np.ndarray]:
        """The default parameters as model data: ``prior:<site>:<part>:<arg>``."""
        return {f"prior:{site}:{j}:{n}": v for j, (_, p) in enumerate(self.parts) for n, v in p.args}

    def prior_of(self, i: int) -> tuple[Prior, int]:
        """The prior of entry ``i`` and the entry's position within its part."""
        for idx, prior in self.parts:
            if i in idx:
                return prior, idx.index(i)
        raise IndexError(i)


class Stacked(dist.Distribution):
    """Independent univariate priors on slices of one vector, as one event of shape (size,).

    ``parts`` are distributions of batch shape (len(idx),) on the entries ``idx``.
    """

    pytree_aux_fields = ("index", "size", "positive")
    pytree_data_fields = ("parts",)

    def __init__(self, parts, index, size: int, positive: bool = False):
        self.parts, self.index, self.size, self.positive = tuple(parts), tuple(index), size, positive
        super().__init__(batch_shape=(), event_shape=(size,))

    @property
    def support(self):
        return constraints.independent(constraints.positive if self.positive else constraints.real, 1)

    def sample(self, key, sample_shape=()):
        keys = jax.random.split(key, len(self.parts))
        out = jnp.zeros(tuple(sample_shape) + (self.size,))
        for k, part, idx in zip(keys, self.parts, self.index):
            out = out.at[..., np.asarray(idx)].set(part.sample(k, sample_shape))
        return out

    def log_prob(self, value):
        return sum(part.log_prob(value[..., np.asarray(idx)]).sum(-1)
                   for part, idx in zip(self.parts, self.index))


def make_vector(prior: VectorPrior, values_of) -> dist.Distribution:
    """The distribution of a vector site; ``values_of(part)`` gives a part's parameters."""
    dists = [p.make(values_of(j)).expand((len(idx),)) for j, (idx, p) in enumerate(prior.parts)]
    if len(dists) == 1:
        return dists[0].to_event(1)
    return Stacked(dists, [idx for idx, _ in prior.parts], prior.size, prior.positive)


# ---------------------------------------------------------------- overrides


_SUPPORTS = {"real": ("real", "dist.Normal(0, 1)"), "positive": ("positive", "dist.HalfNormal(1.0)"),
             "unit": ("in (0, 1)", "dist.Beta(1, 1)")}


def _supported(got, support: str) -> bool:
    if support == "real":
        return type(got) is type(constraints.real)
    if support == "unit":
        return getattr(got, "lower_bound", None) == 0 and getattr(got, "upper_bound", None) == 1
    # (0, inf) or [0, inf): the site is sampled on (0, inf)
    return isinstance(got, (type(constraints.positive), type(constraints.nonnegative)))


def _check_dist(key: str, value: Any, support: str) -> Prior:
    if not isinstance(value, dist.Distribution):
        raise TypeError(f"priors[{key!r}] must be a NumPyro distribution such as dist.Normal(0, 1), "
                        f"got {type(value).__name__}")
    if value.event_shape != ():
        raise ValueError(f"priors[{key!r}] must be univariate; got event shape {value.event_shape}")
    if not _supported(value.support, support):
        what, example = _SUPPORTS[support]
        raise ValueError(f"priors[{key!r}] has support {value.support}, but the parameter is {what}; use e.g. "
                         f"{example}.")
    return Prior("user", dist=value)


def _lkj(key: str, value: Any) -> Prior:
    if isinstance(value, (dist.LKJCholesky, dist.LKJ)):
        value = value.concentration
    try:
        eta = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"priors[{key!r}] must be an LKJ concentration (a number > 0) or "
                        f"dist.LKJCholesky(...), got {type(value).__name__}") from None
    if not eta > 0:
        raise ValueError(f"priors[{key!r}]: the LKJ concentration must be > 0, got {eta}")
    return Prior.default("lkj", concentration=eta)


def _override_vector(vec: VectorPrior, general: Prior | None, single: dict[int, Prior]) -> VectorPrior:
    """Replace a vector prior's parts: ``general`` for all entries, then single entries."""
    if general is None and not single:
        return vec
    base = ((tuple(range(vec.size)), general),) if general is not None else vec.parts
    parts = []
    for idx, prior in base:
        rest = tuple(i for i in idx if i not in single)
        if rest:
            if prior.kind != "user" and len(rest) != len(idx):
                keep = [idx.index(i) for i in rest]
                prior = Prior(prior.kind, tuple((n, v if v.ndim == 0 else v[keep]) for n, v in prior.args))
            parts.append((rest, prior))
    parts += [((i,), p) for i, p in sorted(single.items())]
    return VectorPrior(tuple(parts), vec.size, vec.positive)


@dataclass(frozen=True)
class PriorSlot:
    """Which ``priors={...}`` keys override one site.

    Attributes
    ----------
    site : str
        The site's key in the defaults ("b", "sd_g", "sigma", ...).
    keys : tuple of str
        Keys that set the whole site, most specific first (``("sd_g", "sd")``).
    entries : tuple of str
        Keys of single entries of a vector site, in entry order (slope names, ``sd_g__x``).
    support : str
        "real", "positive", "unit" (distributions must match) or "lkj" (a concentration).
    """

    site: str
    keys: tuple[str, ...]
    entries: tuple[str, ...] = ()
    support: str = "real"


def resolve_priors(defaults: dict[str, Any], overrides: Mapping[str, Any] | None,
                   slots: list[PriorSlot]) -> dict[str, Any]:
    """Apply ``overrides`` to the ``defaults`` of every site, slot by slot.

    The most specific key wins: a single entry over the site's key over a key shared
    by several sites ("sd", "cor"). Unknown keys raise ``ValueError`` listing the valid ones.
    """
    overrides = dict(overrides or {})
    valid = list(dict.fromkeys(k for slot in slots for k in (*slot.keys, *slot.entries)))
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        raise ValueError(f"no parameter of this model is named {unknown[0]!r} in priors; valid keys "
                         f"are {valid}")
    out = dict(defaults)
    for slot in slots:
        key = next((k for k in slot.keys if k in overrides), None)
        if slot.support == "lkj":
            if key is not None:
                out[slot.site] = _lkj(key, overrides[key])
            continue
        general = _check_dist(key, overrides[key], slot.support) if key is not None else None
        if isinstance(defaults[slot.site], VectorPrior):
            single = {i: _check_dist(n, overrides[n], slot.support)
                      for i, n in enumerate(slot.entries) if n in overrides}
            out[slot.site] = _override_vector(defaults[slot.site], general, single)
        elif general is not None:
            out[slot.site] = general
    return out


# ---------------------------------------------------------------- defaults


def _column_sd(x: np.ndarray) -> np.ndarray:
    """sd of each column; 1 for constant columns (an intercept column)."""
    sd = np.std(x, axis=0) if x.size else np.ones(x.shape[1:])
    return np.where(sd > 0, sd, 1.0)


def _half_t(scale: np.ndarray) -> VectorPrior:
    k = len(scale)
    return VectorPrior(((tuple(range(k)), Prior.default("half_student_t", df=np.full(k, 3.0), scale=scale)),),
                       k, positive=True)


@dataclass(frozen=True)
class GroupColumns:
    """One group term as the priors see it: its grouping, column names and design columns Z (n, K)."""

    grouping: str
    columns: tuple[str, ...]
    z: np.ndarray
    correlated: bool


def predictor_priors(dpar: str, loc: float | None, s_y: float, x: np.ndarray, slopes: tuple[str, ...],
                     groups: tuple[GroupColumns, ...] = (), smooths: tuple[str, ...] = ()
                     ) -> tuple[dict[str, Any], list[PriorSlot]]:
    """Default priors of one linear predictor's sites and the keys that override them.

    Parameters
    ----------
    dpar : str
        "mu" or the predicted parameter ("sigma", "mu<level>"); site names from ``sites.py``.
    loc : float or None
        The intercept prior's location on the link scale (None: no intercept).
    s_y : float
        Scale of the linear predictor: the response's sd for identity links, else 1.
    x : np.ndarray, shape (n, K)
        Slope columns (Intercept excluded), named ``slopes``.
    groups : tuple of GroupColumns
    smooths : tuple of str
        Names of the predictor's splines (``sx_1``); each gets an sd ``sds_<name>``.

    Returns
    -------
    defaults : dict of site -> Prior or VectorPrior
    slots : list of PriorSlot, in the order their keys are listed to users
    """
    from bhmjax._src import sites

    out: dict[str, Any] = {}
    slots: list[PriorSlot] = []
    if loc is not None:
        site = sites.intercept_site(dpar)
        out[site] = Prior.default("student_t", df=3.0, loc=loc, scale=2.5 * s_y)
        slots.append(PriorSlot(site, (site,)))
    if slopes:
        site, scale = sites.b_site(dpar), 2.5 * s_y / _column_sd(x)
        out[site] = VectorPrior(((tuple(range(len(slopes))), Prior.default("normal", loc=0.0 * scale,
                                                                            scale=scale)),), len(slopes))
        slots.append(PriorSlot(site, (site,), tuple(sites.slope_name(dpar, c) for c in slopes)))
    general = ("sd", "cor") if dpar == sites.MU else ((), ())
    for g in groups:
        name = sites.group_site(g.grouping, dpar)
        out[f"sd_{name}"] = _half_t(2.5 * s_y / _column_sd(g.z))
        slots.append(PriorSlot(f"sd_{name}", (f"sd_{name}",) + general[:1],
                               tuple(f"sd_{g.grouping}__{sites.group_column(dpar, c)}" for c in g.columns),
                               "positive"))
        if g.correlated and len(g.columns) > 1:
            out[f"cor_{name}"] = Prior.default("lkj", concentration=2.0)
            slots.append(PriorSlot(f"cor_{name}", (f"cor_{name}",) + general[1:], (), "lkj"))
    for name in smooths:  # brms: sds ~ StudentT+(3, 0, 2.5 s_y)
        out[f"sds_{name}"] = Prior.default("half_student_t", df=3.0, scale=2.5 * s_y)
        slots.append(PriorSlot(f"sds_{name}", (f"sds_{name}",) + (("sds",) if dpar == sites.MU else ()),
                               (), "positive"))
    return out, slots
