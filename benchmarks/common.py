"""Shared pieces of the benchmarks: machine facts, ESS by one function, JSON output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

import bhmjax as bj

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data" / "posteriordb"


def machine() -> dict[str, Any]:
    """CPU model, cores, accelerator, memory, library versions and git commit."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    import numpyro

    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1),
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "versions": {"bhmjax": bj.__version__, "jax": jax.__version__, "numpyro": numpyro.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "git_commit": commit, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def ess_stats(draws: dict[str, np.ndarray]) -> dict[str, float]:
    """Min and median bulk/tail ESS over every scalar of every site (one function for all)."""
    bulk, tail = [], []
    for x in draws.values():
        x = np.asarray(x, dtype=np.float64).reshape(x.shape[0], x.shape[1], -1)
        bulk.append(np.asarray(bj.ess(x, method="bulk")))
        tail.append(np.asarray(bj.ess(x, method="tail")))
    bulk, tail = np.concatenate(bulk), np.concatenate(tail)
    return {"min_ess_bulk": float(np.nanmin(bulk)), "median_ess_bulk": float(np.nanmedian(bulk)),
            "min_ess_tail": float(np.nanmin(tail)), "median_ess_tail": float(np.nanmedian(tail))}


def save_json(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    os.replace(tmp, path)


def run_fresh(module: str, args: list[str], env: dict[str, str], python: str | None = None,
              timeout: int = 1800) -> dict[str, Any]:
    """``python -m module --one *args`` in a fresh process (cwd: the repository): the JSON object its
    last output line prints, or ``{"error": <the end of its stderr>}``."""
    import sys

    res = subprocess.run([python or sys.executable, "-m", module, "--one", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        return {"error": res.stderr[-1500:]}
    return json.loads(res.stdout.strip().splitlines()[-1])
