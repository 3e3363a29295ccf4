"""bj.sample(sampler="chees"): many ChEES-HMC chains recover the NUTS posterior.

The model is Gaussian varying intercepts (non-centered). Both fits must converge
(R-hat, bulk ESS; R-hat < 1.02 for ChEES: with many short chains R-hat is about
sqrt(1 + tau / draws) even at stationarity, Margossian et al. 2022) before their
hyperparameters are compared with
``|mean_chees - mean_nuts| / sqrt(mcse^2 + mcse^2) < 4``.

The negative control is a broken model, not a shifted copy of the draws: the same
model with tau's prior scale 4x too small (HalfNormal(0.5)), sampled by ChEES from the
same compiled program (the scale is data), must be told apart from the NUTS posterior
of the right model.
"""

from __future__ import annotations

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import bhmjax as bj
from bhmjax._src import engine
from tests._stats import agreement_z, assert_converged

HYPER = ("mu", "tau", "sigma")


def varying_intercepts(y, group, num_groups, tau_scale=2.0):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfNormal(tau_scale))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand((num_groups,)).to_event(1))
    numpyro.deterministic("theta", mu + tau * z)
    numpyro.sample("y", dist.Normal(mu + tau * z[group], sigma), obs=y)


def data(seed: int = 0, groups: int = 8, rows: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(groups), rows).astype(np.int32)
    y = 1.0 + rng.normal(0.0, 1.0, groups)[group] + rng.normal(0.0, 1.0, group.size)
    return {"y": y.astype(np.float32), "group": group, "num_groups": groups,
            "tau_scale": np.asarray(2.0, np.float32)}


@pytest.fixture(scope="module")
def fits():
    d = data()
    fc = bj.sample(varying_intercepts, d, sampler="chees", chains=128, warmup=300, draws=250, seed=1,
                   progress=False)
    fn = bj.sample(varying_intercepts, d, chains=4, warmup=500, draws=1000, seed=2, progress=False,
                   chain_method="sequential")
    return fc, fn


def _hyper(fit) -> np.ndarray:
    return np.stack([fit.draws[k] for k in HYPER], axis=-1).astype(np.float64)


@pytest.mark.slow
def test_chees_recovers_nuts_posterior(fits):
    fc, fn = fits
    assert_converged(fc, rhat_max=1.02, ess_min=1000)
    assert_converged(fn, rhat_max=1.02, ess_min=200)
    z = agreement_z(_hyper(fc), _hyper(fn))
    assert (z < 4).all(), dict(zip(HYPER, z.round(2)))


@pytest.mark.slow
def test_agreement_rejects_chees_on_a_wrong_prior(fits):
    """Negative control: tau's prior 4x too narrow, sampled by ChEES, disagrees with the NUTS fit."""
    _, fn = fits
    broken = bj.sample(varying_intercepts, {**data(), "tau_scale": np.asarray(0.5, np.float32)},
                       sampler="chees", chains=128, warmup=300, draws=250, seed=1, progress=False)
    z = agreement_z(_hyper(broken), _hyper(fn))
    assert z[HYPER.index("tau")] > 4, dict(zip(HYPER, z.round(2)))


@pytest.mark.slow
def test_chees_fit_is_an_ordinary_fit(fits):
    fc, _ = fits
    assert fc.draws["theta"].shape == (128, 250, 8) and fc.num_chains == 128
    for k in ("diverging", "num_steps", "accept_prob", "energy", "step_size", "potential_energy"):
        assert fc.stats[k].shape == (128, 250), k
    assert "tree_depth" not in fc.stats  # ChEES builds no tree: a synthesized depth would read as saturation
    steps = fc.stats["num_steps"]
    assert (steps == steps[:1]).all(), "all chains share one jittered trajectory length per draw"
    assert fc.num_grad_evals["sampling"] == int(steps.sum())
    assert fc.num_grad_evals["warmup"] > 128 * 300
    assert set(fc.timings) >= {"compile", "warmup", "sampling"}
    assert fc.settings["sampler"] == "chees" and fc.settings["adapted"]["num_leapfrog_steps"] >= 1
    assert fc.settings["adapted"]["restarted_chains"] < 128 // 10
    assert fc.stats["diverging"].mean() < 1e-3  # a rare divergence in 32,000 transitions is possible
    assert "mu" in fc.summary().index


@pytest.mark.slow
def test_new_data_reuse_the_compiled_programs(fits):
    before = engine.compile_counts()
    fit = bj.sample(varying_intercepts, data(seed=5), sampler="chees", chains=128, warmup=300, draws=250,
                    seed=1, progress=False)
    assert engine.compile_counts() == before and fit.timings["compile"] < 1.0


SMALL = dict(sampler="chees", chains=16, warmup=60, draws=40, seed=3, progress=False)


def test_explicit_target_accept_is_kept():
    """An explicit 0.8 is the user's choice, not "left at the NUTS default" (ChEES's own default is 0.651)."""
    assert bj.sample(varying_intercepts, data(), target_accept=0.8, **SMALL).settings["target_accept"] == 0.8
    assert bj.sample(varying_intercepts, data(), **SMALL).settings["target_accept"] == 0.651


def test_chees_checkpoints_streams_and_resumes(tmp_path, monkeypatch):
    """ChEES runs through the same driver: a checkpoint, a stream and an interrupted run resumed
    give the plain run's draws."""
    from bhmjax import runner

    plain = bj.sample(varying_intercepts, data(), **SMALL)
    streamed = bj.sample(varying_intercepts, data(), out=tmp_path / "s", chunk_size=15, **SMALL)
    update, calls = runner.Progress.update, []

    def interrupted(self, n, phase):
        calls.append(phase)
        if calls.count("sampling") == 2:
            raise KeyboardInterrupt
        update(self, n, phase)

    monkeypatch.setattr(runner.Progress, "update", interrupted)
    with pytest.warns(RuntimeWarning, match="keeping the 30 draws"):
        cut = bj.sample(varying_intercepts, data(), checkpoint=tmp_path / "c", every=15, **SMALL)
    monkeypatch.setattr(runner.Progress, "update", update)
    assert cut.num_draws == 30
    for fit in (streamed, bj.resume(tmp_path / "c", progress=False)):
        for k in ("mu", "tau", "theta"):
            np.testing.assert_array_equal(np.asarray(fit.draws[k]), plain.draws[k])
        np.testing.assert_array_equal(np.asarray(fit.stats["num_steps"]), plain.stats["num_steps"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(sampler="hmc"), "sampler must be 'nuts' or 'chees', got 'hmc'"),
    (dict(sampler="chees", chains=1), "needs at least 2 chains"),
])
def test_chees_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bj.sample(varying_intercepts, data(), warmup=10, draws=10, progress=False, **kwargs)
