"""Names of scalar parameters: ``theta[school_3]``, ``r_county[Aitkin, Intercept]``.

The names are ArviZ's flat labels (``var[label, label]``, as its ``BaseLabeller`` writes
them), so a summary by bhmjax and one by ArviZ of the exported fit name rows alike;
except that a label holding a comma or bracket, or starting or ending with a quote, is quoted
(``r_g['x,y', Intercept]``; ``eta[St. Paul's]`` stays as ArviZ writes it),
where ArviZ's name would be ambiguous (the ArviZ coords hold the labels as they are).
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

__all__ = ["axis_labels", "flat_names", "quote_label", "valid_labels"]

_SPECIAL = frozenset(",[]")
_QUOTES = frozenset("'\"")


def valid_labels(values: Sequence, size: int) -> bool:
    """Labels usable for an axis of ``size``: one per position, all different."""
    values = list(values)
    return len(values) == size and len({str(v) for v in values}) == size


def axis_labels(name: str, shape: tuple[int, ...], coords: Mapping[str, Sequence],
                dims: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One list of labels per axis of site ``name`` (integer positions where unnamed).

    ``dims[name]`` lists a coordinate name per axis (ArviZ's convention); an axis
    whose coordinate is missing from ``coords``, has the wrong length or repeats a
    label is labelled by position.
    """
    site_dims = list(dims.get(name, ()))
    labels = []
    for axis, size in enumerate(shape):
        values = None
        if axis < len(site_dims) and site_dims[axis] in coords:
            values = list(coords[site_dims[axis]])
            if not valid_labels(values, size):
                values = None
        labels.append([str(v) for v in values] if values is not None else [str(i) for i in range(size)])
    return labels


def flat_names(name: str, shape: tuple[int, ...], coords: Mapping[str, Sequence],
               dims: Mapping[str, Sequence[str]]) -> list[str]:
    """Row names for every scalar of a site, in C order (matching ``reshape(-1)``)."""
    if not shape:
        return [name]
    labels = [[quote_label(v) for v in axis] for axis in axis_labels(name, shape, coords, dims)]
    return [f"{name}[{', '.join(combo)}]" for combo in itertools.product(*labels)]


def quote_label(label: str) -> str:
    """``label`` as written inside a name's brackets: quoted (Python's repr) when it holds
    a comma or bracket, starts or ends with a quote, or has surrounding blanks, so
    ``r_g['x,y', Intercept]`` cannot be read as three labels; other labels (``St. Paul's``
    too) are written as they are, as ArviZ writes them.
    """
    if _SPECIAL.intersection(label) or label != label.strip() or label[:1] in _QUOTES or label[-1:] in _QUOTES:
        return repr(label)
    return label
