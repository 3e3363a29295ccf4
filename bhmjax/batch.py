"""``bj.fit_many``: many datasets fitted by one compiled program; ``FitCollection`` holds the results.

See docs/batch.md for the padding and bucketing design, memory chunking, sharding
over devices and running across hosts.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from bhmjax._src import batch as core
from bhmjax._src import data as data_lib
from bhmjax._src import adapt, sampling
from bhmjax._src.precision import x64_mode
from bhmjax.fit import Fit, hdi_columns
from bhmjax.stream import available_memory

__all__ = ["FitCollection", "fit_many"]


@dataclass
class _Dataset:
    """One prepared dataset: its unpadded model data, labels and group sizes (or why it failed)."""

    label: Any
    model: Callable | None = None
    arrays: dict = field(default_factory=dict)
    static: dict = field(default_factory=dict)
    labels: dict = field(default_factory=lambda: {"names": {}, "coords": {}, "dims": {}})
    spec: Any = None
    order: list = field(default_factory=list)
    error: str | None = None


@dataclass
class _Bucket:
    """Datasets sharing one padded shape: their results side by side (leading dataset axis)."""

    key: tuple
    members: list[int]
    draws: dict
    stats: dict
    grads: dict
    axes: dict
    diagnostics: dict
    timings: dict


def _formula_datasets(formula, datasets, family, model_kwargs, x64) -> tuple[list[_Dataset], core.PadSpec]:
    from bhmjax.model import Model

    out, spec = [], None
    for label, frame in datasets:
        try:
            m = Model(formula, frame, family, **model_kwargs)
        except (ValueError, TypeError) as err:
            out.append(_Dataset(label, error=f"model could not be built: {err}"))
            continue
        arrays, static = data_lib.split_data(m.model_data(x64=x64))
        names, coords, dims = m.names()
        order = ["Intercept", "b", *m.spec.family.params]
        for g in m.spec.structure.groups:
            order += [f"sd_{g.name}", f"cor_{g.name}", f"r_{g.name}"]
        out.append(_Dataset(label, m.numpyro_model, arrays, static, dict(names=names, coords=coords, dims=dims),
                            m.spec, order))
        if spec is None:
            k = len(m.spec.groups)
            rows = ("y", "X", "trials", *(f"Z_{i}" for i in range(k)), *(f"codes_{i}" for i in range(k)))
            spec = core.PadSpec(rows=tuple(r for r in rows if r in arrays), row_count="N", observed=("y",),
                                groups=tuple((f"G_{i}", (f"codes_{i}",)) for i in range(k)))
    return out, spec


def _plain_datasets(model, datasets, rows, groups) -> tuple[list[_Dataset], core.PadSpec | None]:
    out = []
    for label, data in datasets:
        arrays, static = data_lib.split_data(data)
        data_lib.check_data(arrays)
        out.append(_Dataset(label, model, arrays, static))
    if rows is None:
        shapes = {(tuple((k, v.shape) for k, v in d.arrays.items()), tuple(sorted(d.static.items()))) for d in out}
        if len(shapes) > 1:
            raise ValueError(
                f"the datasets differ in shapes or static values ({len(shapes)} different kinds), and fit_many "
                "does not know how to pad a plain NumPyro model. Declare the row arrays and the group counts, "
                "e.g. rows=['y', 'group'], groups={'num_groups': ['group']}, or give datasets of equal shapes.")
        return out, None
    groups = {} if groups is None else dict(groups)
    for d in out:
        missing = [r for r in rows if r not in d.arrays] + [g for g in groups if g not in d.static]
        if missing:
            raise ValueError(f"dataset {d.label!r} has no {missing[0]!r}; rows= names arrays indexed by row and "
                             f"groups= names static ints (group counts); the dataset has arrays "
                             f"{list(d.arrays)} and static values {list(d.static)}.")
    return out, core.PadSpec(rows=tuple(rows), groups=tuple((g, tuple(v)) for g, v in groups.items()))


def _as_items(datasets) -> list[tuple[Any, Any]]:
    if isinstance(datasets, Mapping):
        return list(datasets.items())
    if isinstance(datasets, (str, bytes)) or not isinstance(datasets, Sequence):
        raise TypeError(f"datasets must be a list (or dict) of DataFrames or data dicts, got {type(datasets).__name__}")
    return list(enumerate(datasets))


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def fit_many(model: Any, datasets: Sequence | Mapping, *, family: str = "gaussian", chains: int = 4,
             warmup: int = 1000, draws: int = 1000, seed: int = 0, thin: int = 1, target_accept: float = 0.8,
             max_tree_depth: int = 10, dense_mass: bool = False, adaptation: str = "auto",
             init_strategy: str = "uniform",
             keep: Sequence[str] | None = None, drop: Sequence[str] = (), x64: bool = False,
             rows: Sequence[str] | None = None, groups: Mapping[str, Sequence[str]] | None = None,
             devices: Any = "all", batch_size: int | None = None, min_rows: int = 8, min_groups: int = 2,
             memory_fraction: float = 0.5, progress: bool = False, **model_kwargs) -> FitCollection:
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
    chains, warmup, draws, seed, thin, target_accept, max_tree_depth, dense_mass, adaptation,
    init_strategy, keep, drop, x64 : as in :func:`bhmjax.sample`.
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
    for name, v in (("chains", chains), ("warmup", warmup), ("draws", draws), ("thin", thin)):
        _positive(name, v)
    items = _as_items(datasets)
    if not items:
        raise ValueError("datasets is empty: there is nothing to fit.")
    if isinstance(model, str) or hasattr(model, "spec"):
        formula = model if isinstance(model, str) else model.spec.formula.text
        if not isinstance(model, str):
            family = model.spec.family.name
            model_kwargs.setdefault("parameterization", {g.name: g.centeredness for g in model.spec.structure.groups})
        prepared, spec = _formula_datasets(formula, items, family, model_kwargs, x64)
    elif callable(model):
        prepared, spec = _plain_datasets(model, items, rows, groups)
    else:
        raise TypeError(f"model must be a formula string, a bj.Model or a NumPyro model, got {type(model).__name__}")
    if spec is not None:
        spec = core.PadSpec(spec.rows, spec.groups, spec.row_count, spec.observed, min_rows, min_groups)
    adaptation = adapt.resolve_adaptation(adaptation, bool(dense_mass))
    config = sampling.NutsConfig(num_warmup=warmup, target_accept=float(target_accept),
                                 max_tree_depth=max_tree_depth, dense_mass=dense_mass, adaptation=adaptation,
                                 init_strategy=init_strategy, thinning=thin,
                                 keep=None if keep is None else tuple(keep), drop=tuple(drop))
    settings = dict(chains=chains, warmup=warmup, draws=draws, seed=seed, thin=thin, x64=bool(x64),
                    target_accept=float(target_accept), max_tree_depth=max_tree_depth, dense_mass=dense_mass,
                    adaptation=adaptation, chain_method="batched", keep=None if keep is None else list(keep), drop=list(drop))
    devs = _devices(devices)
    with x64_mode(x64):
        buckets, info = _run_buckets(prepared, spec, config, settings, devs, batch_size, memory_fraction, progress)
    return FitCollection(prepared, buckets, settings, info)


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


def _per_dataset_bytes(model, arrays, static, chains, draws) -> int:
    """Device and host bytes one dataset needs: buffered draws (twice), states, data."""
    shapes = core.site_shapes(model, arrays, static)
    per_draw = sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in shapes.values()) + 6 * 8
    latent = sum(int(np.prod(s.shape)) for s in shapes.values())
    data = sum(np.asarray(a).nbytes for a in arrays.values())
    return chains * (2 * draws * per_draw + 12 * latent * 8) + data


def _chunk_size(per_dataset: int, count: int, ndev: int, batch_size, fraction: float) -> int:
    """Datasets per call: fits in ``fraction`` of free memory, a power of two, a multiple of ndev."""
    if batch_size is None:
        limit = max(1, int(fraction * available_memory() // max(per_dataset, 1)))
        size = min(1 << (limit.bit_length() - 1), 1 << max(0, count - 1).bit_length())
    else:
        size = _positive("batch_size", batch_size)
    return max(ndev, -(-size // ndev) * ndev)


def _run_buckets(prepared, spec, config, settings, devs, batch_size, fraction, progress):
    ok = [i for i, d in enumerate(prepared) if d.error is None]
    keys: dict[tuple, list[int]] = {}
    padded = {}
    for i in ok:
        d = prepared[i]
        b = ("equal",) if spec is None else core.bucket_of(d.arrays, d.static, spec)
        padded[i] = (d.arrays, d.static) if spec is None else core.pad(d.arrays, d.static, spec, b)
        keys.setdefault((d.model, b), []).append(i)
    root = jax.random.PRNGKey(settings["seed"])
    ndev = 1 if not devs else len(devs)
    buckets, info = [], {"compile_s": 0.0, "warmup_s": 0.0, "sampling_s": 0.0, "batch_sizes": []}
    bar = sampling._Progress(progress, len(ok), "fit_many")
    with bar:
        for (model, b), members in keys.items():
            first_arrays, first_static = padded[members[0]]
            wrapped = model if spec is None else core.masked_model(model, spec.observed)
            program = sampling.build_program(wrapped, first_static, config, first_arrays)
            program_key = next(k for k, v in sampling._PROGRAMS.items() if v is program)
            size = _chunk_size(_per_dataset_bytes(wrapped, first_arrays, first_static, settings["chains"],
                                                  settings["draws"]), len(members), ndev, batch_size, fraction)
            info["batch_sizes"].append(size)
            bp = core.batch_program(program, settings["draws"], devs if ndev > 1 else None)
            parts = []
            for start in range(0, len(members), size):
                idx = members[start:start + size]
                full = idx + [idx[-1]] * (size - len(idx))  # pad the dataset axis: one shape per bucket
                stacked = {k: np.stack([padded[i][0][k] for i in full]) for k in first_arrays}
                parts.append(core.run_chunk(bp, program_key, core.dataset_keys(root, full, settings["chains"]),
                                            stacked, num_warmup=config.num_warmup, num_draws=settings["draws"],
                                            thinning=config.thinning) + (len(idx),))
                bar.update(len(idx), "sampling")
            cut = lambda trees: jax.tree.map(lambda *xs: np.concatenate(xs), *trees)
            draws, stats, grads = (cut([jax.tree.map(lambda a, n=p[-1]: a[:n], p[j]) for p in parts]) for j in range(3))
            for p in parts:
                info["warmup_s"] += p[3]["warmup"]
                info["sampling_s"] += p[3]["sampling"]
            info["compile_s"] += bp.compile_s
            axes = {} if spec is None else core.group_axes(wrapped, first_arrays, first_static,
                                                           [g for g, _ in spec.groups])
            buckets.append(_Bucket(b, members, draws, stats, grads, axes, core.batch_summary(draws),
                                   {"compile": bp.compile_s}))
    info["buckets"] = [bk.key for bk in buckets]
    return buckets, info


# ---------------------------------------------------------------- the collection


def _trim(x: np.ndarray, axes: Mapping[int, str], static: Mapping[str, Any], lead: int) -> np.ndarray:
    """Drop padded groups: cut each group axis (after ``lead`` leading axes) to the true count."""
    index = [slice(None)] * x.ndim
    for axis, g in axes.items():
        index[lead + axis] = slice(0, int(static[g]))
    return x[tuple(index)]


class FitCollection:
    """The fits of :func:`fit_many`: ``len``, ``fits[i]`` (a :class:`~bhmjax.Fit`), ``summary()``, ``failed()``.

    Attributes
    ----------
    labels : list
        The dataset labels (list positions, or the keys of a dict of datasets).
    buckets : list of tuple
        The padded shapes, ``(rows, ((group_count, size), ...))``: one compiled program each.
    timings : dict
        Seconds in ``compile``, ``warmup`` and ``sampling`` over all buckets.
    """

    def __init__(self, prepared: list[_Dataset], buckets: list[_Bucket], settings: dict, info: dict) -> None:
        self._data, self._buckets, self.settings = prepared, buckets, settings
        self.labels = [d.label for d in prepared]
        self.buckets = info["buckets"]
        self.batch_sizes = info["batch_sizes"]
        self.timings = {"compile": info["compile_s"], "warmup": info["warmup_s"] - info["compile_s"],
                        "sampling": info["sampling_s"]}
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
                 ("time", ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items()))]
        return card("bhmjax FitCollection", lines, verdict=(f"{bad} not fitted", bad == 0),
                    note=".summary() per dataset and parameter; .failed() lists what did not converge")

    def _index(self, key) -> int:
        if isinstance(key, numbers.Integral) and not isinstance(key, bool) and key not in self.labels:
            return int(key) % len(self)
        if key in self.labels:
            return self.labels.index(key)
        raise KeyError(f"no dataset {key!r}; datasets are labelled {self.labels[:5]}{' ...' * (len(self) > 5)}")

    def __getitem__(self, key) -> Fit:
        """The Fit of one dataset (padded rows and groups removed; its state is not kept)."""
        i = self._index(key)
        if i in self._fits:
            return self._fits[i]
        d = self._data[i]
        if d.error is not None:
            raise ValueError(f"dataset {d.label!r} was not fitted: {d.error}")
        b, j = self._where[i]
        bk = self._buckets[b]
        draws = {k: _trim(v[j], bk.axes.get(k, {}), d.static, 2) for k, v in bk.draws.items()}
        draws = {**{k: draws[k] for k in d.order if k in draws}, **draws}
        stats = {k: v[j] for k, v in bk.stats.items()}
        from bhmjax.sampler import tree_depth

        stats["tree_depth"] = tree_depth(stats["num_steps"])
        fit = Fit(draws=draws, stats=stats, timings={"compile": 0.0, "warmup": 0.0, "sampling": 0.0},
                  num_grad_evals={k: int(v[j]) for k, v in bk.grads.items()},
                  settings=dict(self.settings, bucket=bk.key), data={**d.arrays, **d.static}, model=d.model,
                  spec=d.spec, **{k: dict(v) for k, v in d.labels.items()})
        self._fits[i] = fit
        return fit

    def __iter__(self):
        return (self[i] for i in range(len(self)) if self._data[i].error is None)

    def summary(self, prob: float = 0.94) -> pd.DataFrame:  # noqa: F821
        """One row per dataset x parameter: mean, sd, HDI, MCSE, ess_bulk, ess_tail, r_hat, divergences.

        The statistics were computed for every dataset at once (vmapped in JAX) when
        fitting, with ``prob=0.94``; another ``prob`` recomputes them.
        """
        import pandas as pd

        lo, hi = hdi_columns(prob)
        cols = {"mean": "mean", "sd": "sd", "hdi_lower": lo, "hdi_upper": hi, "mcse_mean": "mcse_mean",
                "mcse_sd": "mcse_sd", "ess_bulk": "ess_bulk", "ess_tail": "ess_tail", "r_hat": "r_hat"}
        frames = []
        for bk in self._buckets:
            table = bk.diagnostics if prob == 0.94 else core.batch_summary(bk.draws, prob)
            for j, i in enumerate(bk.members):
                fit, d = self[i], self._data[i]
                names, values = [], {c: [] for c in cols}
                for site in fit.draws:
                    shown = [n for n in fit.site_names(site)]
                    keep = [k for k, n in enumerate(shown) if n is not None]
                    names += [shown[k] for k in keep]
                    for c in cols:
                        v = _trim(table[site][c][j], bk.axes.get(site, {}), d.static, 0).reshape(-1)
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
