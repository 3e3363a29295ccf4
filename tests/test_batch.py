"""fit_many: agreement with bj.sample on the unpadded data, batched = single program, few
compilations, sharding, SBC on ragged sizes, summary() and failed(); streaming to disk.

Most tests use one plain varying-intercepts model in float64 with the same sampler
settings and ``batch_size``, so the compiled programs are shared between tests.

* Agreement: ragged datasets (several buckets, padded rows and groups, an outlier in row
  0, which the padding copies) fitted by fit_many agree with ``bj.sample`` on each
  unpadded dataset: ``|mean_a - mean_b| / sqrt(mcse_a^2 + mcse_b^2) < 4`` for every
  parameter. Unmasked padding counts row 0 up to 8 times and moves its group by several
  posterior sds.
* Calibration (Talts et al. 2018): ranks of the true mu, tau and theta[0] among 49
  thinned posterior draws of 200 prior-simulated datasets of four sizes (two buckets) are
  uniform over their 50 values (10 bins of 5 ranks, chi-square p > 1e-3); mu and tau
  each have a negative control, its prior 3x too narrow in the fitted model, which must
  be rejected with p < 1e-4 on 64 datasets. theta[0] is the group of row 0, which the
  padding repeats: with the row mask off its ranks give p ~ 1e-12 (0.24 with it), while
  mu's and tau's stay uniform.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats as sps

import bhmjax as bj
from bhmjax import stream
from bhmjax._src import batch as core
from bhmjax._src import engine, sampling
from bhmjax._src.precision import x64_mode
from tests._stats import agreement_z, sbc_rank, uniform_p

WARMUP, DRAWS, CHAINS = 150, 100, 2
OPTS = dict(chains=CHAINS, warmup=WARMUP, draws=DRAWS, x64=True, batch_size=16, min_groups=8,
            rows=["y", "group"], groups={"num_groups": ["group"]}, devices=None)


def vi_model(y, group, prior_sd, num_groups):
    """Varying intercepts with known noise; ``prior_sd`` (data) scales the hyperpriors."""
    mu = numpyro.sample("mu", dist.Normal(0.0, prior_sd[0]))
    tau = numpyro.sample("tau", dist.HalfNormal(prior_sd[1]))
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand((num_groups,)).to_event(1))
    theta = numpyro.deterministic("theta", mu + tau * z)
    numpyro.sample("y", dist.Normal(theta[group], 1.0), obs=y)


def dataset(rng, rows, num_groups, used=None, prior_sd=(1.0, 1.0)):
    """Rows spread over the first ``used`` groups (the others are empty)."""
    used = num_groups if used is None else used
    group = np.arange(rows) % used
    theta = rng.normal(0.0, 1.0, num_groups)
    return {"y": rng.normal(theta[group], 1.0), "group": group, "prior_sd": np.asarray(prior_sd, float),
            "num_groups": num_groups}


def single_fit(data, index, warmup, draws, seed=0):
    """The reference: one dataset, the same padded program, unbatched (one chain after another), compiled
    as fit_many compiles its chunks (optimized: a small unbatched chunk would otherwise compile fast)."""
    from bhmjax._src.config import build_config
    from bhmjax._src.trace import model_trace

    arrays, static = bj._src.data.split_data(data)
    spec = core.PadSpec(rows=("y", "group"), groups=(("num_groups", ("group",)),), min_groups=8)
    padded, padded_static = core.pad(arrays, static, spec, core.bucket_of(arrays, static, spec))
    config = build_config(chains=CHAINS, warmup=warmup, draws=draws, x64=True)
    model = core.masked_model(vi_model)
    program = sampling.nuts_program(model, padded_static, config, model_trace(model, padded, padded_static))
    keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), index), CHAINS)
    try:
        bj.set_compile_options("default")
        run = engine.prepare(program, engine.Layout("sequential", CHAINS), padded, keys=keys, buffer_len=draws)
    finally:
        bj.set_compile_options("auto")
    memory = engine.MemorySink()
    engine.advance(run, warmup=warmup, draws=draws, thin=1, sinks=(memory,))
    return memory.draws()[0]


def outlier_dataset(rng, rows, num_groups, used=None):
    """A dataset whose row 0 (the row the padding repeats) lies 6 noise sds above its group."""
    d = dataset(rng, rows, num_groups, used)
    d["y"][0] += 6.0
    return d


@pytest.fixture(scope="module")
def ragged():
    """Three ragged datasets in two buckets, fitted by fit_many and by bj.sample unpadded."""
    rng = np.random.default_rng(8)
    data = [outlier_dataset(rng, 9, 3), outlier_dataset(rng, 12, 5, used=4), outlier_dataset(rng, 20, 6)]
    fits = bj.fit_many(vi_model, data, seed=3, buckets="pow2", **dict(OPTS, warmup=300, draws=500, batch_size=2))
    singles = [bj.sample(vi_model, d, chains=2, warmup=300, draws=1000, seed=i, x64=True, progress=False,
                         chain_method="sequential") for i, d in enumerate(data)]
    return data, fits, singles


def test_batched_fits_agree_with_sample_on_the_unpadded_data(ragged):
    data, fits, singles = ragged
    assert sorted(fits.buckets) == [(16, (("num_groups", 8),)), (32, (("num_groups", 8),))]
    for i, (d, single) in enumerate(zip(data, singles)):
        g = d["num_groups"]
        assert fits[i].draws["theta"].shape == (2, 500, g) and fits[i].draws["z"].shape == (2, 500, g)
        for site in ("mu", "tau", "theta"):
            a, b = fits[i].draws[site], single.draws[site]
            z = np.atleast_1d(agreement_z(a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1)))
            assert (z < 4).all(), (i, site, z.round(2))


def test_collection_summary_equals_each_fits_summary(ragged):
    """fits.summary() (computed for every dataset at once, on padded draws) equals fits[i].summary()."""
    _, fits, _ = ragged
    table = fits.summary()
    for i in range(len(fits)):
        mine = fits[i].summary(round_to="none")
        theirs = table.loc[i]
        assert list(theirs.index) == list(mine.index), i
        np.testing.assert_allclose(theirs[mine.columns].to_numpy(), mine.to_numpy(), rtol=1e-7, atol=1e-9,
                                   err_msg=f"dataset {i}")
        assert (theirs["divergences"] == int(fits[i].stats["diverging"].sum())).all()
    other = fits.summary(hdi_prob=0.5)
    np.testing.assert_allclose(other.loc[2, ["hdi_25%", "hdi_75%"]].to_numpy(),
                               fits[2].summary(hdi_prob=0.5, round_to="none")[["hdi_25%", "hdi_75%"]].to_numpy(), rtol=1e-7)


def test_batched_equals_loop_of_single_fits():
    """Ragged datasets (a single group, empty groups) give the draws of the same padded program run
    unbatched with the same keys: the vmapping over datasets and the keys are right.

    NUTS trajectories are chaotic: a rounding difference between the vmapped and the
    unbatched program can grow until a U-turn decision flips (after 40 warmup steps a
    difference of 3e-4 was seen, after 150 they are unrelated). With 20 warmup steps and
    10 draws in float64 they agree to ~1e-11; the tolerance 1e-6 leaves room for that
    growth, while a wrong key, mask or padding changes the draws at O(1).
    """
    rng = np.random.default_rng(1)
    data = [dataset(rng, 12, 3), dataset(rng, 9, 1), dataset(rng, 16, 8, used=5), dataset(rng, 14, 6)]
    fits = bj.fit_many(vi_model, data, **dict(OPTS, warmup=20, draws=10))
    assert len(fits.buckets) == 1
    with x64_mode(True):
        for i in range(4):
            ref = single_fit(data[i], i, 20, 10)
            g = data[i]["num_groups"]
            np.testing.assert_allclose(fits[i].draws["mu"], ref["mu"], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(fits[i].draws["theta"], ref["theta"][..., :g], rtol=1e-6, atol=1e-6)
            assert fits[i].draws["z"].shape == (CHAINS, 10, g)  # padded groups dropped
    table = fits.summary()
    assert set(table.index.get_level_values("dataset")) == {0, 1, 2, 3}
    assert {"r_hat", "ess_bulk", "divergences"} <= set(table.columns)
    assert len(table.loc[1]) == 2 + 2 * 1  # mu, tau, z[0], theta[0]


def test_a_ragged_stream_compiles_once_and_is_reused(monkeypatch):
    """50 datasets of 5 sizes (two power-of-two shapes, five on the fine grid) run as one padded shape: one chain program,
    as counted by the driver and reported by the collection; new data of the same shapes compile
    nothing. With ``buckets="pow2"`` they take two programs (the control)."""
    from tests._compiles import fresh_programs

    rng = np.random.default_rng(2)
    sizes = [(10, 4), (14, 6), (16, 8), (20, 5), (30, 7)]
    data = [dataset(rng, *sizes[i % 5]) for i in range(50)]
    fresh_programs(monkeypatch)
    before = engine.compile_counts().get("chunk", 0)
    fits = bj.fit_many(vi_model, data, **OPTS)
    assert fits.buckets == [(30, (("num_groups", 8),))]  # the largest dataset's rows, not 32
    # rows + groups: 14, 20, 24, 25, 37 of every 38 padded ones; 50 datasets in calls of 16: the last
    # call holds 2 datasets and 14 repeats of the last, which count as padding too
    assert fits.settings["padded_work_share"] == pytest.approx(1 - 10 * (14 + 20 + 24 + 25 + 37) / (64 * 38), abs=1e-4)
    assert engine.compile_counts()["chunk"] - before == 1
    assert fits.timings["programs_compiled"] + fits.timings["programs_from_cache"] >= 1
    # the chain programs and the batch summary, nothing eager (the dataset keys are made on the host)
    assert set(fits.timings["compiled"]) | set(fits.timings["fetched"]) <= {"jit(init)", "jit(chunk)", "jit(_batch_stats)"}
    before = sampling.trace_counts()
    again = bj.fit_many(vi_model, [dataset(rng, *sizes[i % 5]) for i in range(50)], **OPTS)
    assert sampling.trace_counts() == before and again.timings["programs_compiled"] == 0
    pow2 = bj.fit_many(vi_model, data[:10], buckets="pow2", **OPTS)
    assert len(pow2.buckets) == 2


def test_padded_sizes_lie_on_a_grid_of_eight_per_doubling(monkeypatch):
    """Rows, groups and datasets per call round up to at most 1/8 padding, on few values."""
    from bhmjax import batch

    sizes = np.arange(1, 5000)
    up = np.array([core.rounded(n) for n in sizes])
    assert (up >= sizes).all() and (np.diff(up) >= 0).all()
    assert ((up - sizes) / up <= 1 / 8).all()
    assert [core.rounded(n) for n in (5, 16, 17, 33, 100, 129)] == [5, 16, 18, 36, 104, 144]
    assert len(set(up[(sizes > 1024) & (sizes <= 2048)])) == 8
    assert core.rounded(3, minimum=8) == 8
    monkeypatch.setattr(batch, "available_memory", lambda: 10**9)
    assert batch._chunk_size(1, 100, 2, None, 1.0) == 104  # 100 datasets on 2 devices: one call, not 128
    # memory for 40 datasets a call: three calls of 36 (not three of 32 and a fourth of 4)
    assert batch._chunk_size(10**9 // 40, 100, 2, None, 1.0) == 36
    assert batch._chunk_size(10**9 // 40, 100, 1, 16, 1.0) == 16  # batch_size= is kept as given


def test_bucket_plan_weighs_compilations_against_padded_work():
    small = [(16, (("G", 8),)), (32, (("G", 8),)), (64, (("G", 16),))] * 10
    huge = [(1 << 17, (("G", 1024),))]
    steps = 4 * 2000 * core.GRADIENTS_PER_STEP
    plan = core.plan_buckets(small + huge, steps)
    assert {plan[b] for b in small} == {(64, (("G", 16),))}  # the small ones join in one shape
    assert plan[huge[0]] == huge[0]  # padding 30 small datasets to 131,072 rows would cost minutes
    free = core.plan_buckets(small + huge, steps, compile_s=0.0)  # compiling free: no padding at all
    assert all(free[b] == b for b in small + huge)
    with pytest.raises(ValueError, match="buckets must be 'auto' or 'pow2', got 'po2'"):
        bj.fit_many(vi_model, [dataset(np.random.default_rng(0), 10, 4)], buckets="po2", **OPTS)


_SHARDED = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
sys.path.insert(0, {tests!r})
import numpy as np, jax, bhmjax as bj
from test_batch import OPTS, dataset, vi_model
assert len(jax.devices()) == 4
rng = np.random.default_rng(3)
data = [dataset(rng, 9 + i, 2 + i % 6) for i in range(8)]
opts = dict(OPTS, batch_size=8)
one = bj.fit_many(vi_model, data, **dict(opts, devices=None))
four = bj.fit_many(vi_model, data, **dict(opts, devices=4))
for i in range(8):
    for k in ("mu", "tau", "theta"):
        np.testing.assert_allclose(one[i].draws[k], four[i].draws[k], rtol=1e-9, atol=1e-9)
print("OK")
"""


def test_sharded_over_four_devices_equals_unsharded():
    """The dataset axis split over 4 (fake CPU) devices gives the draws of one device."""
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", _SHARDED.format(tests=tests)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


SBC_DRAWS, SBC_BINS = 49, 10  # ranks 0..49: 50 values, 5 per bin
SBC_SIZES = [(10, 3), (16, 5), (24, 6), (12, 8)]  # (rows, groups): buckets (16, 8) and (32, 8)


def sbc_ranks(fits, truths, site) -> np.ndarray:
    """Ranks of ``site``; ``theta0`` is the first group's effect, whose rows include row 0 (the row padding repeats)."""
    def draws(i):
        return fits[i].draws["theta"][..., 0] if site == "theta0" else fits[i].draws[site]
    return np.array([sbc_rank(draws(i), truths[i], SBC_DRAWS) for i in range(len(truths))])


def test_sbc_bins_hold_equal_numbers_of_ranks():
    """Negative control of the histogram: exactly uniform integer ranks give p = 1, while 51
    ranks in 10 bins of width 5.1 (the old binning) would see a pattern that is not there."""
    assert uniform_p(np.repeat(np.arange(SBC_DRAWS + 1), 4), SBC_DRAWS) == pytest.approx(1.0)
    ranks = np.repeat(np.arange(51), 400)  # 20,400 exactly uniform ranks: the first bin holds 6/51 of them
    assert sps.chisquare(np.histogram(ranks, bins=10, range=(0, 51))[0]).pvalue < 1e-3


def sbc_data(rng, count: int) -> tuple[dict, list]:
    truths, data = {"mu": [], "tau": [], "theta0": []}, []
    for i in range(count):
        rows, groups = SBC_SIZES[i % len(SBC_SIZES)]
        mu, tau = rng.normal(0, 1), abs(rng.normal(0, 1))
        theta = mu + tau * rng.normal(size=groups)
        group = np.arange(rows) % groups
        data.append({"y": rng.normal(theta[group], 1.0), "group": group, "prior_sd": np.array([1.0, 1.0]),
                     "num_groups": groups})
        truths["mu"].append(mu), truths["tau"].append(tau), truths["theta0"].append(theta[0])
    return truths, data


@pytest.mark.slow
def test_simulation_based_calibration():
    """SBC on ragged sizes (module docstring); each parameter's broken twin is rejected."""
    truths, data = sbc_data(np.random.default_rng(4), 200)
    fits = bj.fit_many(vi_model, data, seed=5, buckets="pow2", **OPTS)
    assert len(fits.buckets) == 2
    for site in ("mu", "tau", "theta0"):  # theta0: unmasked padding (row 0 counted again) skews it
        p = uniform_p(sbc_ranks(fits, truths[site], site), SBC_DRAWS)
        assert p > 1e-3, (site, p)
    for j, site in enumerate(("mu", "tau")):  # the prior of one parameter 3x too narrow
        narrow = [dict(d, prior_sd=np.where(np.arange(2) == j, 1 / 3, 1.0)) for d in data[:64]]
        bad = bj.fit_many(vi_model, narrow, seed=5, **OPTS)
        p = uniform_p(sbc_ranks(bad, truths[site][:64], site), SBC_DRAWS)
        assert p < 1e-4, (site, p)


@pytest.fixture(scope="module")
def formula_fits():
    """Formula datasets of different sizes, short chains (some do not converge), one not buildable; the
    group effects sampled (non-centered: internal sites to hide)."""
    rng = np.random.default_rng(5)
    frames = {f"region{i}": {"y": rng.normal(size=n), "g": np.arange(n) % k} for i, (n, k) in
              enumerate([(12, 3), (20, 4), (9, 3), (30, 5)])}
    frames["one_group"] = {"y": rng.normal(size=5), "g": np.zeros(5, int)}
    return bj.fit_many("y ~ 1 + (1 | g)", frames, chains=2, warmup=60, draws=40, devices=None, seed=2,
                       marginalize=False)


def test_formula_datasets_and_failed(formula_fits):
    """Formula datasets of different sizes; a dataset that cannot be built is reported by failed()."""
    fits = formula_fits
    assert fits["region1"].draws["r_g"].shape == (2, 40, 4, 1)
    assert "single level" in fits.failed().loc["one_group", "reason"]
    with pytest.raises(ValueError, match="was not fitted"):
        fits["one_group"]


def test_formula_collection_summary_shows_what_each_fit_shows(formula_fits):
    """The sampler-internal sites of a non-centered formula model (z_g, Intercept_c) are in the draws but in no
    summary: the collection's rows are each fit's own summary, and the batch summary never computes them."""
    fits = formula_fits
    table = fits.summary()
    for label in ("region0", "region3"):
        mine, theirs = fits[label].summary(round_to="none"), table.loc[label]
        assert "z_g" in fits[label].draws and list(theirs.index) == list(mine.index), label
        exact = [c for c in mine.columns if c != "r_hat"]  # float32 R-hat: the folded draws' ties break apart
        np.testing.assert_allclose(theirs[exact].to_numpy(), mine[exact].to_numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(theirs["r_hat"].to_numpy(), mine["r_hat"].to_numpy(), rtol=1e-2)
    computed = {site for bk in fits._buckets for site in bk.diagnostics}
    assert computed == {"Intercept", "sigma", "sd_g", "r_g"}, computed


def test_fit_many_marginalize_is_checked_before_compiling():
    frames = [{"y": np.arange(12.0), "g": np.arange(12) % 3}] * 2
    with pytest.raises(ValueError, match="marginalize must be 'auto', True or False, got 'yes'"):
        bj.fit_many("y ~ 1 + (1 | g)", frames, marginalize="yes", **dict(OPTS_FORMULA))
    with pytest.raises(ValueError, match="marginalize=True, but dataset 0 cannot have its group effects integrated"):
        bj.fit_many("y ~ 1 + (1 | g)", frames, marginalize=True, reduce=False, **dict(OPTS_FORMULA))


OPTS_FORMULA = dict(chains=2, warmup=20, draws=10, devices=None)


def test_padded_integrated_rows_leave_the_log_density_unchanged():
    """Blocked rows padded by whole zero groups, and a dataset's narrower blocks widened with zero rows
    (x constant within groups: one pseudo row a group), give each dataset's own log density at any
    point: their residuals are zero (X padded with X_mean, which the mean subtracts), and
    reduction:dropped takes back their n log(2 pi sigma^2)."""
    import jax.numpy as jnp

    from bhmjax._src.config import build_config
    from bhmjax._src.trace import model_trace
    from bhmjax.batch import _formula_datasets

    rng = np.random.default_rng(4)
    frames = []
    for n, k, constant in [(60, 5, False), (80, 6, True), (40, 4, False)]:
        g = np.arange(n) % k
        x = 3.0 + (rng.normal(size=k)[g] if constant else rng.normal(size=n))
        frames.append({"y": 1.0 + 0.5 * x + rng.normal(0, 0.7, k)[g] + rng.normal(size=n), "x": x, "g": g})
    prepared, spec = _formula_datasets("y ~ 1 + x + (1 | g)", list(enumerate(frames)), "gaussian", {},
                                       build_config(chains=2), "auto")
    assert spec.block == 2 and [d.request.static["marginal:block"] for d in prepared] == [2, 1, 2]
    for d in prepared:
        r = d.request
        padded, static = core.pad(r.arrays, r.static, spec, (2 * 9, (("G_0", 9),)))
        own = model_trace(r.model, r.arrays, r.static)
        wide = model_trace(core.masked_model(r.model, spec.observed), padded, static)
        for point in range(3):
            z = {k: jnp.asarray(np.random.default_rng(point).normal(0, 0.5, v.shape), v.dtype)
                 for k, v in own.unconstrained.items()}
            np.testing.assert_allclose(float(wide.potential_fn(**padded, **static)(z)),
                                       float(own.potential_fn(**r.arrays, **r.static)(z)), rtol=2e-6)


def test_fit_many_keeps_what_is_asked_of_integrated_fits():
    """The effects' draws replay every sampled site, so an integrated run stores them all and keep=
    applies to the fits and the summary, as in Model.fit; drop= of r_g draws no effects."""
    rng = np.random.default_rng(8)
    frames = [{"y": rng.normal(size=n), "x": rng.normal(size=n), "g": np.arange(n) % k} for n, k in [(30, 4), (45, 6)]]
    kept = bj.fit_many("y ~ 1 + x + (1 | g)", frames, keep=["sigma", "r_g"], **OPTS_FORMULA)
    assert set(kept[1].draws) == {"sigma", "r_g"} and kept[1].draws["r_g"].shape == (2, 10, 6, 1)
    assert set(kept.summary().loc[0].index) == {"sigma"} | {f"r_g[{j}, Intercept]" for j in range(4)}
    dropped = bj.fit_many("y ~ 1 + x + (1 | g)", frames, drop=["r_g"], **OPTS_FORMULA)
    assert "r_g" not in dropped[0].draws and dropped[0].settings["marginalized"]["site"] == "r_g"


def test_formula_datasets_run_on_their_exact_reduction():
    """fit_many reduces each formula dataset exactly (y ~ 1 + x + (1 | g): two pseudo rows a group) and, as
    Model.fit does, integrates the group effects out, padding by whole groups of zero rows; r_g is drawn
    inside the compiled program. It gives the posterior of the rows: it agrees with fit_many on the rows
    (effects sampled: the per-row basis cannot be padded), padded groups are dropped, and each fit keeps its
    rows for the log-likelihood. A padding whose zero rows still counted in the log density (n log sigma)
    moves the first dataset's sigma by 5.4 MCSE (bound 4)."""
    rng = np.random.default_rng(11)
    frames = []
    for n, k in [(240, 6), (90, 5), (150, 8)]:
        g = np.arange(n) % k
        x = rng.normal(size=n)
        frames.append({"y": 1.0 + 0.5 * x + rng.normal(0, 0.7, k)[g] + rng.normal(size=n), "x": x, "g": g})
    opts = dict(chains=2, warmup=300, draws=500, devices=None, seed=4)
    reduced = bj.fit_many("y ~ 1 + x + (1 | g)", frames, **opts)
    rows = bj.fit_many("y ~ 1 + x + (1 | g)", frames, reduce=False, **opts)
    assert reduced.buckets[0][0] == 16 and rows.buckets[0][0] == 240  # 2 x 8 pseudo rows vs 240 rows
    for i, frame in enumerate(frames):
        fit = reduced[i]
        assert fit.settings["reduction"] == {"kind": "gaussian", "rows": len(frame["y"]),
                                             "pseudo_rows": 2 * len(set(frame["g"]))}
        assert "reduction" not in rows[i].settings
        assert fit.settings["marginalized"]["site"] == "r_g" and rows[i].settings.get("marginalized") is None
        assert fit.draws["r_g"].shape == (2, 500, len(set(frame["g"])), 1) and "z_g" not in fit.draws
        assert fit.log_likelihood().shape == (2, 500, len(frame["y"]))
        for site in ("Intercept", "b", "sigma", "sd_g", "r_g"):
            a, b = fit.draws[site], rows[i].draws[site]
            z = np.atleast_1d(agreement_z(a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1)))
            assert (z < 4).all(), (i, site, z.round(2))
    with pytest.raises(ValueError, match="reduce must be 'auto', True or False"):
        bj.fit_many("y ~ 1 + x + (1 | g)", frames, reduce="yes", **opts)


def _worst(table, fit) -> tuple[float, float, int]:
    """Max R-hat, min bulk/tail ESS (from the collection's summary rows) and divergences of a fit."""
    return float(table["r_hat"].max()), float(table[["ess_bulk", "ess_tail"]].to_numpy().min()), int(
        fit.stats["diverging"].sum())


def test_failed_applies_its_rules(formula_fits, monkeypatch):
    """A fit fails when max R-hat > r_hat, min(bulk, tail ESS) < min_ess or divergences > divergences
    (strict: a dataset exactly at a threshold passes), with the reason and the worst values."""
    fits = formula_fits
    fitted = [label for label in fits.labels if label != "one_group"]
    summary = fits.summary()
    worst = {label: _worst(summary.loc[label], fits[label]) for label in fitted}
    r_values = sorted(w[0] for w in worst.values())
    e_values = sorted(w[1] for w in worst.values())
    assert len(set(r_values)) == len(r_values) and len(set(e_values)) == len(e_values)
    lax = dict(r_hat=10.0, min_ess=0.0, divergences=10**6)
    assert list(fits.failed(**lax).index) == ["one_group"]
    cases = [("r_hat", r_values[1], lambda w, t: w[0] > t, "r_hat"),
             ("min_ess", e_values[-2], lambda w, t: w[1] < t, "ess"),
             ("divergences", -1, lambda w, t: w[2] > t, "divergent transitions")]
    for name, threshold, fails, word in cases:
        table = fits.failed(**{**lax, name: threshold})
        expected = [label for label in fitted if fails(worst[label], threshold)]
        assert list(table.index) == expected + ["one_group"], (name, threshold, worst)
        for label in expected:
            row = table.loc[label]
            assert word in row["reason"], (name, row["reason"])
            np.testing.assert_allclose([row["max_r_hat"], row["min_ess"]], worst[label][:2], rtol=1e-6)
            assert row["divergences"] == worst[label][2]
        assert np.isnan(table.loc["one_group", "max_r_hat"])
    for label in fitted:  # every fit passes at its own lowest (bulk or tail) ESS and fails just above it
        at = fits.failed(**{**lax, "min_ess": worst[label][1]})
        above = fits.failed(**{**lax, "min_ess": float(np.nextafter(worst[label][1], np.inf))})
        assert label not in at.index and label in above.index, (label, worst[label])
    # min_ess reads the tail ESS too (these short fits happen to have their lowest ESS in bulk): one
    # parameter's tail ESS lowered to 1 makes its fit fail at min_ess=2, with that value as its worst
    label, low = fitted[0], summary.copy()
    low.loc[(label, low.loc[label].index[0]), "ess_tail"] = 1.0
    monkeypatch.setattr(fits, "summary", lambda *args, **kwargs: low)
    table = fits.failed(**{**lax, "min_ess": 2.0})
    assert list(table.index) == [label, "one_group"] and table.loc[label, "min_ess"] == 1.0, table
    monkeypatch.undo()
    default = fits.failed()
    expected = [label for label in fitted if worst[label][0] > 1.01 or worst[label][1] < 100 or worst[label][2] > 0]
    assert list(default.index) == expected + ["one_group"]


def test_bad_input_errors():
    rng = np.random.default_rng(6)
    ragged = [dataset(rng, 9, 3), dataset(rng, 12, 4)]
    with pytest.raises(ValueError, match="declare the row arrays|Declare the row arrays"):
        bj.fit_many(vi_model, ragged, chains=1, warmup=10, draws=10)
    with pytest.raises(ValueError, match="has no 'rows'"):
        bj.fit_many(vi_model, ragged, rows=["rows"], chains=1, warmup=10, draws=10)
    with pytest.raises(ValueError, match="datasets is empty"):
        bj.fit_many(vi_model, [])
    with pytest.raises(TypeError, match="datasets must be a list"):
        bj.fit_many(vi_model, "data.csv")


def test_memory_estimate_refuses_and_stream_to_disk(tmp_path):
    """Draws too big for memory are refused with the options; streamed draws equal in-memory ones."""
    shapes = {"r": ((100_000, 2), np.dtype("float32"))}
    with pytest.raises(ValueError, match="Keep fewer sites.*thin.*out="):
        stream.check_memory(shapes, chains=4, draws=10_000, buffer_len=100, streaming=False, available=2**30)
    assert stream.check_memory(shapes, chains=4, draws=10_000, buffer_len=10, streaming=True, available=2**30) > 0
    with pytest.raises(ValueError, match="zarr is not a dependency"):
        stream.DrawWriter(tmp_path / "x.zarr", shapes, 1, 1, np.float32)
    data = {k: v for k, v in dataset(np.random.default_rng(7), 12, 3).items()}
    opts = dict(chains=2, warmup=50, draws=30, progress=False, chunk_size=7, seed=3)
    ref = bj.sample(vi_model, data, **opts)
    for out in (tmp_path / "run", tmp_path / "run.nc"):
        fit = bj.sample(vi_model, data, out=out, **opts)
        assert isinstance(fit.draws["theta"], np.memmap)
        for k in ref.draws:
            np.testing.assert_array_equal(np.asarray(fit.draws[k]), ref.draws[k])
        np.testing.assert_array_equal(np.asarray(fit.stats["diverging"]), ref.stats["diverging"])
    with pytest.raises(ValueError, match="cannot be combined"):
        bj.sample(vi_model, data, out=tmp_path / "a", checkpoint=tmp_path / "b", **opts)


_PROCESS = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, {tests!r})
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address="localhost:{port}", num_processes=2, process_id=int(sys.argv[1]))
import numpy as np, bhmjax as bj
from test_batch import OPTS, dataset, vi_model
assert jax.process_count() == 2 and len(jax.devices()) == 4 and len(jax.local_devices()) == 2
rng = np.random.default_rng(3)
data = [dataset(rng, 9 + i, 2 + i % 6) for i in range(8)]
fits = bj.fit_many(vi_model, data, **dict(OPTS, batch_size=8, devices="all"))
np.savez(sys.argv[2], **{{f"{{i}}/{{k}}": fits[i].draws[k] for i in range(8) for k in ("mu", "tau", "theta")}})
"""


@pytest.mark.slow
def test_two_processes_joined_by_jax_distributed_equal_one_process(tmp_path):
    """fit_many(devices="all") over two processes on localhost (CPU collectives: gloo) gives one process's fits."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    script = _PROCESS.format(tests=tests, port=port)
    children = [subprocess.Popen([sys.executable, "-c", script, str(i), str(tmp_path / f"p{i}.npz")], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for child in children:
        _, err = child.communicate(timeout=900)
        assert child.returncode == 0, err[-3000:]
    rng = np.random.default_rng(3)
    data = [dataset(rng, 9 + i, 2 + i % 6) for i in range(8)]
    one = bj.fit_many(vi_model, data, **dict(OPTS, batch_size=8, devices=None))
    for i in range(2):
        got = np.load(tmp_path / f"p{i}.npz")
        for d in range(8):
            for k in ("mu", "tau", "theta"):
                np.testing.assert_allclose(got[f"{d}/{k}"], one[d].draws[k], rtol=1e-9, atol=1e-9)


def test_collection_indexes_like_a_list_and_iterates_every_dataset():
    """fits[6] of 6 datasets is an IndexError (not dataset 0); iteration keeps unfitted datasets in place."""
    rng = np.random.default_rng(8)
    frames = [{"y": rng.normal(size=12), "g": np.arange(12) % 3} for _ in range(5)]
    frames.insert(2, {"y": rng.normal(size=5), "g": np.zeros(5, int)})  # a single group: not fitted
    fits = bj.fit_many("y ~ 1 + (1 | g)", frames, chains=1, warmup=20, draws=10, devices=None)
    for bad in (6, 30, -7):
        with pytest.raises(IndexError, match=f"dataset index {bad} is out of range for 6 datasets"):
            fits[bad]
    np.testing.assert_array_equal(fits[-1].draws["Intercept"], fits[5].draws["Intercept"])
    items = list(fits)
    assert len(items) == 6 and not items[2] and "single level" in items[2].reason
    for frame, fit in zip(frames, items):  # each dataset with its own fit
        if fit:
            assert fit.data["N"] == len(frame["y"]) and np.allclose(fit.data["y"], frame["y"], atol=1e-6)
    with pytest.raises(ValueError, match="was not fitted"):
        items[2].draws


def test_fit_many_checkpoints_and_streams_through_the_driver(tmp_path):
    rng = np.random.default_rng(9)
    data = [dataset(rng, 9 + 2 * i, 3) for i in range(4)]
    opts = dict(OPTS, warmup=30, draws=20)
    plain = bj.fit_many(vi_model, data, **opts)
    saved = bj.fit_many(vi_model, data, checkpoint=tmp_path / "c", **opts)
    again = bj.fit_many(vi_model, data, checkpoint=tmp_path / "c", **opts)  # finished: read back, not rerun
    streamed = bj.fit_many(vi_model, data, out=tmp_path / "s", **opts)
    assert isinstance(streamed[0].draws["theta"], np.memmap)
    for fits in (saved, again, streamed):
        for i in range(4):
            np.testing.assert_array_equal(np.asarray(fits[i].draws["theta"]), plain[i].draws["theta"])
    with pytest.raises(ValueError, match=r"different model, data or settings: .*seed"):
        bj.fit_many(vi_model, data, checkpoint=tmp_path / "c", **dict(opts, seed=1))

