"""Checkpoints: a killed run resumes to the same draws bit for bit; bad checkpoints are refused."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bhmjax as bj
from bhmjax import checkpoint as ckpt
from bhmjax.io import FitFileError

from . import _ckpt_model as cm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def uninterrupted():
    return bj.sample(cm.model, cm.data(), **cm.SETTINGS)


def _meta(folder: Path) -> dict | None:
    try:
        return ckpt.read(folder)[0]
    except (FileNotFoundError, FitFileError):
        return None


def _progress(folder: Path) -> int:
    meta = _meta(folder)
    return -1 if meta is None else meta["run"]["draws_done"] * cm.SETTINGS["chains"]


def _child(folder: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests._ckpt_model", str(folder), *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait(child: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and child.poll() is None and not ready():
        time.sleep(0.02)
    assert child.poll() is None, f"child ended before it could be killed: {child.stderr.read()[-2000:]}"


@pytest.mark.slow
def test_sigkill_mid_sampling_then_resume_gives_identical_draws(tmp_path, uninterrupted):
    """A second writer is refused while the first runs; after a SIGKILL the run resumes bit for bit."""
    folder = tmp_path / "run"
    child = _child(folder)
    total = cm.SETTINGS["chains"] * cm.SETTINGS["draws"]
    _wait(child, lambda: _progress(folder) >= 200)
    with pytest.raises(RuntimeError, match=f"being written by process {child.pid} on"):
        bj.sample(cm.model, cm.data(), checkpoint=folder, **cm.SETTINGS)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = _progress(folder)
    assert 0 < done < total, done
    fit = bj.resume(folder, progress=False)  # the model is found by its import path; the dead claim is taken over
    for name in ("mu", "sigma"):
        np.testing.assert_array_equal(fit.draws[name], uninterrupted.draws[name])
    np.testing.assert_array_equal(fit.stats["diverging"], uninterrupted.stats["diverging"])
    assert not (folder / ckpt.OWNER_FILE).exists()  # released when done


@pytest.mark.slow
def test_sigkill_during_warmup_then_resume_gives_identical_draws(tmp_path):
    folder = tmp_path / "run"
    child = _child(folder, "warmup")
    warm = lambda: (_meta(folder) or {"run": {"warmup_done": 0}})["run"]["warmup_done"] >= 100  # noqa: E731
    _wait(child, warm)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    meta = _meta(folder)
    assert 0 < meta["run"]["warmup_done"] < cm.LONG_WARMUP["warmup"] and meta["run"]["draws_done"] == 0
    fit = bj.resume(folder, progress=False)
    reference = bj.sample(cm.model, cm.data(), **cm.LONG_WARMUP)
    for name in ("mu", "sigma"):
        np.testing.assert_array_equal(fit.draws[name], reference.draws[name])
    np.testing.assert_array_equal(fit.stats["step_size"], reference.stats["step_size"])
    assert fit.num_grad_evals == reference.num_grad_evals


def test_checkpointed_run_equals_plain_run_and_can_be_extended(tmp_path, uninterrupted):
    short = bj.sample(cm.model, cm.data(), **{**cm.SETTINGS, "draws": 1000},
                      checkpoint=tmp_path / "short")
    np.testing.assert_array_equal(short.draws["mu"], uninterrupted.draws["mu"][:, :1000])
    longer = short.extend(2000)
    np.testing.assert_array_equal(longer.draws["mu"], uninterrupted.draws["mu"])
    assert longer.settings["draws"] == 3000 and longer.stats["diverging"].shape == (2, 3000)


def test_checkpoint_of_other_model_or_data_is_refused(tmp_path):
    folder = tmp_path / "run"
    settings = {**cm.SETTINGS, "draws": 100}
    bj.sample(cm.model, cm.data(), checkpoint=folder, **settings)
    other = {"y": cm.data()["y"] + 1.0}
    with pytest.raises(ValueError, match="different model, data or settings"):
        bj.sample(cm.model, other, checkpoint=folder, **settings)

    def another_model(y):
        cm.model(y)

    with pytest.raises(ValueError, match="refusing to resume"):
        bj.resume(folder, model=another_model)


def test_corrupted_or_missing_checkpoint_is_rejected(tmp_path):
    folder = tmp_path / "run"
    bj.sample(cm.model, cm.data(), checkpoint=folder, **{**cm.SETTINGS, "draws": 100})
    path = folder / ckpt.CHECKPOINT_FILE
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FitFileError, match="truncated or corrupted"):
        bj.resume(folder)
    flipped = bytearray(raw)
    flipped[len(raw) // 3] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(FitFileError, match="checksum"):
        bj.resume(folder)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        bj.resume(tmp_path / "nowhere")


SMALL = {**cm.SETTINGS, "draws": 100}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished checkpointed run of 100 draws."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    return folder, bj.sample(cm.model, cm.data(), checkpoint=folder, **SMALL)


@pytest.mark.parametrize("change, named", [
    ({"adaptation": "stan"}, r"adaptation \(checkpoint: 'hybrid', now: 'stan'\)"),
    ({"init_strategy": "median"}, r"init_strategy \(checkpoint: 'uniform', now: 'median'\)"),
    ({"draws": 150}, r"draws \(checkpoint: 100, now: 150\).*bj\.resume\(folder\)\.extend\(n\)"),
    ({"seed": 8, "thin": 2}, r"seed \(checkpoint: 7, now: 8\); thin \(checkpoint: 1, now: 2\)"),
])
def test_reusing_a_checkpoint_with_other_settings_names_them(finished, change, named):
    folder, _ = finished
    with pytest.raises(ValueError, match=named):
        bj.sample(cm.model, cm.data(), checkpoint=folder, **{**SMALL, **change})


def test_reusing_a_checkpoint_with_the_same_settings_returns_its_run(finished):
    folder, fit = finished
    again = bj.sample(cm.model, cm.data(), checkpoint=folder, **{**SMALL, "every": 30})  # chunking is not a setting
    np.testing.assert_array_equal(again.draws["mu"], fit.draws["mu"])


def test_unwritable_checkpoint_folder_is_refused_before_compiling(tmp_path):
    from bhmjax._src import engine

    def fresh(y):  # a model nothing has compiled yet
        cm.model(y)

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    before = engine.trace_counts()
    with pytest.raises(OSError, match="cannot create the checkpoint folder .*a_file/run"):
        bj.sample(fresh, cm.data(), checkpoint=blocker / "run", **SMALL)
    assert engine.trace_counts() == before


def test_a_full_disk_keeps_sampling_and_the_draws_in_memory(tmp_path, monkeypatch):
    from bhmjax import io

    plain = bj.sample(cm.model, cm.data(), **SMALL)
    writes, real = [], io._write_atomic

    def fills_up(path, payload):
        writes.append(path)
        if len(writes) > 5:  # warmup 200 and 50 draws per chain made it to disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, payload)

    monkeypatch.setattr(io, "_write_atomic", fills_up)
    with pytest.warns(RuntimeWarning, match=r"failed \(the disk is full\).*keeps the draws in memory.*"
                                            r"last good checkpoint on disk holds 200 warmup steps and 50 draws"):
        fit = bj.sample(cm.model, cm.data(), checkpoint=tmp_path / "run", **SMALL)
    np.testing.assert_array_equal(fit.draws["mu"], plain.draws["mu"])
    status = fit.settings["checkpoint"]
    assert status["last_good"]["draws"] == 50 and status["failed_writes"] == 1 and "full" in status["error"]
    assert _meta(tmp_path / "run")["run"]["draws_done"] == 50  # the last good one is whole on disk


def test_ctrl_c_keeps_the_draws_and_the_checkpoint_resumes(tmp_path, monkeypatch):
    from bhmjax import runner

    plain = bj.sample(cm.model, cm.data(), **SMALL)
    calls, update = [], runner.Progress.update

    def interrupted(self, n, phase):
        calls.append(phase)
        if calls.count("sampling") == 1:
            raise KeyboardInterrupt
        update(self, n, phase)

    monkeypatch.setattr(runner.Progress, "update", interrupted)
    try:  # an escaping KeyboardInterrupt would stop the whole pytest session instead of failing this test
        with pytest.warns(RuntimeWarning, match=r"interrupted: keeping the 50 draws per chain.*bj\.resume"):
            fit = bj.sample(cm.model, cm.data(), checkpoint=tmp_path / "run", **SMALL)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C after the first 50 draws propagated out of bj.sample instead of keeping them")
    assert fit.num_draws == 50 and fit.settings["draws"] == 50
    np.testing.assert_array_equal(fit.draws["mu"], plain.draws["mu"][:, :50])
    monkeypatch.setattr(runner.Progress, "update", update)
    np.testing.assert_array_equal(bj.resume(tmp_path / "run", progress=False).draws["mu"], plain.draws["mu"])


_FORMULA = """
import sys, numpy as np, pandas as pd, bhmjax as bj
rng = np.random.default_rng(0)
df = pd.DataFrame({"y": rng.normal(size=40), "x": rng.normal(size=40), "g": np.arange(40) % 4})
first = sys.argv[2]
if first == "other":
    bj.Model("y ~ 1 + x", df)  # built first: a process-order counter would shift
centered = bj.Model("y ~ 1 + (1 | g)", df, parameterization="centered")
twin = bj.Model("y ~ 1 + (1 | g)", df, parameterization="noncentered")
model = twin if first == "twin" else centered
try:
    # sampled group effects: integrated out (the default) the two parameterizations are one model
    fit = model.fit(chains=1, warmup=30, draws=20, seed=1, progress=False, checkpoint=sys.argv[1], every=25,
                    marginalize=False)
    print("ok", repr(float(fit.draws["sd_g"].sum())))
except ValueError as err:
    print("refused", err)
"""


@pytest.mark.slow
def test_formula_checkpoints_know_their_model_across_processes(tmp_path):
    """A formula model is the same model in every process, whatever was built before it; its twin is not."""
    def run(first: str) -> str:
        out = subprocess.run([sys.executable, "-c", _FORMULA, str(tmp_path / "run"), first], cwd=REPO,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout.strip().splitlines()[-1]

    written = run("centered")
    assert written.startswith("ok")
    assert run("other") == written  # resumed (finished) in a process that built another model first
    refused = run("twin")
    assert refused.startswith("refused") and "the model (checkpoint: formula:" in refused
    resumed = bj.resume(tmp_path / "run", progress=False)  # this process never built the model: its record does
    assert resumed.spec is not None and f"ok {float(resumed.draws['sd_g'].sum())!r}" == written


def test_formula_checkpoint_resumes_to_the_full_fit(tmp_path, monkeypatch):
    """An interrupted formula fit sampled on reduced data resumes (also given the model function, the documented
    path) to the uninterrupted Fit: its spec, its rows as data, predictions and the pointwise log-likelihood."""
    import pandas as pd

    from bhmjax import predict, runner

    rng = np.random.default_rng(2)
    df = pd.DataFrame({"x": rng.normal(size=200), "g": np.arange(200) % 4})
    df["y"] = 0.5 * df["x"] + df["g"] * 0.3 + rng.normal(size=200)
    m = bj.Model("y ~ 1 + x + (1 | g)", df, parameterization="noncentered")
    opts = dict(chains=2, warmup=60, draws=60, seed=3, progress=False)
    plain = m.fit(**opts)
    assert plain.settings["reduction"]["kind"] == "gaussian"
    calls, update = [], runner.Progress.update

    def interrupted(self, n, phase):
        calls.append(phase)
        if calls.count("sampling") == 1:
            raise KeyboardInterrupt
        update(self, n, phase)

    monkeypatch.setattr(runner.Progress, "update", interrupted)
    with pytest.warns(RuntimeWarning, match="keeping the 30 draws"):
        m.fit(checkpoint=tmp_path / "run", every=30, **opts)
    monkeypatch.setattr(runner.Progress, "update", update)
    for fit in (bj.resume(tmp_path / "run", model=m.numpyro_model, progress=False),
                bj.resume(tmp_path / "run", progress=False)):
        assert fit.spec is not None and fit.settings["reduction"] == plain.settings["reduction"]
        np.testing.assert_array_equal(fit.data["y"], plain.data["y"])  # the rows, not the reduced data
        for site in ("Intercept", "b", "sd_g", "r_g"):
            np.testing.assert_array_equal(fit.draws[site], plain.draws[site])
        np.testing.assert_array_equal(predict.log_likelihood(fit), predict.log_likelihood(plain))
        np.testing.assert_array_equal(fit.predict(df.head(5), "mean").draws, plain.predict(df.head(5), "mean").draws)


def test_reparameterized_run_resumes_and_extends_without_a_new_prepass(tmp_path, monkeypatch):
    """parameterization="auto" runs through the same driver: an interrupted checkpoint resumes (in the
    decentered space, with the values learned before) to the draws of the uninterrupted run, and so does extend."""
    from bhmjax import runner
    from bhmjax._src import autoreparam

    from .test_locscale import intercepts_cp, strong_and_weak

    data = strong_and_weak(strong=3, weak=3, rows=20, noise=2.0)
    opts = dict(chains=2, warmup=60, draws=60, seed=4, progress=False, chain_method="sequential",
                parameterization="auto")
    plain = bj.sample(intercepts_cp, data, **opts)
    assert "a_decentered" not in plain.draws and "a_decentered" in plain.settings["drop"]
    calls, update = [], runner.Progress.update

    def interrupted(self, n, phase):
        calls.append(phase)
        if calls.count("sampling") == 1:
            raise KeyboardInterrupt
        update(self, n, phase)

    monkeypatch.setattr(runner.Progress, "update", interrupted)
    with pytest.warns(RuntimeWarning, match="keeping the 30 draws"):
        cut = bj.sample(intercepts_cp, data, checkpoint=tmp_path / "run", every=30, **opts)
    monkeypatch.setattr(runner.Progress, "update", update)

    def no_prepass(*args, **kwargs):
        raise AssertionError("the pre-pass ran again")

    monkeypatch.setattr(autoreparam, "learn", no_prepass)
    resumed = bj.resume(tmp_path / "run", progress=False)
    longer = cut.extend(30)
    for fit in (resumed, longer):
        for site in ("mu", "tau", "a"):
            np.testing.assert_array_equal(fit.draws[site], plain.draws[site])
        assert fit.settings["parameterization"] == plain.settings["parameterization"]
