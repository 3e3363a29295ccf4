"""Property-based input fuzzing, with separate strategies for valid and invalid inputs.

* Valid inputs must work, and what comes out is checked against an independent
  source: group codes map back to the very labels given (a label round trip), and a
  formula model's design arrays equal formulaic's own model matrices of the formula's
  parts on the same rows.
* Invalid inputs are valid ones with exactly one defect put in (a NaN at a known row, a
  constant predictor, a single group level, a missing column, text where numbers
  belong, mixed label types, an infinite value): each must raise our own ValueError/TypeError naming the
  culprit (the variable or column, and the row where there is one), never a crash deep
  in JAX, NumPy, pandas or formulaic.

Profiles (registered in ``tests/conftest.py``): the ``quick`` one, loaded by default, is derandomized and
quick, so ``make test`` is reproducible; ``make fuzz`` runs the ``fuzz`` profile
(random, ``BHMJAX_FUZZ_EXAMPLES`` examples per test, 2,000 by default) for longer hunts.
"""

from __future__ import annotations

import re
import traceback
import warnings
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from formulaic import model_matrix
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import bhmjax as bj
from bhmjax._src import data as data_lib

PACKAGE = str(Path(bj.__file__).parent)


def raised_by_us(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(PACKAGE)


def expect_our_error(fn, error, pattern: str) -> BaseException:
    """``fn()`` must raise ``error`` from bhmjax's code with a message matching ``pattern``."""
    with pytest.raises(error, match=pattern) as info:
        fn()
    assert raised_by_us(info.value), "".join(traceback.format_exception(info.value))
    return info.value


# ---------------------------------------------------------------- group labels

ints = st.integers(-1000, 1000)
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
LABEL_KINDS = {"int": ints, "str": texts, "float": finite}


@st.composite
def valid_labels(draw):
    """1 to 40 labels of one type (ints, strings or finite floats)."""
    kind = draw(st.sampled_from(sorted(LABEL_KINDS)))
    return draw(st.lists(LABEL_KINDS[kind], min_size=1, max_size=40))


@given(valid_labels())
def test_valid_labels_round_trip(values):
    enc = bj.encode_groups(np.array(values, dtype=object), name="g")
    distinct = set(values)
    assert enc.num_groups == len(distinct) and set(enc.labels) == distinct
    assert list(enc.labels) == sorted(distinct)  # numbers numerically, strings alphabetically
    assert enc.codes.dtype == np.int32 and enc.codes.shape == (len(values),)
    assert [enc.labels[c] for c in enc.codes] == list(values)  # nothing dropped or reordered
    again, new = enc.encode(values)
    np.testing.assert_array_equal(again, enc.codes)
    assert new == ()


@given(valid_labels(), st.data())
def test_categorical_labels_keep_the_category_order(values, data):
    categories = sorted(set(values), key=repr)
    extra = "never-used" if not isinstance(values[0], str) or "never-used" not in values else "other"
    if isinstance(values[0], str):
        categories = categories + [extra]
    order = data.draw(st.permutations(categories))
    enc = bj.encode_groups(pd.Categorical(values, categories=order), name="g")
    assert enc.labels == tuple(order)  # unused categories stay groups, in the category order
    assert [enc.labels[c] for c in enc.codes] == list(values)


@given(valid_labels(), st.data())
def test_unseen_levels_are_named(values, data):
    enc = bj.encode_groups(values, name="school")
    fresh = data.draw(LABEL_KINDS[{int: "int", str: "str", float: "float"}[type(values[0])]]
                      .filter(lambda v: v not in set(values)))
    expect_our_error(lambda: enc.encode(list(values) + [fresh]), ValueError,
                     rf"'school' has 1 level\(s\) not seen in training: {re.escape(repr(fresh))}")
    codes, new = enc.encode([fresh], allow_new=True)
    assert codes.tolist() == [enc.num_groups] and new == (fresh,)


@given(valid_labels(), st.sampled_from([None, float("nan")]), st.data())
def test_missing_labels_are_named_by_row(values, missing, data):
    row = data.draw(st.integers(0, len(values)))
    labels = list(values[:row]) + [missing] + list(values[row:])
    expect_our_error(lambda: bj.encode_groups(np.array(labels, dtype=object), name="g"), ValueError,
                     rf"group variable 'g' has 1 missing label\(s\), first at row {row};")


@given(st.lists(ints, min_size=1, max_size=10), st.lists(texts, min_size=1, max_size=10), st.randoms())
def test_mixed_label_types_are_refused(numbers, strings, random):
    labels = numbers + strings
    random.shuffle(labels)
    expect_our_error(lambda: bj.encode_groups(np.array(labels, dtype=object), name="g"), TypeError,
                     r"group variable 'g' mixes label types that cannot be ordered \(\['int', 'str'\]\); "
                     "convert it to str")


def test_empty_labels_are_refused():
    expect_our_error(lambda: bj.encode_groups(np.array([], dtype=object), name="g"), ValueError,
                     "group variable 'g' is empty")


# ---------------------------------------------------------------- data dicts for bj.sample

NAMES = ["y", "x", "w", "counts"]


@st.composite
def valid_arrays(draw):
    """A data dict: 1 to 4 finite numeric arrays (1-d or 2-d, not empty) and static values."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    out = {}
    for name in names:
        shape = draw(st.sampled_from([(1,), (7,), (3, 2)]))
        kind = draw(st.sampled_from(["float64", "float32", "int64", "bool"]))
        size = int(np.prod(shape))
        if kind == "bool":
            values = draw(st.lists(st.booleans(), min_size=size, max_size=size))
        elif kind == "int64":
            values = draw(st.lists(ints, min_size=size, max_size=size))
        else:
            values = draw(st.lists(st.floats(allow_nan=False, allow_infinity=False,
                                             width=32 if kind == "float32" else 64), min_size=size, max_size=size))
        out[name] = np.array(values, dtype=kind).reshape(shape)
    if draw(st.booleans()):
        out["num_groups"] = draw(st.integers(1, 5))
    if draw(st.booleans()):
        out["link"] = draw(st.sampled_from(["log", "identity"]))
    return out


@given(valid_arrays())
def test_valid_data_pass_unchanged(data):
    arrays, static = data_lib.split_data(data)
    data_lib.check_data(arrays)
    assert set(static) == {k for k in data if not isinstance(data[k], np.ndarray)}
    assert list(arrays) == [k for k in data if isinstance(data[k], np.ndarray)]  # order kept
    for name, value in arrays.items():
        assert value.dtype == data[name].dtype and np.array_equal(value, data[name]), name
    assert all(static[k] == data[k] for k in static)


@given(valid_arrays(), st.sampled_from(["nan", "inf", "-inf"]), st.data())
def test_non_finite_values_are_named_by_variable_and_row(data, bad, draw):
    floats = [k for k, v in data.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
    assume(floats)
    name = draw.draw(st.sampled_from(floats))
    arr = data[name].copy()
    flat = draw.draw(st.integers(0, arr.size - 1))
    arr.reshape(-1)[flat] = float(bad)
    data = {**data, name: arr}
    row = np.unravel_index(flat, arr.shape)[0]
    what = "NaN" if bad == "nan" else "inf"

    def check():
        arrays, _ = data_lib.split_data(data)
        data_lib.check_data(arrays)

    expect_our_error(check, ValueError,
                     rf"data\['{name}'\] has 1 non-finite value\(s\); the first is {what} at row {row}\.")


@given(valid_arrays(), st.sampled_from(NAMES), st.sampled_from(["empty", "text"]))
def test_empty_or_text_arrays_are_named(data, name, defect):
    data = dict(data)
    data[name] = np.array([], dtype=float) if defect == "empty" else np.array(["a", "1"])

    def check():
        arrays, _ = data_lib.split_data(data)
        data_lib.check_data(arrays)

    if defect == "empty" and all(v.size for k, v in data.items() if isinstance(v, np.ndarray) and k != name):
        expect_our_error(check, ValueError, rf"data\['{name}'\] is empty \(shape \(0,\)\)")
    elif defect == "text":
        expect_our_error(check, TypeError, rf"data\['{name}'\] has dtype <U1; the model needs numbers")


# ---------------------------------------------------------------- formula models

# (formula, population part, group terms as (expr, grouping), whether x is a population slope)
FORMULAS = [
    ("y ~ 1 + x + (1 | g)", "1 + x", [("1", "g")]),
    ("y ~ x + (1 + x | g)", "x", [("1 + x", "g")]),
    ("y ~ 1 + (1 || g)", "1", [("1", "g")]),
    ("y ~ 0 + x + (1 | g)", "0 + x", [("1", "g")]),
    ("y ~ x + C(c) + (1 | g)", "x + C(c)", [("1", "g")]),
    ("y ~ 1 + x + (1 + x || g) + (1 | h)", "1 + x", [("1 + x", "g"), ("1", "h")]),
]
GROUP_KINDS = ["int", "str", "categorical"]
# Building a model is slower than encoding labels, and every formula and defect gets its own
# test: a sixth of the profile's examples each.
FORMULA_SETTINGS = settings(max_examples=max(10, settings.default.max_examples // 6))


def group_column(draw, n: int, kind: str, pool_size: int):
    """n group labels of one kind from a pool of >= 2 levels; rows 0 and 1 differ."""
    pool = draw(st.lists(ints if kind == "int" else texts.filter(bool), min_size=pool_size,
                         max_size=pool_size, unique=True))
    values = [pool[0], pool[1]] + draw(st.lists(st.sampled_from(pool), min_size=n - 2, max_size=n - 2))
    if kind == "categorical":
        categories = draw(st.permutations(pool)) + ["unused level"] * ("unused level" not in pool)
        return pd.Categorical(values, categories=categories)
    return values


@st.composite
def valid_frames(draw, with_missing: bool = False):
    """Data every formula of FORMULAS fits: finite y, non-constant x, >= 2 levels of g, h and c.

    Rows 0 and 1 are complete and differ in x, g, h and c, so the design stays valid when
    ``with_missing`` puts NaNs in later rows (for ``na_action="drop"``).
    """
    n = draw(st.integers(4, 30))
    scale = draw(st.sampled_from([1e-6, 1.0, 1e6]))
    x = draw(st.lists(st.floats(-3, 3), min_size=n, max_size=n))
    x[1] = x[0] + draw(st.floats(0.1, 3.0))
    frame = pd.DataFrame({
        "y": draw(st.lists(st.floats(-1e3, 1e3), min_size=n, max_size=n)),
        "x": np.asarray(x) * scale,
        "g": group_column(draw, n, draw(st.sampled_from(GROUP_KINDS)), draw(st.integers(2, 6))),
        "h": group_column(draw, n, draw(st.sampled_from(GROUP_KINDS)), 2),
        "c": group_column(draw, n, "str", 3),
    })
    if with_missing:
        for col in draw(st.lists(st.sampled_from(["y", "x", "g", "c"]), max_size=3, unique=True)):
            rows = draw(st.lists(st.integers(2, n - 1), max_size=3, unique=True))
            if col == "g" and isinstance(frame["g"].dtype, pd.CategoricalDtype):
                frame["g"] = frame["g"].astype(object)
            frame.loc[rows, col] = None if col in ("g", "c") else np.nan
    return frame


def formula_columns(formula: str) -> list[str]:
    return [c for c in ("y", "x", "g", "h", "c") if re.search(rf"\b{c}\b", formula)]


frames_and_na_action = st.sampled_from(["raise", "drop"]).flatmap(
    lambda na_action: st.tuples(valid_frames(with_missing=na_action == "drop"), st.just(na_action)))


@pytest.mark.parametrize("case", FORMULAS, ids=[f[0] for f in FORMULAS])
@FORMULA_SETTINGS
@given(frames_and_na_action)
def test_valid_formula_data_build_formulaics_design(case, frame_and_na_action):
    frame, na_action = frame_and_na_action
    formula, fixed, terms = case
    complete = frame.dropna(subset=formula_columns(formula)).reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # na_action="drop" says how many rows it dropped
        model = bj.Model(formula, frame, na_action=na_action)
    data = model.model_data(x64=True)
    assert data["N"] == len(complete)
    np.testing.assert_array_equal(data["y"], complete["y"].to_numpy(float))
    reference = model_matrix(fixed, complete)
    columns = [c for c in reference.columns if c != "Intercept"]
    assert model.spec.fixed.columns == tuple(columns) and model.spec.fixed.intercept == ("Intercept" in
                                                                                        reference.columns)
    if columns:
        np.testing.assert_array_equal(data["X"], reference[columns].to_numpy(float))
    for i, (expr, grouping) in enumerate(terms):
        z = model_matrix(expr, complete)
        np.testing.assert_array_equal(data[f"Z_{i}"], z.to_numpy(float))
        labels = model.spec.groups[i].encoding.labels
        codes = data[f"codes_{i}"]
        assert data[f"G_{i}"] == len(labels) == complete[grouping].nunique()
        assert codes.min() >= 0 and codes.max() < len(labels)
        assert [labels[c] for c in codes] == list(complete[grouping])  # the label round trip
    log_density_shape(model, data)


def log_density_shape(model, data) -> None:
    """The generated model runs on its data (traced abstractly: nothing is compiled)."""
    from numpyro import handlers
    from numpyro.infer.util import log_density

    arrays, static = data_lib.split_data(data)

    def density(arrays):
        with handlers.seed(rng_seed=0):
            params = {k: v["value"] for k, v in handlers.trace(model.numpyro_model).get_trace(
                **arrays, **static).items() if v["type"] == "sample" and not v["is_observed"]}
        return log_density(model.numpyro_model, (), {**arrays, **static}, params)[0]

    out = jax.eval_shape(density, arrays)
    assert out.shape == ()


DEFECTS = ["nan", "inf", "constant", "single_level", "missing_column", "text_response", "mixed_labels"]


@pytest.mark.parametrize("defect", DEFECTS)
@FORMULA_SETTINGS
@given(valid_frames(), st.sampled_from(FORMULAS), st.data())
def test_invalid_formula_data_name_the_column(defect, frame, case, data):
    formula, fixed, terms = case
    frame = frame.copy()
    n = len(frame)
    x_in_population = "x" in fixed
    if defect == "nan":
        col = data.draw(st.sampled_from([c for c in formula_columns(formula) if c != "y"]))
        row = data.draw(st.integers(0, n - 1))
        frame[col] = frame[col].astype(object)
        frame.loc[row, col] = None
        error, pattern = ValueError, rf"column '{col}' has 1 missing value\(s\), the first at row {row}\."
    elif defect == "inf":
        col = data.draw(st.sampled_from([c for c in ("y", "x") if c in formula_columns(formula)]))
        row = data.draw(st.integers(0, n - 1))
        frame.loc[row, col] = data.draw(st.sampled_from([np.inf, -np.inf]))
        error, pattern = ValueError, rf"column '{col}' has 1 infinite value\(s\), the first at row {row} "
    elif defect == "constant":
        assume(x_in_population and "0 +" not in fixed)
        frame["x"] = frame["x"].iloc[0]
        error, pattern = ValueError, r"predictor column 'x' is constant"
    elif defect == "single_level":
        grouping = terms[0][1]
        frame[grouping] = [frame[grouping].iloc[0]] * n
        error, pattern = ValueError, rf"grouping '{grouping}' has a single level"
    elif defect == "missing_column":
        col = data.draw(st.sampled_from([c for c in formula_columns(formula) if c != "y"]))
        frame = frame.drop(columns=col)
        error, pattern = ValueError, rf"column '{col}' named in the formula is not in the data"
    elif defect == "text_response":
        frame["y"] = [f"v{i}" for i in range(n)]
        error, pattern = ValueError, r"response 'y' has dtype object; the gaussian family needs numbers"
    else:
        grouping = terms[0][1]
        frame[grouping] = [i if i % 2 else f"s{i}" for i in range(n)]
        error, pattern = ValueError, rf"{re.escape(f'({terms[0][0]} | {grouping})')}: group variable '{grouping}' mixes label types"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expect_our_error(lambda: bj.Model(formula, frame), error, pattern)


# ---------------------------------------------------------------- fitting edge cases


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
