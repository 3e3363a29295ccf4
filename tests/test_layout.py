"""Group-major rows (``bhmjax._src.layout``): the same log density and gradient as the rows in any
order, gathers and group sums equal to indexing, and the closed-form derivatives of summed counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import initialize_model, potential_energy

import bhmjax as bj
from bhmjax._src import layout
from bhmjax._src.data import split_data
from bhmjax._src.families.counts import KnownNormalizer
from bhmjax._src.models import row_keys
from bhmjax._src.precision import x64_mode


def _frame(family: str, seed: int = 0, groups: int = 30) -> dict:
    """Unequal groups of 0/1 treatment rows (some groups one treatment only), a crossed grouping h."""
    rng = np.random.default_rng(seed)
    g = np.concatenate([np.arange(groups), rng.integers(0, groups, 8 * groups)])
    x = rng.integers(0, 2, g.size).astype(float)
    h = rng.integers(0, 4, g.size)
    eta = -0.4 + 0.7 * x + rng.normal(0, 0.6, groups)[g] + rng.normal(0, 0.3, 4)[h]
    y = rng.random(g.size) < 1 / (1 + np.exp(-eta)) if family == "bernoulli" else rng.poisson(np.exp(eta))
    return {"y": y.astype(np.int64), "x": x, "g": g, "h": h}


def test_take_and_sum_are_indexing_and_segment_sums():
    codes = np.repeat(np.arange(4), 3)
    index, plain = layout.GroupIndex(jnp.asarray(codes), 4, 3), layout.GroupIndex(jnp.asarray(codes), 4)
    values = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2)))
    rows = jnp.asarray(np.random.default_rng(1).normal(size=(12, 5)))
    np.testing.assert_array_equal(index.take(values), plain.take(values))
    np.testing.assert_allclose(index.sum(rows), plain.sum(rows), rtol=1e-12)


def test_rows_are_ordered_by_group_and_padded_with_weight_zero():
    data = {"N": 5, "G_0": 3, "codes_0": np.array([2, 0, 2, 1, 0]), "y": np.arange(5.0),
            "weights": np.array([1.0, 2.0, 3.0, 4.0, 5.0])}
    out = layout.group_major(data, ("y", "weights", "codes_0"), 0, max_padding=2.0)
    assert out["N"] == 6 and out[layout.per_group_key(0)] == 2
    np.testing.assert_array_equal(out["codes_0"], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(out["y"], [1, 4, 3, 3, 0, 2])  # group 1's second row copies its first
    np.testing.assert_array_equal(out["weights"], [2, 5, 4, 0, 1, 3])
    assert layout.group_major(data, ("y", "weights", "codes_0"), 0, max_padding=1.1) is None  # 6 > 1.1 x 5 rows


@pytest.mark.parametrize("family,form", [("bernoulli", "laplace"), ("bernoulli", "noncentered"),
                                         ("poisson", "laplace"), ("poisson", "centered")])
def test_the_log_density_and_its_gradient_do_not_change(family, form):
    """Same potential energy and gradient, float64, at a random point: the padded rows add nothing
    (a Poisson copy would add its rate if its weight were ignored), the crossed grouping still
    gathers by its codes."""
    model = bj.Model("y ~ 1 + x + (1 + x | g) + (1 | h)", _frame(family), family=family,
                     parameterization={"g": form, "h": "noncentered"})
    with x64_mode(True):
        data = model.reduced_data(model.model_data(x64=True), pays_only=False)
        grouped = layout.group_major(data, row_keys(model.spec.structure, data), 0, max_padding=3.0)
        assert grouped is not None and grouped["N"] > data["N"] and grouped.get(layout.per_group_key(1)) is None
        values = []
        for d in (data, grouped):
            arrays, static = split_data(d)
            fn = model.numpyro_model
            info = initialize_model(jax.random.PRNGKey(3), lambda **a: fn(**a, **static), model_kwargs=arrays)
            point = jax.tree.map(lambda v: v + 0.3 * jnp.asarray(np.random.default_rng(5).normal(size=v.shape)),
                                 info.param_info.z) if not values else values[0][2]
            energy = jax.value_and_grad(lambda p: potential_energy(lambda **a: fn(**a, **static), (), arrays, p))
            values.append((*energy(point), point))
    (e0, g0, _), (e1, g1, _) = values
    assert np.isfinite(e0)
    np.testing.assert_allclose(e1, e0, rtol=1e-10)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-8, atol=1e-10)


def test_a_laplace_fit_records_the_layout_and_fit_many_does_not_use_it():
    frame = _frame("bernoulli", groups=40)
    fit = bj.Model("y ~ 1 + x + (1 + x | g)", frame, family="bernoulli", parameterization="laplace").fit(
        chains=1, warmup=30, draws=30, seed=0, progress=False)
    plain = bj.Model("y ~ 1 + x + (1 + x | g)", frame, family="bernoulli").fit(
        chains=1, warmup=5, draws=5, seed=0, progress=False)
    assert "group_major" not in plain.settings["reduction"]  # only the laplace form's group sums pay for it
    nested = {**frame, "h": 2 * frame["g"] + frame["x"].astype(int)}  # 80 levels, one cell each
    led = bj.Model("y ~ 1 + x + (1 + x | g) + (1 | h)", nested, family="bernoulli",
                   parameterization={"g": "laplace", "h": "noncentered"}).fit(
        chains=1, warmup=5, draws=5, seed=0, progress=False)
    assert led.settings["reduction"]["group_major"]["grouping"] == "g"  # the laplace grouping, not h (more levels)
    reduction = fit.settings["reduction"]
    assert reduction["group_major"] == {"grouping": "g", "rows_per_group": 2, "padded_rows": 80}
    assert reduction["cells"] <= 80 and fit.draws["r_g"].shape[-2:] == (40, 2)
    many = bj.fit_many("y ~ 1 + x + (1 + x | g)", [frame, _frame("bernoulli", seed=1, groups=40)],
                       family="bernoulli", parameterization="laplace", chains=1, warmup=20, draws=20, seed=0, progress=False)
    assert all("group_major" not in f.settings["reduction"] for f in many)  # it pads rows its own way


@pytest.mark.parametrize("base", [dist.BinomialLogits(jnp.array([-1.5, 0.2, 2.0]), total_count=jnp.array([4., 9., 1.])),
                                  dist.Poisson(jnp.exp(jnp.array([-1.5, 0.2, 2.0])))])
def test_closed_form_derivatives_of_summed_counts_are_autodiffs(base):
    y = jnp.array([1.0, 5.0, 1.0])
    eta = jnp.array([-1.5, 0.2, 2.0])

    def log_lik(e):
        rebuilt = (dist.BinomialLogits(e, total_count=base.total_count) if isinstance(base, dist.BinomialLogits)
                   else dist.Poisson(jnp.exp(e)))
        return jnp.sum(KnownNormalizer(rebuilt, jnp.zeros(3)).log_prob(y))

    first, second = KnownNormalizer(base, jnp.zeros(3)).natural_derivatives(y)
    np.testing.assert_allclose(first, jax.grad(log_lik)(eta), rtol=1e-5)
    np.testing.assert_allclose(second, jnp.diag(jax.hessian(log_lik)(eta)), rtol=1e-5)
