"""Censored responses with brms semantics: each row's likelihood is a density, a CDF or a difference.

========  ======  ====================================================
code      brms    log-likelihood of the row with response ``y``
========  ======  ====================================================
``0``     none    ``log f(y)``
``-1``    left    ``log F(y) = log P(Y <= y)``
``1``     right   ``log S(y) = log P(Y > y)``
``2``     interv  ``log (F(upper) - F(y)) = log P(y < Y <= upper)``
========  ======  ====================================================

For counts these are exactly Stan's ``lcdf``/``lccdf`` (``P(Y > y)``, not ``>=``), as
brms writes them. Both tails are computed from regularized incomplete gamma/beta
functions or ``log_ndtr`` directly, so far tails do not round to ``log 0``.
Predictive draws of a censored model are uncensored draws, as in brms.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro.distributions as dist
from jax import lax
from jax.scipy.special import betainc, gammainc, gammaincc, log_ndtr

__all__ = ["Censored", "log_cdfs", "CENSORING_CODES"]

#: Accepted spellings of each censoring code (brms: "left", "none", "right", "interval", -1..2).
CENSORING_CODES = {"left": -1, "none": 0, "right": 1, "interval": 2}


def _log(v):
    return jnp.log(jnp.maximum(v, jnp.finfo(jnp.result_type(v, float)).tiny))


def _log1mexp(x):
    """``log(1 - exp(x))`` for x < 0, accurate at both ends."""
    return jnp.where(x > -0.6931472, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def log_cdfs(d: dist.Distribution, y) -> tuple:
    """``(log F(y), log S(y))`` with ``F(y) = P(Y <= y)`` and ``S(y) = P(Y > y)``.

    Supported: Normal, StudentT, LogNormal, Gamma, Exponential, Weibull, Beta,
    Poisson and NegativeBinomial2 (``TypeError`` otherwise).
    """
    if isinstance(d, dist.LogNormal):
        z = (jnp.log(y) - d.base_dist.loc) / d.base_dist.scale
        return log_ndtr(z), log_ndtr(-z)
    if isinstance(d, dist.Normal):
        z = (y - d.loc) / d.scale
        return log_ndtr(z), log_ndtr(-z)
    if isinstance(d, dist.StudentT):  # symmetric: S(y) = F(2 loc - y), each from the accurate tail
        return _log(d.cdf(y)), _log(d.cdf(2 * d.loc - y))
    if isinstance(d, dist.Exponential):
        log_s = -d.rate * y
        return _log1mexp(jnp.minimum(log_s, -1e-30)), log_s
    if isinstance(d, dist.Weibull):
        log_s = -((y / d.scale) ** d.concentration)
        return _log1mexp(jnp.minimum(log_s, -1e-30)), log_s
    if isinstance(d, dist.Gamma):
        return _log(gammainc(d.concentration, d.rate * y)), _log(gammaincc(d.concentration, d.rate * y))
    if isinstance(d, dist.Beta):
        a, b = d.concentration1, d.concentration0
        return _log(betainc(a, b, y)), _log(betainc(b, a, 1 - y))
    if isinstance(d, dist.Poisson):
        k = jnp.floor(y) + 1
        return _log(gammaincc(k, d.rate)), _log(gammainc(k, d.rate))
    if isinstance(d, dist.NegativeBinomial2):  # NB(r = phi, p = phi / (phi + mu)): F(k) = I_p(r, k + 1)
        r, rate = d.concentration, d.rate  # GammaPoisson's rate = phi / mu
        p = rate / (rate + 1)
        k = jnp.floor(y) + 1
        return _log(betainc(r, k, p)), _log(betainc(k, r, 1 - p))
    raise TypeError(f"no CDF for censoring of {type(d).__name__}")


class Censored(dist.Distribution):
    """``base`` with each row censored by its code (see the module table).

    Parameters
    ----------
    base : Distribution
        The uncensored distribution, batch shape (N,).
    cens : array, shape (N,)
        Codes -1, 0, 1, 2 (left, none, right, interval).
    upper : array, shape (N,)
        The upper bound of interval-censored rows (any value in the support elsewhere).
    """

    pytree_data_fields = ("base", "cens", "upper")

    def __init__(self, base: dist.Distribution, cens, upper, *, validate_args=None):
        self.base, self.cens, self.upper = base, jnp.asarray(cens), jnp.asarray(upper)
        batch = lax.broadcast_shapes(base.batch_shape, jnp.shape(self.cens))
        super().__init__(batch_shape=batch, validate_args=validate_args)

    @property
    def support(self):
        return self.base.support

    @property
    def has_enumerate_support(self):
        return False

    def sample(self, key, sample_shape=()):
        return self.base.expand(self.batch_shape).sample(key, sample_shape)

    def log_prob(self, value):
        log_f, log_s = log_cdfs(self.base, value)
        log_fu, log_su = log_cdfs(self.base, self.upper)
        interval = self.cens == 2
        # log(F(u) - F(y)) below the median, log(S(y) - S(u)) above it: each keeps its precision
        # where the other's two terms round to the same number; a safe argument on the other rows
        # keeps their gradients finite
        upper_tail = log_s < log_f
        gap = jnp.where(upper_tail, log_su - log_s, log_f - log_fu)
        gap = jnp.where(interval, jnp.minimum(gap, -1e-30), -1.0)
        out = jnp.where(self.cens == -1, log_f, self.base.log_prob(value))
        out = jnp.where(self.cens == 1, log_s, out)
        return jnp.where(interval, jnp.where(upper_tail, log_s, log_fu) + _log1mexp(gap), out)
