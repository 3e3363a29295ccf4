"""Shared fixtures: the posteriordb data folder and a headless matplotlib."""

import json
import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")
# No persistent XLA cache in the test processes (test_compile_cache sets its own): pytest-xdist workers
# reading and writing one cache folder at once aborted in jax's compilation_cache (get and put) here.
os.environ.setdefault("BHMJAX_COMPILATION_CACHE", "0")

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "posteriordb"


@pytest.fixture(scope="session")
def posteriordb() -> Path:
    """The folder of real data sets beside the repo (../shared/data/posteriordb)."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"posteriordb data folder not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def eight_schools(posteriordb) -> dict:
    """Eight schools as model data: J (int), y and sigma (float arrays)."""
    d = json.loads((posteriordb / "eight_schools.json").read_text())
    return {"J": d["J"], "y": np.asarray(d["y"], float), "sigma": np.asarray(d["sigma"], float)}
