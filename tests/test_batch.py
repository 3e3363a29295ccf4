"""fit_many: batched equals a loop of single fits, few compilations, sharding, SBC; streaming to disk.

Every test uses one plain varying-intercepts model in float64 with the same sampler
settings and ``batch_size``, so the compiled programs are shared between tests.
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
from bhmjax._src import sampling
from bhmjax._src.precision import x64_mode

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
    """The reference: one dataset, the same padded program, unbatched (one chain after another)."""
    arrays, static = bj._src.data.split_data(data)
    spec = core.PadSpec(rows=("y", "group"), groups=(("num_groups", ("group",)),), min_groups=8)
    padded, padded_static = core.pad(arrays, static, spec, core.bucket_of(arrays, static, spec))
    config = sampling.NutsConfig(num_warmup=warmup)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), index)
    run, runner = sampling.prepare(key, core.masked_model(vi_model), padded, padded_static, config,
                                   num_chains=CHAINS, chain_method="sequential", buffer_len=draws)
    sampling.advance(run, runner, num_warmup=warmup, num_draws=draws, thinning=1)
    return sampling.result_of(run).draws


def test_batched_equals_loop_of_single_fits():
    """Ragged datasets (a single group, empty groups) give the draws of single fits with the same keys.

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


def test_compilations_bounded_by_buckets_and_reused():
    """50 datasets of 5 sizes compile once per bucket; new data of the same shapes compile nothing."""
    rng = np.random.default_rng(2)
    sizes = [(10, 4), (14, 6), (16, 8), (20, 5), (30, 7)]
    data = [dataset(rng, *sizes[i % 5]) for i in range(50)]
    before = sampling.trace_counts()["collect"]
    fits = bj.fit_many(vi_model, data, **OPTS)
    compiled = sampling.trace_counts()["collect"] - before
    assert len(fits.buckets) == 2 and compiled <= len(fits.buckets)
    before = sampling.trace_counts()
    bj.fit_many(vi_model, [dataset(rng, *sizes[i % 5]) for i in range(50)], **OPTS)
    assert sampling.trace_counts() == before


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


def _ranks(fits, truths, site, thin=4):
    return np.array([np.sum(fits[i].draws[site][:, ::thin] < truths[i]) for i in range(len(truths))])


def _uniform_p(ranks, max_rank, bins=10):
    """Chi-square p-value of uniform ranks on 0..max_rank; bins holding unequal numbers of
    rank values get their own expected counts (51 values in 10 bins: the first holds 6)."""
    edges = np.linspace(0, max_rank + 1, bins + 1)
    counts = np.histogram(ranks, bins=edges)[0]
    values = np.histogram(np.arange(max_rank + 1), bins=edges)[0]
    return sps.chisquare(counts, f_exp=len(ranks) * values / (max_rank + 1)).pvalue


def test_rank_histogram_expects_what_each_bin_holds():
    """Negative control of the SBC histogram: exactly uniform ranks 0..50 give p = 1, although 10
    bins of width 5.1 hold 6 rank values in the first and 5 in the others (equal expected counts
    would call these ranks skewed: p < 1e-3)."""
    ranks = np.repeat(np.arange(51), 400)
    assert _uniform_p(ranks, 50) == pytest.approx(1.0)
    assert sps.chisquare(np.histogram(ranks, bins=10, range=(0, 51))[0]).pvalue < 1e-3


def test_simulation_based_calibration():
    """SBC (Talts et al. 2018): ranks of the true mu and tau among thinned posterior draws are uniform
    over 200 datasets simulated from the prior; fitting with a too narrow prior is rejected."""
    rng = np.random.default_rng(4)
    truths, data = {"mu": [], "tau": []}, []
    for _ in range(200):
        mu, tau = rng.normal(0, 1), abs(rng.normal(0, 1))
        theta = mu + tau * rng.normal(size=8)
        group = np.arange(16) % 8
        data.append({"y": rng.normal(theta[group], 1.0), "group": group, "prior_sd": np.array([1.0, 1.0]),
                     "num_groups": 8})
        truths["mu"].append(mu), truths["tau"].append(tau)
    fits = bj.fit_many(vi_model, data, seed=5, **OPTS)
    max_rank = CHAINS * DRAWS // 4
    for site in ("mu", "tau"):
        p = _uniform_p(_ranks(fits, truths[site], site), max_rank)
        assert p > 1e-4, (site, p)  # a false alarm once in 5,000 runs; the narrow prior below gives ~1e-37
    narrow = [dict(d, prior_sd=np.array([0.3, 0.3])) for d in data]
    bad = bj.fit_many(vi_model, narrow, seed=5, **OPTS)
    assert _uniform_p(_ranks(bad, truths["mu"], "mu"), max_rank) < 1e-3


def test_formula_datasets_and_failed():
    """Formula datasets of different sizes; a dataset that cannot be built is reported by failed()."""
    rng = np.random.default_rng(5)
    frames = {f"region{i}": {"y": rng.normal(size=n), "g": np.arange(n) % k} for i, (n, k) in
              enumerate([(12, 3), (20, 4)])}
    frames["one_group"] = {"y": rng.normal(size=5), "g": np.zeros(5, int)}
    fits = bj.fit_many("y ~ 1 + (1 | g)", frames, chains=2, warmup=60, draws=40, devices=None)
    assert fits["region1"].draws["r_g"].shape == (2, 40, 4, 1)
    assert "single level" in fits.failed().loc["one_group", "reason"]
    with pytest.raises(ValueError, match="was not fitted"):
        fits["one_group"]


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
