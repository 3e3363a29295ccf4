"""Shared fixtures: the posteriordb data folder and a headless matplotlib."""

import json
import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")

def _use_a_cache_of_this_worker() -> None:
    """Each pytest-xdist worker (and the subprocesses it starts) keeps its own persistent XLA cache
    beside the user's: workers reading and writing one folder at once aborted inside jax's
    compilation_cache (get and put). test_compile_cache sets its own folder."""
    from bhmjax._src.cache import default_cache_dir, set_compilation_cache

    base = default_cache_dir()
    if base is None or "BHMJAX_CACHE_DIR" in os.environ:  # cache off, or a folder chosen by the caller
        return
    folder = base.with_name(f"{base.name}-tests-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}")
    os.environ["BHMJAX_CACHE_DIR"] = str(folder)
    set_compilation_cache(folder)


_use_a_cache_of_this_worker()

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
