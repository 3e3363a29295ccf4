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
import numpyro
import numpyro.distributions as dist
import pytest

import bhmjax as bj
from bhmjax._src import marginal
from bhmjax._src.precision import x64_mode
from tests._stats import sbc_rank, uniform_p


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


@pytest.mark.parametrize("q", [1, 2, 3])
def test_tril_normal_equals_multivariate_normal(q):
    """The centered correlated effects' density written out (smallmat.TrilNormal) is NumPyro's MVN."""
    from bhmjax._src.smallmat import TrilNormal

    rng = np.random.default_rng(q)
    *_, tril = random_case(rng, q, [1], True)
    loc, value = rng.normal(size=q), rng.normal(size=(7, q))
    ours = TrilNormal(jnp.asarray(loc), jnp.asarray(tril), 7).log_prob(jnp.asarray(value))
    ref = dist.MultivariateNormal(loc, scale_tril=tril).log_prob(value)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-5)
    draws = TrilNormal(jnp.asarray(loc), jnp.asarray(tril), 7).sample(jax.random.PRNGKey(0), (4000,))
    np.testing.assert_allclose(np.cov(np.asarray(draws).reshape(-1, q).T).reshape(q, q), tril @ tril.T,
                               atol=0.1 * np.abs(tril @ tril.T).max())


# ---------------------------------------------------------------- formula models


def unequal_slopes(seed=0, groups=24, crossed=False):
    """``y ~ 1 + x + (1 + x | g)`` with groups of 1 to 80 rows (plus a crossed ``h`` of 6 levels)."""
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([[1, 1, 2, 80, 60], rng.integers(1, 30, groups - 5)])
    g = np.repeat(np.arange(groups), sizes)
    x = rng.normal(size=g.size)
    r = rng.normal(size=(groups, 2)) @ np.array([[0.8, 0.0], [0.2, 0.4]]).T
    y = 1.0 + 0.5 * x + r[g, 0] + r[g, 1] * x + rng.normal(0, 0.9, g.size)
    frame = {"y": y, "x": x, "g": g}
    if crossed:
        frame["h"] = rng.integers(0, 6, g.size)
        frame["y"] = y + rng.normal(0, 0.7, 6)[frame["h"]]
    return frame


SMALL = dict(chains=2, warmup=150, draws=60, progress=False)


def test_marginalize_option_chooses_and_refuses():
    frame = unequal_slopes(crossed=True)
    model = bj.Model("y ~ 1 + x + (1 + x | g) + (1 | h)", frame)
    assert model._marginal("auto") == "g" and model._marginal(True) == "g" and model._marginal(False) is None
    text = model.describe(verbose=False)
    assert "integrated out (marginalize='auto'): r_g (24 groups x 2 columns)" in text
    assert "integrated out: nothing (marginalize=False)" in model.describe(verbose=False, marginalize=False)
    with pytest.raises(ValueError, match="marginalize must be 'auto', True or False, got 'g'"):
        model.fit(marginalize="g", **SMALL)
    counts = dict(frame, y=(frame["y"] > 1).astype(int))
    bern = bj.Model("y ~ 1 + (1 | g)", counts, family="bernoulli")
    with pytest.raises(ValueError, match="marginalize=True, but the bernoulli family's group effects are not "
                                         "Gaussian"):
        bern.fit(marginalize=True, **SMALL)
    assert bern._marginal("auto") is None
    assert "integrated out: nothing (the bernoulli family" in bern.describe(verbose=False)


@pytest.mark.parametrize("formula, options, found", [
    ("y ~ 1 + x + (1 | g)", dict(sigma="~ x"), "a predicted sigma"),
    ("y | weights(w) ~ 1 + x + (1 | g)", {}, "weights"),
    ("y | cens(c) ~ 1 + x + (1 | g)", {}, "cens"),
    ("y ~ 1 + x + offset(w) + (1 | g)", {}, "an offset"),
    ("y ~ 1 + s(x, k = 5) + (1 | g)", {}, "splines"),
])
def test_marginalize_refuses_what_the_integrated_likelihood_does_not_carry(formula, options, found):
    frame = unequal_slopes(crossed=False)
    frame = dict(frame, w=np.linspace(0.5, 1.5, len(frame["y"])), c=np.where(np.arange(len(frame["y"])) % 7, 0, 1))
    assert bj.Model("y ~ 1 + x + (1 | g)", frame)._marginal("auto") == "g"  # the same rows without the term
    model = bj.Model(formula, frame, **options)
    assert model._marginal("auto") is None
    assert f"integrated out: nothing (the model has {found}" in model.describe(verbose=False)
    with pytest.raises(ValueError, match=f"marginalize=True, but the model has {found}.* does not carry"):
        model._marginal(True)


@pytest.mark.parametrize("formula", ["y ~ 1 + x + (1 + x | g)", "y ~ 1 + x + (1 | g)", "y ~ 1 + (1 + x || g)",
                                     "y ~ 0 + x + (1 + x | g)"])
def test_rows_in_blocks_have_the_row_density(formula):
    """Each group's rows as k rotated pseudo rows (no scatter) give the marginal density of the rows."""
    from numpyro.infer.util import log_density

    from bhmjax._src.marginalize import marginal_structure
    from bhmjax._src.models import build_model

    model = bj.Model(formula, unequal_slopes())
    fn = build_model(marginal_structure(model.spec.structure, "g"))
    s = model.spec.structure
    params = {"Intercept_c": 0.3, "b": np.array([0.4]), "sd_g": np.array([0.9, 0.5])[:len(s.groups[0].columns)],
              "L_g": np.array([[1.0, 0.0], [0.3, np.sqrt(0.91)]]), "sigma": 0.8}
    params = {k: v for k, v in params.items() if (k != "Intercept_c" or s.intercept) and (k != "b" or s.slopes)
              and (k != "L_g" or s.groups[0].correlated)}
    with x64_mode(True):
        blocks, reduced = model.sampling_data(x64=True, marginalize=True)
        rows, _ = model.sampling_data(x64=True, marginalize=True, reduce=False)
        assert reduced and blocks["N"] == 24 * blocks["marginal:block"] < rows["N"]
        a, b = log_density(fn, (), blocks, params)[0], log_density(fn, (), rows, params)[0]
    assert abs(float(a) - float(b)) < 1e-10 * abs(float(b))


def test_marginalized_fit_is_a_complete_fit():
    """r_g drawn for every stored draw; settings, predictions (new groups too), LOO of rows and ArviZ."""
    frame = unequal_slopes(crossed=True)
    model = bj.Model("y ~ 1 + x + (1 + x | g) + (1 | h)", frame)
    fit = model.fit(seed=3, **SMALL)
    assert fit.settings["marginalized"]["group"] == "g" and fit.settings["marginalized"]["site"] == "r_g"
    assert "z_g" not in fit.draws and "z_h" in fit.draws
    assert fit.draws["r_g"].shape == (2, 60, 24, 2) and np.isfinite(fit.draws["r_g"]).all()
    assert "r_g[3, x]" in fit.summary().index  # ArviZ's labeller: ", "
    pred = fit.predict({"x": [0.0, 1.0], "g": [0, 99], "h": [1, 2]}, groups="new", seed=1)
    assert pred.draws.shape == (2, 60, 2) and np.isfinite(pred.draws).all()
    ll = fit.log_likelihood()
    assert ll.shape == (2, 60, len(frame["y"]))  # the rows, not the marginal blocks
    idata = fit.to_arviz()
    assert idata.log_likelihood["y"].shape == (2, 60, len(frame["y"]))
    assert idata.posterior["r_g"].shape == (2, 60, 24, 2)
    again = model.fit(seed=3, **SMALL)
    np.testing.assert_array_equal(again.draws["r_g"], fit.draws["r_g"])  # deterministic given the seed


def test_draw_keys_follow_the_draw_index_not_the_chunk():
    """Completing the last draws alone (first_draw=k, tiny chunks) gives the same r_g: extensions and
    the engine's per-chunk hook draw what one call would."""
    from bhmjax.marginal import complete_fit

    frame = unequal_slopes()
    fit = bj.Model("y ~ 1 + x + (1 + x | g)", frame).fit(seed=4, **SMALL)
    part = bj.Fit(draws={k: v[:, 45:] for k, v in fit.draws.items() if k != "r_g"},
                  stats={k: v[:, 45:] for k, v in fit.stats.items()}, timings={}, num_grad_evals={},
                  settings=dict(fit.settings), data=fit.data, model=fit.model, spec=fit.spec,
                  sampled_data=fit.sampled_data)
    complete_fit(part, fit.spec, first_draw=45, max_bytes=1)
    # equal up to float32 rounding (programs vectorized over 1 and over 120 draws round differently)
    np.testing.assert_allclose(part.draws["r_g"], fit.draws["r_g"][:, 45:], rtol=1e-5, atol=1e-6)
    longer = fit.extend(5)
    assert longer.draws["r_g"].shape == (2, 65, 24, 2) and np.isfinite(longer.draws["r_g"]).all()


# ---------------------------------------------------------------- statistics

HYPER = ["Intercept", "b[x]", "sd_g[Intercept]", "sd_g[x]", "cor_g[Intercept, x]", "sigma", "sd_h[Intercept]"]
GROUPS = ["r_g[0, Intercept]", "r_g[1, x]", "r_g[3, Intercept]", "r_g[3, x]", "r_g[4, x]", "r_h[2, Intercept]"]


@pytest.fixture(scope="module")
def marginal_and_sampled():
    frame = unequal_slopes(seed=5, crossed=True)
    model = bj.Model("y ~ 1 + x + (1 + x | g) + (1 | h)", frame)
    settings = dict(chains=4, warmup=1000, draws=1000, progress=False, target_accept=0.9)
    return model.fit(seed=1, **settings), model.fit(seed=2, marginalize=False, **settings)


@pytest.mark.slow
def test_marginalized_and_sampled_fits_agree(marginal_and_sampled):
    """Every hyperparameter and the effects of groups of 1, 1, 80 and 60 rows (and a crossed level):
    |mean_m - mean_s| / joint MCSE < 4, after both fits converged."""
    from ._stats import agreement_z

    marg, sampled = marginal_and_sampled
    for fit in (marg, sampled):
        table = fit.summary().loc[HYPER + GROUPS]
        assert table["r_hat"].max() < 1.02 and table["ess_bulk"].min() > 150, table
    names_m, x_m = marg.flat_draws()
    names_s, x_s = sampled.flat_draws()
    pick = HYPER + GROUPS
    z = agreement_z(x_m[..., [names_m.index(k) for k in pick]].astype(np.float64),
                    x_s[..., [names_s.index(k) for k in pick]].astype(np.float64))
    assert (z < 4).all(), dict(zip(pick, z.round(2)))
    sd_m = x_m[..., [names_m.index(k) for k in pick]].std(axis=(0, 1))
    sd_s = x_s[..., [names_s.index(k) for k in pick]].std(axis=(0, 1))
    np.testing.assert_allclose(sd_m, sd_s, rtol=0.12)


class NoLogDet(bj.MarginalNormalGroups):
    """The broken twin: the marginal density without its log-determinant term."""

    def log_prob(self, value):
        _, quad, perp = marginal.marginal_terms(value - self.loc, self.basis, self.tril, self.sigma)
        return -0.5 * (value.shape[-1] * jnp.log(2 * jnp.pi * self.sigma**2) + quad + perp)


def sbc_model(likelihood):
    """Hand-written varying intercepts and slopes with the effects integrated out by ``likelihood``."""
    def model(y, x, codes, coords, root):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        sd = numpyro.sample("sd", dist.HalfNormal(1.0).expand([2]).to_event(1))
        chol = numpyro.sample("L", dist.LKJCholesky(2, 2.0))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        numpyro.sample("y", likelihood(a + b * x, bj.GroupBasis(codes, coords, root), sd, sigma, chol), obs=y)

    return model


marginal_model, broken_model = sbc_model(bj.MarginalNormalGroups), sbc_model(NoLogDet)


def sbc_datasets(n, seed=6):
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, 9)
    codes = np.repeat(np.arange(8), sizes)
    data, truths = [], []
    for _ in range(n):
        a, b = rng.normal(size=2)
        sd, sigma = np.abs(rng.normal(size=2)), abs(rng.normal())
        rho = 2 * rng.beta(2.0, 2.0) - 1  # LKJ(2) for a 2 x 2 correlation
        tril = sd[:, None] * np.linalg.cholesky(np.array([[1.0, rho], [rho, 1.0]]))
        r = rng.normal(size=(8, 2)) @ tril.T
        x = rng.normal(size=codes.size)
        y = a + b * x + r[codes, 0] + r[codes, 1] * x + sigma * rng.normal(size=codes.size)
        basis = bj.group_basis(np.column_stack([np.ones_like(x), x]), codes, 8)
        data.append({"y": y, "x": x, **basis._asdict()})
        truths.append({"a": a, "b": b, "sd0": sd[0], "sd1": sd[1], "sigma": sigma, "r00": r[0, 0], "r71": r[7, 1]})
    return data, truths


SBC_DRAWS = 49  # ranks 0..49 among the first 49 of 50 thinned draws: 5 per bin


def sbc_ranks(fits, truths):
    out = {k: [] for k in truths[0]}
    for fit, truth in zip(fits, truths):
        r = bj.marginal_effects(fit, seed=1)
        draws = {"a": fit.draws["a"], "b": fit.draws["b"], "sd0": fit.draws["sd"][..., 0],
                 "sd1": fit.draws["sd"][..., 1], "sigma": fit.draws["sigma"], "r00": r[..., 0, 0], "r71": r[..., 7, 1]}
        for k, v in draws.items():
            out[k].append(sbc_rank(v, truth[k], SBC_DRAWS))
    return out


@pytest.mark.slow
def test_simulation_based_calibration_of_the_marginal_sampler():
    """SBC (Talts et al. 2018), 200 datasets from the prior: ranks of the true hyperparameters and
    of two groups' effects (1 and 8 rows) among the posterior draws are uniform; the twin without
    the log-determinant is rejected."""
    data, truths = sbc_datasets(200)
    opts = dict(chains=2, warmup=150, draws=100, batch_size=25, devices=None, seed=7)
    ranks = sbc_ranks(bj.fit_many(marginal_model, data, **opts), truths)
    p = {k: uniform_p(v, SBC_DRAWS) for k, v in ranks.items()}
    assert min(p.values()) > 1e-3, p
    broken = sbc_ranks(bj.fit_many(broken_model, data[:100], **opts), truths[:100])
    assert min(uniform_p(v, SBC_DRAWS) for v in broken.values()) < 1e-3


def test_automatic_parameterization_learns_only_the_sampled_groupings():
    """parameterization="auto" with a crossed grouping: the SVI pre-pass runs on the marginal model and
    learns h's centeredness; g is integrated out, so nothing is learned (or spent) for it."""
    frame = unequal_slopes(crossed=True)
    model = bj.Model("y ~ 1 + (1 | g) + (1 | h)", frame, parameterization="auto")
    fit = model.fit(seed=2, **SMALL)
    learned = {g.name: g.centeredness for g in model.spec.structure.groups}
    assert learned["g"] is None and learned["h"] is not None  # per column or per group ("per_group")
    h = np.asarray(fit.settings["parameterization"]["h"])
    assert "g" not in fit.settings["parameterization"] and 0 <= h.min() and h.max() <= 1
    assert fit.settings["marginalized"]["group"] == "g" and fit.timings["reparam"] > 0
