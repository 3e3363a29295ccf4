"""Families of binary and count responses, with zero-inflated and hurdle variants (brms semantics).

================================  =====  =================================================  ========
family                            link   likelihood (``mu = exp(eta)``)                     params
================================  =====  =================================================  ========
bernoulli                         logit  BernoulliLogits(eta)                               -
binomial                          logit  BinomialLogits(eta, trials)                        -
poisson                           log    Poisson(mu)                                        -
negative_binomial                 log    NegativeBinomial2(mu, phi)                         phi
zero_inflated_poisson             log    zi + (1 - zi) Poisson(mu) at 0                     zi
zero_inflated_negative_binomial   log    zi + (1 - zi) NegativeBinomial2(mu, phi) at 0      phi, zi
hurdle_poisson                    log    hu at 0, (1 - hu) zero-truncated Poisson(mu)       hu
hurdle_negative_binomial          log    hu at 0, (1 - hu) zero-truncated NB2(mu, phi)      phi, hu
================================  =====  =================================================  ========

Means: ``(1 - zi) mu`` (zero-inflated); ``(1 - hu) mu / (1 - P(0))`` (hurdle, ``P(0)`` of
the untruncated count). zi and hu take brms' Beta(1, 1) prior, phi Gamma(2, 0.1).
brms names the negative binomial's precision ``shape``; bhmjax keeps ``phi``, the name
its negative_binomial family already used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax import lax

from bhmjax._src.families.base import Family
from bhmjax._src.families.censoring import log_cdfs
from bhmjax._src.priors import Prior

__all__ = ["COUNTS", "Hurdle", "KnownNormalizer"]

_PHI = Prior.default("gamma", concentration=2.0, rate=0.1)
_GATE = Prior.default("beta", concentration1=1.0, concentration0=1.0)


def _positive_poisson(key, rate, shape) -> jnp.ndarray:
    """Exact draws of ``Y | Y > 0`` for ``Y ~ Poisson(rate)``, without loops.

    Given at least one event of a unit-rate-``rate`` Poisson process on [0, 1], the first
    arrival ``T`` has density ``rate e^(-rate t) / (1 - e^(-rate))`` on [0, 1] (drawn by its
    inverse CDF) and the events after it are ``Poisson(rate (1 - T))``: ``Y = 1 + that``.
    """
    k_first, k_rest = jax.random.split(key)
    rate = jnp.broadcast_to(rate, shape)
    dtype = jnp.result_type(float)
    u = jax.random.uniform(k_first, shape, dtype)
    safe = jnp.where(rate > 0, rate, 1.0)
    first = -jnp.log1p(u * jnp.expm1(-safe)) / safe  # in [0, 1]
    rest = jax.random.poisson(k_rest, jnp.where(rate > 0, safe * (1.0 - first), 0.0), shape)
    return 1.0 + rest.astype(dtype)


def _positive_draws(key, base: dist.Distribution, shape) -> jnp.ndarray:
    """Exact draws of ``Y | Y > 0``: the inverse CDF at ``u ~ U(F(0), 1)``, by doubling and bisection.

    Rejection (redraw the zeros) needs ~1 / P(Y > 0) rounds, unbounded as the mean
    goes to 0. Here the doubling stops once every bound is above its ``u`` and the
    bisection once every bracket is one count wide: ~2 log2(max draw) CDF evaluations.
    Counts are capped at 2^(mantissa bits) (8,388,608 in float32), beyond which the
    float type no longer holds every integer (and JAX's incomplete gamma series never
    converges); Poisson bases take the loop-free :func:`_positive_poisson`.
    """
    if isinstance(base, dist.Poisson):
        return _positive_poisson(key, base.rate, shape)

    def cdf(k):
        return jnp.exp(log_cdfs(base, k)[0])

    dtype = jnp.result_type(float)
    cap = float(2 ** jnp.finfo(dtype).nmant)
    f0 = cdf(jnp.zeros(shape, dtype))
    u = f0 + (1.0 - f0) * jax.random.uniform(key, shape, dtype)

    def low(h):
        return (h < cap) & (cdf(h) < u)

    hi = lax.while_loop(lambda h: jnp.any(low(h)), lambda h: jnp.where(low(h), 2.0 * h, h), jnp.ones(shape, dtype))
    lo = jnp.where(hi > 1.0, hi / 2.0, 0.0)  # F(lo) < u <= F(hi), or hi at the cap

    def halve(bounds):
        lo, hi = bounds
        mid = jnp.floor((lo + hi) / 2.0)
        up = cdf(mid) >= u
        return jnp.where(up, lo, mid), jnp.where(up, mid, hi)

    _, hi = lax.while_loop(lambda b: jnp.any(b[1] - b[0] > 1.0), halve, (lo, hi))
    return jnp.maximum(hi, 1.0)


class Hurdle(dist.Distribution):
    """A hurdle count: 0 with probability ``gate``, else a draw of ``base`` truncated to Y > 0.

    ``log p(0) = log gate``; ``log p(y) = log(1 - gate) + log p_base(y) - log(1 - p_base(0))``.
    ``log_p0``, the base's ``log p(0)``, is passed in when the caller has it in a form that
    keeps its precision for rates near 0 (``-mu``, not ``log(exp(-mu))``).
    """

    arg_constraints = {"gate": dist.constraints.unit_interval}
    support = dist.constraints.nonnegative_integer
    pytree_data_fields = ("base", "gate", "log_p0")

    def __init__(self, base: dist.Distribution, gate, log_p0=None, *, validate_args=None):
        batch = lax.broadcast_shapes(base.batch_shape, jnp.shape(gate))
        self.base, self.gate = base.expand(batch), jnp.broadcast_to(gate, batch)
        self.log_p0 = self.base.log_prob(jnp.zeros(batch)) if log_p0 is None else jnp.broadcast_to(log_p0, batch)
        super().__init__(batch_shape=batch, validate_args=validate_args)

    def log_prob(self, value):
        log_pos = (jnp.log1p(-self.gate) + self.base.log_prob(jnp.maximum(value, 1))
                   - jnp.log(-jnp.expm1(self.log_p0)))
        return jnp.where(value == 0, jnp.log(self.gate), log_pos)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        k_gate, k_count = jax.random.split(key)
        zero = jax.random.bernoulli(k_gate, self.gate, shape)
        return jnp.where(zero, 0.0, _positive_draws(k_count, self.base, shape))


# Rates below exp(-80) would round to 0 in float32, where a positive count's log p and its
# truncation's log(1 - p(0)) are both -inf; the zero-truncated count is then 1 anyway.
_MIN_ETA = -80.0


def _poisson_log_p0(mu, params):
    return -mu


def _nb_log_p0(mu, params):
    phi = params["phi"]
    return -phi * jnp.log1p(mu / phi)  # log (phi / (mu + phi))^phi, accurate for mu << phi


def _hurdle(base, log_p0):
    def likelihood(eta, params, trials):
        mu = jnp.exp(jnp.maximum(eta, _MIN_ETA))
        return Hurdle(base(mu, params), params["hu"], log_p0(mu, params))
    return likelihood


def _hurdle_mean(log_p0):
    """``(1 - hu) mu / (1 - P(0))`` with the untruncated count's ``log P(0) = log_p0(mu, params)``."""
    def mean(eta, params):
        mu = jnp.exp(jnp.maximum(eta, _MIN_ETA))
        return (1.0 - params["hu"]) * mu / -jnp.expm1(log_p0(mu, params))
    return mean


def _nb(eta, params):
    return dist.NegativeBinomial2(mean=jnp.exp(eta), concentration=params["phi"])


def _nb_mu(mu, params):
    return dist.NegativeBinomial2(mean=mu, concentration=params["phi"])


class KnownNormalizer(dist.Distribution):
    """A ``BinomialLogits`` or ``Poisson`` likelihood whose data-only term is given per row.

    numpyro evaluates ``log C(n, k)`` (three ``gammaln``) or ``-log k!`` at every density
    evaluation, though it depends on the data only; here it is computed once per cell
    (``log_norm``, see ``reduce.reduce_count_data``). The density is the same; sampling is the base's.

    Parameters
    ----------
    base : BinomialLogits or Poisson, batch shape (N,)
    log_norm : array, shape (N,)
        ``gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)`` (binomial) or
        ``-gammaln(k + 1)`` (Poisson) of each row's observed ``k``.
    """

    pytree_data_fields = ("base", "log_norm")

    def __init__(self, base: dist.Distribution, log_norm: jnp.ndarray, *, validate_args=None):
        if not isinstance(base, (dist.BinomialLogits, dist.Poisson)):
            raise TypeError(f"KnownNormalizer takes BinomialLogits or Poisson, got {type(base).__name__}")
        self.base, self.log_norm = base, log_norm
        super().__init__(batch_shape=base.batch_shape, event_shape=base.event_shape, validate_args=validate_args)

    @property
    def support(self):
        return self.base.support

    def sample(self, key, sample_shape=()):
        return self.base.sample(key, sample_shape)

    def log_prob(self, value):
        if isinstance(self.base, dist.BinomialLogits):
            logits = self.base.logits
            return value * logits - self.base.total_count * jax.nn.softplus(logits) + self.log_norm
        rate = self.base.rate
        return jax.scipy.special.xlogy(value, rate) - rate + self.log_norm

    def natural_derivatives(self, value):
        """First and second derivatives of ``log_prob(value)`` (N,) in the logit (binomial) or the
        log rate (Poisson), in closed form: the laplace form's score and curvature per row."""
        if isinstance(self.base, dist.BinomialLogits):
            p = jax.nn.sigmoid(self.base.logits)
            n = self.base.total_count
            return value - n * p, -n * p * (1.0 - p)
        rate = self.base.rate
        return value - rate, -rate


COUNTS = [
    Family("bernoulli", "logit", (), lambda eta, p, n: dist.BernoulliLogits(eta), "binary"),
    Family("binomial", "logit", (), lambda eta, p, n: dist.BinomialLogits(eta, total_count=n), "binomial"),
    Family("poisson", "log", (), lambda eta, p, n: dist.Poisson(jnp.exp(eta)), "count", censoring=True),
    Family("negative_binomial", "log", ("phi",), lambda eta, p, n: _nb(eta, p), "count",
           priors=lambda y: {"phi": _PHI}, censoring=True),
    Family("zero_inflated_poisson", "log", ("zi",),
           lambda eta, p, n: dist.ZeroInflatedPoisson(p["zi"], jnp.exp(eta)), "count",
           priors=lambda y: {"zi": _GATE}, mean_fn=lambda eta, p: (1.0 - p["zi"]) * jnp.exp(eta)),
    Family("zero_inflated_negative_binomial", "log", ("phi", "zi"),
           lambda eta, p, n: dist.ZeroInflatedNegativeBinomial2(jnp.exp(eta), p["phi"], gate=p["zi"]), "count",
           priors=lambda y: {"phi": _PHI, "zi": _GATE}, mean_fn=lambda eta, p: (1.0 - p["zi"]) * jnp.exp(eta)),
    Family("hurdle_poisson", "log", ("hu",), _hurdle(lambda mu, p: dist.Poisson(mu), _poisson_log_p0),
           "count", priors=lambda y: {"hu": _GATE}, mean_fn=_hurdle_mean(_poisson_log_p0)),
    Family("hurdle_negative_binomial", "log", ("phi", "hu"), _hurdle(_nb_mu, _nb_log_p0),
           "count", priors=lambda y: {"phi": _PHI, "hu": _GATE}, mean_fn=_hurdle_mean(_nb_log_p0)),
]
