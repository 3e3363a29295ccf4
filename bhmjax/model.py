"""``bj.Model``: a hierarchical GLM from a formula, checked before anything compiles."""

from __future__ import annotations

import difflib
import warnings
from typing import Any, Callable, Mapping

import numpy as np

from bhmjax._src import marginalize as marginalize_lib
from bhmjax._src import standardize
from bhmjax._src.families import get_family
from bhmjax._src.formula import build_fixed, build_group, parse_formula
from bhmjax._src.models import GroupStructure, ModelSpec, ModelStructure, build_model, describe
from bhmjax._src.priors import default_priors, resolve_priors
from bhmjax._src.reparam import PER_GROUP, as_centeredness, data_key
from bhmjax.fit import Fit
from bhmjax.records import ModelSource, from_record, to_record

__all__ = ["Model"]

_NA_ACTIONS = ("raise", "drop")


def _from_other_frame(data: Any):
    """A polars (or any narwhals-supported eager) frame as pandas, column by column; None if not one.

    Values come over as numpy arrays, nulls as NaN/None (so NA handling sees them); an
    Enum keeps its category order as a pandas Categorical.
    """
    import narwhals as nw
    import pandas as pd

    frame = nw.from_native(data, eager_only=True, pass_through=True)
    if frame is data:
        return None
    columns = {}
    for name in frame.columns:
        series = frame[name]
        values = series.to_numpy()
        if isinstance(series.dtype, nw.Enum):
            values = pd.Categorical(values, categories=list(series.dtype.categories))
        columns[name] = values
    return pd.DataFrame(columns)


def _as_frame(data: Any):
    import pandas as pd

    if not isinstance(data, (pd.DataFrame, Mapping)):
        converted = _from_other_frame(data)
        data = data if converted is None else converted
    if isinstance(data, pd.DataFrame):
        copies = data.columns[data.columns.duplicated()]
        if len(copies):
            raise ValueError(f"data has the column {copies[0]!r} more than once; every column needs its own "
                             "name: rename or drop the copies (e.g. data.loc[:, ~data.columns.duplicated()]).")
        return data.reset_index(drop=True)
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a data frame (pandas, polars or another narwhals-supported one) or a "
                        f"dict of 1-d arrays, got {type(data).__name__}")
    lengths = {}
    for name, value in data.items():
        shape = np.shape(value)
        if len(shape) == 1:
            lengths[name] = shape[0]
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the columns of data have different lengths: {lengths}; every column needs "
                         "one value per row.")
    return pd.DataFrame({k: data[k] for k in lengths})


def _check_columns(frame, variables: list[str]) -> None:
    missing = [v for v in variables if v not in frame.columns]
    if missing:
        hint = difflib.get_close_matches(missing[0], [str(c) for c in frame.columns], n=1)
        raise ValueError(f"column {missing[0]!r} named in the formula is not in the data"
                         f"{f' (did you mean {hint[0]!r}?)' if hint else ''}; the columns are "
                         f"{list(frame.columns)}.")


def _handle_missing(frame, variables: list[str], na_action: str):
    if na_action not in _NA_ACTIONS:
        raise ValueError(f"na_action must be one of {_NA_ACTIONS}, got {na_action!r}")
    isna = frame[variables].isna()
    counts = {c: int(n) for c, n in isna.sum().items() if n}
    if not counts:
        return frame
    if na_action == "raise":
        col, n = next(iter(counts.items()))
        row = int(np.flatnonzero(isna[col].to_numpy())[0])
        raise ValueError(f"column {col!r} has {n} missing value(s), the first at row {row}. Remove or "
                         "impute them, or pass na_action='drop' to fit the complete rows.")
    keep = ~isna.any(axis=1).to_numpy()
    warnings.warn(f"na_action='drop': dropped {int((~keep).sum())} of {len(frame)} rows with missing "
                  f"values (missing per column: {counts}).", UserWarning, stacklevel=3)
    return frame.loc[keep].reset_index(drop=True)


def _check_infinite(frame, variables: list[str]) -> None:
    """inf is not a missing value (na_action does not drop it) and no model can use it: name it."""
    for col in variables:
        values = frame[col]
        if values.dtype.kind != "f":
            continue
        bad = np.isinf(values.to_numpy())
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"column {col!r} has {int(bad.sum())} infinite value(s), the first at row {row} "
                             f"({values.iloc[row]}); every value must be finite. Fix or remove those rows.")


def _check_constant(x: np.ndarray, columns, has_intercept: bool, where: str) -> None:
    for j, name in enumerate(columns):
        col = x[:, j]
        if np.ptp(col) == 0 and (has_intercept or col[0] == 0):
            raise ValueError(f"{where} column {name!r} is constant (every row is {col[0]:g}), so its "
                             "coefficient cannot be told apart from the intercept; remove it from the "
                             "formula (or check the data, e.g. a category with no rows).")


def _check_single_level(frame, fixed: str) -> None:
    """A categorical predictor with one level would vanish from the design: say so instead."""
    from formulaic import Formula

    for name in sorted(Formula(fixed).required_variables):
        if name not in frame.columns or frame[name].dtype.kind in "biuf":
            continue
        levels = frame[name].dropna().unique()
        if len(levels) == 1:
            raise ValueError(f"categorical predictor {name!r} has a single level ({levels[0]!r}), so it "
                             "adds no column to the design; remove it from the formula or check the data.")


def _design_error(err: Exception, what: str) -> ValueError:
    from bhmjax._src.formula import _plain

    return ValueError(f"formulaic could not build {what}: {_plain(err)}")


def _centeredness(parameterization: Any, groups) -> dict[str, tuple[float, ...]]:
    if isinstance(parameterization, Mapping):
        names = [g.name for g in groups]
        unknown = [k for k in parameterization if k not in names]
        if unknown:
            raise ValueError(f"parameterization names the grouping {unknown[0]!r}, which is not in the "
                             f"formula; groupings are {names}.")
        return {g.name: as_centeredness(parameterization.get(g.name, "noncentered"), len(g.columns), g.name)
                for g in groups}
    return {g.name: as_centeredness(parameterization, len(g.columns), g.name) for g in groups}


class Model:
    """A Bayesian hierarchical GLM written as an lme4/brms formula.

    Parameters
    ----------
    formula : str
        ``"y ~ 1 + x + (1 + x | g)"``. Population terms go to formulaic (numeric and
        categorical predictors, ``C(x, contr.treatment(base="b"))`` for the reference
        level, ``a:b``, ``a*b``, ``0 +`` / ``- 1``); group terms ``(expr | g)``
        (correlated), ``(expr || g)`` (independent), ``(1 | a) + (1 | b)`` (crossed),
        ``(1 | a/b)`` (nested). Binomial: ``"r | trials(n) ~ ..."``.
    data : pandas.DataFrame, polars.DataFrame (any frame narwhals reads), or dict of 1-d arrays
        Other frames are converted to pandas column by column (a polars Enum keeps its
        level order); duplicated column names are refused.
    family : str
        "gaussian", "student_t", "bernoulli", "binomial", "poisson" or "negative_binomial".
    parameterization : "noncentered", "centered", "auto", float in [0, 1], sequence or dict
        The centeredness of the group effects (1 centered, 0 non-centered, see
        ``bhmjax._src.reparam``): one value for every term, a sequence with one value
        per column of the term (``(1.0, 0.0)`` for ``(1 + x | g)``), or a dict per
        grouping (``{"county": "centered", "state": (1.0, 0.5)}``; others
        non-centered). ``"auto"`` learns one value per group and column with a short
        SVI pre-pass before the first fit (Gorinova, Moore and Hoffman 2020): a group
        with many informative rows gets 1, a group with a few rows 0. The values are
        in ``model.centeredness`` (arrays (G, K)), ``describe()`` and
        ``fit.settings["parameterization"]``, the pre-pass seconds in
        ``fit.timings["reparam"]`` and ``fit.settings["reparam"]``.
    priors : dict, optional
        NumPyro distributions overriding defaults: "Intercept", "b" or a slope's
        column name, "sd", "sd_<g>" or "sd_<g>__<column>", "cor"/"cor_<g>" (an LKJ
        concentration), "sigma", "nu", "phi".
    trials : str, optional
        The binomial trials column (instead of ``| trials(n)``).
    na_action : {"raise", "drop"}
        Rows with missing values in used columns raise ``ValueError``, or are dropped
        with a warning.

    Examples
    --------
    >>> import numpy as np, bhmjax as bj
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(5), 4); y = rng.normal(g * 0.5, 1.0)
    >>> model = bj.Model("y ~ 1 + (1 | g)", data={"y": y, "g": g})
    >>> fit = model.fit(chains=2, warmup=200, draws=200, progress=False)
    >>> "sd_g[Intercept]" in fit.summary().index
    True
    """

    def __init__(self, formula: str, data: Any, family: str = "gaussian", *,
                 parameterization: Any = "noncentered", priors: Mapping[str, Any] | None = None,
                 trials: str | None = None, na_action: str = "raise") -> None:
        from formulaic.errors import FormulaicError

        spec = parse_formula(formula)
        fam = get_family(family)
        if trials is not None and spec.trials is not None and trials != spec.trials:
            raise ValueError(f"trials given twice: {spec.trials!r} in the formula and trials={trials!r}.")
        trials_col = spec.trials or trials
        frame = _as_frame(data)
        variables = spec.variables() + ([trials_col] if trials_col and not spec.trials else [])
        _check_columns(frame, variables)
        _check_infinite(frame, variables)
        frame = _handle_missing(frame, variables, na_action)
        if len(frame) == 0:
            raise ValueError("the data have no rows" + (" left after na_action='drop'" if na_action == "drop"
                                                         else "") + "; there is nothing to fit.")
        y = frame[spec.response].to_numpy()
        n_trials = frame[trials_col].to_numpy() if trials_col else None
        fam.check_response(y, n_trials, spec.response, trials_col)
        try:
            fixed, x = build_fixed(spec, frame)
        except (FormulaicError, NameError, ValueError, TypeError) as err:
            raise _design_error(err, f"the population terms {spec.fixed!r}") from err
        _check_constant(x, fixed.columns, fixed.intercept, "predictor")
        _check_single_level(frame, spec.fixed)
        groups, z, codes = [], [], []
        for term in spec.groups:
            try:
                g, zi, ci = build_group(term, frame)
            except (FormulaicError, NameError, TypeError) as err:
                raise _design_error(err, f"the group term ({term.expr} | {term.name})") from err
            if g.encoding.num_groups < 2:
                raise ValueError(f"grouping {term.name!r} has a single level ({g.encoding.labels[0]!r}); "
                                 "a group term needs at least two groups. Drop the term or use a "
                                 "population-level effect.")
            slopes = [j for j, c in enumerate(g.columns) if c != "Intercept"]
            _check_constant(zi[:, slopes], [g.columns[j] for j in slopes], "Intercept" in g.columns,
                            f"group term ({term.expr} | {term.name})")
            groups.append(g), z.append(zi), codes.append(ci)
        if not fixed.intercept and not fixed.columns and not groups:
            raise ValueError(f"the formula {formula!r} has no terms: nothing predicts {spec.response!r}.")
        y = y.astype(np.float64)
        defaults = default_priors(fam, y, n_trials, x, fixed.intercept,
                                  {g.name: (zi, g.term.correlated) for g, zi in zip(groups, z)})
        user_priors = priors
        priors = resolve_priors(defaults, priors, fixed.columns, {g.name: g.columns for g in groups}, fam.params)
        centeredness = _centeredness(parameterization, groups)
        structure = ModelStructure(
            family=fam.name, intercept=fixed.intercept, slopes=fixed.columns,
            groups=tuple(GroupStructure(
                name=g.name, columns=g.columns, correlated=g.term.correlated and len(g.columns) > 1,
                centeredness=centeredness[g.name], sd_prior=priors[f"sd_{g.name}"],
                cor_prior=priors.get(f"cor_{g.name}")) for g in groups),
            intercept_prior=priors.get("Intercept"), b_prior=priors.get("b"),
            family_priors=tuple((p, priors[p]) for p in fam.params))
        source = ModelSource(frame=frame[variables], priors=dict(user_priors or {}), trials=trials)
        self.spec = ModelSpec(formula=spec, family=fam, fixed=fixed, groups=tuple(groups),
                              priors=priors, structure=structure, source=source)
        self.num_rows = len(frame)
        self._arrays = {"y": y, "X": x, "trials": n_trials, "Z": z, "codes": codes}
        self.reparam_info = None
        self._per_group: dict[str, np.ndarray] = {}  # learned (G, K) centeredness of PER_GROUP terms

    # ------------------------------------------------------------------ the model

    @property
    def numpyro_model(self) -> Callable:
        """The generated NumPyro model; call it as ``numpyro_model(**model.data)``."""
        return build_model(self.spec.structure)

    def model_data(self, x64: bool = False) -> dict[str, Any]:
        """The model's keyword arguments: arrays (traced) and sizes as Python ints (static)."""
        f = np.float64 if x64 else np.float32
        a = self._arrays
        out: dict[str, Any] = {"N": self.num_rows, "y": a["y"].astype(f)}
        if self.spec.fixed.columns:
            out["X"], out["X_mean"] = a["X"].astype(f), self.spec.fixed.means.astype(f)
        if a["trials"] is not None:
            out["trials"] = np.asarray(a["trials"]).astype(f)
        for i, g in enumerate(self.spec.groups):
            out[f"Z_{i}"], out[f"codes_{i}"] = a["Z"][i].astype(f), a["codes"][i].astype(np.int32)
            out[f"G_{i}"] = g.encoding.num_groups
        for site, prior in self.spec.priors.items():
            out.update({k: np.asarray(v, dtype=f) for k, v in prior.arrays(site).items()})
        for g in self.spec.structure.groups:
            if g.centeredness == PER_GROUP:
                out[data_key(g.name)] = self._per_group[g.name].astype(f)
        return out

    @property
    def data(self) -> dict[str, Any]:
        """``model_data()`` in 32-bit floats."""
        return self.model_data()

    def design(self, new_data: Any, *, allow_new_levels: bool = False) -> tuple[dict[str, Any], dict]:
        """Design arrays of new rows with the training encoding (for prediction).

        Returns the arrays ``N``, ``X``, ``Z_i``, ``codes_i`` (see ``linear_predictor``)
        and, per grouping, the tuple of levels not seen in training (their codes
        are >= the number of fitted groups). Unseen levels raise ``ValueError``
        unless ``allow_new_levels``.
        """
        frame = _as_frame(new_data)
        spec = self.spec
        needed = [v for v in spec.formula.variables()[1:] if v != spec.formula.trials]
        _check_columns(frame, needed)
        out: dict[str, Any] = {"N": len(frame)}
        if spec.fixed.columns:
            out["X"] = spec.fixed.matrix(frame)
        new = {}
        for i, g in enumerate(spec.groups):
            out[f"Z_{i}"] = g.matrix(frame)
            out[f"codes_{i}"], new[g.name] = g.codes(frame, allow_new=allow_new_levels)
        return out, new

    # ------------------------------------------------------------------ names

    def names(self) -> tuple[dict, dict, dict]:
        """``names``, ``coords`` and ``dims`` for :func:`bhmjax.sample`, in ArviZ's terms.

        Slopes ``b`` lie over ``coef`` (the design's columns), group effects ``r_<g>``
        over the levels ``<g>`` and the terms ``<g>__term``, group sds over
        ``<g>__sd_term`` (the same terms);
        a correlation matrix shows its upper triangle. Rows read ``b[floor]``,
        ``sd_county[Intercept]``, ``cor_county[Intercept, floor]``,
        ``r_county[AITKIN, Intercept]``, as ArviZ names them. Sampler-only sites
        (``Intercept_c``, ``z_<g>``, ``theta_<g>``, ``L_<g>``) are hidden.
        """
        s = self.spec.structure
        names: dict[str, list] = {}
        coords: dict[str, list] = {}
        dims: dict[str, list] = {}
        if s.intercept:
            names["Intercept_c"] = [None]
        if s.slopes:
            coords["coef"], dims["b"] = list(s.slopes), ["coef"]
        for g, design in zip(s.groups, self.spec.groups):
            cols, k, n_groups = g.columns, len(g.columns), design.encoding.num_groups
            term, sd_term = f"{g.name}__term", f"{g.name}__sd_term"
            coords[g.name] = [str(v) for v in design.encoding.labels]
            coords[term] = coords[sd_term] = list(cols)
            # sd_g has a dim of its own: ArviZ 1.3's summary mislabels rows of a variable whose
            # dims come in another order than their first appearance in the group (g__term, g)
            dims[f"sd_{g.name}"], dims[f"r_{g.name}"] = [sd_term], [g.name, term]
            if g.correlated:
                dims[f"cor_{g.name}"] = [sd_term, sd_term]
                names[f"cor_{g.name}"] = [f"cor_{g.name}[{cols[i]}, {cols[j]}]" if i < j else None
                                          for i in range(k) for j in range(k)]
                names[f"L_{g.name}"] = [None] * (k * k)
            names[f"z_{g.name}"] = [None] * (n_groups * k)  # sampler variables, when present
            names[f"theta_{g.name}"] = [None] * (n_groups * k)
        return names, coords, dims

    # ------------------------------------------------------------------ fitting

    def fit(self, *, reduce: Any = "auto", marginalize: Any = "auto", **sample_kwargs) -> Fit:
        """Sample the posterior with :func:`bhmjax.sample` (same keyword arguments).

        ``reduce`` ("auto", True or False) picks the exact data reduction of
        :meth:`reduced_data`: "auto" uses it where it pays, True insists on it
        (``ValueError`` when there is none), False samples on the rows. A reduced fit
        has the rows' posterior; ``fit.data`` keeps the rows (for LOO and predictions)
        and ``fit.settings["reduction"]`` records ``kind``, ``rows`` and ``pseudo_rows``
        (the rows the likelihood evaluates; for counts also ``cells``, the same number).

        ``marginalize`` ("auto", True or False): "auto" integrates out the group effects of
        the grouping with the most levels when the family is gaussian (exact there; see
        ``bhmjax._src.marginal``), True insists (``ValueError`` when it cannot), False
        samples every group effect. NUTS then runs on the other parameters only, and
        ``r_<g>`` is drawn exactly for every stored draw, so summaries, predictions, LOO
        and export are those of a sampled fit; ``fit.settings["marginalized"]`` says what
        was integrated out. Gaussian models sample on a standardized response
        (``fit.settings["standardized"]``, see ``bhmjax._src.standardize``); every site is
        reported on the data's scale.

        Returns a :class:`~bhmjax.Fit` whose ``spec`` is this model's :class:`ModelSpec`.
        """
        from bhmjax import runner

        config, labels, sinks = runner.request_options(sample_kwargs, "Model.fit()")
        return runner.execute(self.run_request(config, reduce=reduce, marginalize=marginalize, **labels, **sinks))

    def run_request(self, config, *, reduce: Any = "auto", marginalize: Any = "auto", coords=None, dims=None,
                    names=None, checkpoint=None, out=None, progress: bool = True):
        """What :meth:`fit` runs: a :class:`~bhmjax.runner.RunRequest` for ``config`` (a RunConfig).

        Everything the Fit holds comes from here (spec, the rows, the data the sampler
        runs on (standardized, reduced, with the basis of an integrated grouping), names,
        site order, pre-pass seconds), so a checkpoint resumed from this model's record
        gives the Fit of an uninterrupted run.
        """
        from dataclasses import replace

        from bhmjax import runner
        from bhmjax._src import data as data_lib

        if reduce not in ("auto", True, False):
            raise ValueError(f"reduce must be 'auto', True or False, got {reduce!r}")
        marginal = self._marginal(marginalize)
        reparam_s = self._learn_centeredness(marginal)
        model_names, model_coords, model_dims = self.names()
        internal = tuple(k for k, v in model_names.items() if all(n is None for n in v))
        data = self.model_data(x64=config.x64)
        sampled, reduced = self.sampling_data(x64=config.x64, reduce=reduce, marginalize=marginal is not None)
        structure = marginalize_lib.marginal_structure(self.spec.structure, marginal)
        reduction = None
        if reduced:  # the posterior is the row-level one; the fit keeps the rows for LOO and predictions
            kind = "gaussian" if self.spec.family.name == "gaussian" else "counts"
            reduction = {"kind": kind, "rows": self.num_rows, "pseudo_rows": sampled["N"]}
            if kind == "counts":
                reduction["cells"] = sampled["N"]
        order = ["Intercept", "b", *self.spec.family.params]
        for g in self.spec.structure.groups:
            order += [f"sd_{g.name}", f"cor_{g.name}", f"r_{g.name}"]
        arrays, static = data_lib.split_data(sampled)
        data_lib.check_data(arrays)
        settings = {"parameterization": {k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else list(v)
                                         for k, v in self.centeredness.items()}}
        if self.reparam_info is not None:
            settings["reparam"] = {"requested": "auto", "seconds": self.reparam_info.seconds,
                                   "text": self.reparam_info.describe()}
        if "response:loc" in sampled or any(k.startswith("scale:") for k in sampled):
            loc = sampled.get("response:loc")
            settings["standardized"] = {"loc": None if loc is None else float(self._response_loc()),
                                        "scale": float(self.spec.family.scale(self._arrays["y"]))}
        if marginal is not None:
            settings["marginalized"] = marginalize_lib.record(structure, self._num_groups()[marginal])
            if config.keep is not None:  # the draws of r_<g> replay the model: store every site, keep after
                settings["keep"] = list(config.keep)
                config = replace(config, keep=None)
        return runner.RunRequest(
            model=build_model(structure), arrays=arrays, static=static, config=config,
            coords={**model_coords, **(coords or {})}, dims={**model_dims, **(dims or {})},
            names={**model_names, **(names or {})}, data=data, spec=self.spec,
            reduction=reduction, order=tuple(order), timings={"reparam": reparam_s}, internal=internal,
            settings=settings, checkpoint=checkpoint, out=out, progress=progress)

    def _num_groups(self) -> dict[str, int]:
        return {g.name: g.encoding.num_groups for g in self.spec.groups}

    def _response_loc(self) -> float:
        return float(np.mean(self._arrays["y"]))

    def _marginal(self, marginalize: Any) -> str | None:
        """The grouping ``fit(marginalize=...)`` integrates out, or None."""
        return marginalize_lib.choose(self.spec.structure, self._num_groups(), marginalize)

    def sampling_data(self, *, x64: bool = False, reduce: Any = "auto",
                      marginalize: Any = "auto") -> tuple[dict[str, Any], bool]:
        """The data the sampler runs on, and whether the rows were reduced.

        The model data, standardized for gaussian models (``bhmjax._src.standardize``),
        reduced to exact sufficient statistics where ``reduce`` asks and it pays (see
        :meth:`reduced_data`), with the basis of the integrated grouping when
        ``marginalize`` picks one (see :meth:`fit`); built in float64, returned in the
        sampling precision. Call ``build_model(marginal_structure(...))`` on it, as
        :meth:`fit` does.
        """
        from bhmjax._src import reduce as exact

        marginal = self._marginal(marginalize)
        structure = marginalize_lib.marginal_structure(self.spec.structure, marginal)
        data = standardize.standardize(self.model_data(x64=True), structure, self.spec.family)
        if marginal is not None and len(structure.groups) == 1 and reduce:  # every group's rows as k pseudo rows
            reduced = exact.block_gaussian_data(data, structure.intercept)
        else:
            reduced = self.reduced_data(data) if reduce else None
        if reduce is True and reduced is None:
            raise ValueError("reduce=True, but this model has no exact reduction that pays: it needs the "
                             "gaussian family and far fewer cells of group levels than rows, or the "
                             "bernoulli, binomial or poisson family and far fewer cells of identical "
                             "covariates and group levels than rows.")
        out = data if reduced is None else reduced
        if marginal is not None:
            out = marginalize_lib.add_basis(out, structure)
        f = np.float64 if x64 else np.float32
        out = {k: v.astype(f) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v for k, v in out.items()}
        return out, reduced is not None

    @property
    def centeredness(self) -> dict[str, tuple[float, ...] | np.ndarray]:
        """Per grouping, the centeredness of each column (a tuple), or of each group and column
        (an array (G, K), where learned values differ between groups); ``"auto"`` ones are
        learned on first use."""
        self._learn_centeredness()
        return {g.name: self._per_group[g.name] if g.centeredness == PER_GROUP else g.centeredness
                for g in self.spec.structure.groups}

    def _learn_centeredness(self, marginal: str | None = None) -> float:
        """Run the SVI pre-pass of ``parameterization="auto"`` once; its seconds (0 when done).

        With ``marginal`` (a grouping integrated out), on that model: only the sampled
        groupings are learned.
        """
        if all(g.centeredness is not None for g in self.spec.structure.groups if g.name != marginal):
            return 0.0
        import jax

        from bhmjax._src import data as data_lib
        from bhmjax._src.autoreparam import learn_centeredness

        data, _ = self.sampling_data(marginalize=marginal is not None)
        arrays, static = data_lib.split_data(data)
        structure = marginalize_lib.marginal_structure(self.spec.structure, marginal)
        self.reparam_info = learn_centeredness(jax.random.PRNGKey(0), structure, arrays, static)
        self.use_centeredness(self.reparam_info.centeredness)
        return self.reparam_info.seconds

    def reduced_data(self, data: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The model data with rows compressed to exact sufficient statistics, or None.

        * gaussian: rows that share every group level become at most rank(W'W)
          pseudo rows per cell plus a sigma-dependent correction; the log density
          and its gradient are exactly the row-level ones (up to float rounding).
        * bernoulli, binomial, poisson: rows with identical population design,
          group levels and group-term columns (the same linear predictor) are summed
          into one count per cell: successes and trials into a binomial row, Poisson
          counts into one count whose rate is multiplied by the cell's rows. The log
          density changes by a constant only, its gradient not at all.

        Either way the posterior is the row-level one and a gradient costs O(cells)
        instead of O(rows). None for other families, or when the cells are not
        well under the rows (continuous covariates, say; see ``bhmjax._src.reduce``).
        """
        from bhmjax._src import reduce as exact

        family = self.spec.family.name
        if family != "gaussian" and family not in exact.COUNT_FAMILIES:
            return None
        data = self.model_data() if data is None else data
        if family == "gaussian":
            return exact.reduce_gaussian_data(data, self.spec.structure.intercept, len(self.spec.groups))
        return exact.reduce_count_data(data, family, len(self.spec.groups))

    # ------------------------------------------------------------------ files

    def to_record(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The model as a JSON-able record and named numpy arrays (see :mod:`bhmjax.records`).

        ``Model.from_record(*model.to_record())`` is the same model: formula, family,
        priors, encodings, design, centeredness (learned values included). A data
        column or prior that cannot be stored raises ``TypeError``/``ValueError`` naming it.
        """
        return to_record(self.spec, self._per_group)

    def use_centeredness(self, values: Mapping[str, np.ndarray]) -> None:
        """Set learned per-group centeredness, shape (G, K) per grouping, without a pre-pass
        (a model rebuilt from its record: the values ``parameterization="auto"`` learned)."""
        import dataclasses

        from bhmjax._src.autoreparam import with_centeredness

        structure = with_centeredness(self.spec.structure, values)
        self._per_group = {g.name: np.asarray(values[g.name]) for g in structure.groups
                           if g.centeredness == PER_GROUP}
        self.spec = dataclasses.replace(self.spec, structure=structure)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> "Model":
        """The model that :meth:`to_record` recorded, built again from its data columns."""
        return from_record(record, arrays)

    # ------------------------------------------------------------------ description

    def describe(self, verbose: bool = True, marginalize: Any = "auto") -> str:
        """Priors, parameter shapes and groups per term, and what ``fit(marginalize=...)``
        integrates out; printed unless ``verbose=False``."""
        text = describe(self.spec, self.num_rows)
        text += "\n\n" + marginalize_lib.describe(self.spec.structure, self._marginal(marginalize),
                                                  self._num_groups(), marginalize)
        if self.spec.family.name in standardize.STANDARDIZED_FAMILIES:
            text += ("\nsampled on a standardized response (y minus its mean, coordinates in units of its sd); "
                     "every site is reported on the data's scale.")
        if getattr(self, "reparam_info", None) is not None:
            text += "\n\n" + self.reparam_info.describe()
        if verbose:
            print(text)
        return text

    def _repr_html_(self) -> str:
        from bhmjax.display import card

        s = self.spec
        lines = [("family", s.family.name), ("rows", f"{self.num_rows:,}"),
                 ("population terms", ", ".join((["Intercept"] if s.fixed.intercept else []) + list(s.fixed.columns))
                  or "none")]
        for g, gs in zip(s.groups, s.structure.groups):
            cent = "auto (learned on first fit)" if gs.centeredness is None else \
                ", ".join(f"{c:g}" for c in gs.centeredness)
            lines.append((f"group {g.name}", f"{g.encoding.num_groups:,} levels; terms {', '.join(g.columns)}; "
                          f"centeredness {cent}"))
        return card(f"bhmjax Model: {s.formula.text}", lines, note="model.describe() lists every prior")

    def __repr__(self) -> str:
        groups = ", ".join(f"{g.name}: {g.encoding.num_groups}" for g in self.spec.groups)
        return (f"Model({self.spec.formula.text!r}, family={self.spec.family.name!r}, "
                f"{self.num_rows} rows{', groups ' + groups if groups else ''})")
