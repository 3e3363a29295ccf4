"""The model of a fit file: a formula model as a record, a NumPyro function by name.

:func:`model_entry` is what ``bj.save`` stores of a fit's model and
:func:`restore_model` what ``bj.load`` makes of it: a NumPyro function is stored as
its ``module:qualname`` (imported again on load, as ``bj.resume`` does) and a
``bj.Model`` as a JSON-able record plus named numpy arrays.

``to_record(spec)`` turns the :class:`~bhmjax._src.models.ModelSpec` of a ``bj.Model``
into what the fit file (and a checkpoint) can store without pickle, and
``from_record(record, arrays)`` builds the very same ``bj.Model`` again: the formula,
family, the ``trials=``, ``weights=``, ``cens=``/``cens_upper=`` options and the auxiliary
parameters' formulas, the centeredness of every group term (learned ones
included), the user's priors as a ``numpyro.distributions`` class with its arguments,
and the data columns the formula reads after missing-value handling. Encodings,
design matrices, default priors and column means are recomputed from those columns,
so they come back exactly as they were.

Record layout (JSON)::

    {"formula": str, "family": str, "trials": str | None,
     "weights": str, "cens": str, "cens_upper": str, "dpars": {param: formula},  # when used
     "parameterization": {grouping: [c, ...] | "auto"},
     "priors": {key: {"value": number} | {"distribution": DIST}},
     "columns": {name: {"dtype": str, "values": entry}
                       | {"dtype": "category", "codes": entry, "ordered": bool,
                          "categories": {"dtype": str, "values": entry}}}}
    DIST = {"class": name in numpyro.distributions, "validate_args": bool | None,
            "args": {arg: {"array": entry} | {"value": scalar} | {"shape": [int, ...]}
                          | {"distribution": DIST}}}

``entry`` names an array of the returned dict (``column/0``, ``prior/1/loc``, ...).
Anything that cannot be stored this way (a column mixing value types, a prior
whose class is not a NumPyro distribution or whose arguments are not numbers) is
refused when the record is made, naming the column or prior.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from bhmjax._src.reparam import PER_GROUP, data_key

if TYPE_CHECKING:  # pragma: no cover
    from bhmjax._src.models import ModelSpec
    from bhmjax.model import Model

__all__ = ["ModelSource", "to_record", "from_record", "model_entry", "restore_model"]

_SKIPPED_ARGS = ("self", "validate_args")


@dataclass(frozen=True, eq=False)
class ModelSource:
    """What a ``bj.Model`` was built from that its spec does not hold (``ModelSpec.source``).

    Attributes
    ----------
    frame : pandas.DataFrame
        The columns the formula reads, after missing-value handling (rows as fitted).
    priors : dict
        The user's prior overrides, as given to ``bj.Model``.
    trials : str or None
        The ``trials=`` option (None when the formula names the trials column).
    weights, cens, cens_upper : str or None
        The ``weights=``, ``cens=`` and ``cens_upper=`` options (None when unused or
        written in the formula's response).
    dpars : dict
        The auxiliary parameters' formulas (``{"sigma": "~ x + (1 | g)"}``).
    """

    frame: Any = field(repr=False)
    priors: Mapping[str, Any] = field(default_factory=dict)
    trials: str | None = None
    weights: str | None = None
    cens: str | None = None
    cens_upper: str | None = None
    dpars: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- columns


def _column_error(name: str, why: str) -> TypeError:
    return TypeError(f"cannot store the data column {name!r} of this formula model: {why}. A saved model "
                     "keeps each column as numbers, booleans, strings or a pandas categorical of those; "
                     f"convert it (e.g. df[{name!r}].astype(str)) before building the Model.")


def _plain_array(name: str, values) -> np.ndarray:
    """The values of a non-categorical column as one numpy array of a storable dtype."""
    array = np.asarray(values)
    if array.dtype.kind == "O":
        items = array.tolist()
        array = np.asarray(items) if items else np.asarray(items, dtype=np.float64)
        kinds = sorted({type(v).__name__ for v in items})
        if array.dtype.kind == "O" or [type(v) for v in array.tolist()] != [type(v) for v in items]:
            raise _column_error(name, f"it holds values of the types {kinds}")
    if array.dtype.kind not in "biufU":
        raise _column_error(name, f"its values have dtype {array.dtype}")
    return array


def _restore_plain(array: np.ndarray, dtype: str):
    import pandas as pd

    series = pd.Series(array)
    return series if str(series.dtype) == dtype else series.astype(dtype)


def _column_record(name: str, series, entry: str, arrays: dict) -> dict:
    import pandas as pd

    if isinstance(series.dtype, pd.CategoricalDtype):
        categories = pd.Series(series.dtype.categories)
        arrays[f"{entry}/codes"] = np.asarray(series.cat.codes.to_numpy())
        arrays[f"{entry}/categories"] = _plain_array(name, categories.to_numpy())
        record = {"dtype": "category", "codes": f"{entry}/codes", "ordered": bool(series.dtype.ordered),
                  "categories": {"dtype": str(categories.dtype), "values": f"{entry}/categories"}}
    else:
        arrays[entry] = _plain_array(name, series.to_numpy())
        record = {"dtype": str(series.dtype), "values": entry}
    rebuilt = _column_from_record(record, arrays)
    if rebuilt.dtype != series.dtype or not rebuilt.equals(series.reset_index(drop=True)):
        raise _column_error(name, f"its dtype {series.dtype} does not come back from a numpy array")
    return record


def _column_from_record(record: Mapping[str, Any], arrays: Mapping[str, np.ndarray]):
    import pandas as pd

    if record["dtype"] != "category":
        return _restore_plain(arrays[record["values"]], record["dtype"])
    cats = record["categories"]
    categories = pd.Index(_restore_plain(arrays[cats["values"]], cats["dtype"]))
    return pd.Series(pd.Categorical.from_codes(arrays[record["codes"]], categories=categories,
                                               ordered=record["ordered"]))


# --------------------------------------------------------------------------- priors


class _PriorError(Exception):
    """Why one argument of a prior cannot be stored (re-raised naming the prior)."""


def _distribution_classes() -> dict[str, type]:
    import numpyro.distributions as dist

    return {name: obj for name, obj in vars(dist).items()
            if inspect.isclass(obj) and issubclass(obj, dist.Distribution)}


def _arg_record(value: Any, entry: str, arrays: dict) -> dict:
    import numpyro.distributions as dist

    if isinstance(value, dist.Distribution):
        return {"distribution": _dist_record(value, entry, arrays)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return {"shape": list(value)}
    try:
        array = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - reported as not storable
        raise _PriorError(f"{type(value).__name__} ({err})") from None
    if array.dtype.kind not in "biuf":
        raise _PriorError(f"a {type(value).__name__}")
    arrays[entry] = array
    return {"array": entry}


def _dist_record(d, entry: str, arrays: dict) -> dict:
    cls = type(d)
    if _distribution_classes().get(cls.__name__) is not cls:
        raise _PriorError(f"its class {cls.__module__}.{cls.__qualname__} is not one of numpyro.distributions")
    args = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in _SKIPPED_ARGS or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name not in vars(d) and not hasattr(d, name):
            raise _PriorError(f"its argument {name!r} is not kept on the distribution")
        try:
            args[name] = _arg_record(getattr(d, name), f"{entry}/{name}", arrays)
        except _PriorError as err:
            raise _PriorError(f"its argument {name!r} is {err}") from None
    validate = vars(d).get("_validate_args") if "validate_args" in inspect.signature(cls.__init__).parameters else None
    return {"class": cls.__name__, "validate_args": validate, "args": args}


def _dist_from_record(record: Mapping[str, Any], arrays: Mapping[str, np.ndarray]):
    cls = _distribution_classes().get(record["class"])
    if cls is None:
        raise ValueError(f"numpyro.distributions has no class {record['class']!r}")
    args = {}
    for name, arg in record["args"].items():
        if "distribution" in arg:
            args[name] = _dist_from_record(arg["distribution"], arrays)
        elif "array" in arg:
            args[name] = arrays[arg["array"]]
        elif "shape" in arg:
            args[name] = tuple(arg["shape"])
        else:
            args[name] = arg["value"]
    if record["validate_args"] is not None:
        args["validate_args"] = record["validate_args"]
    return cls(**args)


def _same_distribution(a, b) -> bool:
    """``b`` is ``a`` as a pytree: same class, static fields (shapes, options) and parameter values."""
    import jax

    try:
        (leaves_a, tree_a), (leaves_b, tree_b) = jax.tree.flatten(a), jax.tree.flatten(b)
        return tree_a == tree_b and all(np.asarray(x).dtype == np.asarray(y).dtype
                                        and np.array_equal(x, y, equal_nan=True)
                                        for x, y in zip(leaves_a, leaves_b))
    except Exception:  # noqa: BLE001 - fields that cannot be compared cannot be vouched for
        return False


def _prior_record(key: str, value: Any, entry: str, arrays: dict) -> dict:
    import numpyro.distributions as dist

    if not isinstance(value, dist.Distribution):  # an LKJ concentration given as a number
        return {"value": float(value)}
    fix = ("Use a distribution of numpyro.distributions with numeric arguments (dist.Normal(0, 1), "
           "dist.HalfNormal(2.0), ...).")
    what = f"cannot store the prior priors[{key!r}] = {type(value).__name__}"
    try:
        record = _dist_record(value, entry, arrays)
    except _PriorError as err:
        raise TypeError(f"{what}: {err}. {fix}") from None
    try:
        same, why = _same_distribution(value, _dist_from_record(record, arrays)), ""
    except Exception as err:  # noqa: BLE001 - its constructor refused the arguments the instance keeps
        same, why = False, f" ({type(err).__name__}: {err})"
    if not same:
        raise ValueError(f"{what}: built again from its class and the arguments it keeps, it is not the same "
                         f"distribution{why}. {fix}")
    return {"distribution": record}


def _prior_from_record(record: Mapping[str, Any], arrays: Mapping[str, np.ndarray]):
    if "distribution" in record:
        return _dist_from_record(record["distribution"], arrays)
    return record["value"]


# --------------------------------------------------------------------------- the model


def to_record(spec: "ModelSpec", per_group: Mapping[str, np.ndarray] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """The JSON-able record and the named arrays from which :func:`from_record` rebuilds the model.

    ``per_group``: the learned (G, K) centeredness of groupings whose values differ
    between groups (form ``PER_GROUP``; the model data hold them), stored as arrays.

    Raises
    ------
    ValueError
        When ``spec`` did not come from ``bj.Model`` (it has no ``source``).
    TypeError, ValueError
        Naming the data column or prior that cannot be stored, and why.
    """
    source = getattr(spec, "source", None)
    if source is None:
        raise ValueError("this model spec was not built by bj.Model, so it cannot be stored as a record.")
    arrays: dict[str, np.ndarray] = {}
    columns = {str(name): _column_record(str(name), source.frame[name], f"column/{i}", arrays)
               for i, name in enumerate(source.frame.columns)}
    priors = {key: _prior_record(key, value, f"prior/{i}", arrays)
              for i, (key, value) in enumerate(source.priors.items())}
    from bhmjax._src.models import all_groups

    parameterization = {}
    for g in all_groups(spec.structure):
        if g.centeredness == PER_GROUP:
            if per_group is None or g.name not in per_group:
                raise ValueError(f"the per-group centeredness of {g.name!r} was not given, so the model cannot be "
                                 "stored; pass the model data's values (per_group=)")
            arrays[f"centeredness/{g.name}"] = np.asarray(per_group[g.name], np.float64)
            parameterization[g.name] = {"per_group": f"centeredness/{g.name}"}
        else:
            parameterization[g.name] = ("auto" if g.centeredness is None else g.centeredness
                                        if isinstance(g.centeredness, str) else [float(c) for c in g.centeredness])
    record = {"formula": spec.formula.text, "family": spec.family.name, "trials": source.trials,
              "parameterization": parameterization, "priors": priors, "columns": columns}
    options = {"weights": source.weights, "cens": source.cens, "cens_upper": source.cens_upper}
    record.update({k: v for k, v in options.items() if v is not None})
    if source.dpars:
        record["dpars"] = {str(k): str(v) for k, v in source.dpars.items()}
    return record, arrays


def from_record(record: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "Model":
    """The ``bj.Model`` a :func:`to_record` record describes, built again from its columns."""
    import pandas as pd

    from bhmjax.model import Model

    frame = pd.DataFrame({name: _column_from_record(col, arrays) for name, col in record["columns"].items()})
    priors = {key: _prior_from_record(value, arrays) for key, value in record["priors"].items()}
    stored = record["parameterization"]
    learned = {name: np.asarray(arrays[c["per_group"]]) for name, c in stored.items() if isinstance(c, dict)}
    parameterization = {name: "auto" if name in learned else c if isinstance(c, str) else tuple(c)
                        for name, c in stored.items()}
    model = Model(record["formula"], frame, record["family"], parameterization=parameterization,
                  priors=priors, trials=record["trials"], weights=record.get("weights"), cens=record.get("cens"),
                  cens_upper=record.get("cens_upper"), **record.get("dpars", {}))
    if learned:
        model.use_centeredness(learned)
    return model


# --------------------------------------------------------------------------- the model of a file


def _per_group_values(spec: Any, data: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """The (G, K) centeredness of ``PER_GROUP`` groupings, read from the model data."""
    from bhmjax._src.models import all_groups

    names = [g.name for g in all_groups(spec.structure) if g.centeredness == PER_GROUP]
    return {n: np.asarray(data[data_key(n)]) for n in names if data is not None and data_key(n) in data}


def model_entry(model: Callable | None, spec: Any, data: Mapping[str, Any] | None = None
                ) -> tuple[dict | None, dict[str, np.ndarray]]:
    """``meta["model"]`` and its arrays (entry names without the ``model/`` prefix).

    ``data``: the fit's (or run's) model data, which hold a formula model's learned
    per-group centeredness.

    A formula model (``spec`` from ``bj.Model``) is stored as its record; a NumPyro
    function by its ``module:qualname``. Raises ``TypeError``/``ValueError`` naming a
    data column or prior of a formula model that cannot be stored.
    """
    from bhmjax._src.identity import model_reference

    if spec is not None:
        record, arrays = to_record(spec, _per_group_values(spec, data))
        return {"kind": "formula", "record": record}, arrays
    if model is not None:
        return {"kind": "function", "reference": model_reference(model)}, {}
    return None, {}


def _rebuild_formula(record: Mapping[str, Any], arrays: Mapping[str, np.ndarray], data: Mapping[str, Any],
                     x64: bool, where: str):
    """The stored ``bj.Model``, checked to give exactly the data the fit was sampled on."""
    from bhmjax._src.errors import FitFileError

    hint = "(written by another version of bhmjax or formulaic?)"
    try:
        model = from_record(record, arrays)
    except (KeyError, TypeError, ValueError) as err:
        raise FitFileError(f"{where}: its formula model cannot be built again {hint}: {err}") from err
    for name, value in model.model_data(x64=x64).items():
        stored = data.get(name)
        same = (stored == value if not isinstance(value, np.ndarray) else isinstance(stored, np.ndarray)
                and stored.dtype == value.dtype and np.array_equal(stored, value))
        if not same:
            raise FitFileError(f"{where}: its formula model, built again, gives data[{name!r}] different from "
                               f"the data the fit was sampled on {hint}.")
    return model


def _site_mismatch(model: Callable, draws: Mapping[str, np.ndarray], data: Mapping[str, Any],
                   x64: bool) -> str | None:
    """Why ``model`` cannot be the model of these draws (a site it lacks or shapes it), or None."""
    from bhmjax._src import data as data_lib
    from bhmjax._src.batch import site_shapes
    from bhmjax._src.precision import x64_mode

    try:
        with x64_mode(x64):
            shapes = site_shapes(model, *data_lib.split_data(data))
    except Exception as err:  # noqa: BLE001 - any failure on the stored data disqualifies it
        return f"it fails on the stored data ({type(err).__name__}: {err})"
    for site, value in draws.items():
        if site not in shapes:
            return f"it has no site {site!r}, which the draws hold"
        if tuple(shapes[site].shape) != np.shape(value)[2:]:
            return (f"its site {site!r} has shape {tuple(shapes[site].shape)}, the draws "
                    f"{tuple(np.shape(value)[2:])}")
    return None


def _function_model(entry: dict | None, model: Callable | None, draws, data, x64: bool,
                    where: str) -> Callable | None:
    """The model passed to ``load``, else the stored ``module:qualname`` imported again (or None, warned)."""
    from bhmjax._src.identity import import_model

    fix = "pass it: bj.load(path, model=my_model)"
    if model is not None:
        if not callable(model):
            raise TypeError(f"model must be the NumPyro model function of the fit, got {type(model).__name__}")
        why = _site_mismatch(model, draws, data, x64)
        if why is not None:
            raise ValueError(f"model={getattr(model, '__qualname__', model)!r} is not the model of {where}: {why}.")
        return model
    if entry is None:  # format 1 files name no model
        return None
    reference = entry["reference"]
    try:
        model = import_model(reference)
        why = _site_mismatch(model, draws, data, x64)
    except ValueError as err:
        model, why = None, str(err)
    if why is not None:
        warnings.warn(f"{where} was fitted with the model {reference}, which cannot be used here ({why}); "
                      "the loaded fit has no model: summaries, diagnostics and the stored log-likelihood "
                      f"work, posterior predictive draws do not. To restore it, {fix}.", UserWarning, stacklevel=4)
        return None
    return model


def restore_model(entry: Mapping[str, Any] | None, arrays: Mapping[str, np.ndarray],
                  draws: Mapping[str, np.ndarray], data: Mapping[str, Any], *, x64: bool, where: str,
                  model: Callable | None = None) -> tuple[Callable | None, Any]:
    """The model function and spec of a stored fit, from :func:`model_entry`'s entry.

    A formula model is built again from its record and must give exactly ``data``;
    a function model is ``model`` when given (checked against the draws' sites),
    else its ``module:qualname`` imported again, else None with a warning.
    """
    if entry is not None and entry["kind"] == "formula":
        if model is not None:
            raise ValueError(f"{where} holds a formula model, which load builds again from the file; "
                             "call bj.load(path) without model=.")
        rebuilt = _rebuild_formula(entry["record"], arrays, data, x64, where)
        return rebuilt.numpyro_model, rebuilt.spec
    return _function_model(entry, model, draws, data, x64, where), None
