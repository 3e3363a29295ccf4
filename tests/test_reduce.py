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
        bj.Model("y ~ 1 + x + (1 | g)", few_rows).fit(reduce=True, marginalize=False)  # marginal: rows in blocks


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


def test_extending_a_reduced_fit_stays_on_the_reduced_data(frame, monkeypatch):
    import bhmjax as bj
    from bhmjax._src import engine

    model = bj.Model("y ~ 1 + x + (1 | g)", frame)
    fit = model.fit(chains=1, warmup=100, draws=50, progress=False)
    seen = []
    prepare = engine.prepare
    monkeypatch.setattr(engine, "prepare", lambda p, layout, arrays, **k: (seen.append(arrays["y"].shape[0]),
                                                                           prepare(p, layout, arrays, **k))[1])
    longer = fit.extend(30)
    assert seen == [fit.settings["reduction"]["pseudo_rows"]] and seen[0] < len(frame)
    assert longer.num_draws == 80 and longer.data["N"] == len(frame)
    assert longer.sampled_data["N"] == fit.sampled_data["N"] == seen[0]  # make_fit builds a new dict per fit


# ---------------------------------------------------------------- counts

COUNT_FAMILIES = {"bernoulli": "yb", "binomial": "yk | trials(n)", "poisson": "yp"}
COUNT_TERMS = ["1", "1 + x + c", "1 + (1 | g)", "1 + x + (1 + x | g)", "1 + (1 | g) + (1 | a)"]


@pytest.fixture(scope="module")
def counts():
    """Discrete covariates and groups: many rows per cell."""
    import pandas as pd

    rng = np.random.default_rng(5)
    n = 2000
    g, a, x = rng.integers(0, 12, n), rng.integers(0, 4, n), rng.integers(0, 3, n)
    c = rng.choice(["p", "q", "r"], n)
    eta = -0.5 + 0.4 * x + rng.normal(0, 0.7, 12)[g] + rng.normal(0, 0.3, 4)[a]
    trials = rng.integers(1, 6, n)
    p = 1 / (1 + np.exp(-eta))
    return pd.DataFrame({"g": g, "a": a, "x": x, "c": c, "n": trials, "yb": rng.binomial(1, p),
                         "yk": rng.binomial(trials, p), "yp": rng.poisson(np.exp(eta))})


def count_constant(family, rows, reduced):
    """log p(reduced data) - log p(rows): the log binomial coefficients / factorials that differ."""
    from scipy.special import gammaln

    def log_choose(n, k):
        return np.sum(gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1))

    y, big_y = np.asarray(rows["y"]), np.asarray(reduced["y"])
    if family == "bernoulli":
        return log_choose(reduced["trials"], big_y)
    if family == "binomial":
        return log_choose(reduced["trials"], big_y) - log_choose(rows["trials"], y)
    size = np.exp(reduced["reduction:offset"])
    return np.sum(big_y * np.log(size) - gammaln(big_y + 1)) + np.sum(gammaln(y + 1))


@pytest.mark.parametrize("terms", COUNT_TERMS)
@pytest.mark.parametrize("family", list(COUNT_FAMILIES))
def test_count_cells_have_the_row_log_density_up_to_a_constant_and_its_gradient(family, terms, counts):
    from numpyro.infer.util import initialize_model, potential_energy

    import bhmjax as bj

    model = bj.Model(f"{COUNT_FAMILIES[family]} ~ {terms}", counts, family=family)
    rows = model.model_data(x64=True)
    reduced = model.reduced_data(rows)
    assert reduced is not None and reduced["N"] <= 12 * 4 * 3 * 3 and reduced["N"] < rows["N"] / 10
    assert reduced["y"].sum() == rows["y"].sum()
    if family != "poisson":
        assert reduced["trials"].sum() == (rows["trials"].sum() if family == "binomial" else rows["N"])
    fn = model.numpyro_model
    shapes = initialize_model(jax.random.PRNGKey(0), fn, model_kwargs=rows)[0].z
    rng = np.random.default_rng(6)
    constant = count_constant(family, rows, reduced)
    for _ in range(2):  # two unconstrained points: the same constant, the same gradient
        z = {k: jnp.asarray(rng.normal(0, 0.7, np.shape(v))) for k, v in shapes.items()}
        u_rows, g_rows = jax.value_and_grad(lambda p: potential_energy(fn, (), rows, p))(z)
        u_red, g_red = jax.value_and_grad(lambda p: potential_energy(fn, (), reduced, p))(z)
        np.testing.assert_allclose(u_rows - u_red, constant, rtol=0, atol=1e-10 * abs(u_rows))
        for name in z:
            np.testing.assert_allclose(g_red[name], g_rows[name], rtol=1e-9, atol=1e-9, err_msg=name)


def test_count_reduction_keeps_each_cell_apart(counts):
    """Negative control: rows that differ in a covariate or a group level are not merged."""
    import bhmjax as bj

    model = bj.Model("yb ~ 1 + x + (1 | g)", counts, family="bernoulli")
    reduced = model.reduced_data(model.model_data(x64=True))
    cells = {(x, g) for x, g in zip(reduced["X"][:, 0], reduced["codes_0"])}
    assert len(cells) == reduced["N"] == len(counts.groupby(["x", "g"]))
    for x, g, y, n in zip(reduced["X"][:, 0], reduced["codes_0"], reduced["y"], reduced["trials"]):
        rows = counts[(counts.x == x) & (counts.g == model.spec.groups[0].encoding.labels[g])]
        assert (y, n) == (rows.yb.sum(), len(rows))


def test_count_reduction_only_where_it_pays(counts):
    import bhmjax as bj

    rng = np.random.default_rng(7)
    smooth = counts.assign(z=rng.normal(size=len(counts)))  # a continuous covariate: every row its own cell
    for family, lhs in COUNT_FAMILIES.items():
        model = bj.Model(f"{lhs} ~ 1 + z + (1 | g)", smooth, family=family)
        assert model.reduced_data() is None, family
    with pytest.raises(ValueError, match="no exact reduction that pays"):
        bj.Model("yb ~ 1 + z + (1 | g)", smooth, family="bernoulli").fit(reduce=True)
    model = bj.Model("yp ~ 1 + (1 | g)", counts, family="student_t")  # continuous: no exact reduction
    assert model.reduced_data() is None
    # the negative binomial's sum is not sufficient, so identical rows merge instead (tests/test_families.py)
    reduced = bj.Model("yp ~ 1 + (1 | g)", counts, family="negative_binomial").reduced_data()
    assert reduced["weights"].sum() == len(counts) and "trials" not in reduced


@pytest.mark.slow
def test_reduced_and_row_bernoulli_fits_agree():
    import pandas as pd

    import bhmjax as bj

    from ._stats import agreement_z, assert_converged

    rng = np.random.default_rng(8)
    n = 2000
    g, x = rng.integers(0, 20, n), rng.integers(0, 2, n)
    y = rng.binomial(1, 1 / (1 + np.exp(-(-0.3 + 0.8 * x + rng.normal(0, 0.8, 20)[g]))))
    model = bj.Model("y ~ 1 + x + (1 | g)", pd.DataFrame({"y": y, "x": x, "g": g}), family="bernoulli",
                     parameterization="centered")  # 100 rows a group: well identified
    settings = {"chains": 2, "warmup": 500, "draws": 1000, "progress": False}
    fast = model.fit(seed=1, **settings)
    slow = model.fit(seed=2, reduce=False, **settings)
    assert fast.settings["reduction"] == {"kind": "counts", "rows": n, "pseudo_rows": 40, "cells": 40}
    assert "reduction" not in slow.settings
    for fit in (fast, slow):  # with 2 chains R-hat itself is noisy (max of ~25 near 1.01 by chance)
        assert_converged(fit, rhat_max=1.02)
    for site in ("Intercept", "b", "sd_g", "r_g"):
        assert np.all(agreement_z(fast.draws[site], slow.draws[site]) < 4), site
    assert fast.data["N"] == n  # log-likelihood and predictions see the real rows
    assert fast.log_likelihood().shape == (2, 1000, n)
