"""Gaussian formula models sample on a standardized scale and report on the user's.

A response near 1e6 with sd 1 (or with sd 1e6, or 1e-6) defeats a sampler that starts
its unconstrained coordinates in [-2, 2] with a unit mass matrix, and in float32 the
intercept near 1e6 cannot even be represented finer than 0.06. So, for gaussian
formula models (issue #15, item 5):

* **location**: the model sees ``y - m`` (``m`` the mean response, subtracted in float64
  on the host; only when the model has an intercept, which absorbs it), and its
  ``Intercept_c`` is the intercept relative to ``m``: the default prior's location is
  shifted by ``m`` on the host, a user's prior through ``AffineTransform(-m, 1)``.
  The deterministic ``Intercept`` adds ``m`` back, so every reported site is on the
  user's scale (``response:loc`` in the model data).
* **scale**: the sampler's unconstrained coordinate of ``Intercept_c``, ``b``, ``sd_<g>``
  and ``sigma`` is divided by a data scale (``s_y``; ``s_y / sd(x_j)`` for a slope;
  ``s_y / sd(z_k)`` for a group sd), through :class:`Rescaled`: the site's value, its
  prior and its name do not change, only the bijection NUTS sees (``value = scale *
  biject_to(support)(u)``), so init, step size and mass matrix start at the right scale
  (``scale:<site>`` in the model data).

Predictors are centred by the model already (``X - X_mean`` beside an intercept).

``Intercept`` is a deterministic site computed in the sampler's precision; in float32
a value near 1e6 is stored to 0.06. ``bj.Model.fit`` therefore stores ``Intercept`` in
float64, recomputed on the host from the float32 ``Intercept_c`` and ``b`` (see
:func:`user_intercept`).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.transforms import AffineTransform, ComposeTransform, Transform, biject_to

__all__ = ["Rescaled", "on_sampler_scale", "standardize", "user_intercept", "STANDARDIZED_FAMILIES"]

STANDARDIZED_FAMILIES = ("gaussian",)


class _ScaledSupport(constraints.Constraint):
    """The support of ``base``, reached from the sampler's coordinate ``u`` as ``scale * biject_to(base)(u)``."""

    def __init__(self, base: constraints.Constraint, scale) -> None:
        self.base, self.scale = base, scale

    @property
    def event_dim(self) -> int:
        return self.base.event_dim

    def __call__(self, x):
        return self.base(x)

    def feasible_like(self, prototype):
        return self.base.feasible_like(prototype)

    def tree_flatten(self):
        return (self.base, self.scale), (("base", "scale"), dict())


class _Scale(Transform):
    """``x -> scale * x`` on ``domain`` (a support that positive scaling maps onto itself)."""

    def __init__(self, scale, domain: constraints.Constraint) -> None:
        self.scale, self._domain = scale, domain

    @property
    def domain(self):
        return self._domain

    @property
    def codomain(self):
        return self._domain

    def __call__(self, x):
        return x * self.scale

    def _inverse(self, y):
        return y / self.scale

    def log_abs_det_jacobian(self, x, y, intermediates=None):
        log_scale = jnp.broadcast_to(jnp.log(self.scale), jnp.shape(x))
        n = self._domain.event_dim
        return jnp.sum(log_scale, axis=tuple(range(-n, 0))) if n else log_scale

    def tree_flatten(self):
        return (self.scale, self._domain), (("scale", "_domain"), dict())


@biject_to.register(_ScaledSupport)
def _scaled_bijection(constraint: _ScaledSupport) -> Transform:
    return ComposeTransform([biject_to(constraint.base), _Scale(constraint.scale, constraint.base)])


class Rescaled(dist.Distribution):
    """``base`` unchanged (values, density, draws), with the sampler's coordinate scaled.

    Parameters
    ----------
    base : Distribution with real or positive support (batch or event shape as the site)
    scale : array broadcasting to the site's shape, > 0
        The unit of the unconstrained coordinate: ``value = scale * biject_to(base.support)(u)``.
    """

    pytree_data_fields = ("base", "scale")

    def __init__(self, base: dist.Distribution, scale) -> None:
        self.base, self.scale = base, scale
        super().__init__(batch_shape=base.batch_shape, event_shape=base.event_shape)

    @property
    def support(self):
        return _ScaledSupport(self.base.support, self.scale)

    def sample(self, key, sample_shape=()):
        return self.base.sample(key, sample_shape)

    def log_prob(self, value):
        return self.base.log_prob(value)


def on_sampler_scale(site: str, d: dist.Distribution, data: Mapping[str, Any], shift: bool = False):
    """The prior ``d`` of ``site`` as the model samples it under standardized data.

    ``shift``: ``d`` is a user's prior of the intercept on the user's scale; the model
    samples the intercept relative to ``response:loc``. Data without ``scale:<site>``
    (other families, user-built data) leave ``d`` as it is.
    """
    if shift and "response:loc" in data:
        d = dist.TransformedDistribution(d, AffineTransform(-data["response:loc"], 1.0))
    scale = data.get(f"scale:{site}")
    return d if scale is None else Rescaled(d, scale)


def _column_sd(x: np.ndarray) -> np.ndarray:
    from bhmjax._src.priors import _column_sd as sd

    return sd(np.asarray(x, np.float64))


def standardize(data: Mapping[str, Any], structure, family) -> dict:
    """Model data (see ``models.py``) for sampling on the standardized scale.

    Adds ``response:loc`` (with an intercept: ``y`` shifted by it, in float64, and the
    default Intercept prior's location with it) and ``scale:<site>`` for the
    intercept, slopes, group sds and ``sigma``. Returns ``data`` unchanged for
    families other than :data:`STANDARDIZED_FAMILIES`. Without an intercept ``y`` is not
    shifted (nothing absorbs the shift), only the sampler's coordinates are scaled.
    """
    if family.name not in STANDARDIZED_FAMILIES or data.get("y") is None:
        return dict(data)
    f = np.asarray(data["y"]).dtype
    y = np.asarray(data["y"], np.float64)
    s_y = family.scale(y)
    out = dict(data)
    if structure.intercept:
        loc = float(np.mean(y))
        out["y"] = (y - loc).astype(f)
        if data.get("cens_upper") is not None:  # interval censoring's upper bounds move with the response
            out["cens_upper"] = (np.asarray(data["cens_upper"], np.float64) - loc).astype(f)
        out["response:loc"] = np.asarray(loc, f)
        if structure.intercept_prior.kind != "user":
            key = "prior:Intercept:loc"
            out[key] = (np.asarray(data[key], np.float64) - loc).astype(f)
        out["scale:Intercept_c"] = np.asarray(s_y, f)
    if structure.slopes:
        out["scale:b"] = (s_y / _column_sd(data["X"])).astype(f)
    for i, g in enumerate(structure.groups):
        out[f"scale:sd_{g.name}"] = (s_y / _column_sd(data[f"Z_{i}"])).astype(f)
    for name, _ in structure.family_priors:
        if name == "sigma":
            out["scale:sigma"] = np.asarray(s_y, f)
    return out


def user_intercept(intercept_c: np.ndarray, b: np.ndarray | None, x_mean: np.ndarray | None,
                   loc: float) -> np.ndarray:
    """``Intercept = loc + Intercept_c - X_mean @ b`` in float64, draws (chains, draws)."""
    out = np.asarray(intercept_c, np.float64) + float(loc)
    if b is not None and x_mean is not None:
        out = out - np.asarray(b, np.float64) @ np.asarray(x_mean, np.float64)
    return out
