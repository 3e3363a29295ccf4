"""Checkpoints of a run in progress: draws so far plus the full sampler state.

A checkpoint is one file, ``<folder>/checkpoint.bhm``, in the fit-file format of
:mod:`bhmjax.io` (zip of ``.npy`` entries + ``meta.json``, SHA-256 trailer,
written atomically), with ``kind: "checkpoint"``. It holds the data, the sampler
settings, every chain's HMC state (position, adapted step size and mass matrix,
PRNG key) and a fingerprint of model, data and settings, so a resumed run
continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from bhmjax import io
from bhmjax._src.sampling import ChainRun

__all__ = ["CHECKPOINT_FILE", "fingerprint", "model_reference", "write", "read", "import_model"]

CHECKPOINT_FILE = "checkpoint.bhm"


def model_reference(model: Callable) -> str:
    """``module:qualname`` of a model function (how a new process finds it again)."""
    return f"{getattr(model, '__module__', '?')}:{getattr(model, '__qualname__', repr(model))}"


def import_model(reference: str) -> Callable:
    """The model function named by :func:`model_reference`, or a clear error."""
    module, _, qualname = reference.partition(":")
    hint = "Pass the model again: bj.resume(path, model=my_model)."
    if module in ("__main__", "?") or "<locals>" in qualname:
        raise ValueError(f"the checkpoint's model {reference!r} cannot be imported in a new process. {hint}")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import the checkpoint's model {reference!r} ({err}). {hint}") from err
    return obj


def fingerprint(model: Callable, arrays: Mapping[str, np.ndarray], static: Mapping[str, Any],
                settings: Mapping[str, Any]) -> str:
    """SHA-256 of the model's name, the data and the settings that shape the draws."""
    h = hashlib.sha256(model_reference(model).encode())
    for name in sorted(arrays):
        a = np.require(arrays[name], requirements="C")
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    h.update(repr(sorted(static.items())).encode())
    shaping = ("chains", "warmup", "seed", "chain_method", "target_accept", "max_tree_depth",
               "dense_mass", "thin", "keep", "drop", "x64", "every", "parameterization")
    h.update(repr([(k, settings.get(k)) for k in shaping]).encode())
    return h.hexdigest()


def write(folder: Path, run: ChainRun, *, arrays: Mapping[str, np.ndarray], static: Mapping[str, Any],
          settings: Mapping[str, Any], labels: Mapping[str, Any], model: Callable, print_: str) -> Path:
    """Write the run's checkpoint atomically (the previous one stays until the new one is whole)."""
    entries = {f"data/{k}": np.asarray(v) for k, v in arrays.items()}
    leaves = jax.tree.leaves(run.chain_states())
    entries |= {f"state/{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    for s, chunks in enumerate(run.pieces):
        if chunks:
            values, stats = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *chunks)
            entries |= {f"draws/{s}/{k}": v for k, v in values.items()}
            entries |= {f"stats/{s}/{k}": v for k, v in stats.items()}
    meta = {
        "format": io.FORMAT_NAME, "format_version": io.FORMAT_VERSION, "kind": "checkpoint",
        "versions": io._versions(), "model": model_reference(model), "fingerprint": print_,
        "settings": io._jsonable(dict(settings)), "static": io._jsonable(dict(static)),
        "labels": io._jsonable(dict(labels)),
        "run": {"method": run.method, "num_devices": run.num_devices, "num_chains": run.num_chains,
                "warmup_done": run.warmup_done, "draws_done": run.draws_done, "grads": run.grads,
                "timings": run.timings, "slots": len(run.states), "num_leaves": len(leaves)},
        "arrays": {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in entries.items()},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_FILE
    io._write_atomic(path, io._encode(meta, entries, compress=False))
    return path


def read(folder: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """The checkpoint's metadata and arrays; a clear error if missing, truncated or foreign."""
    path = Path(folder)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}: sample(..., checkpoint=folder) writes "
                                f"{CHECKPOINT_FILE} there after each chunk.")
    raw = path.read_bytes()
    where = f"checkpoint {str(path)!r}"
    meta = io._read_meta(io._verified_zip(raw, where), where)
    if meta.get("kind") != "checkpoint":
        raise io.FitFileError(f"{where} is a saved fit, not a checkpoint; load it with bj.load().")
    return meta, io._read_arrays(raw, meta, where)


def restore_pieces(meta: dict, arrays: Mapping[str, np.ndarray]) -> list[list]:
    """Per-slot draws as one host chunk each (the layout ChainRun.pieces uses)."""
    pieces: list[list] = []
    for s in range(meta["run"]["slots"]):
        values = {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith(f"draws/{s}/")}
        stats = {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith(f"stats/{s}/")}
        pieces.append([(values, stats)] if stats else [])
    return pieces
