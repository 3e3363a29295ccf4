"""Encoding and validation of user data at the boundary (before anything compiles).

Everything here works on concrete host values (numpy, pandas); nothing is traced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["GroupEncoding", "encode_groups", "split_data", "check_data"]


@dataclass(frozen=True)
class GroupEncoding:
    """Contiguous integer codes for a grouping variable, with the labels kept.

    Attributes
    ----------
    codes : np.ndarray of int32, shape (n_rows,)
        ``labels[codes[i]]`` is the level of row ``i``.
    labels : tuple
        One label per level, in code order.
    name : str
        The variable the codes came from (used in error messages and names).
    """

    codes: np.ndarray
    labels: tuple
    name: str = "group"

    @property
    def num_groups(self) -> int:
        return len(self.labels)

    def encode(self, values: Any, *, allow_new: bool = False) -> tuple[np.ndarray, tuple]:
        """Codes of ``values`` under this encoding; new levels get codes >= num_groups.

        Returns the codes, shape (n,), and the tuple of unseen labels (in order of
        first appearance). Raises ``ValueError`` naming the unseen levels unless
        ``allow_new``.
        """
        values = _as_label_array(values, self.name)
        lookup = {label: i for i, label in enumerate(self.labels)}
        new: dict[Any, int] = {}
        codes = np.empty(len(values), dtype=np.int32)
        for i, v in enumerate(values.tolist()):
            code = lookup.get(v)
            if code is None:
                code = new.setdefault(v, self.num_groups + len(new))
            codes[i] = code
        by_text = {str(label): label for label in self.labels}
        clash = next((v for v in new if str(v) in by_text), None)
        if clash is not None:
            fitted = by_text[str(clash)]
            raise TypeError(
                f"{self.name!r} has the label {clash!r} ({type(clash).__name__}), which is not a fitted "
                f"label, but {fitted!r} ({type(fitted).__name__}) is: the labels' types differ. Convert "
                f"the column to the fitted labels' type ({type(fitted).__name__}) so these rows get the "
                "fitted effects."
            )
        if new and not allow_new:
            shown = ", ".join(repr(v) for v in list(new)[:10])
            raise ValueError(
                f"{self.name!r} has {len(new)} level(s) not seen in training: {shown}"
                f"{' ...' if len(new) > 10 else ''}. Pass groups='new' (or "
                "allow_new_levels=True) to draw their effects from the fitted population."
            )
        return codes, tuple(new)


def _as_label_array(values: Any, name: str) -> np.ndarray:
    """A 1-d object/number array of labels; rejects missing labels by row."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(values, (pd.Series, pd.Index, pd.Categorical)):
        missing = np.asarray(pd.isna(values))
        arr = np.asarray(values, dtype=object)
    else:
        arr = np.asarray(values)
        if arr.dtype.kind == "f":
            missing = np.isnan(arr)
        elif arr.dtype.kind == "O":
            missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in arr])
        else:
            missing = np.zeros(arr.shape, dtype=bool)
    if arr.ndim != 1:
        raise ValueError(f"group variable {name!r} must be 1-d, got shape {arr.shape}")
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise ValueError(
            f"group variable {name!r} has {int(missing.sum())} missing label(s), first at "
            f"row {row}; drop or fill those rows first."
        )
    return arr


def encode_groups(values: Any, name: str = "group") -> GroupEncoding:
    """Encode group labels of any kind (ints, strings, pandas categoricals) as codes.

    Levels are sorted (numbers numerically, strings alphabetically), except for a
    pandas categorical whose category order is kept (unused categories included, so
    a level with no rows is still a group).

    Parameters
    ----------
    values : array-like, shape (n_rows,)
    name : str
        Name of the variable, for messages and parameter names.

    Examples
    --------
    >>> enc = encode_groups(["b", "a", "b"], name="school")
    >>> enc.codes.tolist(), enc.labels
    ([1, 0, 1], ('a', 'b'))
    """
    import pandas as pd

    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        values = values.array
    if isinstance(values, pd.Categorical):
        _as_label_array(values, name)  # missing check
        labels = tuple(values.categories.tolist())
        codes = np.asarray(values.codes, dtype=np.int32)
        return GroupEncoding(codes=codes, labels=labels, name=name)
    arr = _as_label_array(values, name)
    if len(arr) == 0:
        raise ValueError(f"group variable {name!r} is empty")
    try:
        labels, codes = np.unique(arr, return_inverse=True)
    except TypeError as err:  # mixed types that cannot be sorted
        raise TypeError(
            f"group variable {name!r} mixes label types that cannot be ordered "
            f"({sorted({type(v).__name__ for v in arr.tolist()})}); convert it to str."
        ) from err
    return GroupEncoding(codes=codes.astype(np.int32).reshape(-1), labels=tuple(labels.tolist()), name=name)


def _is_static(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, tuple))


def split_data(data: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Split model keyword arguments into arrays (traced) and Python scalars (static).

    Arrays become data leaves of the compiled program, so new data of the same
    shapes reuse it; Python scalars, strings and tuples may steer the model's
    structure (a number of groups, say) and are part of the compile key.
    """
    if not isinstance(data, Mapping):
        raise TypeError(
            f"data must be a dict of keyword arguments for the model, got {type(data).__name__}"
        )
    arrays, static = {}, {}
    for name, value in data.items():
        if not isinstance(name, str):
            raise TypeError(f"data keys must be argument names (str), got {name!r}")
        if _is_static(value):
            static[name] = value
            continue
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                f"data[{name!r}] has dtype {arr.dtype}; the model needs numbers. Encode "
                "labels with bj.encode_groups(...) and pass the codes."
            )
        arrays[name] = arr
    return arrays, static


def check_data(arrays: Mapping[str, np.ndarray]) -> None:
    """Reject empty arrays and NaN/inf values, naming the variable and first bad row."""
    if not arrays:
        return
    for name, arr in arrays.items():
        if arr.size == 0:
            raise ValueError(f"data[{name!r}] is empty (shape {arr.shape}); there is nothing to fit.")
        if arr.dtype.kind == "f":
            bad = ~np.isfinite(arr)
            if bad.any():
                index = np.unravel_index(int(np.flatnonzero(bad)[0]), arr.shape)
                row = index[0] if arr.ndim else "scalar"
                what = "NaN" if np.isnan(arr[index]) else "inf"
                raise ValueError(
                    f"data[{name!r}] has {int(bad.sum())} non-finite value(s); the first is "
                    f"{what} at row {row}. Remove or impute those rows before fitting."
                )


def describe_lengths(arrays: Mapping[str, np.ndarray]) -> str:
    """'y: 100, x: 99' for the 1-d-or-more arrays, to explain shape errors."""
    return ", ".join(f"{k}: {v.shape[0]}" for k, v in arrays.items() if v.ndim >= 1)


def leading_lengths(arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
    return {k: int(v.shape[0]) for k, v in arrays.items() if v.ndim >= 1}


def labels_of(labels: Sequence[Any]) -> tuple[str, ...]:
    """Labels as strings, as they appear in parameter names."""
    return tuple(str(v) for v in labels)
