"""fit.save / bj.load round trips and rejects damaged files (the ArviZ export: test_arviz.py)."""

import os

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import bhmjax as bj

from ._models import eight_schools_noncentered as noncentered  # noqa: E402
from bhmjax import io  # noqa: E402

SCHOOLS = ["Choate", "Deerfield", "Phillips Andover", "Phillips Exeter", "Hotchkiss", "Lawrenceville",
           "St. Paul's", "Mt. Hermon"]


@pytest.fixture(scope="module")
def fit(eight_schools):
    data = eight_schools
    return bj.sample(noncentered, data, chains=4, warmup=300, draws=300, seed=3, progress=False, x64=True,
                     coords={"school": SCHOOLS}, dims={"theta": ["school"], "eta": ["school"]})


@pytest.fixture(scope="module")
def saved(fit, tmp_path_factory):
    path = tmp_path_factory.mktemp("fits") / "schools.bhm"
    fit.save(path)
    return path


# ----------------------------------------------------------------------- save / load


def test_round_trip_is_bit_for_bit(fit, saved):
    loaded = bj.load(saved)
    assert loaded.model is noncentered and loaded.spec is None and loaded.state is None  # found by module:qualname
    for mine, theirs in [(fit.draws, loaded.draws), (fit.stats, loaded.stats)]:
        assert list(mine) == list(theirs)
        for k in mine:
            assert theirs[k].dtype == mine[k].dtype and theirs[k].shape == mine[k].shape
            assert theirs[k].tobytes() == np.asarray(mine[k]).tobytes(), k
    assert loaded.timings == fit.timings and loaded.num_grad_evals == fit.num_grad_evals
    assert loaded.settings == fit.settings
    assert loaded.coords == {"school": SCHOOLS} and loaded.dims == fit.dims and loaded.names == fit.names
    assert loaded.data["J"] == 8 and np.array_equal(loaded.data["y"], fit.data["y"])
    assert loaded.summary().equals(fit.summary())
    assert str(loaded.diagnose(verbose=False)) == str(fit.diagnose(verbose=False))
    assert loaded.extras["log_likelihood"]["y"].shape == (4, 300, 8)


def test_file_is_a_plain_npz_with_versions(saved):
    with np.load(saved, allow_pickle=False) as npz:
        assert "draws/tau" in npz.files and npz["draws/tau"].shape == (4, 300)
    meta = io.read_meta(saved)
    assert meta["format_version"] == io.FORMAT_VERSION
    assert set(meta["versions"]) >= {"bhmjax", "jax", "numpyro"}
    assert meta["timings"].keys() >= {"compile", "warmup", "sampling"}


def _offsets(size: int, count: int = 150, seed: int = 0) -> list[int]:
    step = max(1, size // count)
    rng = np.random.default_rng(seed)
    return sorted({0, 1, size - 1, *range(0, size, step), *rng.integers(0, size, 50).tolist()})


def test_truncated_files_are_rejected(saved, tmp_path):
    raw = saved.read_bytes()
    bad = tmp_path / "truncated.bhm"
    for k in _offsets(len(raw)):
        bad.write_bytes(raw[:k])
        with pytest.raises(bj.FitFileError, match="truncated or corrupted|not a bhmjax fit"):
            bj.load(bad)


def test_flipped_bytes_are_rejected(saved, tmp_path):
    raw = bytearray(saved.read_bytes())
    bad = tmp_path / "flipped.bhm"
    for k in _offsets(len(raw), seed=1):
        flipped = bytearray(raw)
        flipped[k] ^= 0x10
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match="checksum|truncated or corrupted|not a bhmjax fit"):
            bj.load(bad)


def test_newer_format_is_rejected(fit, tmp_path, monkeypatch):
    path = tmp_path / "future.bhm"
    monkeypatch.setattr(io, "FORMAT_VERSION", io.FORMAT_VERSION + 1)
    fit.save(path, log_likelihood=False)
    monkeypatch.undo()
    newer, current = io.FORMAT_VERSION + 1, io.FORMAT_VERSION
    with pytest.raises(bj.FitFileError, match=rf"format {newer}.*reads formats up to {current}\. Upgrade bhmjax"):
        bj.load(path)


def test_foreign_file_is_rejected(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.arange(3))
    with pytest.raises(bj.FitFileError, match="no checksum trailer"):
        bj.load(path)


def test_failed_write_leaves_the_old_file_intact(fit, saved, tmp_path, monkeypatch):
    target = tmp_path / "keep.bhm"
    target.write_bytes(saved.read_bytes())

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        fit.save(target)
    monkeypatch.undo()
    assert target.read_bytes() == saved.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.bhm"]  # no temporary file left


def test_save_into_missing_folder_says_so(fit, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fit.save(tmp_path / "nowhere" / "fit.bhm")


def test_no_temporary_files_after_save(fit, tmp_path):
    fit.save(tmp_path / "a.bhm")
    assert os.listdir(tmp_path) == ["a.bhm"]


def test_formula_style_names_and_site_order_survive(tmp_path):
    rng = np.random.default_rng(0)
    stats = {k: rng.normal(size=(2, 50)) for k in ["energy", "step_size", "tree_depth", "num_steps",
                                                   "accept_prob", "potential_energy"]}
    stats["diverging"] = np.zeros((2, 50), bool)
    fit = bj.Fit(draws={"b": rng.normal(size=(2, 50, 2)), "r_county": rng.normal(size=(2, 50, 5, 2)),
                        "L": rng.normal(size=(2, 50, 2, 2)), "Intercept": rng.normal(size=(2, 50))},
                 stats=stats, timings={"compile": 1.0}, num_grad_evals={"warmup": 3}, settings={"chains": 2},
                 coords={"county": list("abcde"), "term": ["Intercept", "floor"]},
                 dims={"r_county": ("county", "term")},
                 names={"b": ["floor", "x"], "L": [None, "cor[1,0]", None, None]},
                 data={"county": np.array(["a", "b"]), "n": 3, "obj": np.array([object(), 1], dtype=object)})
    loaded = bj.load(fit.save(tmp_path / "formula.bhm"))
    assert list(loaded.draws) == ["b", "r_county", "L", "Intercept"]
    assert loaded.names == fit.names and loaded.summary().equals(fit.summary())
    assert list(loaded.data) == ["county", "n"]  # object arrays are not stored (no pickle)
    assert loaded.param_names(["b", "r_county"])[:3] == ["floor", "x", "r_county[a, Intercept]"]


def test_formula_fit_with_0d_prior_arrays_round_trips(tmp_path):
    """Every formula model carries 0-d prior arrays; they must come back 0-d, not (1,)."""
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(5), 6)
    y = rng.normal(0.5 * g, 1.0)
    fit = bj.Model("y ~ 1 + (1 | g)", {"y": y, "g": g}).fit(chains=2, warmup=100, draws=50, seed=0,
                                                           progress=False)
    zero_d = [k for k, v in fit.data.items() if np.ndim(v) == 0 and isinstance(v, np.ndarray)]
    assert zero_d, "the test needs 0-d data arrays"
    loaded = bj.load(fit.save(tmp_path / "formula.bhm"))
    for k in zero_d:
        assert loaded.data[k].shape == () and loaded.data[k] == fit.data[k], k
    for k in fit.draws:
        assert loaded.draws[k].tobytes() == np.asarray(fit.draws[k]).tobytes(), k
    assert loaded.summary().equals(fit.summary())


def test_checkpoint_given_to_load_says_resume(tmp_path):
    meta = {"format": io.FORMAT_NAME, "format_version": io.FORMAT_VERSION, "kind": "checkpoint", "arrays": {}}
    path = tmp_path / "checkpoint.bhm"
    path.write_bytes(io._encode(meta, {}, compress=False))
    with pytest.raises(bj.FitFileError, match=r"is a checkpoint, not a saved fit; continue it with bj.resume"):
        bj.load(path)
