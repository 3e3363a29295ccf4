"""Shared fixtures: data sets, a headless matplotlib and the hypothesis profiles.

Data: small public data the tests need live in ``tests/data`` (eight schools). The larger
posteriordb sets (radon, pilots) stay in ``../shared/data/posteriordb`` beside the repo;
tests that need them skip, saying why, when it is absent, but fail in CI (``CI=true``, as
CI services set it) or when ``BHMJAX_REQUIRE_SHARED=1``, so that no such test is skipped silently.

Hypothesis: the ``quick`` profile (loaded here) is derandomized and quick (``make test`` is
reproducible; a failing example is printed unshrunk, with its reproduce blob); ``make fuzz`` selects the ``fuzz`` profile: random, ``BHMJAX_FUZZ_EXAMPLES``
examples per test (2,000 by default), for longer hunts.
"""

import json
import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings

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

TESTS_DATA = Path(__file__).resolve().parent / "data"
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "posteriordb"
REQUIRE_SHARED = "BHMJAX_REQUIRE_SHARED"

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# No shrinking in the quick profile: a failure is reported at once with its reproduce blob
# (shrinking a formula example can take many minutes); `make fuzz` shrinks.
settings.register_profile("quick", max_examples=60, derandomize=True, deadline=None,
                          suppress_health_check=_QUIET, print_blob=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.register_profile("fuzz", max_examples=int(os.environ.get("BHMJAX_FUZZ_EXAMPLES", "2000")),
                          derandomize=False, deadline=None, suppress_health_check=_QUIET, print_blob=True)
settings.load_profile("quick")


def shared_data_dir() -> Path:
    """``../shared/data/posteriordb``; skips when absent (fails in CI or under BHMJAX_REQUIRE_SHARED=1)."""
    if DATA_DIR.is_dir():
        return DATA_DIR
    message = (f"the posteriordb data folder is not at {DATA_DIR}: this test needs the data sets of "
               "../shared/data/posteriordb beside the repository")
    if os.environ.get(REQUIRE_SHARED) == "1" or os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; in CI (CI=true) or with {REQUIRE_SHARED}=1 such tests fail instead of "
                    "skipping. Put the folder there.", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def posteriordb() -> Path:
    """The folder of real data sets beside the repo (../shared/data/posteriordb)."""
    return shared_data_dir()


@pytest.fixture(scope="session")
def eight_schools() -> dict:
    """Eight schools as model data: J (int), y and sigma (float arrays), from tests/data."""
    d = json.loads((TESTS_DATA / "eight_schools.json").read_text())
    return {"J": d["J"], "y": np.asarray(d["y"], float), "sigma": np.asarray(d["sigma"], float)}
