"""A second process fitting the same model finds the persistent compilation cache.

Compilations are counted (JAX's monitoring events), not timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, numpy as np, jax
from jax import monitoring
counts = {"hits": 0, "misses": 0}
def listen(event, **kwargs):
    if event.endswith("/compilation_cache/cache_hits"):
        counts["hits"] += 1
    elif event.endswith("/compilation_cache/cache_misses"):
        counts["misses"] += 1
monitoring.register_event_listener(listen)
import bhmjax as bj
from tests._ckpt_model import model, data
fit = bj.sample(model, data(), chains=2, warmup=50, draws=50, progress=False)
print(json.dumps({**counts, "cache": bj.compilation_cache_dir(), "mu": float(fit.draws["mu"].mean())}))
"""


def run(cache: Path) -> dict:
    env = {**os.environ, "BHMJAX_CACHE_DIR": str(cache), "BHMJAX_COMPILATION_CACHE": "1"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_second_process_compiles_nothing_new(tmp_path):
    first = run(tmp_path / "xla")
    second = run(tmp_path / "xla")
    assert first["cache"] == second["cache"] == str(tmp_path / "xla")
    assert first["misses"] >= 2  # the chain program and its initialisation were compiled
    assert second["misses"] == 0 and second["hits"] >= first["misses"]
    assert second["mu"] == first["mu"]  # same seed, same draws


@pytest.mark.slow
def test_cache_can_be_switched_off(tmp_path):
    env = {**os.environ, "BHMJAX_COMPILATION_CACHE": "0"}
    out = subprocess.run([sys.executable, "-c", "import bhmjax as bj; print(bj.compilation_cache_dir())"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "None"
