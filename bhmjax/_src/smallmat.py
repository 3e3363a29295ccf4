"""q x q linear algebra written out over the (static) entries, elementwise over many groups.

On a CPU, LAPACK calls on stacks of tiny matrices, or a triangular solve of a 2 x 2
factor against thousands of right-hand sides, cost far more than the arithmetic: in
issue #21 a marginal likelihood took 70.7 s with batched ``cholesky``/``solve_triangular``
on (2000, 2, 2) arrays and 5.2 s written out; on this machine under load the gradient
of ``MultivariateNormal(0, scale_tril).expand((2000,))`` took 15 ms against 0.08 ms for
the same density written out (``benchmarks/marginal.py lapack``). Matrices are nested
lists ``a[i][j]`` of arrays (one entry per group), vectors lists of arrays: XLA fuses
the whole computation into a few elementwise loops.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions import constraints

__all__ = ["cholesky", "solve_lower", "solve_upper_t", "TrilNormal"]


def cholesky(a):
    """Lower Cholesky factor of a symmetric positive-definite ``a[i][j]`` (nested lists)."""
    q = len(a)
    low = [[None] * q for _ in range(q)]
    for j in range(q):
        low[j][j] = jnp.sqrt(a[j][j] - sum(low[j][k] ** 2 for k in range(j)))
        for i in range(j + 1, q):
            low[i][j] = (a[i][j] - sum(low[i][k] * low[j][k] for k in range(j))) / low[j][j]
    return low


def solve_lower(low, b):
    """``x`` with ``low @ x = b`` (forward substitution); ``low[i][k]`` read for ``k <= i`` only."""
    x = []
    for i in range(len(b)):
        x.append((b[i] - sum(low[i][k] * x[k] for k in range(i))) / low[i][i])
    return x


def solve_upper_t(low, b):
    """``x`` with ``low^T @ x = b`` (back substitution)."""
    q = len(b)
    x = [None] * q
    for i in reversed(range(q)):
        x[i] = (b[i] - sum(low[k][i] * x[k] for k in range(i + 1, q))) / low[i][i]
    return x


class TrilNormal(dist.Distribution):
    """``MultivariateNormal(loc, scale_tril=tril)`` for many rows sharing one q x q factor.

    Batch shape (G,), event shape (q,): the density of the textbook centered group
    effects ``theta_g ~ MVN(mu, diag(sd) L L^T diag(sd))``, with the forward
    substitution written out instead of a LAPACK triangular solve.

    Parameters
    ----------
    loc : (q,) or (G, q)
    tril : (q, q) lower triangular with a positive diagonal
    num_groups : int
        G.
    """

    arg_constraints = {"loc": constraints.real_vector, "tril": constraints.lower_cholesky}
    support = constraints.real_vector
    pytree_data_fields = ("loc", "tril")
    pytree_aux_fields = ("num_groups",)

    def __init__(self, loc, tril, num_groups: int, *, validate_args=None):
        self.loc, self.tril, self.num_groups = loc, tril, int(num_groups)
        super().__init__(batch_shape=(self.num_groups,), event_shape=jnp.shape(tril)[-1:],
                         validate_args=validate_args)

    def log_prob(self, value):
        q = self.event_shape[0]
        diff = value - self.loc
        low = [[self.tril[i, k] for k in range(q)] for i in range(q)]
        v = solve_lower(low, [diff[..., i] for i in range(q)])
        half_logdet = sum(jnp.log(self.tril[i, i]) for i in range(q))
        return -0.5 * sum(x**2 for x in v) - half_logdet - 0.5 * q * jnp.log(2 * jnp.pi)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape + self.event_shape
        eps = jax.random.normal(key, shape, dtype=jnp.result_type(self.tril))
        return self.loc + eps @ self.tril.T

    @property
    def mean(self):
        return jnp.broadcast_to(self.loc, self.batch_shape + self.event_shape)
