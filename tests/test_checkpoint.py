"""Checkpoints: a killed run resumes to the same draws bit for bit; bad checkpoints are refused."""

from __future__ import annotations

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


def _progress(folder: Path) -> int:
    try:
        meta, _ = ckpt.read(folder)
    except (FileNotFoundError, FitFileError):
        return -1
    return sum(meta["run"]["draws_done"])


@pytest.mark.slow
def test_sigkill_mid_sampling_then_resume_gives_identical_draws(tmp_path, uninterrupted):
    folder = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-m", "tests._ckpt_model", str(folder)], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    total = cm.SETTINGS["chains"] * cm.SETTINGS["draws"]
    deadline = time.time() + 240
    while time.time() < deadline and child.poll() is None and _progress(folder) < 200:
        time.sleep(0.02)
    assert child.poll() is None, f"child ended before it could be killed: {child.stderr.read()[-2000:]}"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = _progress(folder)
    assert 0 < done < total, done
    fit = bj.resume(folder, progress=False)  # the model is found by its import path
    for name in ("mu", "sigma"):
        np.testing.assert_array_equal(fit.draws[name], uninterrupted.draws[name])
    np.testing.assert_array_equal(fit.stats["diverging"], uninterrupted.stats["diverging"])


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
