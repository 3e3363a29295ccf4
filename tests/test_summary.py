"""fit.summary() in ArviZ's language, in float64, a block of columns at a time (bounded memory)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import bhmjax as bj
from bhmjax import summary
from bhmjax._src import diagnostics
from bhmjax._src.precision import x64_mode


def synthetic_fit(chains=2, draws=200, groups=30, seed=0, dtype=np.float32) -> bj.Fit:
    """A formula-like fit built from arrays: hyperparameters, a group effect, an internal site."""
    rng = np.random.default_rng(seed)
    c, d = chains, draws
    walk = lambda *shape: (np.cumsum(rng.normal(size=(c, d, *shape)), axis=1) * 0.05  # noqa: E731
                           + rng.normal(size=(c, d, *shape))).astype(dtype)
    stats = {k: rng.normal(size=(c, d)) for k in ["energy", "step_size", "accept_prob", "potential_energy"]}
    stats |= {"diverging": np.zeros((c, d), bool), "num_steps": np.full((c, d), 7), "tree_depth": np.full((c, d), 3)}
    return bj.Fit(draws={"mu": walk(), "tau": np.abs(walk()), "b": walk(2), "r": walk(groups, 2), "z": walk(groups)},
                  stats=stats, timings={}, num_grad_evals={}, settings={"chains": c},
                  coords={"coef": ["x", "w"], "g": [f"g{i}" for i in range(groups)], "term": ["Intercept", "x"]},
                  dims={"b": ["coef"], "r": ["g", "term"]}, names={"z": [None] * groups})


@pytest.fixture(scope="module")
def fit():
    return synthetic_fit()


def test_rows_names_and_internal_sites(fit):
    table = fit.summary()
    assert list(table.index[:5]) == ["mu", "tau", "b[x]", "b[w]", "r[g0, Intercept]"]
    assert len(table) == 2 + 2 + 60 and not any(n.startswith("z") for n in table.index)
    assert list(table.columns) == ["mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "mcse_sd", "ess_bulk",
                                   "ess_tail", "r_hat"]
    assert list(fit.summary("z").index[:2]) == ["z[0]", "z[1]"]  # an internal site, asked for by name


def test_var_names_speak_arviz(fit):
    assert list(fit.summary(["~r"]).index) == ["mu", "tau", "b[x]", "b[w]"]
    assert list(fit.summary(["~r", "~b"]).index) == ["mu", "tau"]
    assert list(fit.summary(["^t", "^m"], filter_vars="regex").index) == ["tau", "mu"]
    assert list(fit.summary(["~^[rb]"], filter_vars="regex").index) == ["mu", "tau"]
    assert list(fit.summary("a", filter_vars="like").index) == ["tau"]
    assert list(fit.summary(["mu", "~mu", "tau"]).index) == ["tau"]
    with pytest.raises(KeyError, match=r"no site named 'sigma'.*Use filter_vars='like' or 'regex'"):
        fit.summary("sigma")
    with pytest.raises(KeyError, match=r"no site named 'taux' \(did you mean 'tau'\?\)"):
        fit.summary("taux")
    with pytest.raises(KeyError, match=r"no site name matches '~\^q'"):
        fit.summary("~^q", filter_vars="regex")
    with pytest.raises(ValueError, match="filter_vars must be None, 'like' or 'regex', got 'glob'"):
        fit.summary("mu", filter_vars="glob")
    with pytest.raises(TypeError, match="var_names must be a site name or a list of site names"):
        fit.summary([1])


def test_hdi_prob_kind_and_rounding(fit):
    raw = fit.summary(["mu"], hdi_prob=0.9, round_to="none")
    assert list(raw.columns[2:4]) == ["hdi_5%", "hdi_95%"]
    lo, hi = np.asarray(diagnostics.hdi(fit.draws["mu"].astype(np.float64), 0.9))
    assert raw.loc["mu", "hdi_5%"] == pytest.approx(lo) and raw.loc["mu", "hdi_95%"] == pytest.approx(hi)
    assert list(fit.summary(kind="stats").columns) == ["mean", "sd", "hdi_3%", "hdi_97%"]
    assert list(fit.summary(kind="diagnostics").columns) == ["mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]
    rounded, full = fit.summary(), fit.summary(round_to="none")
    assert (rounded["ess_bulk"] == np.round(full["ess_bulk"])).all()  # integer ESS, as ArviZ
    assert (rounded["r_hat"] == np.round(full["r_hat"], 2)).all()
    assert (rounded["mean"] == np.round(full["mean"], 3)).all()
    assert (fit.summary(round_to=1)["sd"] == np.round(full["sd"], 1)).all()
    with pytest.raises(ValueError, match=r"hdi_prob must lie in \(0, 1\), got 1.5"):
        fit.summary(hdi_prob=1.5)
    with pytest.raises(TypeError, match="hdi_prob must be a number"):
        fit.summary(hdi_prob="94%")
    with pytest.raises(ValueError, match="kind must be one of"):
        fit.summary(kind="everything")
    with pytest.raises(TypeError, match="round_to must be an int"):
        fit.summary(round_to=2.5)


def test_statistics_in_float64_for_float32_draws(fit):
    table = fit.summary(round_to="none")
    x = np.concatenate([fit.draws[s].reshape(2, 200, -1) for s in ["mu", "tau", "b", "r"]], axis=-1)
    with x64_mode(True):
        exact = {k: np.asarray(v) for k, v in diagnostics.summary_stats(x.astype(np.float64)).items()}
    np.testing.assert_allclose(table["ess_bulk"], exact["ess_bulk"], rtol=1e-12)
    np.testing.assert_allclose(table["r_hat"], exact["r_hat"], rtol=1e-12)
    np.testing.assert_allclose(table["mcse_sd"], exact["mcse_sd"], rtol=1e-12)


def test_blocks_give_the_same_table(fit):
    whole = fit.summary(round_to="none", max_bytes=2**34)
    one_column = summary.block_width(2, 200, 2**10)
    assert one_column == 1
    for max_bytes in (2**10, 3 * 2 * 200 * 8 * 32, 2**22):
        # the same numbers up to float64 rounding (XLA reduces vmapped blocks of other widths in another order)
        np.testing.assert_allclose(fit.summary(round_to="none", max_bytes=max_bytes).to_numpy(), whole.to_numpy(),
                                   rtol=1e-12)


def test_large_fit_summarizes_group_effects_only_when_asked():
    big = synthetic_fit(chains=2, draws=20, groups=summary.LARGE_FIT // 2 + 1)
    with pytest.warns(UserWarning, match=r"leaves out the sites \['r'\].*var_names=\['r'\]"):
        table = big.summary()
    assert list(table.index) == ["mu", "tau", "b[x]", "b[w]"]  # the hyperparameters first, and only them
    assert len(big.summary(["r"])) == 2 * (summary.LARGE_FIT // 2 + 1)
    small = synthetic_fit(chains=2, draws=20, groups=summary.LARGE_SITE + 1)
    assert len(small.summary()) == 4 + 2 * (summary.LARGE_SITE + 1)  # small fits keep every row


PEAK = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_summary import synthetic_fit
    fit = synthetic_fit(chains=2, draws=1000, groups=1000, seed=1)
    from bhmjax import summary
    cols = summary.columns(fit, ["r"])
    width = summary.block_width(2, 1000, {max_bytes})
    summary.table(fit, cols.take(range(width)), max_bytes={max_bytes})  # compile the block's program first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    table = fit.summary(["r"], round_to="none", max_bytes={max_bytes})
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({{"growth": after - before, "rows": len(table), "draw_bytes": fit.draws["r"].nbytes}}))
""")


@pytest.mark.slow
def test_peak_memory_is_one_block_not_all_draws():
    """2,000 columns of 2 x 1,000 float32 draws (16 MB; float64 and JAX intermediates of all ~1 GB)."""
    max_bytes = 8 * 2**20
    code = PEAK.format(tests=str(__import__("pathlib").Path(__file__).parent), max_bytes=max_bytes)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rows"] == 2000
    # One block and its intermediates (max_bytes) and the 2,000-row table: far below the float64
    # copy of the draws alone (32 MB), let alone their intermediates (~850 MB when not in blocks).
    assert result["growth"] < 4 * max_bytes, result
