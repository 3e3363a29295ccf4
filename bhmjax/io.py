"""Saving and loading fits (conversion to ArviZ lives in :mod:`bhmjax.arviz`).

The file format (``format_version`` 2) is a standard zip archive that ``numpy.load``
reads as an ``.npz``:

- ``meta.json``: format name and version, library versions, settings, timings,
  gradient counts, coords/dims/names, JSON-able data scalars, the model (below) and
  an index of the arrays (entry name, dtype, shape);
- one ``.npy`` entry per array: ``draws/<site>``, ``stats/<name>``, ``data/<name>``,
  ``extras/<group>/<name>`` (pointwise log-likelihood, observed data, posterior
  predictive) and ``model/<name>`` (the arrays of a formula model's record);
- the zip's archive comment, the last bytes of the file: ``bhmjax-sha256:<hex>``,
  the SHA-256 of every byte before it. Any flipped or missing byte is detected.

The model, ``meta["model"]``: ``{"kind": "formula", "record": ...}`` for a ``bj.Model``
fit (:mod:`bhmjax.records`: formula, family, priors, centeredness and the data columns
it reads, from which ``load`` builds the same model again), ``{"kind": "function",
"reference": "module:qualname"}`` for a NumPyro function (imported again on load when
it can be), or null. Format 1 files (no model) still load.

Files are written atomically (a temporary file in the same folder, flushed and
fsync'ed, then renamed over the final name) and read without pickle.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Mapping

import numpy as np

from bhmjax._src.errors import FitFileError
from bhmjax.records import model_entry, restore_model

if TYPE_CHECKING:  # pragma: no cover
    from bhmjax.fit import Fit

__all__ = ["FORMAT_VERSION", "FitFileError", "load", "save", "pointwise_log_likelihood", "observed_data",
           "read_meta"]

FORMAT_NAME = "bhmjax.fit"
FORMAT_VERSION = 2
_TRAILER_PREFIX = b"bhmjax-sha256:"
_TRAILER_LEN = len(_TRAILER_PREFIX) + 64
_MAX_LOGLIK_VALUES = 20_000_000  # "auto" stores the pointwise log-likelihood below this size
_HASH_CHUNK = 16 * 2**20


# --------------------------------------------------------------------------- helpers


def _jsonable(value: Any) -> Any:
    """Plain JSON values for numpy scalars, arrays, tuples and paths (str as a last resort)."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return [_jsonable(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
    return str(value)


def _versions() -> dict[str, str]:
    from importlib import metadata

    import jax
    import numpyro

    try:  # the installed distribution's version (the package face re-exports it; io sits below it)
        version = metadata.version("bhmjax")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"bhmjax": version, "jax": jax.__version__,
            "numpyro": numpyro.__version__, "numpy": np.__version__}


def _storable(value: Any) -> np.ndarray | None:
    """A numpy array that saves without pickle, or None (objects, callables)."""
    if isinstance(value, (str, bytes, bool, int, float)) or value is None:
        return None
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything numpy cannot hold is simply not stored
        return None
    return None if array.dtype.hasobject else array


# --------------------------------------------------------------------------- save


def _collect_arrays(fit: "Fit", log_lik: bool | str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every array to store by entry name, and the JSON-able scalars of ``fit.data``."""
    arrays = {f"draws/{k}": np.asarray(v) for k, v in fit.draws.items()}
    arrays |= {f"stats/{k}": np.asarray(v) for k, v in fit.stats.items()}
    scalars = {}
    for k, v in fit.data.items():
        array = _storable(v)
        if array is not None:
            arrays[f"data/{k}"] = array
        elif isinstance(v, (str, bool, int, float)) or v is None:
            scalars[k] = v
        else:
            import warnings

            warnings.warn(f"data[{k!r}] ({type(v).__name__}) cannot be stored without pickle, so the saved fit "
                          "leaves it out; a loaded fit cannot re-run the model with it.", UserWarning, stacklevel=3)
    extras = {g: dict(v) for g, v in getattr(fit, "extras", {}).items()}
    if fit.model is not None:
        extras.setdefault("observed_data", observed_data(fit))
        if log_lik and "log_likelihood" not in extras:
            size = fit.num_chains * fit.num_draws * sum(
                int(np.size(v)) for v in extras["observed_data"].values())
            if log_lik is True or size <= _MAX_LOGLIK_VALUES:
                extras["log_likelihood"] = pointwise_log_likelihood(fit)
    for group, values in extras.items():
        arrays |= {f"extras/{group}/{k}": np.asarray(v) for k, v in values.items()}
    return arrays, scalars


def _meta(fit: "Fit", arrays: Mapping[str, np.ndarray], scalars: Mapping[str, Any], model: dict | None) -> dict:
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "versions": _versions(),
        "settings": _jsonable(fit.settings), "timings": _jsonable(fit.timings),
        "num_grad_evals": _jsonable(fit.num_grad_evals), "coords": _jsonable(fit.coords),
        "dims": _jsonable(fit.dims), "names": _jsonable(fit.names), "data_scalars": _jsonable(scalars),
        "arrays": {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in arrays.items()},
        "model": model,
    }


def _encode_into(f: BinaryIO, meta: dict, arrays: Mapping[str, np.ndarray], compress: bool) -> None:
    """Write the zip to the seekable file ``f`` array by array, then the checksum trailer.

    Each array streams through ``np.lib.format.write_array`` in chunks of 16 MiB, and the
    SHA-256 is computed by reading the file back in chunks: memory stays at one chunk
    whatever the size of the fit (draws that are memory maps are never loaded whole).
    """
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, "w", compression=method, allowZip64=True) as zf:
        zf.writestr("meta.json", json.dumps(meta, indent=1))  # keep site order
        for name, array in arrays.items():
            array = np.require(array, requirements="C")  # 0-d arrays stay 0-d (not shape (1,))
            with zf.open(f"{name}.npy", "w", force_zip64=array.nbytes > 2**30) as entry:
                np.lib.format.write_array(entry, array, allow_pickle=False)
    end = f.seek(0, os.SEEK_END)
    f.seek(end - 2)
    if f.read(2) != b"\x00\x00":  # pragma: no cover - zipfile always ends in an empty comment
        raise RuntimeError("unexpected zip layout: the archive already has a comment")
    f.seek(end - 2)
    f.write(_TRAILER_LEN.to_bytes(2, "little"))
    f.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
        digest.update(chunk)
    f.write(_TRAILER_PREFIX + digest.hexdigest().encode())


def _encode(meta: dict, arrays: Mapping[str, np.ndarray], compress: bool) -> bytes:
    """The whole file as bytes (for small files such as checkpoints; fits stream: :func:`_encode_into`)."""
    buf = _io.BytesIO()
    _encode_into(buf, meta, arrays, compress)
    return buf.getvalue()


def _write_atomic(path: Path, payload: bytes | Callable[[BinaryIO], None]) -> None:
    """Write to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    ``payload`` is the bytes, or a function that writes them into the open (seekable) file.
    """
    folder = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w+b") as f:
            if callable(payload):
                payload(f)
            else:
                f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable where the platform allows it
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)


def save(fit: "Fit", path: str | os.PathLike, *, log_likelihood: bool | str = "auto",
         compress: bool = False) -> Path:
    """Save a fit to one portable file, atomically.

    Parameters
    ----------
    fit : Fit
        Its model is stored too: a formula model as its record (see
        :mod:`bhmjax.records`), a NumPyro function by ``module:qualname``.
    path : str or PathLike
        Destination; its folder must exist. An existing file is replaced only once
        the new one is completely on disk.
    log_likelihood : bool or "auto"
        Store the pointwise log-likelihood of the observed sites (needs ``fit.model``),
        so a loaded fit still supports ``az.loo``. "auto" stores it when it has at most
        20 million values.
    compress : bool
        Deflate the entries (smaller, slower).

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    TypeError, ValueError
        Before anything is written, naming a data column or prior of a formula model
        that the file cannot hold (a prior whose class is not in numpyro.distributions).

    Examples
    --------
    >>> path = fit.save("eight_schools.bhm")      # doctest: +SKIP
    >>> fit2 = bhmjax.load(path)                   # doctest: +SKIP
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save to {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    model, model_arrays = model_entry(fit.model, fit.spec, fit.data)
    arrays, scalars = _collect_arrays(fit, log_likelihood)
    arrays |= {f"model/{k}": v for k, v in model_arrays.items()}
    meta = _meta(fit, arrays, scalars, model)
    _write_atomic(path, lambda f: _encode_into(f, meta, arrays, compress))  # streamed: memory of one chunk
    return path


# --------------------------------------------------------------------------- load


def _verified_zip(raw: bytes, where: str) -> zipfile.ZipFile:
    hint = "The file is truncated or corrupted (or not a bhmjax fit); save the fit again."
    if not raw.startswith(b"PK\x03\x04") or len(raw) < _TRAILER_LEN + 24:
        raise FitFileError(f"{where} is not a bhmjax fit file: it does not start as a zip archive "
                           f"or is too short ({len(raw)} bytes). {hint}")
    trailer = raw[-_TRAILER_LEN:]
    length = raw[-_TRAILER_LEN - 2:-_TRAILER_LEN]
    if not trailer.startswith(_TRAILER_PREFIX) or length != _TRAILER_LEN.to_bytes(2, "little"):
        raise FitFileError(f"{where} has no checksum trailer at its end. {hint}")
    expected = trailer[len(_TRAILER_PREFIX):]
    actual = hashlib.sha256(raw[:-_TRAILER_LEN]).hexdigest().encode()
    if actual != expected:
        raise FitFileError(f"{where} failed its checksum (sha256 {actual[:12].decode()}... but the file "
                           f"records {expected[:12].decode(errors='replace')}...). {hint}")
    try:
        return zipfile.ZipFile(_io.BytesIO(raw))
    except (zipfile.BadZipFile, ValueError) as err:  # pragma: no cover - checksum guards this
        raise FitFileError(f"{where} is not a readable zip archive ({err}). {hint}") from err


def _read_meta(zf: zipfile.ZipFile, where: str) -> dict:
    try:
        meta = json.loads(zf.read("meta.json"))
    except (KeyError, ValueError, zipfile.BadZipFile) as err:
        raise FitFileError(f"{where} has no readable meta.json ({err}); it is not a bhmjax fit file.") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise FitFileError(f"{where} is not a bhmjax fit file (format {meta.get('format')!r}, "
                           f"expected {FORMAT_NAME!r}).")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise FitFileError(f"{where} has an invalid format_version {version!r}.")
    if version > FORMAT_VERSION:
        writer = meta.get("versions", {}).get("bhmjax", "a newer version")
        raise FitFileError(
            f"{where} uses fit file format {version}, written by bhmjax {writer}; this bhmjax "
            f"reads formats up to {FORMAT_VERSION}. Upgrade bhmjax to load it.")
    return meta


def _read_arrays(raw: bytes, meta: dict, where: str) -> dict[str, np.ndarray]:
    out = {}
    with np.load(_io.BytesIO(raw), allow_pickle=False) as npz:
        for name, info in meta["arrays"].items():
            try:
                array = npz[name]
            except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
                raise FitFileError(f"{where}: array {name!r} is missing or unreadable ({err}).") from err
            if array.dtype.str != info["dtype"] or list(array.shape) != info["shape"]:
                raise FitFileError(f"{where}: array {name!r} has dtype {array.dtype.str} and shape "
                                   f"{array.shape}; meta.json records {info['dtype']} {info['shape']}.")
            out[name] = array
    return out


def load(path: str | os.PathLike, *, model: Callable | None = None) -> "Fit":
    """Load a fit saved by :func:`save` (or ``Fit.save``), its model included.

    A formula fit comes back with its ``spec`` and ``model``, the same ``bj.Model``
    built again from the stored record: it predicts (existing, new and population
    groups), computes the log-likelihood and LOO, and exports to ArviZ as the original.
    A NumPyro-function fit gets ``model`` back by importing the ``module:qualname`` it
    was saved with, or from ``model=``; when neither works it loads with
    ``model=None`` and a warning saying so. ``state`` (the sampler state) is not
    stored, so a loaded fit cannot be extended.

    Parameters
    ----------
    path : str or PathLike
    model : callable, optional
        The NumPyro model function of a fit sampled with ``bj.sample`` (needed when it
        was defined in ``__main__`` or in a function); checked to have the sites and
        shapes of the stored draws.

    Raises
    ------
    FitFileError
        (a ``ValueError``) for a truncated, corrupted or foreign file, one written in
        a newer format version, or a formula model that does not build again exactly.
    ValueError
        When ``model`` lacks a site of the draws or gives it another shape, or is
        given for a formula fit (its model is in the file).
    """
    from bhmjax.fit import Fit

    path = Path(path)
    raw = path.read_bytes()
    where = f"fit file {str(path)!r}"
    meta = _read_meta(_verified_zip(raw, where), where)
    if meta.get("kind") == "checkpoint":
        raise FitFileError(f"{where} is a checkpoint, not a saved fit; continue it with bj.resume(folder).")
    arrays = _read_arrays(raw, meta, where)

    def group(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    extras: dict[str, dict[str, np.ndarray]] = {}
    for key, value in group("extras/").items():
        grp, name = key.split("/", 1)
        extras.setdefault(grp, {})[name] = value
    draws, data = group("draws/"), {**group("data/"), **meta["data_scalars"]}
    model, spec = restore_model(meta.get("model"), group("model/"), draws, data,
                                x64=bool(meta["settings"].get("x64", False)), where=where, model=model)
    return Fit(
        draws=draws, stats=group("stats/"), timings=meta["timings"],
        num_grad_evals=meta["num_grad_evals"], settings=meta["settings"], coords=meta["coords"],
        dims={k: tuple(v) for k, v in meta["dims"].items()}, names=meta["names"],
        data=data, model=model, spec=spec, extras=extras,
    )


def read_meta(path: str | os.PathLike) -> dict:
    """The metadata of a fit file (versions, settings, timings, array index), checksum verified."""
    path = Path(path)
    where = f"fit file {str(path)!r}"
    return _read_meta(_verified_zip(path.read_bytes(), where), where)


# --------------------------------------------------------------------------- model-based groups


def _model_trace(fit: "Fit") -> dict:
    from numpyro import handlers

    from bhmjax._src.precision import x64_mode

    with x64_mode(fit.settings.get("x64", False)), handlers.block(), handlers.seed(rng_seed=0), \
            handlers.trace() as tr:
        fit.model(**fit.data)
    return tr


def observed_data(fit: "Fit") -> dict[str, np.ndarray]:
    """The observed sites' values, by running the model once on ``fit.data``."""
    stored = getattr(fit, "extras", {}).get("observed_data")
    if stored is not None:
        return dict(stored)
    if _formula_fit(fit):  # its rows are in fit.data (the sampler may have run on other data)
        return {"y": np.asarray(fit.data["y"])}
    if fit.model is None:
        return {}
    return {k: np.asarray(s["value"]) for k, s in _model_trace(fit).items()
            if s["type"] == "sample" and s.get("is_observed")}


def _formula_fit(fit: "Fit") -> bool:
    return getattr(getattr(fit, "spec", None), "structure", None) is not None and "y" in fit.data


def pointwise_log_likelihood(fit: "Fit") -> dict[str, np.ndarray]:
    """Pointwise log-likelihood of each observed site, shape (chains, draws, *obs_shape).

    Computed with ``numpyro.infer.log_likelihood`` from the latent draws (a formula fit:
    from its linear predictor, in row chunks); returns the stored values for a loaded
    fit, and ``{}`` when neither is available.
    """
    stored = getattr(fit, "extras", {}).get("log_likelihood")
    if stored is not None:
        return dict(stored)
    if _formula_fit(fit):  # the rows given each draw, group effects included (also when integrated out)
        return {"y": fit.log_likelihood()}  # chunked over rows, from the linear predictor
    if fit.model is None:
        return {}
    from numpyro.infer import log_likelihood as numpyro_log_likelihood

    from bhmjax._src.precision import x64_mode

    trace = _model_trace(fit)
    latent = [k for k, s in trace.items() if s["type"] == "sample" and not s.get("is_observed")]
    missing = [k for k in latent if k not in fit.draws]
    if missing or not any(s["type"] == "sample" and s.get("is_observed") for s in trace.values()):
        return {}  # latent sites were dropped from the draws, or nothing is observed
    samples = {k: fit.draws[k] for k in latent}
    with x64_mode(fit.settings.get("x64", False)):
        out = numpyro_log_likelihood(fit.model, samples, batch_ndims=2, **fit.data)
    return {k: np.asarray(v) for k, v in out.items()}
