"""``bj.Model``'s constructor: data checks, designs, priors and the static structure, before any compile.

Every error names the argument, column or row at fault, what was received and the
likely fix. The result is a :class:`~bhmjax._src.models.ModelSpec` and the model's
arrays (see ``bhmjax._src.models`` for their names).
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from typing import Any, Mapping

import numpy as np

from bhmjax._src import sites
from bhmjax._src.design import PredictorDesign, build_predictor
from bhmjax._src.families import DPARS, Family, get_family
from bhmjax._src.families.categories import category_dpars, encode_categories
from bhmjax._src.formula import FormulaSpec, parse_dpar_formula, parse_formula
from bhmjax._src.models import (GroupStructure, ModelSpec, ModelStructure, PredictorStructure,
                                SmoothStructure)
from bhmjax._src.priors import GroupColumns, Prior, PriorSlot, VectorPrior, predictor_priors, resolve_priors
from bhmjax._src.reparam import LAPLACE, as_centeredness
from bhmjax._terms import RowTerms, addition_columns, row_terms
from bhmjax.records import ModelSource

__all__ = ["build_spec"]

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
                  f"values (missing per column: {counts}).", UserWarning, stacklevel=4)
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


def _dpar_specs(family: Family, dpars: Mapping[str, Any]) -> dict[str, FormulaSpec]:
    """Parse the auxiliary parameters' formulas, checking each names a parameter of ``family``."""
    out = {}
    for name, text in dpars.items():
        if name not in family.params:
            have = (f"its auxiliary parameters are {list(family.params)}" if family.params else
                    "it has no auxiliary parameters")
            hint = difflib.get_close_matches(name, list(family.params) + ["priors", "parameterization",
                                                                          "trials", "weights", "na_action"], n=1)
            raise TypeError(f"bj.Model got the keyword {name!r}, but the {family.name} family has no parameter "
                            f"{name!r} to predict ({have}){f'; did you mean {hint[0]!r}?' if hint else '.'} "
                            "Auxiliary parameters take formulas: sigma='~ x + (1 | g)'.")
        out[name] = parse_dpar_formula(name, text)
    return out


def _response(family: Family, frame, spec: FormulaSpec, trials_col: str | None):
    """(y as float codes or values, categories, trials) after the family's checks."""
    column = spec.response
    if family.kind in ("ordinal", "categorical"):
        if trials_col:
            raise ValueError(f"trials ({trials_col!r}) are only used by the binomial family, not "
                             f"{family.name!r}.")
        y, categories = encode_categories(frame[column], family.name, column)
        return y, categories, None
    y = frame[column].to_numpy()
    trials = frame[trials_col].to_numpy() if trials_col else None
    family.check_response(y, trials, column, trials_col)
    return y.astype(np.float64), (), trials


def _designs(family: Family, spec: FormulaSpec, dpar_specs: dict, frame, categories: tuple):
    """Every predictor's design, the group designs by data term and the design arrays."""
    from formulaic.errors import FormulaicError

    designs, groups, arrays = [], [], {}
    for dpar, fspec in [(sites.MU, spec)] + list(dpar_specs.items()):
        data = "" if dpar == sites.MU else f"_{dpar}"
        try:
            design, g, a = build_predictor(dpar, fspec, frame, len(groups),
                                           sum(len(d.smooths) for d in designs), data)
        except (FormulaicError, NameError, TypeError) as err:
            raise _design_error(err, f"the terms of {fspec.text!r}") from err
        if family.kind == "ordinal":  # the cutpoints take the intercept's place
            design = dataclasses.replace(design, fixed=dataclasses.replace(design.fixed, intercept=False))
        designs.append(design)
        groups += g
        arrays.update(a)
    if family.kind == "categorical":  # K - 1 predictors on the same design arrays
        base = designs.pop(0)
        designs = [dataclasses.replace(base, dpar=name, smooths=tuple(
            (t, sites.smooth_name(name, b.variable), b) for t, _, b in base.smooths))
            for name in category_dpars(categories)] + designs
    return designs, groups, arrays


def _check_designs(designs: list[PredictorDesign], groups, arrays, frame, ordinal: bool) -> None:
    seen = set()
    for d in designs:
        if d.data in seen:  # categories share one design
            continue
        seen.add(d.data)
        _check_constant(arrays["X" + d.data], d.fixed.columns, d.fixed.intercept or ordinal, "predictor")
        _check_single_level(frame, d.formula.fixed)
        for t in d.terms:
            g, zi = groups[t], arrays[f"Z_{t}"]
            if g.encoding.num_groups < 2:
                raise ValueError(f"grouping {g.name!r} has a single level ({g.encoding.labels[0]!r}); "
                                 "a group term needs at least two groups. Drop the term or use a "
                                 "population-level effect.")
            slopes = [j for j, c in enumerate(g.columns) if c != "Intercept"]
            _check_constant(zi[:, slopes], [g.columns[j] for j in slopes], "Intercept" in g.columns,
                            f"group term ({g.term.expr} | {g.name})")
        if not (d.fixed.intercept or d.fixed.columns or d.terms or d.smooths or ordinal):
            raise ValueError(f"the formula {d.formula.text!r} has no terms: nothing predicts "
                             f"{d.formula.response or d.dpar!r}.")


# ---------------------------------------------------------------- priors and structure


def _location(family: Family, dpar: str, y: np.ndarray, trials, categories: tuple) -> tuple[float, float]:
    """(intercept prior location, scale s_y) of a predictor, on its link scale."""
    if dpar == sites.MU:
        return family.location(y, trials), family.scale(y)
    if family.kind == "categorical":  # log(p_k / p_reference) of the observed shares
        names = category_dpars(categories)
        share = np.bincount(y.astype(int), minlength=len(categories)) / len(y)
        share = np.clip(share, 0.01, None)
        return float(np.log(share[names.index(dpar) + 1] / share[0])), 1.0
    return family.dpar_location(dpar, y), 1.0


def _default_priors(family: Family, designs, groups, arrays, y, trials, categories):
    defaults, slots = {}, []
    for d in designs:
        loc, s_y = _location(family, d.dpar, y, trials, categories)
        cols = tuple(GroupColumns(groups[t].name, groups[t].columns, arrays[f"Z_{t}"],
                                  groups[t].term.correlated) for t in d.terms)
        out, more = predictor_priors(d.dpar, loc if d.fixed.intercept else None, s_y, arrays["X" + d.data],
                                     d.fixed.columns, cols, tuple(name for _, name, _ in d.smooths))
        defaults.update(out)
        slots += more
    predicted = {d.dpar for d in designs}
    for name, prior in family.param_priors(y).items():
        if name not in predicted:
            defaults[name] = prior
            slots.append(PriorSlot(name, (name,), (), DPARS[name][1]))
    if family.kind == "ordinal":
        k = len(categories) - 1
        defaults["Intercept"] = VectorPrior(((tuple(range(k)), Prior.default(
            "student_t", df=np.full(k, 3.0), loc=np.zeros(k), scale=np.full(k, 2.5))),), k)
        slots.insert(0, PriorSlot("Intercept", ("Intercept",), tuple(f"Intercept[{j + 1}]" for j in range(k))))
    return defaults, slots


def _centeredness(parameterization: Any, terms: list[tuple[str, int]]) -> dict[str, tuple[float, ...]]:
    """Per group site (``g``, ``g__sigma``), the centeredness of its columns."""
    if isinstance(parameterization, Mapping):
        names = [name for name, _ in terms]
        unknown = [k for k in parameterization if k not in names]
        if unknown:
            raise ValueError(f"parameterization names the grouping {unknown[0]!r}, which is not in the "
                             f"formula; groupings are {names}.")
        return {name: as_centeredness(parameterization.get(name, "noncentered"), k, name) for name, k in terms}
    return {name: as_centeredness(parameterization, k, name) for name, k in terms}


def _check_laplace(fam, centeredness: dict, widths: dict[str, int], mean_terms: set[str], everywhere: bool) -> None:
    """The laplace form centres the mean's group effects on the rows' likelihood (``laplace.py``):
    families with one predictor per row, mean terms only (given everywhere, the others stay non-centered)."""
    laplace = [name for name, c in centeredness.items() if c == LAPLACE]
    if laplace and fam.kind in ("ordinal", "categorical"):
        raise ValueError(f"parameterization 'laplace' needs one linear predictor per row; the {fam.name} family "
                         f"has cutpoints or one per category. Use 'noncentered', 'centered' or 'auto'.")
    for name in laplace:
        if name not in mean_terms:  # a group term of an auxiliary parameter's predictor
            if not everywhere:
                raise ValueError(f"parameterization names {name!r} 'laplace', but the laplace form applies to the "
                                 "mean's group terms only; give that term 'noncentered', 'centered' or 'auto'.")
            centeredness[name] = (0.0,) * widths[name]


def _predictor_structure(d: PredictorDesign, groups, priors: dict, centeredness: dict) -> PredictorStructure:
    gs = []
    for t in d.terms:
        g, name = groups[t], sites.group_site(groups[t].name, d.dpar)
        gs.append(GroupStructure(name=name, columns=g.columns, correlated=g.term.correlated and len(g.columns) > 1,
                                 centeredness=centeredness[name], sd_prior=priors[f"sd_{name}"],
                                 cor_prior=priors.get(f"cor_{name}"), term=t))
    smooths = tuple(SmoothStructure(name, t, basis.size, priors[f"sds_{name}"]) for t, name, basis in d.smooths)
    return PredictorStructure(
        dpar=d.dpar, intercept=d.fixed.intercept, slopes=d.fixed.columns, groups=tuple(gs),
        intercept_prior=priors.get(sites.intercept_site(d.dpar)) if d.fixed.intercept else None,
        b_prior=priors.get(sites.b_site(d.dpar)) if d.fixed.columns else None, smooths=smooths, data=d.data,
        offset=bool(d.offsets))


def _structure(family: Family, predictors: list[PredictorStructure], priors: dict, categories: tuple
               ) -> ModelStructure:
    predicted = {p.dpar for p in predictors}
    family_priors = tuple((p, priors[p]) for p in family.params if p not in predicted)
    if family.kind == "ordinal":
        family_priors = (("Intercept", priors["Intercept"]),) + family_priors
    if family.kind == "categorical":
        cats = category_dpars(categories)
        return ModelStructure(family.name, False, (), (), None, None, family_priors, dpars=tuple(predictors),
                              categories=cats)
    mu, rest = predictors[0], tuple(predictors[1:])
    groups = tuple(dataclasses.replace(g, term=-1) for g in mu.groups)
    return ModelStructure(family.name, mu.intercept, mu.slopes, groups, mu.intercept_prior, mu.b_prior,
                          family_priors, smooths=mu.smooths, offset=mu.offset, dpars=rest,
                          thresholds=len(categories) - 1 if family.kind == "ordinal" else 0)


# ---------------------------------------------------------------- the whole


def build_spec(formula: str, data: Any, family: str, dpars: Mapping[str, Any], *, parameterization: Any,
               priors: Mapping[str, Any] | None, trials: str | None, weights: str | None, cens: str | None,
               cens_upper: str | None, na_action: str) -> tuple[ModelSpec, dict[str, Any], int]:
    """Check everything and build the model: (spec, arrays by model-data name, number of rows)."""
    spec = parse_formula(formula)
    fam = get_family(family)
    dpar_specs = _dpar_specs(fam, dpars)
    columns = addition_columns(spec, fam, trials=trials, weights=weights, cens=cens, cens_upper=cens_upper)
    frame = _as_frame(data)
    variables = list(dict.fromkeys(spec.variables() + [v for d in dpar_specs.values() for v in d.variables()]
                                   + [c for k, c in columns.items() if c and k != "cens_upper"]))
    _check_columns(frame, variables + ([columns["cens_upper"]] if columns["cens_upper"] else []))
    _check_infinite(frame, variables)
    frame = _handle_missing(frame, variables, na_action)
    if len(frame) == 0:
        raise ValueError("the data have no rows" + (" left after na_action='drop'" if na_action == "drop"
                                                     else "") + "; there is nothing to fit.")
    # the model's weights and censoring columns, however given (predict and log_likelihood read them here)
    spec = dataclasses.replace(spec, weights=columns["weights"], cens=columns["cens"], cens_upper=columns["cens_upper"])
    y, categories, n_trials = _response(fam, frame, spec, columns["trials"])
    terms: RowTerms = row_terms(fam, frame, y, columns)
    designs, groups, arrays = _designs(fam, spec, dpar_specs, frame, categories)
    _check_designs(designs, groups, arrays, frame, fam.kind == "ordinal")
    defaults, slots = _default_priors(fam, designs, groups, arrays, y, n_trials, categories)
    resolved = resolve_priors(defaults, priors, slots)
    all_terms = [(sites.group_site(groups[t].name, d.dpar), len(groups[t].columns)) for d in designs
                 for t in d.terms]
    centeredness = _centeredness(parameterization, all_terms)
    mean_terms = {sites.group_site(groups[t].name, d.dpar) for d in designs if d.dpar == sites.MU for t in d.terms}
    _check_laplace(fam, centeredness, dict(all_terms), mean_terms, isinstance(parameterization, str))
    predictors = [_predictor_structure(d, groups, resolved, centeredness) for d in designs]
    structure = _structure(fam, predictors, resolved, categories)
    fixed = designs[0].fixed
    used = variables + ([columns["cens_upper"]] if columns["cens_upper"] not in (None, *variables) else [])
    source = ModelSource(frame=frame[used], priors=dict(priors or {}), trials=trials, weights=weights, cens=cens,
                         cens_upper=cens_upper, dpars=dict(dpars))
    model_spec = ModelSpec(formula=spec, family=fam, fixed=fixed, groups=tuple(groups), priors=resolved,
                           structure=structure, predictors=tuple(designs), categories=categories,
                           dpar_formulas=dict(dpars), source=source)
    arrays = {k: v for k, v in arrays.items() if not (k.startswith("X") and v.shape[1] == 0)}
    for d in designs:
        if d.fixed.columns:
            arrays["X_mean" + d.data] = d.fixed.means
    arrays.update({f"G_{t}": g.encoding.num_groups for t, g in enumerate(groups)})
    arrays.update({"y": y, "trials": n_trials, **terms.arrays()})
    return model_spec, arrays, len(frame)
