"""The sampling core: exact posteriors, eight schools, determinism, options, bad input."""

from __future__ import annotations

import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
import pytest

import bhmjax as bj
from bhmjax._src import engine, sampling

from ._stats import agreement_z, assert_converged, mcse_z

FAST = dict(chains=2, warmup=300, draws=400, progress=False)


# ----------------------------------------------------------------- models


def normal_mean(y, prior_sd=10.0):
    mu = numpyro.sample("mu", dist.Normal(0.0, prior_sd))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def group_means(group, y, num_groups: int, tau=2.0):
    with numpyro.plate("groups", num_groups):
        theta = numpyro.sample("theta", dist.Normal(0.0, tau))
    numpyro.sample("y", dist.Normal(theta[group], 1.0), obs=y)


def eight_schools(y, sigma, centered: bool = True):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", y.shape[0]):
        if centered:
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
        else:
            z = numpyro.sample("theta_z", dist.Normal(0.0, 1.0))
            theta = numpyro.deterministic("theta", mu + tau * z)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


@pytest.fixture(scope="module")
def y20():
    return np.random.default_rng(1).normal(1.5, 1.0, size=20)


@pytest.fixture(scope="module")
def schools(eight_schools):
    return {"y": eight_schools["y"], "sigma": eight_schools["sigma"]}


# ----------------------------------------------------------------- known posteriors


EXACT = dict(chains=4, warmup=300, draws=1000, progress=False)


def test_normal_mean_matches_closed_form(y20):
    fit = bj.sample(normal_mean, {"y": y20, "prior_sd": np.array(10.0)}, **EXACT)
    assert_converged(fit)
    precision = 1 / 10.0**2 + len(y20)
    exact_mean, exact_sd = y20.sum() / precision, precision**-0.5
    assert mcse_z(fit.draws["mu"], exact_mean) < 4
    assert abs(fit.draws["mu"].std() / exact_sd - 1) < 0.10


def flat_mean(y):
    mu = numpyro.sample("mu", dist.ImproperUniform(dist.constraints.real, (), ()))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_improper_flat_prior_samples_its_exact_posterior(y20):
    """A flat prior has a density and no sampler: the model is traced where NUTS starts it (not by
    drawing from the prior), and mu's posterior is Normal(mean(y), 1 / sqrt(n))."""
    fit = bj.sample(flat_mean, {"y": y20}, **EXACT)
    assert_converged(fit)
    assert mcse_z(fit.draws["mu"], y20.mean()) < 4
    assert abs(fit.draws["mu"].std() * np.sqrt(len(y20)) - 1) < 0.10


def test_known_posterior_check_rejects_a_wrong_prior(y20):
    """Negative control: the same check fails when the model's prior scale is wrong."""
    fit = bj.sample(normal_mean, {"y": y20, "prior_sd": np.array(0.05)}, **EXACT)
    precision = 1 / 10.0**2 + len(y20)
    assert mcse_z(fit.draws["mu"], y20.sum() / precision) > 4


def test_group_means_match_closed_form():
    rng = np.random.default_rng(2)
    sizes = np.array([1, 2, 3, 5, 8, 13, 20, 40])
    group = np.repeat(np.arange(len(sizes)), sizes)
    y = rng.normal(rng.normal(0, 2, len(sizes))[group], 1.0)
    data = {"group": group, "y": y, "num_groups": len(sizes)}
    fit = bj.sample(group_means, data, **EXACT)
    assert_converged(fit)
    precision = 1 / 4.0 + sizes
    exact_mean = np.bincount(group, weights=y) / precision
    assert np.all(mcse_z(fit.draws["theta"], exact_mean) < 4)
    sd_ratio = fit.draws["theta"].std(axis=(0, 1)) / precision**-0.5
    assert np.all(np.abs(sd_ratio - 1) < 0.10), sd_ratio


# ----------------------------------------------------------------- eight schools


def test_eight_schools_centered_and_noncentered_agree(schools):
    settings = dict(chains=4, warmup=500, draws=1000, progress=False, target_accept=0.95)
    ncp = bj.sample(eight_schools, {**schools, "centered": False}, seed=1, **settings)
    cp = bj.sample(eight_schools, {**schools, "centered": True}, seed=2, **settings)
    for name in ("mu", "tau"):
        assert agreement_z(cp.draws[name], ncp.draws[name]) < 4, name


def test_eight_schools_centered_reports_divergences(schools):
    fit = bj.sample(eight_schools, {**schools, "centered": True}, chains=4, warmup=300, draws=500,
                    progress=False, seed=0)
    report = fit.diagnose(verbose=False)
    assert fit.stats["diverging"].sum() > 0
    assert not report.ok
    problem = next(p for p in report.problems if p.check == "divergences")
    assert "non-centered" in problem.advice and "tau" in problem.advice


# ----------------------------------------------------------------- behaviour


def test_same_seed_gives_identical_draws(y20):
    a = bj.sample(normal_mean, {"y": y20}, seed=3, **FAST)
    b = bj.sample(normal_mean, {"y": y20}, seed=3, **FAST)
    c = bj.sample(normal_mean, {"y": y20}, seed=4, **FAST)
    np.testing.assert_array_equal(a.draws["mu"], b.draws["mu"])
    np.testing.assert_array_equal(a.stats["num_steps"], b.stats["num_steps"])
    assert not np.array_equal(a.draws["mu"], c.draws["mu"])


@pytest.mark.parametrize("method", ["sequential", "vectorized", "parallel"])
def test_chain_methods_give_the_posterior(method, y20):
    fit = bj.sample(normal_mean, {"y": y20}, chains=2, warmup=300, draws=400, progress=False,
                    chain_method=method)
    assert fit.draws["mu"].shape == (2, 400)
    assert fit.settings["chain_method"] == method
    precision = 1 / 100 + len(y20)
    assert mcse_z(fit.draws["mu"], y20.sum() / precision) < 4


def test_auto_chain_method_is_resolved():
    import jax

    layout = engine.resolve_layout("auto", 4)
    expected = "parallel" if jax.local_device_count() > 1 else "sequential"  # CPU: host devices, or one core
    assert layout.method == expected
    assert layout.lanes == 4 and (not layout.devices or 4 % len(layout.devices) == 0)


def test_fit_fields(y20):
    fit = bj.sample(normal_mean, {"y": y20}, **FAST)
    for key in ("diverging", "num_steps", "accept_prob", "energy", "step_size", "tree_depth"):
        assert fit.stats[key].shape == (2, 400), key
    assert set(fit.timings) == {"compile", "warmup", "sampling", "programs_compiled", "programs_from_cache",
                                "compiled", "fetched", "trace_s", "lower_s", "compile_options"}
    assert all(fit.timings[k] >= 0 for k in ("compile", "warmup", "sampling", "trace_s", "lower_s"))
    assert fit.num_grad_evals["sampling"] == int(fit.stats["num_steps"].sum())
    assert fit.num_grad_evals["warmup"] > 0
    assert np.all(fit.stats["tree_depth"] >= 1)
    assert list(fit.summary().columns) == ["mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "mcse_sd",
                                           "ess_bulk", "ess_tail", "r_hat"]


def test_thinning_keep_drop_and_x64():
    def model(x):
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        s = numpyro.sample("s", dist.HalfNormal(1))
        numpyro.deterministic("big", mu * x)
        numpyro.sample("obs", dist.Normal(mu, s), obs=x)

    x = np.linspace(-1, 1, 50)
    fit = bj.sample(model, {"x": x}, chains=2, warmup=100, draws=50, thin=3, drop=["big"],
                    progress=False, x64=True)
    assert set(fit.draws) == {"mu", "s"}
    assert fit.draws["mu"].shape == (2, 50) and fit.draws["mu"].dtype == np.float64
    assert fit.num_grad_evals["sampling"] >= 2 * 50 * 3
    kept = bj.sample(model, {"x": x}, chains=2, warmup=100, draws=50, keep=["mu"], progress=False)
    assert set(kept.draws) == {"mu"} and kept.draws["mu"].dtype == np.float32


def test_new_data_of_same_shape_does_not_recompile(y20):
    bj.sample(normal_mean, {"y": y20}, seed=5, **FAST)
    before = sampling.trace_counts()
    fit = bj.sample(normal_mean, {"y": y20 + 1.0}, seed=6, **FAST)
    assert sampling.trace_counts() == before
    assert fit.timings["compile"] < 1.0
    bj.sample(normal_mean, {"y": y20[:10]}, seed=6, **FAST)  # a new shape compiles once more
    assert sampling.trace_counts()["collect"] == before["collect"] + 1


def test_progress_bar_for_every_chain_method(y20, capsys):
    for method in ("sequential", "vectorized", "parallel"):
        bj.sample(normal_mean, {"y": y20}, chains=2, warmup=50, draws=50, progress=True,
                  chain_method=method)
        err = capsys.readouterr().err
        assert "sample" in err and "100" in err, (method, err)


def test_init_strategies_and_dense_mass(y20):
    for strategy in ("median", "feasible", {"mu": 1.0}):  # one NUTS program serves every strategy
        fit = bj.sample(normal_mean, {"y": y20}, chains=2, warmup=100, draws=100, progress=False,
                        init_strategy=strategy, dense_mass=True, max_tree_depth=5, target_accept=0.9)
        assert np.isfinite(fit.draws["mu"]).all()
        assert fit.stats["tree_depth"].max() <= 5


# ----------------------------------------------------------------- labels


@pytest.mark.parametrize("labels", [
    np.array([30, 10, 20, 10]),
    np.array(["c", "a", "b", "a"]),
    pd.Categorical(["low", "high", "mid", "high"], categories=["low", "mid", "high"]),
])
def test_group_labels_encode_to_contiguous_codes(labels):
    enc = bj.encode_groups(labels, name="g")
    assert enc.codes.dtype == np.int32
    assert enc.num_groups == 3 and enc.codes.max() == 2
    back = np.asarray(enc.labels, dtype=object)[enc.codes]
    np.testing.assert_array_equal(back, np.asarray(labels, dtype=object))


def test_summary_names_group_parameters_by_label():
    schools_labels = np.array([f"school_{i}" for i in (3, 1, 2, 1, 3)])
    enc = bj.encode_groups(schools_labels, name="school")
    y = np.array([1.0, 2.0, 0.5, 1.5, 0.0])
    fit = bj.sample(group_means, {"group": enc.codes, "y": y, "num_groups": enc.num_groups},
                    coords={"school": enc.labels}, dims={"theta": ["school"]}, **FAST)
    assert list(fit.summary().index) == ["theta[school_1]", "theta[school_2]", "theta[school_3]"]


# ----------------------------------------------------------------- bad input


def test_bad_input_is_rejected_before_compiling(y20):
    before = sampling.trace_counts()
    y_nan = y20.copy()
    y_nan[7] = np.nan
    with pytest.raises(ValueError, match=r"data\['y'\].*NaN at row 7"):
        bj.sample(normal_mean, {"y": y_nan}, **FAST)
    y_inf = y20.copy()
    y_inf[3] = np.inf
    with pytest.raises(ValueError, match=r"data\['y'\].*inf at row 3"):
        bj.sample(normal_mean, {"y": y_inf}, **FAST)
    with pytest.raises(ValueError, match=r"data\['y'\] is empty"):
        bj.sample(normal_mean, {"y": np.array([])}, **FAST)
    with pytest.raises(ValueError, match="mismatched length"):
        bj.sample(group_means, {"group": np.array([0, 1, 1]), "y": np.ones(4), "num_groups": 2}, **FAST)
    for arg in ("chains", "warmup", "draws"):
        with pytest.raises(ValueError, match=f"{arg} must be at least 1"):
            bj.sample(normal_mean, {"y": y20}, **{**FAST, arg: 0})
    with pytest.raises(TypeError, match="chains must be an integer"):
        bj.sample(normal_mean, {"y": y20}, **{**FAST, "chains": 2.5})
    with pytest.raises(TypeError, match="model must be a callable"):
        bj.sample("not a model", {"y": y20}, **FAST)
    with pytest.raises(TypeError, match="data must be a dict"):
        bj.sample(normal_mean, [1, 2, 3], **FAST)
    with pytest.raises(ValueError, match="chain_method must be one of"):
        bj.sample(normal_mean, {"y": y20}, chain_method="magic", **FAST)
    with pytest.raises(ValueError, match="target_accept must be in"):
        bj.sample(normal_mean, {"y": y20}, target_accept=1.5, **FAST)
    with pytest.raises(TypeError, match="dtype"):
        bj.sample(normal_mean, {"y": np.array(["a", "b"])}, **FAST)
    assert sampling.trace_counts() == before


def test_non_finite_log_density_at_start_names_the_site():
    def counts(y):
        rate = numpyro.sample("rate", dist.Exponential(1.0))
        numpyro.sample("counts", dist.Poisson(rate), obs=y)

    with pytest.raises(ValueError, match="site 'counts' is infinite at its observed data.*index 2"):
        bj.sample(counts, {"y": np.array([1, 2, -1, 3])}, **FAST)

    def bad_scale(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu, -1.0), obs=y)

    with pytest.raises(ValueError, match="invalid scale"):
        bj.sample(bad_scale, {"y": np.array([1.0, 2.0])}, **FAST)


def test_bad_group_labels_name_the_variable():
    with pytest.raises(ValueError, match="'county' has 1 missing label.*row 2"):
        bj.encode_groups(np.array(["a", "b", None, "a"], dtype=object), name="county")
    enc = bj.encode_groups(["a", "b"], name="county")
    with pytest.raises(ValueError, match="'county' has 1 level\\(s\\) not seen in training: 'z'"):
        enc.encode(["a", "z"])


def test_chains_without_a_valid_initial_point_are_named():
    import jax
    import jax.numpy as jnp

    from bhmjax._src.config import build_config
    from bhmjax._src.trace import model_trace

    def hopeless():
        numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.factor("wall", -jnp.inf)

    with pytest.raises(ValueError, match=r"site 'wall' is infinite at its value \(a factor\)"):
        bj.sample(hopeless, chains=2, warmup=5, draws=5, progress=False)
    config = build_config(chains=2, warmup=5, draws=5)  # the driver's own check, past the model check
    program = sampling.nuts_program(hopeless, {}, config, model_trace(hopeless, {}, {}))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match=r"no valid initial point was found for chain\(s\) \[0, 1\]"):
        engine.prepare(program, engine.Layout("sequential", 2), {}, keys=keys, buffer_len=5)


def test_python_branching_on_data_is_explained_before_compiling():
    def branches(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        if y.sum() > 0:  # a traced value: fine eagerly, impossible under jit
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    before = sampling.trace_counts()
    with pytest.raises(ValueError, match="branches in Python"):
        bj.sample(branches, {"y": np.ones(3)}, progress=False)
    assert sampling.trace_counts() == before


def test_model_check_is_traced_once_per_model_and_shapes():
    from bhmjax._src import trace

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    first = trace.model_trace(model, {"y": np.ones(3)}, {})
    assert trace.model_trace(model, {"y": np.zeros(3)}, {}) is first  # new values, same trace
    assert trace.model_trace(model, {"y": np.ones(4)}, {}) is not first
    assert first.sites["y"].kind == "observed" and first.sites["y"].shape == (3,)
    assert first.latent == ("mu",) and list(first.stored()) == ["mu"]
    before = len(trace._CHECKS)
    for y in (np.ones(3), np.zeros(3)):
        bj.sampler.check_model(model, {"y": y}, {})
    assert len(trace._CHECKS) == before + 1  # one jitted check program for both


# ----------------------------------------------------------------- first calls (issue #19)


@pytest.mark.parametrize("wrong, right", [("num_chains", "chains"), ("tune", "warmup"), ("random_seed", "seed"),
                                          ("num_warmup", "warmup"), ("num_samples", "draws"),
                                          ("chain_metod", "chain_method")])
def test_unknown_keywords_get_our_name(y20, wrong, right):
    match = rf"unexpected keyword argument\(s\) '{wrong}' \(did you mean '{right}'\?\)"
    with pytest.raises(TypeError, match=match):
        bj.sample(normal_mean, {"y": y20}, **{wrong: 2})
    model = bj.Model("y ~ 1", {"y": y20})
    with pytest.raises(TypeError, match=match):
        model.fit(**{wrong: 2})
    if right != "chain_method":  # fit_many has no chain method (it batches)
        with pytest.raises(TypeError, match=match):
            bj.fit_many("y ~ 1", [{"y": y20}], **{wrong: 2})


def test_model_fit_refuses_a_parameterization_it_cannot_apply(y20):
    """bj.sample's parameterization= re-parameterizes a NumPyro function; a formula model chooses its own when
    built, so Model.fit(parameterization=...) would run unchanged: refused, naming where it belongs."""
    model = bj.Model("y ~ 1 + (1 | g)", {"y": y20, "g": np.arange(20) % 4})
    with pytest.raises(TypeError, match=r"parameterization='centered'.*bj.Model\(formula, data, parameterization"):
        model.fit(parameterization="centered")


def test_seed_takes_ints_keys_generators_and_none(y20):
    import jax

    base = bj.sample(normal_mean, {"y": y20}, seed=3, **FAST)
    for key in (jax.random.PRNGKey(3), jax.random.key(3)):  # the key PRNGKey(seed) would make
        fit = bj.sample(normal_mean, {"y": y20}, seed=key, **FAST)
        np.testing.assert_array_equal(fit.draws["mu"], base.draws["mu"])
        assert fit.settings["seed"] == [0, 3]
    drawn = bj.sample(normal_mean, {"y": y20}, seed=np.random.default_rng(5), **FAST)
    expected = int(np.random.default_rng(5).integers(0, 2**31))
    assert drawn.settings["seed"] == expected
    np.testing.assert_array_equal(drawn.draws["mu"], bj.sample(normal_mean, {"y": y20}, seed=expected,
                                                               **FAST).draws["mu"])
    fresh = bj.sample(normal_mean, {"y": y20}, seed=None, **FAST)
    assert isinstance(fresh.settings["seed"], int)  # drawn from the OS and recorded, so the run repeats
    np.testing.assert_array_equal(fresh.draws["mu"], bj.sample(normal_mean, {"y": y20},
                                                               seed=fresh.settings["seed"], **FAST).draws["mu"])
    with pytest.raises(TypeError, match="seed must be an int, a JAX PRNG key, a numpy Generator or None"):
        bj.sample(normal_mean, {"y": y20}, seed="7", **FAST)
    with pytest.raises(ValueError, match=r"one threefry key .* shape \(3, 2\)"):
        bj.sample(normal_mean, {"y": y20}, seed=jax.random.split(jax.random.PRNGKey(0), 3), **FAST)


# ----------------------------------------------------------------- the model check (issue #14, defects 5 and 6)


def bounded(y):
    s = numpyro.sample("s", dist.Uniform(0.0, 10.0))
    numpyro.sample("y", dist.Uniform(0.0, s), obs=y)


def test_model_check_starts_where_the_run_starts():
    """A model valid where its init strategy starts is sampled; one that can never start is named."""
    y = np.array([1.0, 5.0, 9.5])
    fit = bj.sample(bounded, {"y": y}, init_strategy={"s": 9.8}, **FAST)
    assert (fit.draws["s"] > 9.5).all() and (fit.draws["s"] < 10).all()
    with pytest.raises(ValueError, match=r"site 'y' is infinite at its observed data .*init_strategy='uniform'"):
        bj.sample(bounded, {"y": y}, **FAST)  # uniform starts put s in (1.2, 8.8): never above 9.5


def test_model_check_names_a_site_whose_density_fails():
    class NoDensity(dist.Normal):
        def log_prob(self, value):
            raise NotImplementedError("no density here")

    def model(y):
        mu = numpyro.sample("mu", NoDensity(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ValueError, match=r"log density of site 'mu' \(NoDensity\) cannot be evaluated: "
                                         r"NotImplementedError: no density here"):
        bj.sample(model, {"y": np.ones(3)}, **FAST)


def test_labels_that_do_not_fit_are_refused(y20):
    data = {"group": np.array([0, 1, 2, 1]), "y": np.ones(4), "num_groups": 3}
    with pytest.raises(ValueError, match=r"names\['theta'\] has 2 entries but site 'theta' has shape \(3,\)"):
        bj.sample(group_means, data, names={"theta": ["a", "b"]}, **FAST)
    with pytest.raises(ValueError, match=r"coords\['school'\] has 2 labels but axis 0 of site 'theta'"):
        bj.sample(group_means, data, coords={"school": ["a", "b"]}, dims={"theta": ["school"]}, **FAST)
    fit = bj.sample(group_means, data, **FAST)
    with pytest.raises(ValueError, match=r"names\['theta'\] has 1 entries but site 'theta' has 3 values"):
        bj.Fit(draws=fit.draws, stats=fit.stats, timings={}, num_grad_evals={}, settings={}, names={"theta": ["a"]})


# ----------------------------------------------------------------- statistics (issue #14: one definition)


def test_sampler_statistics_follow_their_definition(y20):
    from bhmjax._src.stats import STATS, stat_dtypes, to_arviz

    fit = bj.sample(normal_mean, {"y": y20}, max_tree_depth=3, **FAST)
    assert list(fit.stats) == list(STATS)
    assert {k: v.dtype for k, v in fit.stats.items()} == stat_dtypes(STATS, np.float32)
    steps = fit.stats["num_steps"]
    np.testing.assert_array_equal(fit.stats["tree_depth"], np.floor(np.log2(steps)).astype(int) + 1)
    assert fit.stats["tree_depth"].max() <= 3 and steps.max() <= 2**3 - 1
    exported = to_arviz(fit.stats)
    assert set(exported) == {"diverging", "n_steps", "tree_depth", "acceptance_rate", "energy", "step_size", "lp"}
    np.testing.assert_array_equal(exported["lp"], -fit.stats["potential_energy"])


def test_saving_data_that_cannot_be_stored_says_so(y20, tmp_path):
    fit = bj.sample(normal_mean, {"y": y20}, **FAST)
    odd = bj.Fit(draws=fit.draws, stats=fit.stats, timings=fit.timings, num_grad_evals=fit.num_grad_evals,
                 settings=fit.settings, data={"y": y20, "ragged": (1, (2, 3))})
    with pytest.warns(UserWarning, match=r"data\['ragged'\] \(tuple\) cannot be stored"):
        odd.save(tmp_path / "fit.bhm")


def test_a_model_with_many_latents_runs_its_phases_in_bounded_calls(monkeypatch):
    """Calls of at most MAX_CALL_WORK / (latents x chains) steps (XLA on CPU keeps a call's memory until
    it returns), never under MIN_CALL_STEPS, and the same draws as one call per phase."""
    from bhmjax import runner
    from bhmjax._src.config import build_config

    config = build_config(chains=2, warmup=150, draws=100)
    assert runner._buffer_len(config, False, None, latents=10) == 150  # small: one call per phase
    assert runner._buffer_len(config, False, None, latents=200_000) == 50  # 2e7 / (2e5 x 2)
    assert runner._buffer_len(config, False, None, latents=10**8) == runner.MIN_CALL_STEPS
    groups = np.repeat(np.arange(12), 3)
    y = np.random.default_rng(0).normal(groups % 3, 1.0)
    data = {"group": groups, "y": y, "num_groups": 12}
    whole = bj.sample(group_means, data, chains=2, warmup=150, draws=100, seed=3, progress=False)
    monkeypatch.setattr(runner, "MAX_CALL_WORK", 12 * 2 * 32)  # 12 latents x 2 chains x 32 steps a call
    calls = []
    after = engine._after_chunk
    monkeypatch.setattr(engine, "_after_chunk", lambda run, *a: calls.append(a[-1]) or after(run, *a))
    split = bj.sample(group_means, data, chains=2, warmup=150, draws=100, seed=3, progress=False)
    assert calls.count("warmup") == 5 and calls.count("sampling") == 4  # ceil(150 / 32), ceil(100 / 32)
    for k in whole.draws:
        np.testing.assert_array_equal(split.draws[k], whole.draws[k])


# ----------------------------------------------------------------- generated quantities (hook for #21)


def replicate(key, values, arrays):
    """A toy generated quantity: a draw of the mean's posterior predictive per row, and its key's first word."""
    import jax

    noise = jax.random.normal(key, arrays["y"].shape, values["mu"].dtype)
    return {"y_rep": values["mu"] + noise, "key_word": key[1]}


def test_generated_quantities_are_stored_per_draw_and_independent_of_chunks(y20, tmp_path):
    import jax
    from dataclasses import replace

    from bhmjax import runner
    from bhmjax._src.config import build_config

    config = build_config(chains=2, warmup=100, draws=60, seed=4, chunk_size=60)
    request = runner.RunRequest(model=normal_mean, arrays={"y": y20}, static={}, config=config,
                                generate=replicate, progress=False)
    fit = runner.execute(request)
    assert fit.draws["y_rep"].shape == (2, 60, 20) and fit.draws["key_word"].dtype == np.uint32
    for c in range(2):  # draw i of chain c uses fold_in(the chain's generated-quantities key, i)
        for i in (0, 37):
            key = jax.random.fold_in(fit.state.gen_key[c], i)
            expected = fit.draws["mu"][c, i] + jax.random.normal(key, (20,))
            np.testing.assert_allclose(fit.draws["y_rep"][c, i], expected, rtol=1e-6)
    assert len(np.unique(fit.draws["key_word"])) == 120  # a fresh key for every chain and draw
    chunked = runner.execute(replace(request, config=replace(config, chunk_size=7)))
    streamed = runner.execute(replace(request, config=replace(config, chunk_size=13), out=tmp_path / "s"))
    saved = runner.execute(replace(request, config=replace(config, every=25), checkpoint=tmp_path / "c"))
    for other in (chunked, streamed, saved):
        np.testing.assert_array_equal(np.asarray(other.draws["y_rep"]), fit.draws["y_rep"])
    longer = runner.extend(fit, 20)
    key = jax.random.fold_in(fit.state.gen_key[1], 70)  # the draw counter continues
    np.testing.assert_allclose(longer.draws["y_rep"][1, 70], longer.draws["mu"][1, 70] + jax.random.normal(key, (20,)),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="the generated quantities"):
        runner.execute(replace(request, config=replace(config, every=25), checkpoint=tmp_path / "c", generate=None))


def test_internal_sites_are_stored_but_not_shown(y20):
    """fit.internal (one definition of sampler internals) keeps a site out of summaries and the export."""
    import dataclasses

    from bhmjax.summary import shown_sites

    def with_twin(y):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        mu = numpyro.deterministic("mu", 10.0 * z)
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    fit = bj.sample(with_twin, {"y": y20}, chains=1, warmup=50, draws=20, progress=False)
    assert sorted(shown_sites(fit)) == ["mu", "z"]
    hidden = dataclasses.replace(fit, internal=("z",))
    assert "z" in hidden.draws and shown_sites(hidden) == ["mu"]
    assert list(hidden.summary().index) == ["mu"]
