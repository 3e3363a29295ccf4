"""Formula specs on data: each linear predictor's design, rebuildable on new rows.

Formulaic builds the population columns and each group term's columns; bhmjax adds
the groupings' integer codes, the splines' columns (``smooth.py``) and the offsets.
A :class:`PredictorDesign` keeps everything needed to rebuild a predictor's arrays on
new rows with the training coding (:func:`predictor_arrays`). Everything here runs on
concrete values, before anything compiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bhmjax._src import sites
from bhmjax._src.data import GroupEncoding, encode_groups
from bhmjax._src.formula import FormulaSpec, GroupTermSpec
from bhmjax._src.smooth import SmoothBasis, smooth_basis

__all__ = ["FixedDesignSpec", "GroupDesignSpec", "PredictorDesign", "group_values", "build_fixed",
           "build_group", "build_predictor", "predictor_arrays", "offset_values"]


@dataclass(frozen=True, eq=False)
class FixedDesignSpec:
    """The population-level design, rebuildable on new rows with the same coding.

    Attributes
    ----------
    model_spec : formulaic.ModelSpec
        ``model_spec.get_model_matrix(new_frame)`` rebuilds the design (categorical
        levels, contrasts and transforms as in training).
    columns : tuple of str
        The slope columns, in the order of the site ``b`` (the Intercept excluded); the
        splines' linear parts (``sx_1``) come last.
    intercept : bool
        Whether the formula has a population intercept.
    means : np.ndarray, shape (len(columns),)
        Training means of the slope columns; the model centres them internally.
    smooths : tuple of str
        The variables of the splines whose linear parts end ``columns``.
    """

    model_spec: object
    columns: tuple[str, ...]
    intercept: bool
    means: np.ndarray
    smooths: tuple[str, ...] = ()

    def matrix(self, frame) -> np.ndarray:
        """Slope columns for the rows of ``frame``, shape (n_rows, len(columns))."""
        own = self.columns[:len(self.columns) - len(self.smooths)]
        x = _columns(self.model_spec.get_model_matrix(frame, na_action="raise"), own)
        linear = [np.asarray(frame[v], dtype=np.float64)[:, None] for v in self.smooths]
        return np.concatenate([x] + linear, axis=1) if linear else x


@dataclass(frozen=True, eq=False)
class GroupDesignSpec:
    """One group term on data: its own design columns and the grouping's encoding.

    Attributes
    ----------
    term : GroupTermSpec
    model_spec : formulaic.ModelSpec
        Rebuilds the term's columns on new rows.
    columns : tuple of str
        The term's columns (``Intercept`` included where present), the last axis of
        ``r_<group>``.
    encoding : GroupEncoding
        Level labels of the grouping; ``encoding.encode(values, allow_new=...)``
        codes new rows (values from :func:`group_values`).
    dpar : str
        The predictor the term belongs to ("mu", "sigma", ...).
    """

    term: GroupTermSpec
    model_spec: object
    columns: tuple[str, ...]
    encoding: GroupEncoding
    dpar: str = sites.MU

    @property
    def name(self) -> str:
        """The grouping: ``county`` or ``a:b``."""
        return self.term.name

    @property
    def site(self) -> str:
        """The suffix of its sites: the grouping, or ``g__sigma`` for an auxiliary parameter's term."""
        return sites.group_site(self.term.name, self.dpar)

    def matrix(self, frame) -> np.ndarray:
        """The term's columns for the rows of ``frame``, shape (n_rows, len(columns))."""
        return _columns(self.model_spec.get_model_matrix(frame, na_action="raise"), self.columns)

    def codes(self, frame, *, allow_new: bool = False) -> tuple[np.ndarray, tuple]:
        """Group codes of new rows (unseen levels get codes >= num_groups)."""
        return self.encoding.encode(group_values(self.term, frame), allow_new=allow_new)


@dataclass(frozen=True, eq=False)
class PredictorDesign:
    """One linear predictor's design.

    Attributes
    ----------
    dpar : str
        "mu", an auxiliary parameter or a category's "mu<level>".
    formula : FormulaSpec
    fixed : FixedDesignSpec
    terms : tuple of int
        Its group terms' data indices (into ``ModelSpec.groups``).
    smooths : tuple of (int, str, SmoothBasis)
        Per spline: data index (``Zs_t``), name (``sx_1``) and basis.
    offsets : tuple of formulaic.ModelSpec
        One per ``offset(...)`` term; their values are summed.
    data : str
        Suffix of its arrays (``X<data>``, ``offset<data>``); shared by the categories.
    """

    dpar: str
    formula: FormulaSpec
    fixed: FixedDesignSpec
    terms: tuple[int, ...] = ()
    smooths: tuple[tuple[int, str, SmoothBasis], ...] = ()
    offsets: tuple = ()
    data: str = ""


def _columns(mm, names: tuple[str, ...]) -> np.ndarray:
    return np.asarray(mm[list(names)].to_numpy(dtype=np.float64)).reshape(len(mm), len(names))


def group_values(term: GroupTermSpec, frame) -> np.ndarray:
    """The grouping's label of every row; ``a:b`` joins the labels as ``"a_b"``."""
    if len(term.factors) == 1:
        return np.asarray(frame[term.factors[0]])
    parts = [frame[f].astype(str).to_numpy(dtype=object) for f in term.factors]
    out = parts[0]
    for p in parts[1:]:
        out = out + "_" + p
    return out


def build_fixed(spec: FormulaSpec, frame, dpar: str = sites.MU) -> tuple[FixedDesignSpec, np.ndarray]:
    """Formulaic's design of ``spec.fixed`` on ``frame`` plus the splines' linear parts: the spec and X."""
    from formulaic import model_matrix

    mm = model_matrix(spec.fixed, frame, na_action="raise")
    names = tuple(str(c) for c in mm.columns)
    own = tuple(c for c in names if c != "Intercept")
    smooth_vars = tuple(sm.variable for sm in spec.smooths)
    columns = own + tuple(sites.smooth_name(sites.MU, v) for v in smooth_vars)
    x = np.concatenate([_columns(mm, own)] + [frame[v].to_numpy(dtype=np.float64)[:, None] for v in smooth_vars],
                       axis=1)
    design = FixedDesignSpec(model_spec=mm.model_spec, columns=columns, intercept="Intercept" in names,
                             means=x.mean(axis=0), smooths=smooth_vars)
    return design, x


def build_group(term: GroupTermSpec, frame, dpar: str = sites.MU) -> tuple[GroupDesignSpec, np.ndarray, np.ndarray]:
    """One group term on ``frame``: its spec, its columns Z (n, k) and codes (n,)."""
    from formulaic import model_matrix

    mm = model_matrix(term.expr, frame, na_action="raise")
    columns = tuple(str(c) for c in mm.columns)
    if not columns:
        raise ValueError(f"the group term ({term.expr} | {term.name}) has no columns; "
                         "write (1 | g) for varying intercepts.")
    try:
        encoding = encode_groups(group_values(term, frame), name=term.name)
    except TypeError as err:  # labels that cannot be ordered: a data error, named with its term
        raise ValueError(f"the group term ({term.expr} | {term.name}): {err}") from err
    design = GroupDesignSpec(term=term, model_spec=mm.model_spec, columns=columns, encoding=encoding, dpar=dpar)
    return design, _columns(mm, columns), encoding.codes


def _offset_spec(expr: str, frame):
    from formulaic import model_matrix

    mm = model_matrix(f"0 + I({expr})", frame, na_action="raise")
    if mm.shape[1] != 1 or not np.issubdtype(np.asarray(mm).dtype, np.number):
        raise ValueError(f"offset({expr}) must be one number per row; formulaic made the columns "
                         f"{list(mm.columns)} (is a column in it categorical?).")
    return mm.model_spec


def offset_values(specs: tuple, frame) -> np.ndarray:
    """The summed offsets of the rows of ``frame``; ``ValueError`` naming a non-finite row."""
    total = np.zeros(len(frame))
    for spec in specs:
        values = np.asarray(spec.get_model_matrix(frame, na_action="raise"), dtype=np.float64).reshape(-1)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"offset {spec.formula} is {values[i]} at row {i} ({int(bad.sum())} non-finite "
                             "rows); an offset must be finite (log of a zero exposure?).")
        total += values
    return total


def build_predictor(dpar: str, spec: FormulaSpec, frame, first_term: int, first_smooth: int,
                    data: str) -> tuple[PredictorDesign, list[GroupDesignSpec], dict[str, np.ndarray]]:
    """A predictor's design on the training ``frame``: the design, its group designs and its arrays.

    The arrays are named as the model reads them: ``X<data>``, ``offset<data>``,
    ``Z_t``/``codes_t`` from ``first_term`` on and ``Zs_t`` from ``first_smooth`` on.
    """
    fixed, x = build_fixed(spec, frame, dpar)
    arrays: dict[str, np.ndarray] = {"X" + data: x}
    groups = []
    for j, term in enumerate(spec.groups):
        g, z, codes = build_group(term, frame, dpar)
        groups.append(g)
        arrays[f"Z_{first_term + j}"], arrays[f"codes_{first_term + j}"] = z, codes
    smooths = []
    for j, sm in enumerate(spec.smooths):
        basis = smooth_basis(sm.variable, frame[sm.variable].to_numpy(dtype=np.float64), sm.k)
        smooths.append((first_smooth + j, sites.smooth_name(dpar, sm.variable), basis))
        arrays[f"Zs_{first_smooth + j}"] = basis.columns(frame[sm.variable].to_numpy(dtype=np.float64))
    offsets = tuple(_offset_spec(expr, frame) for expr in spec.offsets)
    if offsets:
        arrays["offset" + data] = offset_values(offsets, frame)
    design = PredictorDesign(dpar, spec, fixed, tuple(range(first_term, first_term + len(groups))),
                             tuple(smooths), offsets, data)
    return design, groups, arrays


def predictor_arrays(design: PredictorDesign, frame) -> dict[str, np.ndarray]:
    """The arrays of ``design`` on new rows, without the group codes (see ``GroupDesignSpec.codes``)."""
    out: dict[str, np.ndarray] = {}
    if design.fixed.columns:
        out["X" + design.data] = design.fixed.matrix(frame)
    for term, _, basis in design.smooths:
        out[f"Zs_{term}"] = basis.columns(frame[basis.variable].to_numpy(dtype=np.float64))
    if design.offsets:
        out["offset" + design.data] = offset_values(design.offsets, frame)
    return out
