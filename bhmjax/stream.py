"""Draws larger than memory: estimate them before sampling, stream them to disk chunk by chunk.

``bj.sample(..., out=path)`` (and ``bj.Model.fit(out=...)``) hands every chunk of
draws that the driver (:func:`bhmjax._src.engine.advance`) produces to a :class:`DrawWriter`,
which writes it into preallocated files and drops it from memory. Two formats:

* a folder (any path not ending in ``.nc``): one ``.npy`` file per site and per
  sampler statistic, shape (chain, draw, *site_shape), written through a memory
  map, plus ``meta.json`` (written atomically last; its presence marks a complete
  run). The returned Fit's draws are read-only memory maps of those files, so a
  run larger than RAM is summarised without loading it at once.
* ``.nc``: netCDF4 (HDF5 via h5netcdf) with ArviZ's ``posterior`` and
  ``sample_stats`` groups (dims ``chain``, ``draw``, ``<site>_dim_k``), readable with
  ``arviz.from_netcdf``; variables are contiguous, so the returned Fit memory-maps
  them too.

``.zarr`` is not supported (zarr is not a dependency): use a folder or ``.nc``.

Before sampling, :func:`check_memory` estimates the bytes of the stored draws
(chains x draws x stored scalars x itemsize, plus the statistics and one chunk
buffer) and refuses with ``ValueError`` a request that cannot fit in the
available memory, naming the options: keep fewer sites, thin, or ``out=``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DrawWriter", "available_memory", "check_memory", "stored_bytes"]

from bhmjax._src.stats import STATS, stat_dtypes


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable`` of /proc/meminfo; 8 GiB if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return 8 * 2**30


def stored_bytes(shapes: Mapping[str, tuple], chains: int, draws: int) -> int:
    """Bytes of ``draws`` stored draws of ``chains`` chains (sites plus the sampler statistics)."""
    per_draw = sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize for s, d in shapes.values())
    return chains * draws * (per_draw + len(STATS) * 8)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_memory(shapes: Mapping[str, tuple], *, chains: int, draws: int, buffer_len: int,
                 streaming: bool, available: int | None = None, fraction: float = 0.8) -> int:
    """Refuse (``ValueError``) a run whose stored draws cannot fit in memory; return the estimate.

    In memory the run holds every stored draw plus a chunk buffer of ``buffer_len``
    draws (device and host copy); streamed to disk it holds only the buffer. Either
    way, what comes after sampling (``summary()``, ``diagnose()``, plots, ``save()``)
    works a block of columns at a time within ``bhmjax.summary.WORK_BYTES``, which is
    counted too.
    """
    from bhmjax.summary import WORK_BYTES

    available = available_memory() if available is None else int(available)
    total = stored_bytes(shapes, chains, draws)
    buffer = 2 * stored_bytes(shapes, chains, min(buffer_len, draws))
    need = (buffer if streaming else total + buffer) + WORK_BYTES
    if need <= fraction * available:
        return need
    biggest = sorted(shapes, key=lambda k: -int(np.prod(shapes[k][0], dtype=np.int64)))[:3]
    if streaming:
        raise ValueError(
            f"one chunk of draws needs about {_gib(need)} but only {_gib(available)} of memory is "
            f"available. Pass a smaller chunk_size (now {buffer_len} draws), keep fewer sites "
            f"(the largest are {biggest}) or thin.")
    raise ValueError(
        f"the stored draws would need about {_gib(total)} ({chains} chains x {draws} draws; the largest "
        f"sites are {biggest}) plus {_gib(buffer + WORK_BYTES)} of buffers and summary work space, but only {_gib(available)} of memory is "
        f"available. Keep fewer sites (keep=[...] or drop=[...]), thin (thin=k stores every k-th draw), "
        f"or stream the draws to disk with out='run_folder' or out='run.nc'.")


class DrawWriter:
    """Writes chunks of draws into preallocated files and frees them from the run.

    Parameters
    ----------
    path : path
        A folder, or a ``.nc`` file.
    shapes : dict
        ``site -> (shape, dtype)`` of every stored site.
    chains, draws : int
        The full size of the run, (chains, draws) leading axes of every file.
    float_dtype : dtype
        The dtype of the float statistics.
    stat_names : sequence of str
        The sampler statistics the run reports (default: all of ``bhmjax._src.stats.STATS``).
    """

    def __init__(self, path, shapes: Mapping[str, tuple], chains: int, draws: int, float_dtype,
                 stat_names=tuple(STATS)) -> None:
        path = Path(path)
        if path.suffix == ".zarr":
            raise ValueError(f"out={str(path)!r}: zarr is not a dependency of bhmjax, so .zarr is not "
                             "supported; stream to a folder (out='run_folder') or netCDF (out='run.nc').")
        self.path, self.chains, self.draws = path, chains, draws
        self.shapes = dict(shapes)
        stat_shapes = {k: ((), d) for k, d in stat_dtypes(stat_names, float_dtype).items()}
        self.stat_shapes = stat_shapes
        self.done = 0
        self.netcdf = path.suffix == ".nc"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    # ---------------------------------------------------------------- files

    def _open(self) -> None:
        full = lambda s: (self.chains, self.draws, *s)
        if self.netcdf:
            import h5netcdf

            self.file = h5netcdf.File(self.path, "w")
            self.file.dimensions = {"chain": self.chains, "draw": self.draws}
            self.vars = {}
            for group, table in (("posterior", self.shapes), ("sample_stats", self.stat_shapes)):
                g = self.file.create_group(group)
                g.dimensions = {"chain": self.chains, "draw": self.draws}
                for name, (shape, dtype) in table.items():
                    dims = [f"{name}_dim_{k}" for k in range(len(shape))]
                    g.dimensions.update(dict(zip(dims, shape)))
                    dt = np.uint8 if np.dtype(dtype) == np.bool_ else dtype
                    self.vars[group, name] = g.create_variable(name, ("chain", "draw", *dims), dtype=dt)
            return
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "meta.json").unlink(missing_ok=True)
        self.maps = {}
        for group, table in (("draws", self.shapes), ("stats", self.stat_shapes)):
            (self.path / group).mkdir(exist_ok=True)
            for name, (shape, dtype) in table.items():
                self.maps[group, name] = np.lib.format.open_memmap(
                    self.path / group / f"{_safe(name)}.npy", mode="w+", dtype=dtype, shape=full(shape))

    def _put(self, group: str, name: str, chains: slice, draws: slice, value: np.ndarray) -> None:
        if self.netcdf:
            var = self.vars[group if group == "sample_stats" else "posterior", name]
            var[chains, draws] = value.astype(var.dtype)
        else:
            self.maps[group, name][chains, draws] = value

    # ---------------------------------------------------------------- chunks

    def chunk(self, run, piece) -> None:
        """The driver's sink call: write the chunk's draws (lanes, n, ...) after those written so far."""
        if piece is None:
            return
        values, stats = piece
        n = next(iter(stats.values())).shape[1]
        draws, chains = slice(self.done, self.done + n), slice(0, self.chains)
        for name, v in values.items():
            self._put("draws", name, chains, draws, np.asarray(v))
        for name, v in stats.items():
            self._put("sample_stats" if self.netcdf else "stats", name, chains, draws, np.asarray(v))
        self.done += n

    def finish(self, extra_meta: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
        """Flush and close; the draws and statistics as read-only memory maps."""
        done = self.done
        if self.netcdf:
            self.file.close()
            return self._netcdf_maps(done)
        for m in self.maps.values():
            m.flush()
        del self.maps
        from bhmjax.io import _write_atomic

        meta = {"chains": self.chains, "draws": done, "sites": list(self.shapes), "stats": list(self.stat_shapes),
                **dict(extra_meta or {})}
        _write_atomic(self.path / "meta.json", json.dumps(meta, default=str).encode())
        return read_folder(self.path)

    def _netcdf_maps(self, done: int) -> tuple[dict, dict]:
        import h5py

        draws, stats = {}, {}
        with h5py.File(self.path, "r") as f:
            for group, out in (("posterior", draws), ("sample_stats", stats)):
                for name in f[group]:
                    ds = f[group][name]
                    if not isinstance(ds, h5py.Dataset) or name in f[group].attrs.get("_dims", ()):
                        continue
                    if name not in self.shapes and name not in self.stat_shapes:
                        continue
                    offset = ds.id.get_offset()
                    if offset is None:  # chunked or compressed: read it
                        arr = ds[()]
                    else:
                        arr = np.memmap(self.path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)
                    if name == "diverging":
                        arr = np.asarray(arr).astype(bool)
                    out[name] = arr[:, :done]
        return draws, stats


def read_folder(path) -> tuple[dict, dict]:
    """The draws and statistics of a streamed folder, as read-only memory maps."""
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    done = meta["draws"]
    draws = {s: np.load(path / "draws" / f"{_safe(s)}.npy", mmap_mode="r")[:, :done] for s in meta["sites"]}
    stats = {s: np.load(path / "stats" / f"{s}.npy", mmap_mode="r")[:, :done] for s in meta["stats"]}
    return draws, stats


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-." else f"%{ord(c):02x}" for c in name)
