"""GLM families: link, likelihood, response checks, family parameters and their priors.

================== ======== ======================================== ==============
family             link     likelihood                               parameters
================== ======== ======================================== ==============
gaussian           identity Normal(mu, sigma)                        sigma
student_t          identity StudentT(nu, mu, sigma)                  sigma, nu
bernoulli          logit    BernoulliLogits(eta)                     -
binomial           logit    BinomialLogits(eta, trials)              -
poisson            log      Poisson(exp(eta))                        -
negative_binomial  log      NegativeBinomial2(exp(eta), phi)         phi
================== ======== ======================================== ==============
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from bhmjax._src.priors import Prior

__all__ = ["Family", "FAMILIES", "get_family"]


@dataclass(frozen=True)
class Family:
    """A response distribution with its link.

    Attributes
    ----------
    name : str
    link : str
        "identity", "logit" or "log".
    params : tuple of str
        Family parameters sampled besides the linear predictor ("sigma", "nu", "phi").
    likelihood : callable
        ``likelihood(eta, params, trials) -> Distribution`` of the response.
    kind : str
        "real", "binary", "binomial" or "count": which response check applies.
    """

    name: str
    link: str
    params: tuple[str, ...]
    likelihood: Callable
    kind: str

    @property
    def scaled(self) -> bool:
        """Whether default priors scale with the response's sd (identity link)."""
        return self.link == "identity"

    def inverse_link(self, eta):
        """The mean of the response (per trial for binomial) from the linear predictor."""
        if self.link == "logit":
            return 1.0 / (1.0 + jnp.exp(-eta))
        if self.link == "log":
            return jnp.exp(eta)
        return eta

    def location(self, y: np.ndarray, trials: np.ndarray | None) -> float:
        """Mean response on the link scale (the default Intercept prior's location)."""
        if self.link == "identity":
            return float(np.mean(y))
        if self.link == "logit":
            p = np.mean(y / (trials if trials is not None else 1.0))
            p = float(np.clip(p, 0.01, 0.99))
            return float(np.log(p / (1 - p)))
        return float(np.log(max(float(np.mean(y)), 0.1)))

    def scale(self, y: np.ndarray) -> float:
        """``s_y``: the response's sd for identity links (1 if constant), else 1."""
        if not self.scaled:
            return 1.0
        s = float(np.std(y))
        return s if s > 0 else 1.0

    def param_priors(self, y: np.ndarray) -> dict[str, Prior]:
        """Default priors of the family parameters."""
        out = {}
        if "sigma" in self.params:
            out["sigma"] = Prior.default("half_student_t", df=3.0, scale=2.5 * self.scale(y))
        if "nu" in self.params:
            out["nu"] = Prior.default("gamma", concentration=2.0, rate=0.1)
        if "phi" in self.params:
            out["phi"] = Prior.default("gamma", concentration=2.0, rate=0.1)
        return out

    def check_response(self, y: np.ndarray, trials: np.ndarray | None, column: str,
                       trials_column: str | None) -> None:
        """Raise ``ValueError`` naming the column and first bad row of an invalid response."""
        _check_response(self, np.asarray(y), trials, column, trials_column)


def _first_bad(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def _check_response(family: Family, y, trials, column, trials_column) -> None:
    if y.dtype.kind not in "biuf":
        raise ValueError(f"response {column!r} has dtype {y.dtype}; the {family.name} family needs "
                         "numbers" + (" coded 0/1" if family.kind == "binary" else "") + ".")
    y = y.astype(np.float64)
    if family.kind == "binary":
        bad = (y != 0) & (y != 1)
        if bad.any():
            i = _first_bad(bad)
            raise ValueError(f"response {column!r} must be 0 or 1 for the bernoulli family; row {i} "
                             f"is {y[i]:g} ({int(bad.sum())} such rows). For counts out of n use "
                             "family='binomial' with 'y | trials(n) ~ ...'.")
    if family.kind in ("count", "binomial"):
        bad = (y < 0) | (y != np.round(y))
        if bad.any():
            i = _first_bad(bad)
            raise ValueError(f"response {column!r} must hold non-negative integers for the "
                             f"{family.name} family; row {i} is {y[i]:g} ({int(bad.sum())} such rows).")
    if family.kind == "binomial":
        if trials is None:
            raise ValueError("the binomial family needs the number of trials: write "
                             "'y | trials(n) ~ ...' or pass trials='n'.")
        n = np.asarray(trials, dtype=np.float64)
        bad = (n < 1) | (n != np.round(n))
        if bad.any():
            i = _first_bad(bad)
            raise ValueError(f"trials column {trials_column!r} must hold positive integers; row {i} "
                             f"is {n[i]:g}.")
        bad = y > n
        if bad.any():
            i = _first_bad(bad)
            raise ValueError(f"response {column!r} exceeds the trials {trials_column!r} at row {i} "
                             f"({y[i]:g} successes of {n[i]:g} trials; {int(bad.sum())} such rows).")
    elif trials is not None:
        raise ValueError(f"trials ({trials_column!r}) are only used by the binomial family, "
                         f"not {family.name!r}.")


def _gaussian(eta, params, trials):
    return dist.Normal(eta, params["sigma"])


def _student_t(eta, params, trials):
    return dist.StudentT(params["nu"], eta, params["sigma"])


def _bernoulli(eta, params, trials):
    return dist.BernoulliLogits(eta)


def _binomial(eta, params, trials):
    return dist.BinomialLogits(eta, total_count=trials)


def _poisson(eta, params, trials):
    return dist.Poisson(jnp.exp(eta))


def _negative_binomial(eta, params, trials):
    return dist.NegativeBinomial2(mean=jnp.exp(eta), concentration=params["phi"])


FAMILIES: dict[str, Family] = {
    f.name: f for f in [
        Family("gaussian", "identity", ("sigma",), _gaussian, "real"),
        Family("student_t", "identity", ("sigma", "nu"), _student_t, "real"),
        Family("bernoulli", "logit", (), _bernoulli, "binary"),
        Family("binomial", "logit", (), _binomial, "binomial"),
        Family("poisson", "log", (), _poisson, "count"),
        Family("negative_binomial", "log", ("phi",), _negative_binomial, "count"),
    ]
}


def get_family(family: str | Family) -> Family:
    """The family named ``family`` (or ``family`` itself); ``ValueError`` listing the known ones."""
    if isinstance(family, Family):
        return family
    if not isinstance(family, str):
        raise TypeError(f"family must be a name such as 'gaussian', got {type(family).__name__}")
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}.")
    return FAMILIES[family]
