"""Sufficient-statistics likelihoods equal the row-level sums, values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from bhmjax._src import reduce


@pytest.fixture(autouse=True)
def x64():
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def row_loglik(pop, effects, sigma, y, x, z, codes):
    """Row-level Gaussian log likelihood: eta = [1, x] @ pop + sum_j z_j * r_j[codes_j]."""
    eta = pop[0] + x @ pop[1:]
    for j, (r, zj) in enumerate(zip(effects, z)):
        eta = eta + jnp.sum(r[codes[:, j]] * zj, axis=-1)
    return jnp.sum(norm.logpdf(y, eta, sigma))


def cell_loglik(pop, effects, sigma, cells, x_cols, z_cols):
    beta = [jnp.broadcast_to(pop, (len(cells.n), len(pop)))]
    for j, r in enumerate(effects):
        beta.append(r[cells.codes[:, j]])
    beta = jnp.concatenate(beta, axis=1)
    return reduce.gaussian_cell_loglik(beta, sigma, cells.n, cells.yy, cells.wy, cells.ww)


@pytest.mark.parametrize("structure", ["intercepts", "slopes", "crossed", "no_groups"])
def test_gaussian_cells_equal_rows_in_value_and_gradient(structure):
    rng = np.random.default_rng(0)
    n, p = 500, 2
    x = rng.normal(size=(n, p))
    groups = {"intercepts": [(12, 1)], "slopes": [(9, 2)], "crossed": [(7, 1), (5, 2)], "no_groups": []}[structure]
    codes = np.stack([rng.integers(0, g, n) for g, _ in groups], axis=1) if groups else np.zeros((n, 0), int)
    z = [np.concatenate([np.ones((n, 1)), x[:, :q - 1]], axis=1) for _, q in groups]
    y = rng.normal(size=n) * 2 + 1
    pop = jnp.asarray(rng.normal(size=p + 1))
    effects = [jnp.asarray(rng.normal(size=(g, q))) for g, q in groups]
    sigma = jnp.asarray(1.3)
    w = np.concatenate([np.ones((n, 1)), x] + z, axis=1)
    cells = reduce.gaussian_cells(y, w, codes)
    if groups:
        assert len(cells.n) <= np.prod([g for g, _ in groups])
    row = lambda *a: row_loglik(*a, y, x, z, codes)  # noqa: E731
    cell = lambda *a: cell_loglik(*a, cells, x, z)  # noqa: E731
    np.testing.assert_allclose(cell(pop, effects, sigma), row(pop, effects, sigma), rtol=1e-10)
    g_row = jax.grad(row, argnums=(0, 1, 2))(pop, effects, sigma)
    g_cell = jax.grad(cell, argnums=(0, 1, 2))(pop, effects, sigma)
    for a, b in zip(jax.tree.leaves(g_cell), jax.tree.leaves(g_row)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8)


def test_wrong_statistics_are_detected():
    """Negative control: dropping one row from the statistics changes the value."""
    rng = np.random.default_rng(1)
    y, codes = rng.normal(size=50), rng.integers(0, 5, (50, 1))
    w = np.ones((50, 2))
    full = reduce.gaussian_cells(y, w, codes)
    short = reduce.gaussian_cells(y[1:], w[1:], codes[1:])
    beta = jnp.ones((len(full.n), 2))
    a = reduce.gaussian_cell_loglik(beta, 1.0, *full[:4])
    b = reduce.gaussian_cell_loglik(beta[: len(short.n)], 1.0, *short[:4])
    assert abs(float(a - b)) > 1e-3


def test_counts_aggregate_to_the_same_log_likelihood_up_to_a_constant():
    rng = np.random.default_rng(2)
    n = 400
    x = rng.integers(0, 3, (n, 1)).astype(float)
    codes = rng.integers(0, 4, (n, 1))
    y = rng.integers(0, 2, n).astype(float)
    total, size, ux, ucodes = reduce.aggregate_counts(y, None, x, codes)
    assert total.sum() == y.sum() and size.sum() == n and len(total) <= 12

    def rows(theta):
        eta = theta[0] + theta[1] * x[:, 0] + theta[2:][codes[:, 0]]
        return jnp.sum(y * eta - jnp.log1p(jnp.exp(eta)))

    def cells(theta):
        eta = theta[0] + theta[1] * ux[:, 0] + theta[2:][ucodes[:, 0]]
        return jnp.sum(total * eta - size * jnp.log1p(jnp.exp(eta)))

    t1, t2 = jnp.asarray(rng.normal(size=6)), jnp.asarray(rng.normal(size=6))
    np.testing.assert_allclose(rows(t1) - rows(t2), cells(t1) - cells(t2), rtol=1e-10)
    np.testing.assert_allclose(jax.grad(rows)(t1), jax.grad(cells)(t1), rtol=1e-10)


@pytest.mark.parametrize("structure", ["intercepts", "slopes", "crossed"])
def test_pseudo_rows_give_the_row_likelihood(structure):
    rng = np.random.default_rng(3)
    n, p = 600, 1
    x = rng.normal(size=(n, p))
    groups = {"intercepts": [(15, 1)], "slopes": [(10, 2)], "crossed": [(6, 1), (4, 2)]}[structure]
    codes = np.stack([rng.integers(0, g, n) for g, _ in groups], axis=1)
    z = [np.concatenate([np.ones((n, 1)), x[:, :q - 1]], axis=1) for _, q in groups]
    w = np.concatenate([np.ones((n, 1)), x] + z, axis=1)  # duplicated columns: rank < k
    y = rng.normal(size=n) * 3 - 2
    pseudo = reduce.gaussian_pseudo_rows(y, w, codes)
    assert len(pseudo.y) < n / 5 and pseudo.num_dropped == n - len(pseudo.y)

    def full(beta, sigma):
        eta = jnp.sum(beta[codes_to_cell] * w, axis=-1)
        return jnp.sum(norm.logpdf(y, eta, sigma))

    def compressed(beta, sigma):
        eta = jnp.sum(beta[pseudo_cell] * pseudo.w, axis=-1)
        return (jnp.sum(norm.logpdf(pseudo.y, eta, sigma)) - pseudo.rss / (2 * sigma**2)
                - pseudo.num_dropped / 2 * jnp.log(2 * jnp.pi * sigma**2))

    # one coefficient vector per cell (unique code combination), random
    cells, codes_to_cell = np.unique(codes, axis=0, return_inverse=True)
    lookup = {tuple(c): i for i, c in enumerate(cells)}
    pseudo_cell = np.array([lookup[tuple(c)] for c in pseudo.codes])
    beta = jnp.asarray(rng.normal(size=(len(cells), w.shape[1])))
    sigma = jnp.asarray(0.7)
    np.testing.assert_allclose(compressed(beta, sigma), full(beta, sigma), rtol=1e-9)
    g1 = jax.grad(full, argnums=(0, 1))(beta, sigma)
    g2 = jax.grad(compressed, argnums=(0, 1))(beta, sigma)
    for a, b in zip(g2, g1):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7)


FORMULAS = ["y ~ 1 + x + (1 + x | g)", "y ~ 1 + (1 | g)", "y ~ 0 + x + (1 | g)",
            "y ~ 1 + x + (1 + x || g)", "y ~ 1 + x + (1 | g) + (1 | h)"]


@pytest.fixture(scope="module")
def frame():
    import pandas as pd

    rng = np.random.default_rng(4)
    n = 3000
    g, h, x = rng.integers(0, 30, n), rng.integers(0, 4, n), rng.normal(size=n)
    y = 1 + rng.normal(0, 1, 30)[g] + rng.normal(0, 0.5, 4)[h] + 0.5 * x + rng.normal(0, 1, n)
    return pd.DataFrame({"y": y, "x": x, "g": g, "h": h})


@pytest.mark.parametrize("formula", FORMULAS)
def test_reduced_formula_model_has_the_row_log_density_and_gradient(formula, frame):
    from numpyro import handlers
    from numpyro.infer.util import log_density

    import bhmjax as bj

    model = bj.Model(formula, frame)
    rows = model.model_data(x64=True)
    reduced = model.reduced_data(rows)
    assert reduced is not None and reduced["N"] < rows["N"] / 10
    fn = model.numpyro_model
    trace = handlers.trace(handlers.seed(fn, 3)).get_trace(**rows)
    params = {k: v["value"] for k, v in trace.items() if v["type"] == "sample" and not v["is_observed"]}

    def density(p, data):
        return log_density(fn, (), data, p)[0]

    np.testing.assert_allclose(density(params, reduced), density(params, rows), rtol=1e-11)
    g_rows = jax.grad(density)(params, rows)
    g_reduced = jax.grad(density)(params, reduced)
    for name in params:
        np.testing.assert_allclose(g_reduced[name], g_rows[name], rtol=1e-7, atol=1e-7, err_msg=name)


def test_reduction_is_chosen_only_where_exact_and_worth_it(frame):
    import bhmjax as bj

    assert bj.Model("y ~ 1 + x + (1 | g)", frame, family="student_t").reduced_data() is None
    few_rows = frame.iloc[:40]
    assert bj.Model("y ~ 1 + x + (1 | g)", few_rows).reduced_data() is None
    with pytest.raises(ValueError, match="no exact reduction that pays"):
        bj.Model("y ~ 1 + x + (1 | g)", few_rows).fit(reduce=True)


@pytest.mark.slow
def test_reduced_and_row_fits_agree(frame):
    import bhmjax as bj

    from ._stats import agreement_z

    model = bj.Model("y ~ 1 + x + (1 | g)", frame)
    settings = dict(chains=2, warmup=300, draws=500, progress=False, x64=True)
    fast = model.fit(seed=1, **settings)
    slow = model.fit(seed=2, reduce=False, **settings)
    assert fast.settings["reduction"]["pseudo_rows"] < 100 and "reduction" not in slow.settings
    for site in ("Intercept", "b", "sigma", "sd_g"):
        assert np.all(agreement_z(fast.draws[site], slow.draws[site]) < 4), site
    assert fast.data["N"] == len(frame)  # log-likelihood and predictions see the real rows
