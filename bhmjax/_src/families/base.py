"""The family contract: links, auxiliary parameters, default priors and response checks.

A family maps the linear predictor of the mean ("mu") and its auxiliary parameters
("dpars": sigma, nu, phi, shape, zi, hu) to a NumPyro distribution of one response
row. Each auxiliary parameter is either one scalar (sampled with a default prior) or,
in distributional regression, a linear predictor of its own pushed through its link
(:data:`DPARS`). Categorical families have several mean predictors (``mu<level>``)
and cumulative ones a vector of ordered cutpoints (``Intercept``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bhmjax._src.families.checks import check_response
from bhmjax._src.priors import Prior

__all__ = ["Family", "DPARS", "inverse_link", "first_bad"]

#: Auxiliary parameters: (link used when they get a formula, support of their scalar prior).
DPARS: dict[str, tuple[str, str]] = {
    "sigma": ("log", "positive"),
    "nu": ("log", "positive"),
    "phi": ("log", "positive"),
    "shape": ("log", "positive"),
    "zi": ("logit", "unit"),
    "hu": ("logit", "unit"),
}

#: Response kinds whose draws are integers (counts, 0/1, category codes).
DISCRETE_KINDS = ("binary", "binomial", "count", "ordinal", "categorical")


def inverse_link(link: str, eta):
    """The parameter from its linear predictor: identity, ``exp`` or the logistic function."""
    if link == "logit":
        return jax.nn.sigmoid(eta)
    if link == "log":
        return jnp.exp(eta)
    return eta


def first_bad(bad: np.ndarray) -> int:
    """The index of the first True of a boolean row mask."""
    return int(np.flatnonzero(bad)[0])


def _log_sd(y: np.ndarray) -> float:
    s = float(np.std(y))
    return float(np.log(s)) if s > 0 else 0.0


@dataclass(frozen=True)
class Family:
    """A response distribution with its link and auxiliary parameters.

    Attributes
    ----------
    name : str
    link : str
        Link of the mean predictor: "identity", "logit" or "log".
    params : tuple of str
        Auxiliary parameters besides the mean predictor, in :data:`DPARS`.
    likelihood : callable
        ``likelihood(eta, params, trials) -> Distribution`` of the rows: ``eta`` (N,)
        (categorical: (N, K) with the reference column 0), ``params`` the auxiliary
        parameters on their natural scale, scalars or (N,) (cumulative: also
        ``"Intercept"``, the cutpoints (K-1,)).
    kind : str
        Which response check applies: "real", "positive", "unit", "binary",
        "binomial", "count", "ordinal" or "categorical".
    priors : callable
        ``priors(y) -> {param: Prior}``, the default priors of the scalar parameters.
    mean_fn : callable, optional
        ``mean_fn(eta, params) -> E[y]`` (per trial for binomial; category
        probabilities (N, K) for ordinal and categorical); the inverse link by default.
    transform : callable, optional
        Applied to the response before the default priors' location and scale
        (``np.log`` for lognormal, whose mean predictor is on the log scale).
    censoring : bool
        Whether censored rows (``cens=``) are supported: the distribution has a CDF.
    init : str, optional
        The init strategy :meth:`bhmjax.Model.fit` uses for this family when the user
        gives no ``init_strategy`` (None: the sampler's default, "uniform").
    """

    name: str
    link: str
    params: tuple[str, ...]
    likelihood: Callable
    kind: str
    priors: Callable[[np.ndarray], dict] = lambda y: {}
    mean_fn: Callable | None = None
    transform: Callable | None = None
    censoring: bool = False
    init: str | None = None

    @property
    def discrete(self) -> bool:
        """Whether responses are integers (draws are returned as int32)."""
        return self.kind in DISCRETE_KINDS

    @property
    def scaled(self) -> bool:
        """Whether default priors scale with the response's sd (identity link)."""
        return self.link == "identity"

    def inverse_link(self, eta):
        """The mean parameter from the linear predictor (per trial for binomial)."""
        return inverse_link(self.link, eta)

    def mean(self, eta, params):
        """``E[y]`` for linear predictor ``eta`` and auxiliary ``params``."""
        return self.inverse_link(eta) if self.mean_fn is None else self.mean_fn(eta, params)

    def _y(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        return self.transform(y) if self.transform is not None else y

    def location(self, y: np.ndarray, trials: np.ndarray | None) -> float:
        """Mean response on the link scale (the default Intercept prior's location)."""
        y = self._y(y)
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
        s = float(np.std(self._y(y)))
        return s if s > 0 else 1.0

    def param_priors(self, y: np.ndarray) -> dict[str, Prior]:
        """Default priors of the scalar auxiliary parameters."""
        return {p: prior for p, prior in self.priors(np.asarray(y, dtype=np.float64)).items()
                if p in self.params}

    def dpar_location(self, name: str, y: np.ndarray) -> float:
        """Location of the default prior of a predicted auxiliary parameter's intercept.

        On its link scale: ``log sd(y)`` for sigma (of ``log y`` for lognormal), the
        logit of the share of zeros for hu, 0 otherwise.
        """
        y = np.asarray(y, dtype=np.float64)
        if name == "sigma":
            return _log_sd(self._y(y))
        if name == "hu":
            p = float(np.clip(np.mean(y == 0), 0.01, 0.99))
            return float(np.log(p / (1 - p)))
        return 0.0

    def check_response(self, y: np.ndarray, trials: np.ndarray | None, column: str,
                       trials_column: str | None) -> None:
        """Raise ``ValueError`` naming the column and first bad row of an invalid response."""
        check_response(self, np.asarray(y), trials, column, trials_column)
