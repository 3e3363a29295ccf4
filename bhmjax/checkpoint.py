"""Checkpoints of a run in progress: the draws so far plus the full sampler state, in an owned folder.

A checkpoint is one file, ``<folder>/checkpoint.bhm``, in the fit-file format of
:mod:`bhmjax.io` (zip of ``.npy`` entries + ``meta.json``, SHA-256 trailer, written
atomically), with ``kind: "checkpoint"``. It holds the run's config, the data,
labels, every lane's sampler state (position, adapted step size and mass matrix,
PRNG key, stored-draw counter) and what identifies the run: the model's stable
identity, a digest per data array and the config's draw-shaping fields. A run asked
for in the same folder with anything of these changed is refused, naming what
differs (:func:`check_matches`).

The folder is owned while a process writes it (:class:`Owner`, ``owner.json``): a
second writer is refused with the other process named; a write that fails (a full
disk) warns, sampling goes on with the draws in memory, and the Fit says which
checkpoint on disk is the last good one (``fit.settings["checkpoint"]``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from bhmjax import io
from bhmjax.records import model_entry
from bhmjax._src import engine
from bhmjax._src.identity import data_digests, import_model, model_identity, model_reference

__all__ = ["CHECKPOINT_FILE", "CheckpointSink", "Owner", "check_matches", "exists", "import_model", "read",
           "model_reference"]

CHECKPOINT_FILE = "checkpoint.bhm"
OWNER_FILE = "owner.json"
CHECKPOINT_VERSION = 2


def exists(folder: str | os.PathLike) -> bool:
    return (Path(folder) / CHECKPOINT_FILE).is_file()


# ---------------------------------------------------------------- what identifies a run


def fingerprint(request) -> dict[str, Any]:
    """What identifies a run: the model's stable identity, a digest per data array, every draw-shaping
    setting of the config and the generated quantities; ``digest`` hashes them all."""
    generate = None if request.generate is None else model_reference(request.generate)
    parts = {"model": model_identity(request.model), "data": data_digests(request.arrays, request.static),
             "config": request.config.shaping(), "generate": generate}
    return {**parts, "digest": hashlib.sha256(json.dumps(io._jsonable(parts), sort_keys=True).encode()).hexdigest()}


def check_matches(folder: Path, meta: Mapping[str, Any], request) -> None:
    """Refuse to continue the checkpoint with another model, data or draw-shaping settings, naming them."""
    mine, theirs = fingerprint(request), meta["fingerprint"]
    if mine["digest"] == theirs["digest"]:
        return
    differ = []
    if mine["model"] != theirs["model"]:
        differ.append(f"the model (checkpoint: {theirs['model']}, now: {mine['model']})")
    if mine["generate"] != theirs["generate"]:
        differ.append(f"the generated quantities (checkpoint: {theirs['generate']}, now: {mine['generate']})")
    names = sorted(set(mine["data"]) | set(theirs["data"]))
    differ += [f"data[{k!r}]" for k in names if mine["data"].get(k) != theirs["data"].get(k)]
    for k in request.config.differences(theirs["config"]):
        differ.append(f"{k} (checkpoint: {theirs['config'].get(k)!r}, now: {mine['config'][k]!r})")
    if not differ:
        return
    grow = ("; to add draws to a run, resume it and extend: bj.resume(folder).extend(n)"
            if any(d.startswith("draws ") for d in differ) else "")
    raise ValueError(f"the checkpoint in {str(folder)!r} was written by a different model, data or settings: "
                     f"{'; '.join(differ)} differ. Choose a new checkpoint folder or delete the old one{grow}.")


# ---------------------------------------------------------------- ownership


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


class Owner:
    """The claim of one process on a checkpoint folder (``owner.json``, created exclusively).

    A claim left by a process that is gone (killed on this host) is taken over; a live
    one is refused with ``RuntimeError`` naming its process and host.
    """

    def __init__(self, folder: Path, token: str) -> None:
        self.folder, self.token = folder, token

    @classmethod
    def acquire(cls, folder: str | os.PathLike) -> "Owner":
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(err.errno, f"cannot create the checkpoint folder {str(folder)!r}: {err.strerror}. "
                                     "Choose a writable folder.") from err
        me = {"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex, "since": time.time()}
        path = folder / OWNER_FILE
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = _read_owner(path)
                if _stale(other, me):
                    path.unlink(missing_ok=True)
                    continue
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(other.get("since", 0)))
                raise RuntimeError(
                    f"the checkpoint folder {str(folder)!r} is being written by process {other.get('pid')} on "
                    f"{other.get('host')!r} (since {since}); two writers would overwrite each other's run. Wait "
                    f"for it to finish, or choose another folder (if that process is gone, delete "
                    f"{str(path)!r}).") from None
            except OSError as err:
                raise OSError(err.errno, f"the checkpoint folder {str(folder)!r} is not writable: {err.strerror}. "
                                         "Choose a writable folder.") from err
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return cls(folder, me["token"])
        raise RuntimeError(f"could not claim the checkpoint folder {str(folder)!r}: its owner file keeps changing.")

    def holds(self) -> bool:
        return _read_owner(self.folder / OWNER_FILE).get("token") == self.token

    def release(self) -> None:
        if self.holds():
            (self.folder / OWNER_FILE).unlink(missing_ok=True)


def _read_owner(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _stale(other: Mapping[str, Any], me: Mapping[str, Any]) -> bool:
    """A claim nobody holds any more: unreadable, or of a process on this host that is gone (or is us)."""
    if not other:
        return True
    if other.get("host") != me["host"]:
        return False
    pid = int(other.get("pid", -1))
    return pid == me["pid"] or not _alive(pid)


# ---------------------------------------------------------------- writing


def write(folder: Path, request, run: engine.Run, memory: engine.MemorySink,
          model: tuple[dict | None, Mapping[str, np.ndarray]]) -> Path:
    """Write the run's checkpoint atomically (the previous one stays until the new one is whole).

    ``model`` is the model's entry and arrays as a saved fit stores them
    (:func:`bhmjax.records.model_entry`): a formula model's record, or a function's
    ``module:qualname``.
    """
    entries = {f"data/{k}": np.asarray(v) for k, v in request.arrays.items()}
    rows = {} if request.data is None else request.data
    row_arrays = {k: v for k, v in rows.items() if not _scalar(v)}
    entries |= {f"rows/{k}": np.asarray(v) for k, v in row_arrays.items()}
    leaves = jax.tree.leaves(run.host_state())
    entries |= {f"state/{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    values, stats = memory.draws()
    entries |= {f"draws/{k}": np.asarray(v) for k, v in values.items()}
    entries |= {f"stats/{k}": np.asarray(v) for k, v in stats.items()}
    entry, model_arrays = model
    entries |= {f"model/{k}": np.asarray(v) for k, v in model_arrays.items()}
    meta = {
        "format": io.FORMAT_NAME, "format_version": io.FORMAT_VERSION, "kind": "checkpoint",
        "checkpoint_version": CHECKPOINT_VERSION, "versions": io._versions(), "fingerprint": fingerprint(request),
        "model": entry, "config": request.config.to_dict(),
        "static": io._jsonable(dict(request.static)),
        "rows_static": None if request.data is None else io._jsonable({k: v for k, v in rows.items() if _scalar(v)}),
        "labels": io._jsonable({"coords": request.coords, "dims": request.dims, "names": request.names}),
        "request": io._jsonable({"order": list(request.order), "internal": list(request.internal),
                                 "reduction": request.reduction, "timings": request.timings,
                                 "settings": request.settings}),
        "run": {"layout": io._jsonable(vars(run.layout)), "warmup_done": run.warmup_done,
                "draws_done": run.draws_done, "grads": io._jsonable(run.grads), "timings": dict(run.timings),
                "num_leaves": len(leaves)},
        "arrays": {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in entries.items()},
    }
    path = folder / CHECKPOINT_FILE
    io._write_atomic(path, io._encode(meta, entries, compress=False))
    return path


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, tuple))


class CheckpointSink:
    """The checkpoint sink: after every chunk, the whole run so far is written (atomically).

    A write that fails (``OSError``: a full disk, a vanished folder) warns and is
    counted; sampling goes on with the draws in memory, and :meth:`status` names the
    last good checkpoint on disk. If another process has taken the folder, nothing more
    is written to it.
    """

    def __init__(self, folder: Path, request, memory: engine.MemorySink, owner: Owner | None) -> None:
        self.folder, self.request, self.memory, self.owner = Path(folder), request, memory, owner
        self.model = model_entry(request.model, request.spec, request.data)  # a prior or column a file cannot hold: refused now
        self.last_good: dict | None = None
        self.failed = 0
        self.error: str | None = None

    def chunk(self, run: engine.Run, piece) -> None:
        if self.owner is not None and not self.owner.holds():
            self._fail(run, "another process has taken the checkpoint folder")
            return
        try:
            write(self.folder, self.request, run, self.memory, self.model)
        except OSError as err:
            what = "the disk is full" if err.errno == errno.ENOSPC else f"{type(err).__name__}: {err}"
            self._fail(run, what)
            return
        self.last_good = {"path": str(self.folder / CHECKPOINT_FILE), "warmup": run.warmup_done,
                          "draws": run.draws_done}

    def _fail(self, run: engine.Run, what: str) -> None:
        self.failed += 1
        self.error = what
        last = ("no checkpoint was written yet" if self.last_good is None else
                f"the last good checkpoint on disk holds {self.last_good['warmup']} warmup steps and "
                f"{self.last_good['draws']} draws per chain")
        warnings.warn(f"writing the checkpoint in {str(self.folder)!r} failed ({what}) at {run.warmup_done} warmup "
                      f"steps and {run.draws_done} draws; sampling goes on and keeps the draws in memory; {last}.",
                      RuntimeWarning, stacklevel=2)

    def status(self) -> dict:
        """``fit.settings["checkpoint"]``: the folder, the last good checkpoint, failed writes."""
        return {"folder": str(self.folder), "last_good": self.last_good, "failed_writes": self.failed,
                "error": self.error}


# ---------------------------------------------------------------- reading


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
    if meta.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise io.FitFileError(f"{where} was written by another version of bhmjax's checkpoints "
                              f"({meta.get('checkpoint_version', 1)}; this one reads {CHECKPOINT_VERSION}); "
                              "sample again into a new folder.")
    return meta, io._read_arrays(raw, meta, where)


def group(stored: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in stored.items() if k.startswith(prefix)}


def restore_state(meta: Mapping[str, Any], stored: Mapping[str, np.ndarray], program: engine.ChainProgram,
                  layout: engine.Layout, arrays: Mapping[str, np.ndarray]) -> engine.LoopState:
    """The run's state (host arrays) in the tree structure of ``program`` under ``layout``."""
    treedef = jax.tree.structure(engine.state_shapes(program, layout, arrays))
    leaves = [stored[f"state/{i:04d}"] for i in range(meta["run"]["num_leaves"])]
    return jax.tree.unflatten(treedef, leaves)


def restore_pieces(stored: Mapping[str, np.ndarray]) -> list:
    """The draws so far as one memory piece (``[]`` before any draw)."""
    stats = group(stored, "stats/")
    return [(group(stored, "draws/"), stats)] if stats else []


def restore_progress(run: engine.Run, meta: Mapping[str, Any]) -> None:
    """Set ``run``'s counters, gradient counts and timings to the checkpoint's (compile time added)."""
    info = meta["run"]
    run.warmup_done, run.draws_done = info["warmup_done"], info["draws_done"]
    run.grads = {k: np.asarray(v, np.int64) for k, v in info["grads"].items()}
    compile_s = run.timings["compile"]
    run.timings = dict(info["timings"])
    run.timings["compile"] += compile_s
