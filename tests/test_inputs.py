"""What users hand in (issue #15, items 7-8): other data frames, labels of other types, labels with commas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bhmjax as bj
from bhmjax.design import new_design

ARMS = ["placebo", "low", "high"]  # not alphabetical: the reference level must be placebo


def _pandas() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = 30
    return pd.DataFrame({"y": rng.normal(size=rows), "x": rng.normal(size=rows),
                         "arm": pd.Categorical(rng.choice(ARMS, rows), categories=ARMS),
                         "g": rng.choice(["s1", "s2", "s3"], rows), "k": rng.integers(0, 4, rows)})


def test_polars_frame_is_taken_as_pandas_is():
    pl = pytest.importorskip("polars")
    frame = _pandas()
    polars = pl.DataFrame({"y": frame["y"].to_numpy(), "x": frame["x"].to_numpy(),
                           "arm": pl.Series(frame["arm"].astype(str).to_list(), dtype=pl.Enum(ARMS)),
                           "g": frame["g"].to_list(), "k": frame["k"].to_numpy()})
    formula = "y ~ 1 + x + arm + (1 + x | g) + (1 | k)"
    ours, theirs = bj.Model(formula, frame), bj.Model(formula, polars)
    assert theirs.spec.fixed.columns == ours.spec.fixed.columns  # Enum order kept: placebo is the reference
    want, got = ours.model_data(), theirs.model_data()
    assert set(got) == set(want)
    for key in want:
        assert np.array_equal(np.asarray(got[key]), np.asarray(want[key])), key
    rows = new_design(ours.spec, frame.iloc[:5])[0]
    for key, value in new_design(ours.spec, polars.head(5))[0].items():  # new rows to predict, too
        assert np.array_equal(value, rows[key]), key


def test_a_label_of_another_type_is_not_sent_to_new_groups():
    enc = bj.encode_groups([0, 1, 2], name="school")
    for allow_new in (False, True):  # groups='new' would silently give the rows new effects
        with pytest.raises(TypeError, match=r"'school' has the label '1' \(str\), which is not a fitted label, but "
                                            r"1 \(int\) is: the labels' types differ") as err:
            enc.encode(["1", "2"], allow_new=allow_new)
        assert "groups='new'" not in str(err.value)
    assert enc.encode([5], allow_new=True)[1] == (5,)  # a really new level is still new


def test_labels_with_commas_or_brackets_make_unambiguous_names():
    labels = ["x,y", "x", "y", "a[1]", "it's", " pad"]
    draws = {"r_g": np.zeros((1, 3, len(labels), 2)), "mu": np.zeros((1, 3))}
    fit = bj.Fit(draws=draws, stats={"diverging": np.zeros((1, 3), bool)}, timings={}, num_grad_evals={},
                 settings={}, coords={"g": labels, "term": ["Intercept", "x"]}, dims={"r_g": ["g", "term"]})
    names = fit.param_names()
    assert names[:4] == ["r_g['x,y', Intercept]", "r_g['x,y', x]", "r_g[x, Intercept]", "r_g[x, x]"]
    assert "r_g['a[1]', x]" in names and "r_g[it's, Intercept]" in names and "r_g[' pad', x]" in names
    assert len(set(names)) == len(names) and names[-1] == "mu"


def test_labels_are_quoted_only_where_a_name_would_be_ambiguous():
    """ArviZ writes eta[St. Paul's]: an apostrophe inside a label is not ambiguous; commas, brackets,
    leading or trailing quotes and blanks are."""
    from bhmjax._src.naming import quote_label

    assert quote_label("St. Paul's") == "St. Paul's" and quote_label("plain") == "plain"
    for label in ("x,y", "a[1]", "'a", 'a"', " a"):
        assert quote_label(label) == repr(label)
