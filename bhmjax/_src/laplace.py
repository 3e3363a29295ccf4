"""Group effects centred on their likelihood-informed conditional: the "laplace" form.

For a grouping with rows of any family, a group's effect ``r_g`` (K,) has prior
``Normal(0, Sigma)`` and, given everything sampled before it, the rows' log-likelihood
``sum_i l_i(eta_i + Z_i . r_g)``. One Newton step from ``r_g = 0`` gives a Gaussian
approximation of the conditional posterior of ``r_g``, with mean ``m_g`` and precision

    P_g = Sigma^-1 + sum_i w_i Z_i Z_i^T,   w_i = max(-l_i''(eta_i), 0),
    m_g = P_g^-1 sum_i l_i'(eta_i) Z_i   (steps near or over MAX_STEP shortened smoothly).

NUTS samples ``z_g`` and the effect is
``r_g = m_g + C_g^-T z_g`` (``C_g C_g^T = P_g``): a group whose rows say little keeps
``P_g ~ Sigma^-1`` (the non-centered form), a group whose rows say much is centred on
what they say, with their scale (a centering per group and per direction, found from
the rows at each evaluation rather than by a pre-pass). The map is a bijection for
every value of the other parameters, so the posterior is exact: the joint density
gains ``log |dr/dz| = -sum_k log C_g[k, k]`` and the prior density of ``r`` replaces
the standard normal of ``z``. The approximation only shapes the geometry: a poor one
costs efficiency, never correctness. For a gaussian likelihood one step is the exact
conditional, and ``z`` is independent of everything else.

Cost per gradient: one extra elementwise pass over the rows (first and second
derivatives of the log-likelihood, in closed form for summed counts) and one sum of
K + K(K+1)/2 columns per group (a reshape where the rows are group-major, ``layout.py``).
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from bhmjax._src.layout import GroupIndex
from bhmjax._src.smallmat import TrilNormal, cholesky, solve_lower, solve_upper_t

__all__ = ["laplace_effects", "MAX_STEP"]

MAX_STEP = 2.0  # Newton steps near or over this (link units) are shortened smoothly (a Poisson group far out)


def _prior_precision(sd, chol_corr):
    """``Sigma^-1`` as nested lists (K x K) of scalars, Sigma = diag(sd) L L^T diag(sd)."""
    k = sd.shape[-1]
    if chol_corr is None:
        return [[1.0 / sd[i] ** 2 if i == j else 0.0 for j in range(k)] for i in range(k)]
    low = [[chol_corr[i, j] for j in range(k)] for i in range(k)]
    inv = [solve_lower(low, [1.0 if i == j else 0.0 for i in range(k)]) for j in range(k)]  # columns of L^-1
    # (L^-1)[a][j] = inv[j][a]; Sigma^-1[a][b] = sum_c L^-1[c][a] L^-1[c][b] / (sd_a sd_b)
    return [[sum(inv[a][c] * inv[b][c] for c in range(k)) / (sd[a] * sd[b]) for b in range(k)] for a in range(k)]


def laplace_effects(name: str, sd: jnp.ndarray, index: GroupIndex, chol_corr: jnp.ndarray | None,
                    z_design: jnp.ndarray, eta: jnp.ndarray,
                    row_derivatives: Callable[[jnp.ndarray], tuple[jnp.ndarray, jnp.ndarray]]) -> jnp.ndarray:
    """Sample the deviations ``r_<name>`` (num_groups, K) through ``z_<name>`` in the laplace form.

    Parameters
    ----------
    name : str
        The grouping; the sampled site is ``z_<name>``, ``r_<name>`` is deterministic.
    sd : array, shape (K,)
    index : GroupIndex
        Each row's group, G (``layout.py``).
    chol_corr : array, shape (K, K), optional
        Cholesky factor of the correlation (None: independent columns).
    z_design : array, shape (N, K)
        Each row's group-term columns.
    eta : array, shape (N,)
        The linear predictor without this grouping's effects (what is sampled before it).
    row_derivatives : callable
        ``eta (N,) -> (d, dd)``, each (N,): the first and second derivatives of each row's
        log-likelihood (weights applied) in its predictor; rows are independent given ``eta``.

    Returns
    -------
    r : array, shape (num_groups, K)
    """
    k, num_groups = sd.shape[-1], index.num_groups
    cols = [z_design[:, i] for i in range(k)]
    prec = _prior_precision(sd, chol_corr)

    pairs = [(i, j) for i in range(k) for j in range(i + 1)]
    d, dd = row_derivatives(eta)
    w = jnp.maximum(-dd, 0.0)
    # one sum of K + K(K+1)/2 columns per group: the score and the curvature at r = 0
    sums = index.sum(jnp.stack([d * c for c in cols] + [w * cols[i] * cols[j] for i, j in pairs], -1))
    p = [[None] * k for _ in range(k)]
    for n, (i, j) in enumerate(pairs):
        p[i][j] = p[j][i] = prec[i][j] + sums[:, k + n]
    low = cholesky(p)
    step = solve_upper_t(low, solve_lower(low, [sums[:, i] for i in range(k)]))
    mean = [s / (1.0 + (s / MAX_STEP) ** 4) ** 0.25 for s in step]  # soft cap: a group far from the population

    z = numpyro.sample(f"z_{name}", dist.Normal(0.0, 1.0).expand((num_groups, k)).to_event(2))
    r = jnp.stack([m + s for m, s in zip(mean, solve_upper_t(low, [z[:, i] for i in range(k)]))], axis=-1)
    if chol_corr is None:
        prior = dist.Normal(0.0, sd).log_prob(r).sum()
    else:
        prior = TrilNormal(jnp.zeros(k), sd[:, None] * chol_corr, num_groups).log_prob(r).sum()
    log_det = -sum(jnp.sum(jnp.log(low[i][i])) for i in range(k))
    numpyro.factor(f"laplace_{name}", prior + log_det - dist.Normal(0.0, 1.0).log_prob(z).sum())
    return numpyro.deterministic(f"r_{name}", r)
