"""Gaussian group effects integrated out exactly: the marginal likelihood and exact draws.

For a grouping with ``G`` groups and ``q`` group-term columns, row ``i`` of group ``j``
has ``y_i = mean_i + z_i @ r_j + eps_i`` with ``eps_i ~ Normal(0, sigma)`` and
``r_j ~ MultivariateNormal(0, Sigma)``, ``Sigma = T T^T`` (``T = diag(sd) Lcorr``).
Integrated over ``r``, the rows of group ``j`` are jointly

    y_j ~ MultivariateNormal(mean_j, sigma^2 I + Z_j Sigma Z_j^T).

Write ``Z_j = Q_j R_j`` with ``Q_j`` (n_j, q) orthonormal columns and ``R_j`` (q, q)
(:func:`group_basis`, once on the host, from the eigendecomposition of ``Z_j^T Z_j``;
rows of ``R_j`` beyond its rank are zero). With the residual ``e = y - mean``, its
coordinates ``c_j = Q_j^T e_j`` and the part ``e_perp = e - Q_j c_j`` outside the
span of ``Z_j``, the determinant lemma and the Woodbury identity give

    log|sigma^2 I + Z_j Sigma Z_j^T| = n_j log sigma^2 + log|K_j|,
    e_j^T (sigma^2 I + Z_j Sigma Z_j^T)^{-1} e_j = |e_perp,j|^2 / sigma^2 + c~_j^T K_j^{-1} c~_j,

    K_j = I + W_j W_j^T,   W_j = R_j T / sigma,   c~_j = c_j / sigma.

``K_j`` is q x q with eigenvalues >= 1, so its Cholesky factor exists for any group
size and any ``sd`` (tiny sds make ``K = I``; huge ones keep ``I`` beside a large
``W W^T``), and no term is a difference of large numbers: ``|e_perp|^2`` is summed
from per-row differences rather than as ``|e|^2 - |c|^2``. Every q x q operation is
written out over the (static) entries, elementwise over groups: on a CPU, batched
LAPACK calls on (G, 2, 2) arrays cost more than the rest of the model (issue #21).

Given one draw of the other parameters, each group's effects are exactly Gaussian:
with ``r_j = T a_j``, ``a_j ~ Normal(P_j^{-1} W_j^T c~_j, P_j^{-1})``, ``P_j = I + W_j^T W_j``
(:func:`draw_group_effects`); so posterior draws of ``r`` add no Monte Carlo error.

References: Harville (1977), "Maximum likelihood approaches to variance component
estimation", JASA 72; Bates et al. (2015), "Fitting linear mixed-effects models using
lme4", J. Stat. Softw. 67 (the same profiled cross-products in lme4).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints

from bhmjax._src.smallmat import cholesky, solve_lower, solve_upper_t

__all__ = ["GroupBasis", "group_basis", "block_basis", "basis_data", "basis_of", "scale_tril", "marginal_terms", "marginal_loglik",
           "draw_group_effects", "MarginalNormalGroups"]


class GroupBasis(NamedTuple):
    """Each group's orthonormal basis of its group-term columns (data, built by :func:`group_basis`).

    Attributes
    ----------
    codes : (N,) int32
        Each row's group, in ``[0, G)``.
    coords : (N, q)
        Row ``i``'s coordinates ``Q_j[i]`` in its group's orthonormal basis.
    root : (G, q, q)
        ``R_j`` with ``Z_j^T Z_j = R_j^T R_j`` (rows beyond the rank zero); ``z_i = R_j^T coords_i``.
    """

    codes: jax.Array
    coords: jax.Array
    root: jax.Array


def group_basis(z: np.ndarray, codes: np.ndarray, num_groups: int, rtol: float = 1e-10,
                dtype=np.float32) -> GroupBasis:
    """Per-group ``Z_j = Q_j R_j`` from the eigendecomposition of ``Z_j^T Z_j``, in float64.

    Parameters
    ----------
    z : (N, q) group-term columns of every row
    codes : (N,) integer group of every row, in ``[0, num_groups)``
    num_groups : int
        G; groups without rows get ``R_j = 0`` (their effects keep the prior).
    rtol : float
        Eigenvalues below ``rtol`` times the group's largest count as zero (a group
        with one row and two columns has rank 1).
    dtype : numpy float type of the returned arrays.

    Returns
    -------
    GroupBasis
    """
    z = np.asarray(z, np.float64)
    z = z[:, None] if z.ndim == 1 else z
    codes = np.asarray(codes).astype(np.int64)
    n, q = z.shape
    if codes.shape != (n,):
        raise ValueError(f"codes has shape {codes.shape} but z has {n} rows; give one group code per row.")
    if n and (codes.min() < 0 or codes.max() >= num_groups):
        raise ValueError(f"group codes run from {codes.min()} to {codes.max()} but there are {num_groups} "
                         f"groups; codes must lie in [0, {num_groups}).")
    cross = np.empty((num_groups, q, q))
    for a in range(q):
        for b in range(a, q):
            cross[:, a, b] = cross[:, b, a] = np.bincount(codes, z[:, a] * z[:, b], minlength=num_groups)
    vals, vecs = np.linalg.eigh(cross)  # ascending; rows of R are sqrt(lambda) v^T
    keep = vals > rtol * np.maximum(vals[:, -1:], np.finfo(np.float64).tiny)
    root = np.where(keep[:, :, None], np.sqrt(np.where(keep, vals, 0.0))[:, :, None] * np.swapaxes(vecs, 1, 2), 0.0)
    inv_sqrt = np.where(keep, 1.0 / np.sqrt(np.where(keep, vals, 1.0)), 0.0)
    coords = np.einsum("nkq,nk->nq", vecs[codes], z) * inv_sqrt[codes]  # Lambda^-1/2 V^T z_i
    return GroupBasis(codes=codes.astype(np.int32), coords=coords.astype(dtype), root=root.astype(dtype))


def block_basis(z: np.ndarray, num_groups: int, block: int) -> GroupBasis:
    """The basis of rows laid out in blocks (``reduce.gaussian_blocks``): group ``j`` owns rows
    ``j k .. j k + k - 1`` whose first ``q`` carry ``R_j`` (upper triangular) and the rest zeros,
    so row ``j k + a`` has coordinates ``e_a`` (a < q) or 0."""
    z = np.asarray(z)
    q = z.shape[1]
    root = z.reshape(num_groups, block, q)[:, :q, :]
    coords = np.zeros((num_groups, block, q), z.dtype)
    coords[:, np.arange(q), np.arange(q)] = 1.0
    codes = np.repeat(np.arange(num_groups, dtype=np.int32), block)
    return GroupBasis(codes=codes, coords=coords.reshape(-1, q), root=np.ascontiguousarray(root))


def basis_data(basis: GroupBasis) -> dict:
    """The basis as model data: ``marginal:codes``, ``marginal:coords``, ``marginal:root``."""
    return {f"marginal:{k}": v for k, v in basis._asdict().items()}


def basis_of(data) -> GroupBasis:
    """The :class:`GroupBasis` in model data made by :func:`basis_data`."""
    return GroupBasis(*(data[f"marginal:{k}"] for k in GroupBasis._fields))


# ---------------------------------------------------------------- q x q algebra, written out (smallmat.py)

def _weights(root, tril, sigma):
    """``W = R T / sigma`` as nested lists of (G,) arrays."""
    q = root.shape[-1]
    return [[sum(root[:, a, k] * (tril[k, b] / sigma) for k in range(b, q)) for b in range(q)]
            for a in range(q)]


def scale_tril(sd: jax.Array, chol_corr: jax.Array | None = None) -> jax.Array:
    """``T = diag(sd) Lcorr`` (``diag(sd)`` for independent effects), shape (q, q)."""
    return jnp.diag(sd) if chol_corr is None else sd[:, None] * chol_corr


def _project(residual, basis: GroupBasis, num_groups: int, block: int | None = None):
    """Coordinates ``c`` (G, q) of the residual in each group's basis and ``sum |e_perp|^2``.

    Rows in blocks (:func:`block_basis`): the first ``q`` rows of each block are the
    coordinates, the others lie outside every span. Otherwise one step of iterative
    refinement: with large group effects ``|e|`` is far above ``|e_perp|`` and the rounding
    error ``delta`` of a long float32 sum ``c`` would add ``|delta|^2`` to ``|e_perp|^2``;
    projecting the first ``e_perp`` again recovers ``-delta``.
    """
    if block is not None:
        q = basis.root.shape[-1]
        blocks = residual.reshape(num_groups, block)
        return blocks[:, :q], jnp.sum(blocks[:, q:] ** 2)

    def coordinates(v):
        return jax.ops.segment_sum(basis.coords * v[:, None], basis.codes, num_segments=num_groups)

    def outside(v, c):
        return v - jnp.sum(basis.coords * c[basis.codes], axis=-1)

    c = coordinates(residual)
    perp = outside(residual, c)
    delta = coordinates(perp)
    return c + delta, jnp.sum(outside(perp, delta) ** 2)


def marginal_terms(residual: jax.Array, basis: GroupBasis, tril: jax.Array, sigma: jax.Array,
                   block: int | None = None):
    """The parts of :func:`marginal_loglik`: ``sum_j log|K_j|``, ``sum_j c~_j^T K_j^{-1} c~_j``
    and ``|e_perp|^2 / sigma^2``, each of shape ()."""
    num_groups, q = basis.root.shape[0], basis.root.shape[-1]
    c, ee_perp = _project(residual, basis, num_groups, block)
    w = _weights(basis.root, tril, sigma)
    k = [[float(a == b) + sum(w[a][m] * w[b][m] for m in range(q)) for b in range(q)] for a in range(q)]
    low = cholesky(k)
    v = solve_lower(low, [c[:, a] / sigma for a in range(q)])
    logdet = 2.0 * sum(jnp.sum(jnp.log(low[a][a])) for a in range(q))
    quad = sum(jnp.sum(x**2) for x in v)
    return logdet, quad, ee_perp / sigma**2


def marginal_loglik(residual: jax.Array, basis: GroupBasis, tril: jax.Array, sigma: jax.Array,
                    block: int | None = None) -> jax.Array:
    """``log N(residual | 0, sigma^2 I + Z Sigma Z^T)`` over every row, group effects integrated out.

    Parameters
    ----------
    residual : (N,) ``y - mean`` with the mean left out of the integrated effects
    basis : GroupBasis of the rows
    tril : (q, q) ``T``, the lower-triangular scale of the effects (:func:`scale_tril`)
    sigma : () residual sd
    block : int, optional
        Rows laid out in blocks of ``block`` per group (:func:`block_basis`).

    Returns
    -------
    () the log density.
    """
    logdet, quad, perp = marginal_terms(residual, basis, tril, sigma, block)
    n = residual.shape[0]
    return -0.5 * (n * jnp.log(2.0 * jnp.pi * sigma**2) + logdet + perp + quad)


def draw_group_effects(key: jax.Array, residual: jax.Array, basis: GroupBasis, tril: jax.Array,
                       sigma: jax.Array, block: int | None = None) -> jax.Array:
    """One exact draw of every group's effects given the rest, shape (G, q).

    ``r_j | y ~ Normal(Sigma Z_j^T V_j^{-1} e_j, (Sigma^{-1} + Z_j^T Z_j / sigma^2)^{-1})``,
    computed as ``r_j = T a_j`` with ``a_j = L^{-T} (L^{-1} W_j^T c~_j + eps_j)``,
    ``L L^T = I + W_j^T W_j``, ``eps_j ~ Normal(0, I)``.
    """
    num_groups, q = basis.root.shape[0], basis.root.shape[-1]
    c, _ = _project(residual, basis, num_groups, block)
    w = _weights(basis.root, tril, sigma)
    p = [[float(a == b) + sum(w[m][a] * w[m][b] for m in range(q)) for b in range(q)] for a in range(q)]
    low = cholesky(p)
    wc = [sum(w[m][a] * c[:, m] / sigma for m in range(q)) for a in range(q)]
    eps = jax.random.normal(key, (q, num_groups), dtype=residual.dtype)
    y = solve_lower(low, wc)
    a = jnp.stack(solve_upper_t(low, [y[i] + eps[i] for i in range(q)]), axis=-1)
    return a @ tril.T


# ---------------------------------------------------------------- the distribution


class MarginalNormalGroups(dist.Distribution):
    """Rows ``y ~ Normal(loc + z_i r_g[i], sigma)`` with ``r_g ~ MVN(0, T T^T)`` integrated out.

    A NumPyro distribution over the whole response vector (event shape (N,)): use it
    as the likelihood of a hand-written Gaussian model whose group effects need not
    be sampled. Its log density is :func:`marginal_loglik` (O(N q + G q^3), no
    batched LAPACK); :meth:`group_effects` draws the integrated effects exactly.

    Parameters
    ----------
    loc : (N,) the mean of each row without the integrated effects
    basis : GroupBasis
        From :func:`bhmjax.group_basis` on the group columns and codes (data: build it
        once, before sampling, and pass its arrays to the model).
    sd : (q,) sd of the effects
    sigma : () residual sd
    chol_corr : (q, q), optional
        Cholesky factor of the effects' correlation (None: independent effects).
    block : int, optional
        The rows are laid out in blocks of ``block`` per group (``bhmjax._src.reduce.gaussian_blocks``
        and :func:`block_basis`): no scatter or gather.

    Examples
    --------
    >>> import numpy as np, numpyro, numpyro.distributions as dist, bhmjax as bj
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(30), 6); x = rng.normal(size=g.size)
    >>> y = 1.0 + rng.normal(0, 0.8, 30)[g] + 0.5 * x + rng.normal(0, 1, g.size)
    >>> basis = bj.group_basis(np.ones((g.size, 1)), g, num_groups=30)
    >>> def model(y, x, codes, coords, root):
    ...     a = numpyro.sample("a", dist.Normal(0, 5))
    ...     b = numpyro.sample("b", dist.Normal(0, 5))
    ...     sd = numpyro.sample("sd", dist.HalfNormal(2).expand([1]).to_event(1))
    ...     sigma = numpyro.sample("sigma", dist.HalfNormal(2))
    ...     numpyro.sample("y", bj.MarginalNormalGroups(a + b * x, bj.GroupBasis(codes, coords, root),
    ...                                                 sd, sigma), obs=y)
    >>> data = {"y": y, "x": x, **basis._asdict()}
    >>> fit = bj.sample(model, data, chains=2, warmup=300, draws=300, progress=False)
    >>> r = bj.marginal_effects(fit, "y", seed=1)  # exact draws of the 30 intercepts
    >>> r.shape
    (2, 300, 30, 1)
    """

    arg_constraints = {"loc": constraints.real_vector, "sigma": constraints.positive}
    support = constraints.real_vector
    pytree_data_fields = ("loc", "basis", "tril", "sigma")
    pytree_aux_fields = ("block",)

    def __init__(self, loc, basis: GroupBasis, sd, sigma, chol_corr=None, *, block: int | None = None,
                 validate_args=None):
        self.loc, self.basis, self.sigma, self.block = loc, GroupBasis(*basis), sigma, block
        self.tril = scale_tril(jnp.asarray(sd), chol_corr)
        super().__init__(batch_shape=(), event_shape=jnp.shape(loc)[-1:], validate_args=validate_args)

    @property
    def num_groups(self) -> int:
        return self.basis.root.shape[0]

    def log_prob(self, value):
        return marginal_loglik(value - self.loc, self.basis, self.tril, self.sigma, self.block)

    def group_effects(self, key, value) -> jax.Array:
        """One exact draw of the group effects (G, q) given the observed ``value``."""
        return draw_group_effects(key, value - self.loc, self.basis, self.tril, self.sigma, self.block)

    def sample(self, key, sample_shape=()):
        key_r, key_e = jax.random.split(key)
        q = self.basis.root.shape[-1]
        shape = tuple(sample_shape) + (self.num_groups, q)
        r = jax.random.normal(key_r, shape, dtype=self.loc.dtype) @ self.tril.T
        z = jnp.einsum("nab,na->nb", self.basis.root[self.basis.codes], self.basis.coords)  # z_i = R^T coords_i
        effect = jnp.sum(r[..., self.basis.codes, :] * z, axis=-1)
        noise = self.sigma * jax.random.normal(key_e, tuple(sample_shape) + self.event_shape, self.loc.dtype)
        return self.loc + effect + noise

