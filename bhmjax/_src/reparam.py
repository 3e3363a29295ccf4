"""Group effects for any centeredness: centered, non-centered and in between.

A group term has effects ``r`` of shape (G, K) (G groups, K columns) with
``r[g] ~ MultivariateNormal(0, diag(sd) Lcorr Lcorr^T diag(sd))`` (or independent
``Normal(0, sd)`` for ``||`` terms). The centeredness ``c`` in [0, 1] (per column)
chooses which variable NUTS sees (Papaspiliopoulos et al. 2007; Gorinova,
Moore and Hoffman 2020, "Automatic reparameterisation of probabilistic programs"):

* ``z ~ Normal(0, sd**c)`` elementwise, ``w = sd**(1 - c) * z`` (so ``w ~ Normal(0, sd)``);
* uncorrelated: ``r = w``; correlated: ``r = w @ M^T`` with
  ``M = diag(sd) Lcorr diag(1/sd)``, so ``cov(r[g]) = M diag(sd**2) M^T =
  diag(sd) Lcorr Lcorr^T diag(sd)``.

``c = 0`` is the non-centered form (``z`` standard normal, ``r = z @ (diag(sd) Lcorr)^T``),
``c = 1`` the centered one, sampled directly as ``r`` (one site, named ``r_<g>``).
Otherwise the sampled site is ``z_<g>`` and ``r_<g>`` is deterministic. A later
learned-centeredness step only has to supply the floats.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

__all__ = ["as_centeredness", "group_effects", "PARAMETERIZATIONS"]

PARAMETERIZATIONS = {"centered": 1.0, "noncentered": 0.0}


def as_centeredness(value: Any, num_terms: int, group: str = "group") -> tuple[float, ...]:
    """One centeredness per column: "centered" (1), "noncentered" (0), a float or a sequence.

    Raises ``ValueError`` for unknown names, values outside [0, 1] or a sequence of
    the wrong length, naming the grouping.
    """
    if isinstance(value, str):
        if value not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization for {group!r} must be one of {sorted(PARAMETERIZATIONS)} "
                             f"or a centeredness in [0, 1]; got {value!r}")
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


def group_effects(name: str, sd: jnp.ndarray, num_groups: int, centeredness: tuple[float, ...],
                  chol_corr: jnp.ndarray | None = None) -> jnp.ndarray:
    """Sample the effects ``r_<name>`` of shape (num_groups, K) in one site.

    Parameters
    ----------
    name : str
        The grouping; sites are ``r_<name>`` and, unless fully centered, ``z_<name>``.
    sd : array, shape (K,)
        Standard deviations of the effects.
    num_groups : int
        G (static).
    centeredness : tuple of float, length K
        Static values in [0, 1].
    chol_corr : array, shape (K, K), optional
        Cholesky factor of the correlation matrix (None: independent effects).

    Returns
    -------
    r : array, shape (num_groups, K)
    """
    k = sd.shape[-1]
    c_values = tuple(float(v) for v in centeredness)
    if all(v == 1.0 for v in c_values):
        if chol_corr is None:
            return numpyro.sample(f"r_{name}", dist.Normal(0.0, sd).expand((num_groups, k)).to_event(2))
        scale_tril = sd[:, None] * chol_corr
        return numpyro.sample(f"r_{name}", dist.MultivariateNormal(jnp.zeros(k), scale_tril=scale_tril)
                              .expand((num_groups,)).to_event(1))
    if all(v == 0.0 for v in c_values):
        z = numpyro.sample(f"z_{name}", dist.Normal(0.0, 1.0).expand((num_groups, k)).to_event(2))
        r = z * sd if chol_corr is None else z @ (sd[:, None] * chol_corr).T
        return numpyro.deterministic(f"r_{name}", r)
    else:
        c = jnp.asarray(c_values)
        z = numpyro.sample(f"z_{name}", dist.Normal(0.0, sd ** c).expand((num_groups, k)).to_event(2))
        w = z * sd ** (1.0 - c)
    if chol_corr is not None:  # M = diag(sd) Lcorr diag(1/sd)
        m = sd[:, None] * chol_corr / sd[None, :]
        w = w @ m.T
    return numpyro.deterministic(f"r_{name}", w)
