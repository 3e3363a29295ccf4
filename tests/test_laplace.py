"""The laplace form of group effects (``bhmjax._src.laplace``): an exact change of variables, the
same posterior as the non-centered form, stored and loaded, and refused where it does not apply."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density

import bhmjax as bj
from tests._stats import agreement_z

FORMULA = "y ~ 1 + x + (1 + x | g)"


def counts(family: str, groups: int = 5, seed: int = 0) -> dict:
    """Unequal groups (1 to 12 rows), correlated intercepts and slopes; bernoulli or poisson rows."""
    rng = np.random.default_rng(seed)
    g = np.concatenate([np.arange(groups), rng.integers(0, groups, 6 * groups)])
    x = rng.normal(size=g.size)
    r = rng.normal(0, [0.8, 0.4], (groups, 2))
    eta = -0.3 + 0.6 * x + r[g, 0] + r[g, 1] * x
    y = rng.random(g.size) < 1 / (1 + np.exp(-eta)) if family == "bernoulli" else rng.poisson(np.exp(eta))
    return {"y": y.astype(np.int64), "x": x, "g": g}


def _trace(model, data, params):
    return handlers.trace(handlers.substitute(model, params)).get_trace(**data)


@pytest.mark.parametrize("family", ["bernoulli", "poisson"])
def test_the_joint_density_is_the_noncentered_one_times_the_jacobian(family):
    """log p_laplace(z) - log|dr/dz| = log p(r): the density of the same effects r under the
    non-centered form, less its own linear map's log-determinant (G * sum log(sd_k L_kk))."""
    data = counts(family)
    laplace, plain = (bj.Model(FORMULA, data, family=family, parameterization=p) for p in ("laplace", "noncentered"))
    args = laplace.model_data()
    rng = np.random.default_rng(1)
    corr = np.array([[1.0, 0.0], [-0.6, 0.8]], np.float32)
    hyper = {"Intercept_c": jnp.float32(-0.2), "b": jnp.array([0.7], jnp.float32),
             "sd_g": jnp.array([0.9, 0.5], jnp.float32), "L_g": jnp.asarray(corr)}
    z = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)

    def effects(z):
        return _trace(laplace.numpyro_model, args, {**hyper, "z_g": z})["r_g"]["value"]

    r = effects(z)
    jac = jax.jacobian(lambda v: effects(v.reshape(5, 2)).reshape(-1))(z.reshape(-1))
    log_det = np.linalg.slogdet(np.asarray(jac, np.float64))[1]
    scale_tril = np.asarray(hyper["sd_g"])[:, None] * corr
    z_plain = np.linalg.solve(scale_tril, np.asarray(r, np.float64).T).T
    lp_laplace = float(log_density(laplace.numpyro_model, (), args, {**hyper, "z_g": z})[0])
    lp_plain = float(log_density(plain.numpyro_model, (), args, {**hyper, "z_g": jnp.asarray(z_plain, jnp.float32)})[0])
    lp_plain_in_r = lp_plain - 5 * np.sum(np.log(np.diag(scale_tril)))
    assert abs(log_det) > 1.0  # the map is not volume-preserving: the test sees a missing term
    np.testing.assert_allclose(lp_laplace - log_det, lp_plain_in_r, rtol=1e-4, atol=1e-3)


def test_the_effects_follow_the_rows_where_they_are_informative():
    """A group of 400 rows is centred on what they say, at their scale; a group of one row keeps the prior's."""
    g = np.concatenate([np.zeros(400, int), [1]])
    y = np.concatenate([np.ones(280, int), np.zeros(121, int)])  # group 0: 280 of 400; group 1: one 0
    model = bj.Model("y ~ 1 + (1 | g)", {"y": y, "g": g}, family="bernoulli", parameterization="laplace")
    args = model.model_data()
    hyper = {"Intercept_c": jnp.float32(0.1), "sd_g": jnp.array([1.0], jnp.float32)}

    def effects(z):
        return _trace(model.numpyro_model, args, {**hyper, "z_g": z})["r_g"]["value"][:, 0]

    p = 1 / (1 + np.exp(-0.1))
    precision = 1 + np.array([400, 1]) * p * (1 - p)  # prior + rows' curvature at r = 0
    step = np.array([280 - 400 * p, -p]) / precision  # one Newton step from 0
    np.testing.assert_allclose(effects(jnp.zeros((2, 1))), step / (1 + (step / 2) ** 4) ** 0.25, rtol=1e-4)
    slope = jax.jacobian(lambda z: effects(z.reshape(2, 1)))(jnp.zeros(2))
    np.testing.assert_allclose(slope, np.diag(1 / np.sqrt(precision)), rtol=1e-4, atol=1e-7)  # groups do not mix


def test_one_newton_step_under_a_correlated_prior():
    """r at z = 0 and dr/dz per group against numpy: P = Sigma^-1 + sum w z z^T, m = P^-1 sum d z."""
    data = counts("bernoulli", groups=3, seed=4)
    model = bj.Model(FORMULA, data, family="bernoulli", parameterization="laplace")
    args = model.model_data()
    sd, corr = np.array([0.7, 0.4]), np.array([[1.0, 0.0], [0.5, np.sqrt(0.75)]])
    hyper = {"Intercept_c": jnp.float32(-0.2), "b": jnp.array([0.5], jnp.float32),
             "sd_g": jnp.asarray(sd, jnp.float32), "L_g": jnp.asarray(corr, jnp.float32)}

    def trace(z):
        return _trace(model.numpyro_model, args, {**hyper, "z_g": z})

    t = trace(jnp.zeros((3, 2)))
    jac = np.asarray(jax.jacobian(lambda v: trace(v.reshape(3, 2))["r_g"]["value"].reshape(-1))(jnp.zeros(6)))
    eta = float(t["Intercept"]["value"]) + 0.5 * data["x"]
    p = 1 / (1 + np.exp(-eta))
    z_rows = np.stack([np.ones_like(data["x"]), data["x"]], -1)
    cov = np.diag(sd) @ corr @ corr.T @ np.diag(sd)
    for j in range(3):
        rows = data["g"] == j
        prec = np.linalg.inv(cov) + (z_rows[rows] * (p * (1 - p))[rows, None]).T @ z_rows[rows]
        step = np.linalg.solve(prec, z_rows[rows].T @ (data["y"][rows] - p[rows]))
        np.testing.assert_allclose(t["r_g"]["value"][j], step / (1 + (step / 2) ** 4) ** 0.25, rtol=1e-4)
        chol = np.linalg.cholesky(prec)
        np.testing.assert_allclose(jac[2 * j:2 * j + 2, 2 * j:2 * j + 2], np.linalg.inv(chol.T), rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def bernoulli_fits():
    data = counts("bernoulli", groups=20, seed=3)
    settings = dict(chains=4, warmup=500, draws=1000, progress=False)
    return {p: bj.Model(FORMULA, data, family="bernoulli", parameterization=p).fit(seed=i, **settings)
            for i, p in enumerate(["laplace", "noncentered"])}


HYPER = ["Intercept", "b", "sd_g", "cor_g"]


def _hyper(fit) -> np.ndarray:
    parts = [np.asarray(fit.draws[k], np.float64).reshape(*fit.draws[k].shape[:2], -1) for k in HYPER]
    return np.concatenate(parts, axis=-1)[..., [0, 1, 2, 3, 5]]  # cor_g: the off-diagonal once


@pytest.mark.slow
def test_laplace_and_noncentered_fits_agree(bernoulli_fits):
    lap, plain = (_hyper(bernoulli_fits[p]) for p in ("laplace", "noncentered"))
    assert np.max(bj.rhat(lap)) < 1.01 and np.min(bj.ess(lap, method="bulk")) > 400
    assert np.max(bj.rhat(plain)) < 1.02
    z = agreement_z(lap, plain)
    assert (z < 4).all(), z.round(2)
    effects = [np.asarray(bernoulli_fits[p].draws["r_g"], np.float64).reshape(4, 1000, -1) for p in ("laplace",
                                                                                                   "noncentered")]
    assert (agreement_z(*effects) < 4.5).all()  # 40 effects: the largest of 40 |z| stays below 4.5


@pytest.mark.slow
def test_a_laplace_fit_is_stored_and_loaded(bernoulli_fits, tmp_path):
    from bhmjax._src.describe import describe

    fit = bernoulli_fits["laplace"]
    assert fit.settings["parameterization"] == {"g": "laplace"}
    assert "laplace" in describe(fit.spec, 1)
    loaded = bj.load(fit.save(tmp_path / "fit.bhm"))
    assert loaded.spec.structure == fit.spec.structure
    new = {"x": np.array([0.0, 1.0]), "g": np.array([0, 99])}
    for groups in ("existing", "new"):
        rows = {k: v[:1] for k, v in new.items()} if groups == "existing" else new
        a, b = (f.predict(rows, groups=groups, seed=0, allow_new_levels=True).draws for f in (fit, loaded))
        np.testing.assert_array_equal(a, b)


def test_laplace_is_refused_where_it_does_not_apply():
    data = counts("poisson")
    with pytest.raises(ValueError, match="one linear predictor per row"):
        bj.Model("y ~ 1 + (1 | g)", {**data, "y": np.minimum(data["y"], 2)}, family="cumulative",
                 parameterization="laplace")
    with pytest.raises(ValueError, match="'g__phi'.*mean's group terms only"):
        bj.Model("y ~ 1 + (1 | g)", data, family="negative_binomial", phi="~ 1 + (1 | g)",
                 parameterization={"g": "laplace", "g__phi": "laplace"})
    # given everywhere, the auxiliary parameter's terms stay non-centered
    model = bj.Model("y ~ 1 + (1 | g)", data, family="negative_binomial", phi="~ 1 + (1 | g)",
                     parameterization="laplace")
    assert model.centeredness == {"g": "laplace", "g__phi": (0.0,)}


def test_a_mean_grouping_named_with_double_underscores_keeps_the_form():
    data = counts("poisson")
    model = bj.Model("y ~ 1 + (1 | store__id)", {**data, "store__id": data["g"]}, family="poisson",
                     parameterization={"store__id": "laplace"})
    assert model.centeredness == {"store__id": "laplace"}
