"""Stable identities of models and data, the same in every process (what checkpoints compare).

A NumPyro function is known by ``module:qualname``. A formula model's function is
generated from its :class:`~bhmjax._src.models.ModelStructure` (the family, terms,
parameterization and priors), so its identity is a digest of that structure, not of
the order in which a process built its models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["data_digests", "import_model", "model_identity", "model_reference", "structure_digest"]


def model_reference(model: Callable) -> str:
    """``module:qualname`` of a model function (how a new process finds it again)."""
    return f"{getattr(model, '__module__', '?')}:{getattr(model, '__qualname__', repr(model))}"


def import_model(reference: str) -> Callable:
    """The model function named by ``module:qualname``, or a clear error."""
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


def _array_digest(a: Any) -> str:
    a = np.require(np.asarray(a), requirements="C")
    h = hashlib.sha256(f"{a.dtype.str}:{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _canonical(obj: Any) -> Any:
    """A JSON-able description of ``obj`` that is equal exactly when the objects are."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.ndarray, np.generic)):
        return {"array": _array_digest(obj)}
    from bhmjax._src.priors import Prior

    if isinstance(obj, Prior):  # default parameters are model data (digested with the data), not structure
        return {"prior": obj.kind, "args": [[n, list(np.shape(v))] for n, v in obj.args], "dist": _canonical(obj.dist)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"class": type(obj).__qualname__,
                "fields": {f.name: _canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    import jax

    from numpyro.distributions import Distribution

    if isinstance(obj, Distribution):  # a user's prior: its class, structure and parameters
        leaves, treedef = jax.tree.flatten(obj)
        return {"distribution": type(obj).__qualname__, "tree": str(treedef),
                "leaves": [_array_digest(x) for x in leaves]}
    if callable(obj):
        return {"function": model_reference(obj)}
    raise TypeError(f"cannot describe a {type(obj).__name__} stably")


def structure_digest(structure: Any) -> str:
    """SHA-256 of a formula model's structure (terms, family, parameterization, priors)."""
    return hashlib.sha256(json.dumps(_canonical(structure), sort_keys=True).encode()).hexdigest()


def model_identity(model: Callable) -> str:
    """``formula:<digest of its structure>`` for formula models, ``function:module:qualname`` otherwise
    (``masked[...]:`` before either for fit_many's row-masked wrapper)."""
    inner = getattr(model, "masked", None)
    if inner is not None:  # fit_many's row-masked wrapper (bhmjax._src.batch.masked_model)
        return f"masked{list(model.observed or ())}:{model_identity(inner)}"
    structure = getattr(model, "structure", None)
    if structure is not None:
        return f"formula:{structure_digest(structure)}"
    return f"function:{model_reference(model)}"


def data_digests(arrays: Mapping[str, Any], static: Mapping[str, Any]) -> dict[str, str]:
    """Per data name, a digest of its value (arrays by dtype, shape and bytes; scalars by value)."""
    out = {k: _array_digest(v) for k, v in arrays.items()}
    out |= {k: hashlib.sha256(json.dumps(_canonical(v)).encode()).hexdigest() for k, v in static.items()}
    return dict(sorted(out.items()))
