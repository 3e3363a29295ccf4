"""Priors: weakly informative defaults scaled to the data, and the user's overrides.

Defaults follow rstanarm's autoscaled priors and brms' choices, on the scale of the
linear predictor (``s_y`` = sd of the response for gaussian and student_t, 1 for
the logit and log links; ``s_x`` = sd of a design column):

================  ============================================================
Intercept         StudentT(3, loc, 2.5 s_y), for centred predictors; ``loc`` is
                  the mean response on the link scale (mean y; logit of the mean
                  proportion; log of the mean count)
b (each slope)    Normal(0, 2.5 s_y / s_x)
sigma             HalfStudentT(3, 2.5 s_y)
sd_<g> (each)     HalfStudentT(3, 2.5 s_y / s_z), s_z the sd of the term's column
                  (1 for its intercept)
cor_<g>           LKJ(2) on the Cholesky factor of the correlation matrix
nu (student_t)    Gamma(2, 0.1)
phi (neg. bin.)   Gamma(2, 0.1)
================  ============================================================

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

__all__ = ["Prior", "VectorPrior", "Stacked", "default_priors", "half_student_t", "make_vector",
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
    "lkj": (None, ("concentration",)),
}
_LABELS = {"normal": "Normal", "student_t": "StudentT", "half_student_t": "HalfStudentT",
           "gamma": "Gamma", "exponential": "Exponential", "lkj": "LKJCholesky"}


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


def _check_dist(key: str, value: Any, support: str) -> Prior:
    if not isinstance(value, dist.Distribution):
        raise TypeError(f"priors[{key!r}] must be a NumPyro distribution such as dist.Normal(0, 1), "
                        f"got {type(value).__name__}")
    if value.event_shape != ():
        raise ValueError(f"priors[{key!r}] must be univariate; got event shape {value.event_shape}")
    got = value.support
    if support == "real":
        ok = type(got) is type(constraints.real)
    else:  # (0, inf) or [0, inf): the site is sampled on (0, inf)
        ok = isinstance(got, (type(constraints.positive), type(constraints.nonnegative)))
    if not ok:
        raise ValueError(f"priors[{key!r}] has support {got}, but the parameter is "
                         f"{'positive' if support == 'positive' else 'real'}; use e.g. "
                         f"{'dist.HalfNormal(1.0)' if support == 'positive' else 'dist.Normal(0, 1)'}.")
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


def _override_vector(vec: VectorPrior, names: tuple[str, ...], general: Prior | None,
                     single: dict[int, Prior]) -> VectorPrior:
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


def resolve_priors(defaults: dict[str, Any], overrides: Mapping[str, Any] | None,
                   slope_names: tuple[str, ...], groups: Mapping[str, tuple[str, ...]],
                   family_params: tuple[str, ...]) -> dict[str, Any]:
    """Apply ``overrides`` to the ``defaults`` of every site.

    ``defaults`` maps site names ("Intercept", "b", "sigma", "sd_<g>", "cor_<g>",
    family parameters) to a Prior or VectorPrior. Keys of ``overrides``:
    "Intercept"; "b" or a slope's column name; "sd", "sd_<g>" or "sd_<g>__<term>";
    "cor" or "cor_<g>" (an LKJ concentration); "sigma" and family parameters.
    The most specific key wins. Unknown keys raise ``ValueError`` listing the valid ones.
    """
    overrides = dict(overrides or {})
    out = dict(defaults)
    valid = (["Intercept"] if "Intercept" in defaults else []) + (["b", *slope_names] if slope_names else [])
    valid += list(family_params)
    if groups:
        valid += ["sd", "cor"]
    for g, terms in groups.items():
        valid += [f"sd_{g}"] + [f"sd_{g}__{t}" for t in terms]
        if f"cor_{g}" in defaults:
            valid.append(f"cor_{g}")
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        raise ValueError(f"no parameter of this model is named {unknown[0]!r} in priors; valid keys "
                         f"are {valid}")
    for key in ["Intercept", *family_params]:
        if key in overrides:
            support = "positive" if key in family_params else "real"
            out[key] = _check_dist(key, overrides[key], support)
    if slope_names:
        general = _check_dist("b", overrides["b"], "real") if "b" in overrides else None
        single = {i: _check_dist(n, overrides[n], "real") for i, n in enumerate(slope_names) if n in overrides}
        out["b"] = _override_vector(defaults["b"], slope_names, general, single)
    for g, terms in groups.items():
        key = f"sd_{g}" if f"sd_{g}" in overrides else ("sd" if "sd" in overrides else None)
        general = _check_dist(key, overrides[key], "positive") if key else None
        single = {i: _check_dist(f"sd_{g}__{t}", overrides[f"sd_{g}__{t}"], "positive")
                  for i, t in enumerate(terms) if f"sd_{g}__{t}" in overrides}
        out[f"sd_{g}"] = _override_vector(defaults[f"sd_{g}"], terms, general, single)
        if f"cor_{g}" in defaults:
            key = f"cor_{g}" if f"cor_{g}" in overrides else ("cor" if "cor" in overrides else None)
            if key:
                out[f"cor_{g}"] = _lkj(key, overrides[key])
    return out


# ---------------------------------------------------------------- defaults


def _column_sd(x: np.ndarray) -> np.ndarray:
    """sd of each column; 1 for constant columns (an intercept column)."""
    sd = np.std(x, axis=0) if x.size else np.ones(x.shape[1:])
    return np.where(sd > 0, sd, 1.0)


def default_priors(family, y: np.ndarray, trials: np.ndarray | None, x: np.ndarray, intercept: bool,
                   groups: Mapping[str, tuple[np.ndarray, bool]]) -> dict[str, Any]:
    """The default prior of every site (see the module docstring for the table).

    Parameters
    ----------
    family : Family
    y, trials : np.ndarray, shape (n,)
    x : np.ndarray, shape (n, K)
        Slope columns of the population design (Intercept excluded).
    intercept : bool
    groups : dict of name -> (Z, correlated)
        Each group term's own columns, shape (n, K_g), and whether it is correlated.
    """
    s_y = family.scale(y)
    out: dict[str, Any] = {}
    if intercept:
        out["Intercept"] = Prior.default("student_t", df=3.0, loc=family.location(y, trials), scale=2.5 * s_y)
    if x.shape[1]:
        scale = 2.5 * s_y / _column_sd(x)
        out["b"] = VectorPrior(((tuple(range(x.shape[1])), Prior.default("normal", loc=0.0 * scale,
                                                                          scale=scale)),), x.shape[1])
    out.update(family.param_priors(y))
    for name, (z, correlated) in groups.items():
        k = z.shape[1]
        scale = 2.5 * s_y / _column_sd(z)
        out[f"sd_{name}"] = VectorPrior(((tuple(range(k)), Prior.default(
            "half_student_t", df=np.full(k, 3.0), scale=scale)),), k, positive=True)
        if correlated and k > 1:
            out[f"cor_{name}"] = Prior.default("lkj", concentration=2.0)
    return out
