"""Families of continuous responses, parameterized as brms does.

================  ========  ==========================================  =========  ==================
family            link      likelihood (``mu`` = inverse link of eta)   params     E[y]
================  ========  ==========================================  =========  ==================
gaussian          identity  Normal(mu, sigma)                           sigma      mu
student_t         identity  StudentT(nu, mu, sigma)                     sigma, nu  mu
lognormal         identity  LogNormal(mu, sigma) (mu, sigma of log y)   sigma      exp(mu + sigma²/2)
gamma             log       Gamma(shape, rate = shape / mu)             shape      mu
beta              logit     Beta(mu phi, (1 - mu) phi)                  phi        mu
exponential       log       Exponential(rate = 1 / mu)                  -          mu
weibull           log       Weibull(shape, scale = mu / Γ(1 + 1/shape)) shape      mu
================  ========  ==========================================  =========  ==================

Default priors of the scalar parameters: sigma HalfStudentT(3, 2.5 s_y) (``s_y`` the sd
of y, of log y for lognormal), nu Gamma(2, 0.1) as before, and bambi's HalfCauchy(1)
(HalfStudentT(1, 1)) for the scale-free shape and the beta's phi. brms' Gamma(0.01, 0.01)
is not used: in float32 some 40% of its draws underflow to exactly 0, an invalid
shape, for prior predictive draws and random initial points alike.

Weibull models start at the prior median (``init_strategy="median"``) unless the user
chooses another start. The Weibull log density has the term ``-(y / scale)^shape`` =
``-exp(shape (log y - log scale))`` with ``shape = exp(u)`` on the sampler's scale: doubly
exponential in the unconstrained parameters. NumPyro's (and Stan's) uniform(-2, 2) start
puts ``shape`` anywhere in (0.14, 7.4) and the intercept up to 2 from the data's
location, and a third of such starts have a potential energy above 1e5 (a fifth above
1e7; one at 1.2e10 with gradients of 2.5e11). In float32 an energy of 1e10 is resolved
to 1024, the step size found there collapses (2e-8), and a chain can stay frozen
through warmup and sampling (the recovery test's seed 1 did; float64 recovered). At the
prior median (shape 1, the intercept at the log mean response) the energy is that of
the posterior's neighbourhood (hundreds). Gamma's ``y / mu`` is singly exponential and
keeps the uniform start.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import gammaln

from bhmjax._src.families.base import Family
from bhmjax._src.priors import Prior

__all__ = ["CONTINUOUS"]


def _sd(y: np.ndarray) -> float:
    s = float(np.std(y))
    return s if s > 0 else 1.0


def _sigma_prior(y: np.ndarray) -> Prior:
    return Prior.default("half_student_t", df=3.0, scale=2.5 * _sd(y))


def _half_cauchy() -> Prior:
    return Prior.default("half_student_t", df=1.0, scale=1.0)


def _gaussian(eta, params, trials):
    return dist.Normal(eta, params["sigma"])


def _student_t(eta, params, trials):
    return dist.StudentT(params["nu"], eta, params["sigma"])


def _lognormal(eta, params, trials):
    return dist.LogNormal(eta, params["sigma"])


def _gamma(eta, params, trials):
    shape = params["shape"]
    return dist.Gamma(shape, shape * jnp.exp(-eta))


def _beta(eta, params, trials):
    phi = params["phi"]  # 1 - mu as sigmoid(-eta): no rounding to 0 for large eta
    return dist.Beta(jax.nn.sigmoid(eta) * phi, jax.nn.sigmoid(-eta) * phi)


def _exponential(eta, params, trials):
    return dist.Exponential(jnp.exp(-eta))


def _weibull(eta, params, trials):
    shape = params["shape"]
    scale = jnp.exp(eta - gammaln(1.0 + 1.0 / shape))
    return dist.Weibull(scale, shape)


CONTINUOUS = [
    Family("gaussian", "identity", ("sigma",), _gaussian, "real",
           priors=lambda y: {"sigma": _sigma_prior(y)}, censoring=True),
    Family("student_t", "identity", ("sigma", "nu"), _student_t, "real",
           priors=lambda y: {"sigma": _sigma_prior(y), "nu": Prior.default("gamma", concentration=2.0, rate=0.1)},
           censoring=True),
    Family("lognormal", "identity", ("sigma",), _lognormal, "positive",
           priors=lambda y: {"sigma": _sigma_prior(np.log(y))},
           mean_fn=lambda eta, p: jnp.exp(eta + 0.5 * p["sigma"] ** 2), transform=np.log, censoring=True),
    Family("gamma", "log", ("shape",), _gamma, "positive",
           priors=lambda y: {"shape": _half_cauchy()}, censoring=True),
    Family("beta", "logit", ("phi",), _beta, "unit",
           priors=lambda y: {"phi": _half_cauchy()}, censoring=True),
    Family("exponential", "log", (), _exponential, "positive", censoring=True),
    Family("weibull", "log", ("shape",), _weibull, "positive",
           priors=lambda y: {"shape": _half_cauchy()}, censoring=True, init="median"),
]
