"""``bj.fit_many``: many datasets fitted by one compiled program; ``FitCollection`` holds the results.

See docs/batch.md for the padding and bucketing design, memory chunking, sharding
over devices and running across hosts.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bhmjax._src import batch as core
from bhmjax._src import compiles
from bhmjax._src import data as data_lib
from bhmjax._src import engine
from bhmjax._src.config import build_config, check_keywords, positive_int
from bhmjax._src.models import all_groups, row_keys
from bhmjax._src.precision import x64_mode
from bhmjax._src.reparam import AUTO, PER_GROUP
from bhmjax._src.stats import STATS
from bhmjax._src.trace import model_trace
from bhmjax.fit import Fit, hdi_columns
from bhmjax.model import Model
from bhmjax.checkpoint import Owner
from bhmjax.runner import Progress, RunRequest, make_fit, run_request
from bhmjax.stream import available_memory

__all__ = ["FitCollection", "NotFitted", "fit_many"]


@dataclass
class _Dataset:
    """One prepared dataset: the request its Fit is made from (unpadded data, labels, rows and
    reduction of a formula dataset), or why it could not be prepared."""

    label: Any
    request: RunRequest | None = None
    error: str | None = None


@dataclass
class _Bucket:
    """Datasets sharing one padded shape: their results, chunk by chunk (leading dataset axis)."""

    key: tuple
    members: list[int]
    parts: list[tuple[dict, dict]]  # per chunk: draws and stats (datasets, chains, draws, ...)
    grads: dict  # phase -> (members,)
    axes: dict
    timings: dict
    diagnostics: dict = field(default_factory=dict)
    hidden: tuple = ()  # sampler-internal sites (non-centered twins): no summary shows them, none computed

    def locate(self, j: int) -> tuple[dict, dict, int]:
        """The draws and stats of the chunk holding member ``j``, and its row there."""
        for values, stats in self.parts:
            n = len(next(iter(stats.values())))
            if j < n:
                return values, stats, j
            j -= n
        raise IndexError(j)

    def summary(self, prob: float) -> dict:
        """Per site, every member's summary statistics (vmapped over each chunk's datasets)."""
        shown = [{k: v for k, v in values.items() if k not in self.hidden} for values, _ in self.parts]
        tables = [core.batch_summary(values, prob, _summary_width(values)) for values in shown]
        return {site: {k: np.concatenate([t[site][k] for t in tables]) for k in tables[0][site]}
                for site in tables[0]}


MODEL_OPTIONS = ("parameterization", "priors", "trials", "na_action")  # passed to bj.Model
FITTED_HDI = 0.94  # the HDI of the summaries computed while fitting (Fit.summary's default)


def _refuse_learned_centeredness(parameterization: Any) -> None:
    """fit_many runs one program for every dataset: a centeredness learned per dataset (or per
    group of one dataset) has no meaning for the others. Refused before anything is built."""
    if isinstance(parameterization, Mapping):  # a None value: a template's grouping still to be learned
        bad = [v for v in parameterization.values() if v is None or (isinstance(v, str) and v in (AUTO, PER_GROUP))]
    else:  # None at the top: bj.Model's default
        bad = [parameterization] if isinstance(parameterization, str) and parameterization == AUTO else []
    if bad:
        raise ValueError(f"fit_many does not learn a centeredness per dataset (parameterization {parameterization!r}): "
                         "give 'centered', 'noncentered', or one value per column of each grouping "
                         "({'g': (1.0, 0.5)}); to choose them, fit a typical dataset with parameterization='auto' "
                         "and read its model.centeredness.")


def _formula_datasets(formula, datasets, family, model_kwargs, config, reduce,
                      marginalize: Any = "auto") -> tuple[list[_Dataset], core.PadSpec]:
    """Each dataset's model and the data its sampler runs on, as ``Model.fit`` would run it
    (standardized; reduced exactly wherever a reduction exists, ``reduce="auto"``: padded
    to one shape, fewer rows always cost less; its one grouping integrated out where
    ``marginalize`` picks it for every dataset, on blocked rows), and the padding of them all."""
    models = []
    for label, frame in datasets:
        try:
            models.append((label, Model(formula, frame, family, **model_kwargs), None))
        except (ValueError, TypeError) as err:
            models.append((label, None, f"model could not be built: {err}"))
    out = _requests(models, config, reduce, marginalize)
    marginal = [d.request is not None and _blocked(d.request) for d in out]
    integrated = any(d.request is not None and d.request.settings.get("marginalized") is not None for d in out)
    bad = [d for m, d in zip(marginal, out) if not (m or d.error)]
    if marginalize is True and bad:
        raise ValueError(f"marginalize=True, but dataset {bad[0].label!r} cannot have its group effects integrated "
                         "out on blocked rows (fit_many needs one grouping, the gaussian family and "
                         "reduce='auto' or True). Fit with marginalize='auto' or False.")
    if integrated and bad:  # one program for all: every dataset integrated on blocked rows, or none
        out, marginal = _requests(models, config, reduce, False), [False] * len(out)
    built = [(m, d.request) for (_, m, _), d in zip(models, out) if d.error is None]
    if not built:
        return out, None
    rows = {k: None for m, r in built for k in row_keys(m.spec.structure, r.arrays)}
    k = len(built[0][0].spec.groups)
    if any(marginal):  # whole groups of blocked rows, padded with zero rows (see bhmjax._src.batch.PadSpec)
        rows.update(dict.fromkeys(("marginal:codes", "marginal:coords")))
        spec = core.PadSpec(rows=tuple(rows), row_count="N", observed=(),
                            groups=(("G_0", ("codes_0", "marginal:codes")),), per_group="marginal:block",
                            block=max(int(r.static["marginal:block"]) for _, r in built),
                            group_arrays=("marginal:root",), dropped="reduction:dropped",
                            row_fill=tuple((x, "X_mean" + x[1:]) for x in rows
                                           if x.startswith("X") and "X_mean" + x[1:] in built[0][1].arrays))
    else:
        spec = core.PadSpec(rows=tuple(rows), row_count="N", observed=("y",),
                            groups=tuple((f"G_{i}", (f"codes_{i}",)) for i in range(k)))
    return out, spec


def _requests(models, config, reduce, marginalize) -> list[_Dataset]:
    out = []
    for label, m, error in models:
        if error is not None:
            out.append(_Dataset(label, error=error))
            continue
        try:
            choice = marginalize if marginalize is False else "auto"  # True is checked over all datasets
            request = m.run_request(config, reduce=reduce, marginalize=choice, progress=False, pays_only=False,
                                    layout=False)
        except (ValueError, TypeError) as err:
            out.append(_Dataset(label, error=f"model could not be built: {err}"))
            continue
        out.append(_Dataset(label, request))
    return out


def _blocked(request: RunRequest) -> bool:
    """Whether the request integrates out its one grouping on blocked rows (what fit_many can pad)."""
    return (request.settings.get("marginalized") is not None and "marginal:block" in request.static
            and "reduction:dropped" in request.arrays and "G_0" in request.static and "G_1" not in request.static)


def _plain_datasets(model, datasets, config, rows, groups) -> tuple[list[_Dataset], core.PadSpec | None]:
    out = []
    for label, data in datasets:
        arrays, static = data_lib.split_data(data)
        data_lib.check_data(arrays)
        out.append(_Dataset(label, RunRequest(model=model, arrays=arrays, static=static, config=config)))
    requests = [d.request for d in out]
    if rows is None:
        shapes = {(tuple((k, v.shape) for k, v in r.arrays.items()), tuple(sorted(r.static.items()))) for r in requests}
        if len(shapes) > 1:
            raise ValueError(
                f"the datasets differ in shapes or static values ({len(shapes)} different kinds), and fit_many "
                "does not know how to pad a plain NumPyro model. Declare the row arrays and the group counts, "
                "e.g. rows=['y', 'group'], groups={'num_groups': ['group']}, or give datasets of equal shapes.")
        return out, None
    groups = {} if groups is None else dict(groups)
    for d in out:
        r = d.request
        missing = [k for k in rows if k not in r.arrays] + [g for g in groups if g not in r.static]
        if missing:
            raise ValueError(f"dataset {d.label!r} has no {missing[0]!r}; rows= names arrays indexed by row and "
                             f"groups= names static ints (group counts); the dataset has arrays "
                             f"{list(r.arrays)} and static values {list(r.static)}.")
    return out, core.PadSpec(rows=tuple(rows), groups=tuple((g, tuple(v)) for g, v in groups.items()))


def _as_items(datasets) -> list[tuple[Any, Any]]:
    if isinstance(datasets, Mapping):
        return list(datasets.items())
    if isinstance(datasets, (str, bytes)) or not isinstance(datasets, Sequence):
        raise TypeError(f"datasets must be a list (or dict) of DataFrames or data dicts, got {type(datasets).__name__}")
    return list(enumerate(datasets))


def fit_many(model: Any, datasets: Sequence | Mapping, *, family: str = "gaussian", chains: int = 4,
             warmup: int = 1000, draws: int = 1000, seed: Any = 0, thin: int = 1, target_accept: float | None = None,
             max_tree_depth: int = 10, dense_mass: bool = False, adaptation: str = "auto",
             init_strategy: Any = "uniform",
             keep: Sequence[str] | None = None, drop: Sequence[str] = (), x64: bool = False,
             rows: Sequence[str] | None = None, groups: Mapping[str, Sequence[str]] | None = None,
             devices: Any = "all", batch_size: int | None = None, min_rows: int = 8, min_groups: int = 2,
             memory_fraction: float = 0.5, progress: bool = False, checkpoint: str | os.PathLike | None = None,
             out: str | os.PathLike | None = None, buckets: str = "auto", reduce: Any = "auto",
             marginalize: Any = "auto",
             **model_kwargs) -> FitCollection:
    """Fit one model to many datasets in one compiled program per shape bucket.

    Parameters
    ----------
    model : str, bj.Model or callable
        A formula (``"y ~ 1 + x + (1 | g)"``), a ``bj.Model`` template (its formula,
        family and parameterization are reused), or a NumPyro model function.
    datasets : list or dict
        DataFrames / dicts of columns for formula models; keyword-argument dicts for
        a NumPyro model. A dict's keys label the datasets.
    rows, groups : for a NumPyro model of datasets of different sizes
        ``rows`` names the arrays indexed by row (axis 0); ``groups`` maps each static
        int that counts groups to the arrays of codes into it, e.g.
        ``rows=["y", "group"], groups={"num_groups": ["group"]}``. Without them the
        datasets must have equal shapes.
    devices : "all", int, list of devices or None
        Shard the dataset axis over these devices (``"all"``: every device JAX sees;
        None or 1: one device).
    batch_size : int, optional
        Datasets per compiled call; default from the available memory.
    buckets : {"auto", "pow2"}
        The padded shapes. "auto": rows and group counts rounded up to eight sizes per
        doubling (:func:`bhmjax._src.batch.rounded`), then neighbouring shapes joined
        wherever a compilation would cost more than the padded work it saves (a cost
        model: :func:`bhmjax._src.batch.plan_buckets`); a stream of small ragged
        datasets then compiles one program. "pow2": rounded up to powers of two, one
        program per shape. ``fits.buckets`` lists the shapes used.
    chains, warmup, draws, seed, thin, target_accept, max_tree_depth, dense_mass, adaptation,
    init_strategy, keep, drop, x64 : as in :func:`bhmjax.sample`.
    checkpoint : path, optional
        A folder holding one checkpoint per compiled call (``bucketBB-SSSSSS``, written
        every ``draws`` steps, as :func:`bhmjax.sample` writes one): calling ``fit_many``
        again with the same folder, datasets and settings continues each call where it
        stopped and returns the finished ones as they are.
    out : path, optional
        Stream the draws to disk, one folder per compiled call; the fits' draws are
        read-only memory maps of those files (see :mod:`bhmjax.stream`).
    reduce : "auto", True or False
        Formula models: the exact data reduction of ``bj.Model.fit(reduce=...)``, per
        dataset. "auto" reduces every dataset that has one (even where it saves little:
        one program runs them all, and a reduction never has more rows than the data),
        True insists (a dataset without one is not fitted), False samples on the rows.
        The fits keep their rows (for LOO and predictions); ``fits[i].settings["reduction"]``
        says what was done.
    marginalize : "auto", True or False
        Formula models: integrate the group effects out exactly, as ``bj.Model.fit``
        does ("auto": wherever it applies to every dataset; ``fits[i].settings["marginalized"]``
        says so), with each draw of ``r_<g>`` drawn from its Gaussian conditional inside the
        compiled program. fit_many does it for models with one grouping, the gaussian family
        and reduced rows (``reduce`` "auto" or True); True raises ``ValueError`` where that is
        not so, False samples the effects.
    **model_kwargs : passed to ``bj.Model`` (priors, parameterization, ...).

    Returns
    -------
    FitCollection

    Examples
    --------
    >>> import numpy as np, bhmjax as bj
    >>> rng = np.random.default_rng(0)
    >>> data = [{"y": rng.normal(size=n), "g": np.arange(n) % 3} for n in (12, 20, 30)]
    >>> fits = bj.fit_many("y ~ 1 + (1 | g)", data, chains=2, warmup=100, draws=100)
    >>> len(fits), fits[1].draws["r_g"].shape
    (3, (2, 100, 3, 1))
    """
    own = [p for p in inspect.signature(fit_many).parameters if p != "model_kwargs"]
    check_keywords(model_kwargs, [*own, *MODEL_OPTIONS], "fit_many()")
    if model_kwargs and not (isinstance(model, str) or hasattr(model, "spec")):
        raise TypeError(f"fit_many() passes {sorted(model_kwargs)} to bj.Model, but model is a NumPyro function; "
                        "those options apply to formula models only.")
    if checkpoint is not None and out is not None:
        raise ValueError("out= and checkpoint= cannot be combined: a checkpoint keeps the draws in its "
                         "folder already. Use one of them.")
    if buckets not in ("auto", "pow2"):
        raise ValueError(f"buckets must be 'auto' or 'pow2', got {buckets!r}")
    if not (isinstance(reduce, bool) or reduce == "auto"):
        raise ValueError(f"reduce must be 'auto', True or False, got {reduce!r}")
    if not (isinstance(marginalize, bool) or marginalize == "auto"):
        raise ValueError(f"marginalize must be 'auto', True or False, got {marginalize!r}")
    config = build_config(chains=chains, warmup=warmup, draws=draws, seed=seed, thin=thin,
                          target_accept=target_accept, max_tree_depth=max_tree_depth, dense_mass=dense_mass,
                          adaptation=adaptation, init_strategy=init_strategy, keep=keep, drop=drop, x64=x64,
                          chunk_size=draws, every=draws)  # one call stores the draws; warmup in pieces of as many
    items = _as_items(datasets)
    if not items:
        raise ValueError("datasets is empty: there is nothing to fit.")
    if isinstance(model, str) or hasattr(model, "spec"):
        formula = model if isinstance(model, str) else model.spec.formula.text
        if not isinstance(model, str):
            family = model.spec.family.name
            model_kwargs.setdefault("parameterization", {g.name: g.centeredness for g in all_groups(model.spec.structure)})
            for key, value in [*model.spec.dpar_formulas.items(), ("weights", model.spec.formula.weights),
                               ("cens", model.spec.formula.cens), ("cens_upper", model.spec.formula.cens_upper)]:
                if value is not None:  # the model's own terms, given as keywords (the formula may lack them)
                    model_kwargs.setdefault(key, value)
        _refuse_learned_centeredness(model_kwargs.get("parameterization"))
        prepared, spec = _formula_datasets(formula, items, family, model_kwargs, config, reduce, marginalize)
    elif callable(model):
        prepared, spec = _plain_datasets(model, items, config, rows, groups)
    else:
        raise TypeError(f"model must be a formula string, a bj.Model or a NumPyro model, got {type(model).__name__}")
    if spec is not None:
        spec = dataclasses.replace(spec, min_rows=min_rows, min_groups=min_groups)
    devs = _devices(devices)
    with x64_mode(config.x64), compiles.watch() as log:
        buckets, info = _run_buckets(prepared, spec, config, devs, batch_size, memory_fraction, progress,
                                     checkpoint, out, plan=buckets)
    info["compiles"] = compiles.summarize(log)
    return FitCollection(prepared, buckets, config, info)


def _devices(devices: Any) -> list | None:
    if devices is None:
        return None
    if devices == "all":
        return list(jax.devices())
    if isinstance(devices, numbers.Integral):
        if not 1 <= devices <= len(jax.devices()):
            raise ValueError(f"devices={devices} but JAX sees {len(jax.devices())} device(s).")
        return list(jax.devices())[: int(devices)]
    return list(devices)


# ---------------------------------------------------------------- running the buckets


def _per_dataset_bytes(trace, arrays, chains, draws) -> int:
    """Device and host bytes one dataset needs: buffered draws (twice), states, data."""
    shapes = trace.stored()
    per_draw = sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in shapes.values()) + len(STATS) * 8
    latent = sum(int(np.prod(s.shape)) for s in shapes.values())
    data = sum(np.asarray(a).nbytes for a in arrays.values())
    return chains * (2 * draws * per_draw + 12 * latent * 8) + data


def _chunk_size(per_dataset: int, count: int, ndev: int, batch_size, fraction: float) -> int:
    """Datasets per call: ``count`` in as few calls as fit in ``fraction`` of free memory, each call's size
    rounded up to the grid of :func:`bhmjax._src.batch.rounded` (few shapes, at most 1/8 padded) and to a
    multiple of ``ndev``."""
    if batch_size is None:
        limit = max(1, int(fraction * available_memory() // max(per_dataset, 1)))
        calls = -(-count // limit)
        while True:
            size = core.rounded(-(-count // calls))
            if size <= limit or size == 1:
                break
            calls += 1
    else:
        size = positive_int("batch_size", batch_size)
    return max(ndev, -(-size // ndev) * ndev)


def _bucket_request(wrapped, stacked, static, config, sub: str, checkpoint, out, generate=None) -> RunRequest:
    """The request of one call: ``D`` datasets x ``C`` chains, with its own checkpoint or stream folder."""
    return RunRequest(model=wrapped, arrays=stacked, static=static, config=config, progress=False,
                      checkpoint=None if checkpoint is None else Path(checkpoint) / sub,
                      out=None if out is None else Path(out) / sub, generate=generate)


def _effects(request: RunRequest, wrapped, static) -> tuple[Callable | None, str | None]:
    """For a dataset whose grouping is integrated out: the generator of its effects' draws (run in
    the compiled chunk, vmapped over the call's datasets) and their site; else None, None."""
    from bhmjax._src import marginalize
    from bhmjax.marginal import _draws_effects

    done = request.settings.get("marginalized")  # its request stores every site: keep= applies to the fits
    if not _draws_effects(done, request.settings.get("keep"), request.config.drop):
        return None, None
    return marginalize.effects_generator(wrapped, static, done["site"]), done["site"]


def _run_chunk(request: RunRequest, trace, layout: engine.Layout, keys) -> tuple[dict, dict, dict, dict]:
    """One call of the driver on ``D`` datasets x ``C`` chains: draws and stats (D, C, draws, ...)."""
    lock = None if request.checkpoint is None else Owner.acquire(request.checkpoint)
    try:
        values, stats, run, _ = run_request(request, lock=lock, trace=trace, layout=layout, keys=keys,
                                            keep_on_interrupt=False)
    finally:
        if lock is not None:
            lock.release()
    d, c = layout.lanes // layout.per_dataset, layout.per_dataset
    per_dataset = lambda a: a.reshape(d, c, *a.shape[1:])  # noqa: E731 - a view, also of a memory map
    grads = {k: v.reshape(d, c).sum(axis=1) for k, v in run.grads.items()}
    return ({k: per_dataset(v) for k, v in values.items()}, {k: per_dataset(v) for k, v in stats.items()}, grads,
            run.timings)


def _summary_width(values: Mapping[str, np.ndarray]) -> int:
    """Columns per block of a batch summary: the summaries' memory budget shared by the datasets."""
    from bhmjax.summary import block_width

    if not values:
        return 1
    d, c, s = next(iter(values.values())).shape[:3]
    return max(1, block_width(c, s) // d)


def _same_size_as_before(checkpoint, number: int, size: int) -> int:
    """With a checkpoint folder, a bucket's datasets per call as the first run chose them (memory varies)."""
    if checkpoint is None:
        return size
    path = Path(checkpoint) / "batch_sizes.json"
    Path(checkpoint).mkdir(parents=True, exist_ok=True)
    sizes = json.loads(path.read_text()) if path.is_file() else {}
    sizes.setdefault(str(number), size)
    path.write_text(json.dumps(sizes))
    return int(sizes[str(number)])


def _run_buckets(prepared, spec, config, devs, batch_size, fraction, progress, checkpoint, out, plan="auto"):
    requests = {i: d.request for i, d in enumerate(prepared) if d.error is None}
    keys: dict[tuple, list[int]] = {}
    padded = {}
    grid = "fine" if plan == "auto" else "pow2"
    base = {i: core.bucket_of(r.arrays, r.static, spec, grid) for i, r in requests.items()} if spec is not None else {}
    if spec is not None and plan == "auto":
        steps = config.chains * (config.warmup + config.draws * config.thin) * core.GRADIENTS_PER_STEP
        joined = core.plan_buckets(list(base.values()), steps)
        base = {i: joined[b] for i, b in base.items()}
    true_units = padded_units = 0
    for i, r in requests.items():
        b = ("equal",) if spec is None else base[i]
        padded[i] = (r.arrays, r.static) if spec is None else core.pad(r.arrays, r.static, spec, b)
        keys.setdefault((r.model, tuple(sorted(r.arrays)), b), []).append(i)  # reduced or not: other arrays
        true_units += 1 if spec is None else core.units(core.shape_of(r.arrays, r.static, spec))
        padded_units += 1 if spec is None else core.units(b)
    root = config.root_key()
    ndev = 1 if not devs else len(devs)
    chains = config.chains
    buckets, info = [], {"compile_s": 0.0, "warmup_s": 0.0, "sampling_s": 0.0, "batch_sizes": []}
    with Progress(progress, len(requests), "fit_many") as bar:
        for number, ((model, _, b), members) in enumerate(keys.items()):
            first_arrays, first_static = padded[members[0]]
            wrapped = model if spec is None else core.masked_model(model, spec.observed)
            first = requests[members[0]]
            generate, effects = _effects(first, wrapped, first_static)
            run_config = first.config if effects is not None else config  # the effects replay every site
            trace = model_trace(wrapped, first_arrays, first_static)
            wanted = first.settings.get("keep")
            hidden = tuple(first.internal) + tuple(
                k for k in trace.stored(run_config.keep, run_config.drop) if wanted is not None and k not in wanted)
            size = _chunk_size(_per_dataset_bytes(trace, first_arrays, chains, config.draws), len(members), ndev,
                               batch_size, fraction)
            size = _same_size_as_before(checkpoint, number, size)
            info["batch_sizes"].append(size)
            layout = engine.Layout("batched", size * chains, tuple(d.id for d in devs) if ndev > 1 else (), chains)
            parts, grads, compile_s = [], [], 0.0
            for start in range(0, len(members), size):
                idx = members[start:start + size]
                full = idx + [idx[-1]] * (size - len(idx))  # pad the dataset axis: one shape per bucket
                padded_units += (size - len(idx)) * (1 if spec is None else core.units(b))
                stacked = {k: np.stack([padded[i][0][k] for i in full]) for k in first_arrays}
                chain_keys = core.dataset_keys(root, full, chains).reshape(size * chains, -1)
                request = _bucket_request(wrapped, stacked, first_static, run_config, f"bucket{number:02d}-{start:06d}",
                                          checkpoint, out, generate)
                values, stats, g, timings = _run_chunk(request, trace, layout, chain_keys)
                cut = lambda tree, n=len(idx): jax.tree.map(lambda a: a[:n], tree)  # noqa: E731
                parts.append((cut(values), cut(stats)))
                grads.append(cut(g))
                compile_s += timings["compile"]
                info["warmup_s"] += timings["warmup"]
                info["sampling_s"] += timings["sampling"]
                bar.update(len(idx), "sampling")
            info["compile_s"] += compile_s
            if spec is not None and spec.per_group is not None:  # no sampled site has a group axis
                axes = {} if effects is None else {effects: {0: spec.groups[0][0]}}  # r_<g>: (G, q) a draw
            else:
                axes = {} if spec is None else core.group_axes(wrapped, first_arrays, first_static,
                                                               [g for g, _ in spec.groups])
            bucket = _Bucket(b, members, parts, jax.tree.map(lambda *xs: np.concatenate(xs), *grads), axes,
                             {"compile": compile_s}, hidden=hidden)
            bucket.diagnostics = bucket.summary(FITTED_HDI)
            buckets.append(bucket)
    info["buckets"] = [bk.key for bk in buckets]
    info["padded_work_share"] = 0.0 if not padded_units else 1.0 - true_units / padded_units
    return buckets, info


# ---------------------------------------------------------------- the collection


def _trim(x: np.ndarray, axes: Mapping[int, str], static: Mapping[str, Any], lead: int) -> np.ndarray:
    """Drop padded groups: cut each group axis (after ``lead`` leading axes) to the true count."""
    index = [slice(None)] * x.ndim
    for axis, g in axes.items():
        index[lead + axis] = slice(0, int(static[g]))
    return x[tuple(index)]


@dataclass(frozen=True)
class NotFitted:
    """The place of a dataset that could not be fitted, when iterating a :class:`FitCollection`.

    Falsy, so ``[f for f in fits if f]`` keeps the fits; any Fit attribute raises
    ``ValueError`` with the reason.
    """

    label: Any
    reason: str

    def __bool__(self) -> bool:
        return False

    def __getattr__(self, name: str):
        raise ValueError(f"dataset {self.label!r} was not fitted ({self.reason}), so it has no {name!r}.")


class FitCollection:
    """The fits of :func:`fit_many`: ``len``, ``fits[i]`` (a :class:`~bhmjax.Fit`), ``summary()``, ``failed()``.

    Attributes
    ----------
    labels : list
        The dataset labels (list positions, or the keys of a dict of datasets).
    buckets : list of tuple
        The padded shapes, ``(rows, ((group_count, size), ...))``: one compiled program each.
    timings : dict
        Seconds in ``compile``, ``warmup`` and ``sampling`` over all buckets, and what was
        compiled (``programs_compiled``, ``compiled`` seconds per program: see ``Fit.timings``).
    """

    def __init__(self, prepared: list[_Dataset], buckets: list[_Bucket], config, info: dict) -> None:
        self._data, self._buckets, self.config = prepared, buckets, config
        self.settings = {**config.to_dict(), "chain_method": "batched",
                         "padded_work_share": round(info.get("padded_work_share", 0.0), 4)}
        self.labels = [d.label for d in prepared]
        self.buckets = info["buckets"]
        self.batch_sizes = info["batch_sizes"]
        self.timings = {"compile": info["compile_s"], "warmup": info["warmup_s"], "sampling": info["sampling_s"],
                        **info.get("compiles", {})}
        self._where = {i: (b, j) for b, bk in enumerate(buckets) for j, i in enumerate(bk.members)}
        self._fits: dict[int, Fit] = {}

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return (f"FitCollection({len(self)} datasets, {len(self.buckets)} shape bucket(s), "
                f"{sum(d.error is not None for d in self._data)} not fitted)")

    def _repr_html_(self) -> str:
        from bhmjax.display import card

        bad = sum(d.error is not None for d in self._data)
        lines = [("datasets", f"{len(self)} in {len(self.buckets)} shape bucket(s)"),
                 ("time", ", ".join(f"{k} {self.timings[k]:.1f} s" for k in ("compile", "warmup", "sampling")))]
        return card("bhmjax FitCollection", lines, verdict=(f"{bad} not fitted", bad == 0),
                    note=".summary() per dataset and parameter; .failed() lists what did not converge")

    def _index(self, key) -> int:
        """A label (dict of datasets) or a position (as in a list: negative from the end)."""
        if key in self.labels and not isinstance(key, bool):
            return self.labels.index(key)
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            if not -len(self) <= key < len(self):
                raise IndexError(f"dataset index {key} is out of range for {len(self)} datasets")
            return int(key) % len(self)
        raise KeyError(f"no dataset {key!r}; datasets are labelled {self.labels[:5]}{' ...' * (len(self) > 5)}")

    def __getitem__(self, key) -> Fit:
        """The Fit of one dataset (padded rows and groups removed; its state is not kept).

        ``key`` is a label of a dict of datasets, or a position as in a list (``fits[-1]``
        is the last; ``IndexError`` beyond the end). A dataset that was not fitted raises
        ``ValueError`` with the reason.
        """
        i = self._index(key)
        if i in self._fits:
            return self._fits[i]
        d = self._data[i]
        if d.error is not None:
            raise ValueError(f"dataset {d.label!r} was not fitted: {d.error}")
        b, j = self._where[i]
        bk = self._buckets[b]
        values, stats, row = bk.locate(j)
        draws = {k: _trim(v[row], bk.axes.get(k, {}), d.request.static, 2) for k, v in values.items()}
        fit = make_fit(d.request, draws, {k: v[row] for k, v in stats.items()},
                       timings={"compile": 0.0, "warmup": 0.0, "sampling": 0.0},
                       grads={k: int(v[j]) for k, v in bk.grads.items()}, state=None, chain_method="batched",
                       facts={"bucket": bk.key})
        self._fits[i] = fit
        return fit

    def __iter__(self):
        """Every dataset in order: its Fit, or a :class:`NotFitted` saying why there is none.

        So ``zip(datasets, fits)`` pairs each dataset with its own result.
        """
        for i, d in enumerate(self._data):
            yield NotFitted(d.label, d.error) if d.error is not None else self[i]

    def summary(self, hdi_prob: float = FITTED_HDI) -> pd.DataFrame:  # noqa: F821
        """One row per dataset x parameter: mean, sd, HDI, MCSE, ess_bulk, ess_tail, r_hat, divergences.

        The statistics were computed for every dataset at once (vmapped in JAX) when
        fitting, with ``hdi_prob=0.94`` (``Fit.summary``'s argument); another ``hdi_prob``
        recomputes them. Values are not rounded (``Fit.summary(round_to="none")``).
        """
        import pandas as pd

        lo, hi = hdi_columns(hdi_prob)
        cols = {"mean": "mean", "sd": "sd", "hdi_lower": lo, "hdi_upper": hi, "mcse_mean": "mcse_mean",
                "mcse_sd": "mcse_sd", "ess_bulk": "ess_bulk", "ess_tail": "ess_tail", "r_hat": "r_hat"}
        frames = []
        for bk in self._buckets:
            table = bk.diagnostics if hdi_prob == FITTED_HDI else bk.summary(hdi_prob)
            for j, i in enumerate(bk.members):
                fit, d = self[i], self._data[i]
                names, values = [], {c: [] for c in cols}
                for site in (s for s in fit.draws if s not in bk.hidden):
                    shown = [n for n in fit.site_names(site)]
                    keep = [k for k, n in enumerate(shown) if n is not None]
                    names += [shown[k] for k in keep]
                    for c in cols:
                        v = _trim(table[site][c][j], bk.axes.get(site, {}), d.request.static, 0).reshape(-1)
                        values[c] += list(v[keep])
                frame = pd.DataFrame({cols[c]: v for c, v in values.items()})
                frame["divergences"] = int(np.sum(fit.stats["diverging"]))
                frame.index = pd.MultiIndex.from_product([[d.label], names], names=["dataset", "parameter"])
                frames.append(frame)
        return pd.concat(frames) if frames else pd.DataFrame()

    def failed(self, *, r_hat: float = 1.01, min_ess: float = 100.0, divergences: int = 0) -> pd.DataFrame:  # noqa: F821
        """Datasets that were not fitted, or whose fit did not converge, with the reason.

        A fit fails when some parameter has R-hat above ``r_hat``, bulk or tail ESS
        below ``min_ess``, or it has more than ``divergences`` divergent transitions.
        """
        import pandas as pd

        table = self.summary()
        rows = []
        for i, d in enumerate(self._data):
            if d.error is not None:
                rows.append((d.label, d.error, np.nan, np.nan, np.nan))
                continue
            t = table.loc[d.label]
            worst_r = float(np.nanmax(t["r_hat"])) if t["r_hat"].notna().any() else np.nan
            worst_ess = float(np.nanmin(t[["ess_bulk", "ess_tail"]].to_numpy()))
            div = int(t["divergences"].iloc[0])
            reasons = []
            if worst_r > r_hat:
                reasons.append(f"r_hat {worst_r:.3f} > {r_hat} ({t['r_hat'].idxmax()})")
            if worst_ess < min_ess:
                reasons.append(f"ess {worst_ess:.0f} < {min_ess:g}")
            if div > divergences:
                reasons.append(f"{div} divergent transitions")
            if reasons:
                rows.append((d.label, "; ".join(reasons), worst_r, worst_ess, div))
        return pd.DataFrame(rows, columns=["dataset", "reason", "max_r_hat", "min_ess", "divergences"]).set_index("dataset")
