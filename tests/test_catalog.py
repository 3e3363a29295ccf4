"""The README's catalog of bad inputs: each raises its documented error, before compiling.

Keep this list and the table "Bad input and the error it gets" in README.md in step.

"Before compiling" is checked with JAX's own monitoring events (``tests/_compiles.py``):
every trace, lowering and compilation in the process counts, with JAX's in-memory caches
and bhmjax's program caches emptied first, so work done earlier in the session is seen
again. A row compiles nothing, except the rows in ``FOUND_BY_THE_MODEL_CHECK``: their
error can only be seen by running the model on the data: they compile the init program, the
program of each site's log density where a chain starts badly (the model check's own, compiled
only then) and the chunk of NUTS steps, which a first fit traces and compiles beside the init;
the error does not wait for the chunk's compile to end, so its compile may or may not have
been seen when the error is raised.
"""

from __future__ import annotations

import functools

import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
import pytest

import bhmjax as bj
from bhmjax import sampler
from bhmjax._src import sampling
from bhmjax.design import new_design  # what fit.predict checks new rows with
from tests._compiles import compile_log, fresh_caches


def normal_model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def grouped(group, y, num_groups: int):
    with numpyro.plate("g", num_groups):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(a[group], 1.0), obs=y)


def counts(y):
    rate = numpyro.sample("rate", dist.Exponential(1.0))
    numpyro.sample("y", dist.Poisson(rate), obs=y)


Y = np.linspace(-1.0, 1.0, 20)
DF = pd.DataFrame({"y": Y, "x": np.arange(20.0), "g": list("ab") * 10, "one": ["a"] * 20, "c": np.ones(20),
                   "k": np.arange(20)})
S = dict(chains=1, warmup=10, draws=10, progress=False)


def with_nan(frame, column, row):
    frame = frame.copy()
    frame.loc[row, column] = np.nan
    return frame


class MyPrior(dist.HalfNormal):
    """A user's own distribution class, which a fit file cannot name."""


def _hand_made_fit(model, spec=None, **draws) -> bj.Fit:
    """A Fit as sampling returns it (three draws of one chain), without sampling."""
    return bj.Fit(draws={k: np.full((1, 3), v) for k, v in draws.items()},
                  stats={"diverging": np.zeros((1, 3), bool)}, timings={}, num_grad_evals={}, settings={},
                  data={"y": Y}, model=model, spec=spec)


def save_unstorable_prior():
    import tempfile

    model = bj.Model("y ~ x + (1 | g)", DF, priors={"sd_g": MyPrior(1.0)})
    with tempfile.TemporaryDirectory() as folder:
        _hand_made_fit(model.numpyro_model, model.spec).save(f"{folder}/f.bhm")


@functools.cache
def _saved_normal_fit() -> str:
    """A fit file of ``normal_model`` (written once, before the harness watches: saving compiles)."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="bhmjax-catalog-")
    return str(_hand_made_fit(normal_model, mu=0.5).save(f"{folder}/f.bhm", log_likelihood=False))


def load_with_another_model():
    bj.load(_saved_normal_fit(), model=counts)


load_with_another_model.prepare = _saved_normal_fit


def discrete_latent(y):
    z = numpyro.sample("z", dist.Bernoulli(0.5))
    numpyro.sample("y", dist.Normal(2.0 * z, 1.0), obs=y)


CATALOG = [
    ("NaN in a data array", lambda: bj.sample(normal_model, {"y": np.r_[Y[:4], np.nan, Y[5:]]}, **S),
     ValueError, r"data\['y'\] has 1 non-finite value\(s\); the first is NaN at row 4"),
    ("inf in a data array", lambda: bj.sample(normal_model, {"y": np.r_[np.inf, Y[1:]]}, **S),
     ValueError, r"the first is inf at row 0"),
    ("an empty data array", lambda: bj.sample(normal_model, {"y": np.array([])}, **S),
     ValueError, r"data\['y'\] is empty"),
    ("arrays of mismatched length", lambda: bj.sample(grouped, {"group": np.zeros(5, int), "y": Y,
                                                                "num_groups": 2}, **S),
     ValueError, r"(?i)data lengths: group: 5, y: 20.*mismatched length"),
    ("text where numbers belong", lambda: bj.sample(normal_model, {"y": np.array(["a", "b"])}, **S),
     TypeError, r"data\['y'\] has dtype <U1; the model needs numbers"),
    ("data that is not a dict", lambda: bj.sample(normal_model, [1.0, 2.0], **S),
     TypeError, r"data must be a dict of keyword arguments"),
    ("chains, warmup or draws below 1", lambda: bj.sample(normal_model, {"y": Y}, **{**S, "draws": 0}),
     ValueError, r"draws must be at least 1, got 0"),
    ("a non-integer count", lambda: bj.sample(normal_model, {"y": Y}, **{**S, "chains": 2.5}),
     TypeError, r"chains must be an integer, got 2.5"),
    ("a model that is not callable", lambda: bj.sample("model", {"y": Y}, **S),
     TypeError, r"model must be a callable NumPyro model, got str"),
    ("an unknown chain method", lambda: bj.sample(normal_model, {"y": Y}, chain_method="gpu", **S),
     ValueError, r"chain_method must be one of \('auto', 'parallel', 'vectorized', 'sequential'\), got 'gpu'"),
    ("an unknown init strategy", lambda: bj.sample(normal_model, {"y": Y}, init_strategy="zeros", **S),
     ValueError, r"init_strategy must be one of \[.*'uniform'\], .*got 'zeros'"),
    ("target_accept outside (0, 1)", lambda: bj.sample(normal_model, {"y": Y}, target_accept=1.0, **S),
     ValueError, r"target_accept must be in \(0, 1\), got 1.0"),
    ("observed data outside the support", lambda: bj.sample(counts, {"y": np.array([1, -2, 3])}, **S),
     ValueError, r"log density of site 'y' is infinite at its observed data .* first at index 1"),
    ("a missing group label", lambda: bj.encode_groups(np.array(["a", None], dtype=object), name="school"),
     ValueError, r"group variable 'school' has 1 missing label\(s\), first at row 1"),
    ("a group level never seen in training", lambda: bj.encode_groups(["a", "b"], name="school").encode(["c"]),
     ValueError, r"'school' has 1 level\(s\) not seen in training: 'c'"),
    ("a formula column not in the data", lambda: bj.Model("y ~ xx + (1 | g)", DF),
     ValueError, r"column 'xx' named in the formula is not in the data \(did you mean 'x'\?\)"),
    ("missing values in a formula column", lambda: bj.Model("y ~ x + (1 | g)", with_nan(DF, "x", 3)),
     ValueError, r"column 'x' has 1 missing value\(s\), the first at row 3.*na_action='drop'"),
    ("a grouping with a single level", lambda: bj.Model("y ~ x + (1 | one)", DF),
     ValueError, r"grouping 'one' has a single level \('a'\)"),
    ("a categorical predictor with a single level", lambda: bj.Model("y ~ x + one + (1 | g)", DF),
     ValueError, r"categorical predictor 'one' has a single level \('a'\)"),
    ("a constant predictor", lambda: bj.Model("y ~ c + (1 | g)", DF),
     ValueError, r"predictor column 'c' is constant"),
    ("a formula that cannot be parsed", lambda: bj.Model("y ~ x + (1 | g", DF),
     ValueError, r"cannot parse the formula 'y ~ x \+ \(1 \| g': an opening '\(' is never closed"),
    ("a bernoulli response that is not 0/1", lambda: bj.Model("y ~ x", DF, family="bernoulli"),
     ValueError, r"response 'y' must be 0 or 1 for the bernoulli family; row 0"),
    ("negative counts", lambda: bj.Model("y ~ x", DF.assign(y=-DF["k"]), family="poisson"),
     ValueError, r"response 'y' must hold non-negative integers for the poisson family; row 1 is -1"),
    ("more successes than trials", lambda: bj.Model("k | trials(t) ~ x", DF.assign(t=np.maximum(DF["k"] - 1, 1)),
                                                     family="binomial"),
     ValueError, r"response 'k' exceeds the trials 't' at row 2 \(2 successes of 1 trials; 18 such rows\)"),
    ("an unknown family", lambda: bj.Model("y ~ x", DF, family="gama"),
     ValueError, r"unknown family 'gama' \(did you mean 'gamma'\?\)"),
    ("a response outside the family's support", lambda: bj.Model("y ~ x", DF.assign(y=-1.0), family="gamma"),
     ValueError, r"response 'y' must be positive \(> 0\) for the gamma family; row 0"),
    ("an unordered response for the cumulative family", lambda: bj.Model("y ~ x", DF.assign(y="a"),
                                                                          family="cumulative"),
     ValueError, r"must hold integers or an ordered pandas categorical for the cumulative family"),
    ("a keyword that is not a parameter of the family", lambda: bj.Model("y ~ x", DF, phi="~ x"),
     TypeError, r"the gaussian family has no parameter 'phi' to predict"),
    ("an unknown censoring code", lambda: bj.Model("y ~ x", DF.assign(c="sideways"), cens="c"),
     ValueError, r"censoring column 'c' has 'sideways' at row 0"),
    ("interval censoring without its bound", lambda: bj.Model("y ~ x", DF.assign(c="interval"), cens="c"),
     ValueError, r"row 0 is interval censored, which needs its upper bound"),
    ("negative weights", lambda: bj.Model("y ~ x", DF.assign(w=-1.0), weights="w"),
     ValueError, r"weights column 'w' must hold finite numbers >= 0; row 0"),
    ("an offset that is not finite", lambda: bj.Model("k ~ x + offset(log(z))", DF.assign(z=0.0),
                                                       family="poisson"),
     ValueError, r"is -inf at row 0"),
    ("a prior for a parameter the model lacks", lambda: bj.Model("y ~ x + (1 | g)", DF,
                                                                 priors={"sd_h": dist.HalfNormal(1.0)}),
     ValueError, r"no parameter of this model is named 'sd_h'"),
    ("a prior with the wrong support", lambda: bj.Model("y ~ x + (1 | g)", DF, priors={"sigma": dist.Normal(0, 1)}),
     ValueError, r"priors\['sigma'\] has support Real\(\), but the parameter is positive"),
    ("a parameterization for an unknown grouping", lambda: bj.Model("y ~ x + (1 | g)", DF,
                                                                    parameterization={"h": "centered"}),
     ValueError, r"parameterization names the grouping 'h', which is not in the formula; groupings are \['g'\]"),
    ("a learned centeredness in fit_many", lambda: bj.fit_many("y ~ x + (1 | g)", [DF, DF], parameterization="auto"),
     ValueError, r"fit_many does not learn a centeredness per dataset \(parameterization 'auto'\)"),
    ("columns of different lengths", lambda: bj.Model("y ~ x", {"y": [1.0, 2.0, 3.0], "x": [1.0, 2.0]}),
     ValueError, r"the columns of data have different lengths: \{'y': 3, 'x': 2\}"),
    ("a dataset with no rows", lambda: bj.Model("y ~ x + (1 | g)", DF.iloc[:0]),
     ValueError, r"the data have no rows"),
    ("duplicated column names", lambda: bj.Model("y ~ x + (1 | g)", pd.concat([DF, DF[["x"]]], axis=1)),
     ValueError, r"data has the column 'x' more than once; every column needs its own name"),
    ("a discrete latent site", lambda: bj.sample(discrete_latent, {"y": Y}, **S),
     ValueError, r"site 'z' is a discrete latent variable \(BernoulliProbs\): NUTS moves only continuous"),
    ("a group label of another type than in training",
     lambda: new_design(bj.Model("y ~ x + (1 | k)", DF).spec, DF.assign(k=DF["k"].astype(str)), groups="new"),
     TypeError, r"'k' has the label '0' \(str\), which is not a fitted label, but 0 \(int\) is: the labels' "
                r"types differ"),
    ("a predictor level never seen in training", lambda: new_design(bj.Model("y ~ x + g", DF).spec, DF.assign(g="z")),
     ValueError, r"column 'g' of new_data has 1 level\(s\) not seen in training: 'z'. In the population terms, "
                 r"the model has coefficients only for the levels \['a', 'b'\]"),
    ("saving a fit whose prior the file cannot hold", save_unstorable_prior,
     TypeError, r"cannot store the prior priors\['sd_g'\] = MyPrior: its class .*MyPrior is not one of "
                r"numpyro.distributions"),
    ("saving a fit whose data column mixes value types",
     lambda: bj.Model("y ~ x", DF.assign(x=pd.Series([1, "a"] * 10, dtype=object))).to_record(),
     TypeError, r"cannot store the data column 'x' of this formula model: it holds values of the types "
                r"\['int', 'str'\]"),
    ("loading with a model that is not the fit's", load_with_another_model,
     ValueError, r"model='counts' is not the model of fit file '.*f.bhm': it has no site 'mu', which the draws hold"),
]


# Rows whose error shows only when the model runs on the data: the model check, done where the run's
# init program found a chain starting badly (its chunk, the sampler, is never run).
FOUND_BY_THE_MODEL_CHECK = {"observed data outside the support"}  # the others: the abstract trace
# Not the model's: the abstract trace ("probe", jax.eval_shape: nothing compiled). The run's keys are
# made on the host and its data staged without a program: no other small program compiles.
MODEL_FREE = {"probe"}
MODEL_CHECK_PROGRAM = [("trace", "run"), ("lower", "jit(run)"), ("compile", "jit(run)")]  # bj.check_model's
INIT_PROGRAM = [("trace", "init"), ("lower", "jit(init)"), ("compile", "jit(init)")]
CHECKS_PROGRAM = [("trace", "checks"), ("lower", "jit(checks)"), ("compile", "jit(checks)")]
CHUNK_BESIDE = [("trace", "chunk"), ("lower", "jit(chunk)")]  # its ("compile", "jit(chunk)") may come later


@pytest.mark.parametrize("case", CATALOG, ids=[c[0] for c in CATALOG])
def test_catalogued_bad_input_raises_its_documented_error(case, monkeypatch):
    name, thunk, exc, match = case
    getattr(thunk, "prepare", lambda: None)()  # inputs that take compiled work to make (a fit file)
    before = sampling.trace_counts()
    with fresh_caches(monkeypatch), compile_log() as compiled:
        with pytest.raises(exc, match=match):
            thunk()
    checked = name in FOUND_BY_THE_MODEL_CHECK
    assert sampling.trace_counts() == {**before, "init": before["init"] + checked, "collect": before["collect"] + checked}
    allowed = INIT_PROGRAM + CHECKS_PROGRAM + CHUNK_BESIDE if checked else []
    compiled = [c for c in compiled if c[1] not in MODEL_FREE and c != ("compile", "jit(chunk)")]
    assert sorted(compiled) == sorted(allowed), f"{name!r} compiled {compiled} before raising"


def test_compile_log_sees_work_done_earlier_in_the_process(monkeypatch):
    """Negative control of the harness: work cached by an earlier call is seen again.

    The model check and an eager operation run once outside; inside the harness both
    show up (without ``fresh_caches`` neither would, being cached).
    """
    import jax.numpy as jnp

    sampler.check_model(normal_model, {"y": Y}, {})
    jnp.exp(jnp.asarray(Y))
    with compile_log() as cached:
        sampler.check_model(normal_model, {"y": Y}, {})
        jnp.exp(jnp.asarray(Y))
    assert cached == []
    with fresh_caches(monkeypatch), compile_log() as seen:
        sampler.check_model(normal_model, {"y": Y}, {})
        jnp.exp(jnp.asarray(Y))
    assert set(seen) >= {*MODEL_CHECK_PROGRAM, ("compile", "jit(exp)")}, seen


def test_catalog_is_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [name for name, *_ in CATALOG if name not in readme]
    assert not missing, f"README's bad-input catalog lacks: {missing}"
