"""Plots render headless with the expected artists."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

import bhmjax as bj  # noqa: E402
from bhmjax import plots  # noqa: E402
from bhmjax.fit import Fit  # noqa: E402

from ._models import eight_schools_centered as centered  # noqa: E402


@pytest.fixture(scope="module")
def schools(eight_schools):
    return eight_schools


@pytest.fixture(scope="module")
def funnel_fit(schools):
    """Centered eight schools, short warmup: it diverges in the funnel."""
    fit = bj.sample(centered, schools, chains=4, warmup=20, draws=100, seed=1, progress=False,
                    coords={"school": [f"s{i}" for i in range(8)]}, dims={"theta": ["school"]})
    assert fit.stats["diverging"].any(), "the fixture must diverge for the funnel test to mean anything"
    return fit


def fake_fit(k: int = 3, chains: int = 4, n: int = 200, seed: int = 0, div_share: float = 0.05) -> Fit:
    rng = np.random.default_rng(seed)
    stats = {"diverging": rng.random((chains, n)) < div_share, "energy": rng.normal(size=(chains, n)),
             "step_size": np.full((chains, n), 0.5), "tree_depth": np.full((chains, n), 3),
             "num_steps": np.full((chains, n), 7), "accept_prob": np.full((chains, n), 0.8),
             "potential_energy": rng.normal(size=(chains, n))}
    draws = {"mu": rng.normal(size=(chains, n)), "tau": np.exp(rng.normal(size=(chains, n))),
             "r": rng.normal(size=(chains, n, k)) + np.arange(k)}
    return Fit(draws=draws, stats=stats, timings={}, num_grad_evals={}, settings={"max_tree_depth": 10},
               coords={"g": [f"g{i}" for i in range(k)]}, dims={"r": ("g",)})


def lines(ax):
    return [ln for ln in ax.get_lines() if len(ln.get_xdata())]


def by_gid(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


def note(fig):
    return fig._suptitle.get_text() if fig._suptitle is not None else ""


# ----------------------------------------------------------------------- selection


def test_select_by_site_scalar_name_and_pattern():
    fit = fake_fit()
    assert plots.select(fit, "r")[0] == ["r[g0]", "r[g1]", "r[g2]"]
    assert plots.select(fit, ["tau", "r[g1]"])[0] == ["tau", "r[g1]"]
    names, x = plots.select(fit, pattern=r"^r\[g[12]\]$")
    assert names == ["r[g1]", "r[g2]"] and x.shape == (4, 200, 2) and x.dtype == np.float64
    with pytest.raises(KeyError, match="no site or parameter named 'nope'"):
        plots.select(fit, "nope")
    with pytest.raises(ValueError, match="matches no parameter"):
        plots.select(fit, pattern="^zzz")


# ----------------------------------------------------------------------- trace and rank


def test_trace_has_one_line_per_chain_per_panel_and_ticks_divergences(tmp_path):
    fit = fake_fit()
    fig = fit.plot_trace(["mu", "r"], path=tmp_path / "trace.png")
    axes = np.array(fig.axes).reshape(-1, 2)
    assert axes.shape == (4, 2)
    for dens, trace in axes:
        assert len(lines(dens)) == 4 and len(lines(trace)) == 4
        ticks = by_gid(trace, "divergent")[0]
        np.testing.assert_array_equal(ticks.get_offsets()[:, 0], np.flatnonzero(fit.stats["diverging"].any(0)))
    assert (tmp_path / "trace.png").read_bytes()[:4] == b"\x89PNG"


def test_trace_caps_panels_and_says_what_was_left_out():
    fig = fake_fit(k=200).plot_trace(max_panels=12)
    assert len(fig.axes) == 24
    assert "showing 12 of 202 parameters" in note(fig)


def test_rank_plot_counts_every_draw_once_per_chain():
    fig = fake_fit(chains=3).plot_rank("r", bins=10)
    for ax in fig.axes[:3]:
        steps = [ln for ln in lines(ax) if ln.get_label().startswith("chain")]
        assert len(steps) == 3
        assert all(ln.get_ydata()[:-1].sum() == 200 for ln in steps)
        assert len(by_gid(ax, "uniform")) == 1


# ----------------------------------------------------------------------- forest


def test_forest_small_labels_every_row():
    fig = fake_fit().plot_forest(["mu", "r"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mu", "r[g0]", "r[g1]", "r[g2]"]
    assert len(by_gid(ax, "hdi")[0].get_segments()) == 4
    assert note(fig) == ""


def test_forest_of_500_groups_draws_all_sorted_with_thinned_labels():
    fit = fake_fit(k=500, n=100)
    fig = fit.plot_forest("r", max_rows=50)
    ax = fig.axes[0]
    hdi = by_gid(ax, "hdi")[0]
    assert isinstance(hdi, LineCollection) and len(hdi.get_segments()) == 500
    assert len(ax.get_yticklabels()) <= 50
    means = by_gid(ax, "mean")[0].get_offsets()
    top_to_bottom = means[np.argsort(-means[:, 1]), 0]
    assert np.all(np.diff(top_to_bottom) >= 0)  # sorted by posterior mean
    assert "500 parameters, all drawn, sorted by posterior mean; every 10th label shown" in note(fig)
    assert fig.get_size_inches()[1] < 15


# ----------------------------------------------------------------------- pair and funnel


def test_pair_plot_marks_exactly_the_divergent_draws():
    fit = fake_fit()
    fig = fit.plot_pair(["mu", "tau"], log=["tau"])
    scatter_ax = fig.axes[2]  # lower-left panel: tau against mu
    red = by_gid(scatter_ax, "divergent")[0].get_offsets()
    div = fit.stats["diverging"].reshape(-1)
    expected = np.column_stack([fit.draws["mu"].reshape(-1)[div], np.log(fit.draws["tau"].reshape(-1)[div])])
    np.testing.assert_allclose(red, expected)
    assert scatter_ax.get_ylabel() == "log(tau)"


def test_funnel_finds_the_scale_and_marks_divergent_draws(funnel_fit, tmp_path):
    fig = funnel_fit.plot_funnel("theta", groups=[0, "s3"], path=tmp_path / "funnel.png")
    div = funnel_fit.stats["diverging"].reshape(-1)
    for ax, j in zip(fig.axes, [0, 3]):
        assert ax.get_ylabel() == "log(tau)" and ax.get_xlabel() == f"theta[s{j}]"
        red = by_gid(ax, "divergent")[0].get_offsets()
        expected = np.column_stack([funnel_fit.draws["theta"][..., j].reshape(-1)[div],
                                    np.log(funnel_fit.draws["tau"].reshape(-1)[div])])
        np.testing.assert_allclose(red, expected, rtol=1e-6)
    assert (tmp_path / "funnel.png").stat().st_size > 0


def test_funnel_default_panels_and_unknown_group(funnel_fit):
    fig = funnel_fit.plot_funnel("theta", max_panels=4)
    assert sum(ax.get_visible() for ax in fig.axes) == 4 and "showing 4 of 8 groups" in note(fig)
    with pytest.raises(ValueError, match="unknown group"):
        funnel_fit.plot_funnel("theta", groups=["nowhere"])


# ----------------------------------------------------------------------- shrinkage


def test_shrinkage_plots_partial_against_no_pooling(funnel_fit, schools):
    fig = funnel_fit.plot_shrinkage("theta", np.arange(8), schools["y"])
    left, right = fig.axes
    points = by_gid(left, "groups")[0].get_offsets()
    np.testing.assert_allclose(points[:, 0], schools["y"])
    np.testing.assert_allclose(points[:, 1], funnel_fit.draws["theta"].mean(axis=(0, 1)), rtol=1e-5)
    assert len(by_gid(left, "hdi")[0].get_segments()) == 8
    np.testing.assert_allclose(by_gid(right, "shrinkage")[0].get_offsets()[:, 0], np.ones(8))


def test_shrinkage_with_offset_and_group_sizes():
    fit = fake_fit(k=3)
    codes = np.array([0, 0, 0, 1, 2, 2])
    y = np.array([1.0, 2.0, 3.0, 5.0, 0.0, 1.0])
    fig = fit.plot_shrinkage("r", codes, y, offset="mu")
    points = by_gid(fig.axes[0], "groups")[0].get_offsets()
    np.testing.assert_allclose(points[:, 0], [2.0, 5.0, 0.5])
    partial = (fit.draws["r"] + fit.draws["mu"][..., None]).mean(axis=(0, 1))
    np.testing.assert_allclose(points[:, 1], partial)
    np.testing.assert_array_equal(by_gid(fig.axes[1], "shrinkage")[0].get_offsets()[:, 0], [3, 1, 2])


def test_shrinkage_errors_and_spec_protocol():
    fit = fake_fit(k=3)
    with pytest.raises(ValueError, match="pass group= .* and y="):
        fit.plot_shrinkage("r")
    with pytest.raises(ValueError, match="0-based"):
        fit.plot_shrinkage("r", np.array([1, 2, 3]), np.zeros(3))

    class Spec:
        def shrinkage_data(self, site):
            return {"group": np.array([0, 1, 2]), "y": np.array([1.0, 2.0, 3.0]), "offset": "mu"}

    fit.spec = Spec()
    points = by_gid(fit.plot_shrinkage("r").axes[0], "groups")[0].get_offsets()
    np.testing.assert_allclose(points[:, 0], [1.0, 2.0, 3.0])


# ----------------------------------------------------------------------- PPC and energy


def test_ppc_overlays_replicated_and_observed_densities():
    rng = np.random.default_rng(0)
    y = rng.normal(size=30)
    y_rep = rng.normal(size=(2, 100, 30))
    fig = plots.plot_ppc(None, y_rep, y, num_draws=20)
    ax = fig.axes[0]
    assert len(lines(ax)) == 21
    assert [ln.get_label() for ln in lines(ax) if ln.get_label().startswith("observed")] == ["observed y"]
    assert [a.get_title().split(":")[0] for a in fig.axes[1:]] == ["mean", "sd"]


def test_ppc_from_a_fit_with_integer_data(funnel_fit):
    rng = np.random.default_rng(1)
    y_rep = rng.poisson(3.0, size=(4, 100, 8)).astype(float)
    y = rng.poisson(3.0, size=8)
    fig = funnel_fit.plot_ppc(y_rep, y, num_draws=10, stats=("max",))
    assert all(ln.get_drawstyle() == "steps-mid" for ln in lines(fig.axes[0]))
    with pytest.raises(ValueError, match=r"y_rep must have shape"):
        funnel_fit.plot_ppc(y_rep[..., :5], y)
    with pytest.raises(ValueError, match="unknown statistic"):
        funnel_fit.plot_ppc(y_rep, y, stats=("kurtosis",))


def test_energy_plot_shows_both_distributions_and_ebfmi():
    fig = fake_fit().plot_energy()
    ax = fig.axes[0]
    assert [ln.get_label() for ln in lines(ax)] == ["marginal energy", "energy transition"]
    assert ax.get_legend().get_title().get_text().startswith("E-BFMI per chain:")


def test_real_fit_plots_render_without_pyplot_state(funnel_fit, tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    for name in ["plot_trace", "plot_rank", "plot_forest", "plot_energy"]:
        fig = getattr(funnel_fit, name)(path=tmp_path / f"{name}.png")
        assert isinstance(fig, matplotlib.figure.Figure)
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert plt.get_fignums() == before
