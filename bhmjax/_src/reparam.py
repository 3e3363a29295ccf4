"""Group effects for any centeredness: centered, non-centered and in between.

A group term has coefficients ``theta[g] = mu + r[g]`` of shape (G, K) (G groups, K
columns): ``mu`` (K,) holds the population coefficient of each column that is also
a population term (the Intercept, a slope ``x`` in both parts; 0 otherwise) and the
deviations ``r[g] ~ MultivariateNormal(0, diag(sd) Lcorr Lcorr^T diag(sd))`` (or
independent ``Normal(0, sd)`` for ``||`` terms). The centeredness ``c`` in [0, 1] (per
column) chooses which variable NUTS sees (Papaspiliopoulos et al. 2007; Gorinova,
Moore and Hoffman 2020, "Automatic reparameterisation of probabilistic programs"):

* ``z ~ Normal(c * mu, sd**c)`` elementwise, ``w = sd**(1 - c) * (z - c * mu)``
  (so ``w ~ Normal(0, sd)`` and ``theta = mu + w`` for independent columns);
* uncorrelated: ``r = w``; correlated: ``r = w @ M^T`` with
  ``M = diag(sd) Lcorr diag(1/sd)``, so ``cov(r[g]) = M diag(sd**2) M^T =
  diag(sd) Lcorr Lcorr^T diag(sd)``.

``c = 0`` is the non-centered form (``z`` standard normal, ``r = z @ (diag(sd) Lcorr)^T``).
``c = 1`` is the textbook centered form: the group coefficients are centred on the
population ones, ``theta[g] ~ MultivariateNormal(mu, diag(sd) Lcorr Lcorr^T diag(sd))``,
sampled as ``theta_<g>`` with ``r_<g> = theta - mu`` deterministic; a term with no
population counterpart (``mu = 0``) samples ``r_<g>`` itself. Centring on ``mu`` matters
when groups are strongly identified: the data then fix ``theta`` (population
coefficient plus deviation), and ``r ~ Normal(0, sd)`` beside a separate population
coefficient leaves a ridge along which ``mu + r`` is constant.
Otherwise the sampled site is ``z_<g>`` and ``r_<g>`` is deterministic.

``c`` may differ per group as well as per column, shape (G, K): a group with many
informative rows wants centered, a group with two rows non-centered. The form is static
(part of the model structure): a tuple with one value per column or ``PER_GROUP`` (the
(G, K) values are data, ``centeredness:<g>``, so new learned values reuse the compiled
program). None marks a term whose values are still to be learned (``autoreparam.py``,
which runs its pre-pass on the ``PER_GROUP`` form with every value 1); it builds no model.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from bhmjax._src.smallmat import TrilNormal

__all__ = ["AUTO", "LAPLACE", "PER_GROUP", "as_centeredness", "data_key", "form_of", "group_effects",
           "PARAMETERIZATIONS"]

PARAMETERIZATIONS = {"centered": 1.0, "noncentered": 0.0}
AUTO = "auto"
LAPLACE = "laplace"  # centred per group on the rows' Gaussian approximation at each step (laplace.py)
PER_GROUP = "per_group"


def data_key(name: str) -> str:
    """The model-data key of grouping ``name``'s per-group centeredness (form ``PER_GROUP``)."""
    return f"centeredness:{name}"


def form_of(values: Any) -> tuple[float, ...] | str:
    """The static form of per-group values (G, K): a tuple per column where groups agree, else PER_GROUP."""
    v = np.asarray(values, dtype=np.float64)
    if (v == v[:1]).all():
        return tuple(float(x) for x in v[0])
    return PER_GROUP


def as_centeredness(value: Any, num_terms: int, group: str = "group") -> tuple[float, ...] | None:
    """One centeredness per column: "centered" (1), "noncentered" (0), a float or a sequence.

    A sequence gives one value per column of the term, in the term's column order
    (``(1.0, 0.0)`` for ``(1 + x | g)``: centered intercepts, non-centered slopes).
    ``"auto"`` gives None: the values are learned (see ``autoreparam.py``).
    Raises ``ValueError`` for unknown names, values outside [0, 1] or a sequence of
    the wrong length, naming the grouping.
    """
    if isinstance(value, str):
        if value == AUTO:
            return None
        if value == LAPLACE:
            return LAPLACE
        if value not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization for {group!r} must be one of {sorted(PARAMETERIZATIONS)}, "
                             f"{AUTO!r} (learned) or a centeredness in [0, 1]; got {value!r}")
        return (PARAMETERIZATIONS[value],) * num_terms
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        values = (float(value),) * num_terms
    else:
        try:
            values = tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError):
            raise TypeError(f"parameterization for {group!r} must be 'centered', 'noncentered', a "
                            f"float or a sequence of floats; got {type(value).__name__}") from None
        if len(values) != num_terms:
            raise ValueError(f"parameterization for {group!r} has {len(values)} values but the term "
                             f"has {num_terms} columns")
    if not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"centeredness for {group!r} must lie in [0, 1]; got {values}")
    return values


def group_effects(name: str, sd: jnp.ndarray, num_groups: int, centeredness: tuple[float, ...] | str | None,
                  chol_corr: jnp.ndarray | None = None, loc: jnp.ndarray | None = None,
                  values: jnp.ndarray | None = None) -> jnp.ndarray:
    """Sample the deviations ``r_<name>`` of shape (num_groups, K) in one site.

    Parameters
    ----------
    name : str
        The grouping; sites are ``r_<name>`` and, unless fully centered, ``z_<name>``
        (``theta_<name>`` when fully centered on a population coefficient).
    sd : array, shape (K,)
        Standard deviations of the effects.
    num_groups : int
        G (static).
    centeredness : tuple of float (length K) or PER_GROUP
        Static values in [0, 1] per column; PER_GROUP takes ``values``.
    chol_corr : array, shape (K, K), optional
        Cholesky factor of the correlation matrix (None: independent effects).
    loc : array, shape (K,), optional
        The population coefficient of each column (0 for columns without one); the
        group coefficients ``loc + r`` are what the centered form samples.
    values : array, shape (num_groups, K), optional
        The per-group centeredness of the PER_GROUP form (model data).

    Returns
    -------
    r : array, shape (num_groups, K)
    """
    k = sd.shape[-1]
    if centeredness is None:
        raise ValueError(f"the centeredness of {name!r} is 'auto' and not learned yet; learn it first "
                         "(bhmjax._src.autoreparam.learn_centeredness, or bj.Model does it before a fit).")
    if isinstance(centeredness, str):  # PER_GROUP: (G, K) values from the data
        return _partial(name, sd, num_groups, jnp.asarray(values, sd.dtype), chol_corr, loc)
    c_values = tuple(float(v) for v in centeredness)
    if all(v == 1.0 for v in c_values):
        return _centered(name, sd, num_groups, chol_corr, loc)
    if all(v == 0.0 for v in c_values):
        z = numpyro.sample(f"z_{name}", dist.Normal(0.0, 1.0).expand((num_groups, k)).to_event(2))
        r = z * sd if chol_corr is None else z @ (sd[:, None] * chol_corr).T
        return numpyro.deterministic(f"r_{name}", r)
    return _partial(name, sd, num_groups, jnp.asarray(c_values), chol_corr, loc)


def _centered(name, sd, num_groups, chol_corr, loc):
    k = sd.shape[-1]
    mean = jnp.zeros(k) if loc is None else loc
    if chol_corr is None:
        d = dist.Normal(mean, sd).expand((num_groups, k)).to_event(2)
    else:
        d = TrilNormal(mean, sd[:, None] * chol_corr, num_groups).to_event(1)  # no LAPACK: see smallmat.py
    if loc is None:
        return numpyro.sample(f"r_{name}", d)
    theta = numpyro.sample(f"theta_{name}", d)
    return numpyro.deterministic(f"r_{name}", theta - loc)


def _partial(name, sd, num_groups, c, chol_corr, loc):
    """``z ~ Normal(c mu, sd**c)``, ``r = sd**(1 - c) (z - c mu)`` (then correlated by M); c (K,) or (G, K)."""
    k = sd.shape[-1]
    shift = jnp.zeros(k) if loc is None else c * loc
    z = numpyro.sample(f"z_{name}", dist.Normal(shift, sd ** c).expand((num_groups, k)).to_event(2))
    w = (z - shift) * sd ** (1.0 - c)
    if chol_corr is not None:  # M = diag(sd) Lcorr diag(1/sd)
        m = sd[:, None] * chol_corr / sd[None, :]
        w = w @ m.T
    return numpyro.deterministic(f"r_{name}", w)
