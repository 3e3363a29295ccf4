"""Property-based input fuzzing: every input either works or raises one of our errors.

"Our errors" are ValueError/TypeError raised by bhmjax's own code (the last frame
of the traceback is in the package), never a crash deep in JAX, NumPy or pandas,
and never a silently wrong shape.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bhmjax as bj
from bhmjax._src import data as data_lib
from bhmjax.sampler import check_model

PACKAGE = str(Path(bj.__file__).parent)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)


def raised_by_us(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(PACKAGE)


def expect_ours(fn, *args, **kwargs):
    """Run fn; return its value, or None after checking the error is one of ours."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as err:
        assert raised_by_us(err), "".join(traceback.format_exception(err))
        assert len(str(err)) > 20, f"unhelpful message: {err!r}"
        return None


labels = st.one_of(
    st.integers(-3, 5),
    st.sampled_from(["a", "b", "c", "Zürich", ""]),
    st.sampled_from([1.5, 2.0, float("nan")]),
    st.none(),
)


@FUZZ
@given(st.lists(labels, min_size=0, max_size=30))
def test_group_encoding_round_trips_or_names_the_problem(values):
    enc = expect_ours(bj.encode_groups, np.array(values, dtype=object), name="g")
    if enc is None:
        return
    assert enc.codes.shape == (len(values),)
    assert enc.codes.min() >= 0 and enc.codes.max() == enc.num_groups - 1
    back = [enc.labels[c] for c in enc.codes]
    assert back == list(values)  # nothing dropped or reordered


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.floats(-1e30, 1e30), st.floats(-1e-30, 1e-30))


@FUZZ
@given(st.dictionaries(st.sampled_from(["y", "x", "w"]),
                       st.one_of(st.lists(numbers, max_size=12), st.lists(st.text(max_size=3), max_size=4),
                                 st.integers(0, 5), st.booleans()),
                       min_size=1))
def test_data_checks_name_the_variable(data):
    def check():
        arrays, static = data_lib.split_data(data)
        data_lib.check_data(arrays)
        return arrays, static

    out = expect_ours(check)
    if out is None:
        return
    arrays, static = out
    assert set(arrays) | set(static) == set(data)
    for name, arr in arrays.items():
        assert arr.size > 0 and (arr.dtype.kind not in "f" or np.isfinite(arr).all()), name


@st.composite
def frames(draw):
    n = draw(st.integers(0, 25))
    columns = {}
    columns["y"] = draw(st.one_of(
        st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n),
        st.lists(st.one_of(st.floats(-5, 5), st.just(float("nan"))), min_size=n, max_size=n),
        st.lists(st.sampled_from(["1", "2", "x"]), min_size=n, max_size=n),
    ))
    scale = draw(st.sampled_from([1e-12, 1.0, 1e12]))
    columns["x"] = [v * scale for v in draw(st.lists(st.floats(-3, 3), min_size=n, max_size=n))]
    columns["g"] = draw(st.lists(st.one_of(st.sampled_from(["a", "b", "c"]), st.integers(0, 3)),
                                 min_size=n, max_size=n))
    if draw(st.booleans()):
        columns["g"] = pd.Categorical([str(v) for v in columns["g"]], categories=["a", "b", "c", "0", "1", "2", "3", "unused"])
    return pd.DataFrame(columns)


@FUZZ
@given(frames(), st.sampled_from(["y ~ 1 + x + (1 | g)", "y ~ x + (1 + x | g)", "y ~ 1 + (1 || g)",
                                  "y ~ 0 + x + (1 | g)", "y ~ C(g) + x", "y ~ x + (1 | nope)"]),
       st.sampled_from(["raise", "drop"]))
def test_formula_builder_builds_consistent_models_or_names_the_problem(frame, formula, na_action):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = expect_ours(bj.Model, formula, data=frame, na_action=na_action)
    if model is None:
        return
    data = model.data
    n = data["N"]
    assert n == len(frame) if na_action == "raise" else n <= len(frame)
    assert data["y"].shape == (n,)
    for key, value in data.items():
        if key.startswith(("X", "Z_")) and key != "X_mean":
            assert value.shape[0] == n, key
        if key.startswith("codes_"):
            g = data["G_" + key.split("_")[1]]
            assert value.min() >= 0 and value.max() < g, key
    arrays, static = data_lib.split_data(data)
    expect_ours(check_model, model.numpyro_model, arrays, static)


@pytest.mark.slow
def test_fuzzed_edge_cases_fit():
    """A single group of one row, empty categorical levels and tiny scales still fit."""
    frame = pd.DataFrame({
        "y": [0.1, 0.3, -0.2, 0.5, 0.0, 1.2],
        "x": np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) * 1e-6,
        "g": pd.Categorical(["a", "a", "b", "b", "b", "c"], categories=["a", "b", "c", "empty"]),
    })
    model = bj.Model("y ~ 1 + x + (1 | g)", data=frame)
    fit = model.fit(chains=2, warmup=150, draws=150, progress=False, seed=1)
    # Like lme4, a category level with no rows is not a group (prediction treats it as new).
    assert fit.draws["r_g"].shape == (2, 150, 3, 1)
    assert [n for n in fit.param_names() if n.startswith("r_g[")] == [
        "r_g[a, Intercept]", "r_g[b, Intercept]", "r_g[c, Intercept]"]
    assert np.isfinite(fit.draws["b"]).all()


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_float32_hierarchical_fits_stay_finite(scale):
    """float32 (the GPU default) on a correlated-slopes model at extreme data scales: no NaN.

    (Finite, not necessarily converged: at 1e-6 or 1e6 a short warmup has not adapted to
    the scale; standardizing the response first is the practical advice.)
    """
    rng = np.random.default_rng(5)
    g = rng.integers(0, 12, 240)
    x = rng.normal(size=240)
    y = (1.0 + rng.normal(0, 1, 12)[g] + (0.5 + rng.normal(0, 0.3, 12)[g]) * x + rng.normal(0, 1, 240)) * scale
    model = bj.Model("y ~ 1 + x + (1 + x | g)", {"y": y, "x": x, "g": g}, parameterization="centered")
    fit = model.fit(chains=2, warmup=150, draws=150, progress=False, seed=2, reduce=False)
    assert fit.draws["sigma"].dtype == np.float32
    for name, values in fit.draws.items():
        assert np.isfinite(values).all(), name
    for name in ("energy", "potential_energy", "step_size"):
        assert np.isfinite(fit.stats[name]).all(), name
