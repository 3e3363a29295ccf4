"""Formula strings to model specs: lme4/brms bars parsed here, the rest handed to formulaic.

``"y ~ 1 + x + (1 + x | g)"`` splits into a response, the population-level
formula ``"1 + x"`` (formulaic builds its design, so categorical coding,
interactions and transforms are formulaic's) and group terms, each a formulaic
formula of its own columns (``"1 + x"``) with the grouping it varies over.

Supported bars: ``(expr | g)`` correlated effects, ``(expr || g)`` uncorrelated,
``(expr | a:b)`` an interaction grouping, ``(expr | a/b)`` nested, which is
``(expr | a) + (expr | a:b)``. The response may carry brms' binomial trials:
``"r | trials(n) ~ ..."``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from bhmjax._src.data import GroupEncoding, encode_groups

__all__ = ["FormulaSpec", "GroupTermSpec", "FixedDesignSpec", "GroupDesignSpec", "parse_formula",
           "build_fixed", "build_group", "group_values"]

_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")
_TRIALS = re.compile(r"^\s*([A-Za-z_.][A-Za-z0-9_.]*)\s*\|\s*trials\(\s*([A-Za-z_.][A-Za-z0-9_.]*)\s*\)\s*$")


@dataclass(frozen=True)
class GroupTermSpec:
    """One group term ``(expr | g)``: effects of ``expr``'s columns varying over ``g``.

    Attributes
    ----------
    expr : str
        Formulaic formula of the term's own design columns, e.g. ``"1 + floor"``.
    factors : tuple of str
        Columns whose joint levels define the groups: ``("county",)``, or
        ``("a", "b")`` for the ``a:b`` grouping of a nested ``(1 | a/b)``.
    correlated : bool
        ``|`` (an LKJ-correlated block) or ``||`` (independent effects).
    """

    expr: str
    factors: tuple[str, ...]
    correlated: bool = True

    @property
    def name(self) -> str:
        """The grouping's name in parameter names: ``county`` or ``a:b``."""
        return ":".join(self.factors)


@dataclass(frozen=True)
class FormulaSpec:
    """A parsed formula.

    Attributes
    ----------
    text : str
        The formula as given.
    response : str
        The response column.
    trials : str or None
        The binomial trials column (``r | trials(n) ~ ...``).
    fixed : str
        Formulaic formula of the population-level design (bars removed).
    groups : tuple of GroupTermSpec
        The group terms, nested ones expanded, in formula order.
    """

    text: str
    response: str
    trials: str | None
    fixed: str
    groups: tuple[GroupTermSpec, ...]

    def variables(self) -> list[str]:
        """Every data column the formula reads, response first, in order of appearance."""
        from formulaic import Formula

        out = [self.response] + ([self.trials] if self.trials else [])
        for expr in [self.fixed] + [g.expr for g in self.groups]:
            out += sorted(Formula(expr).required_variables)
        for g in self.groups:
            out += list(g.factors)
        return list(dict.fromkeys(out))


def _plain(err: Exception) -> str:
    """Formulaic's message without its terminal colour codes and markers."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m|[\u29da\u29db]", "", str(err)).split())


def _error(text: str, what: str, fix: str = "") -> ValueError:
    return ValueError(f"cannot parse the formula {text!r}: {what}.{' ' + fix if fix else ''}")


def _top_level_spans(rhs: str, text: str) -> list[tuple[int, int]]:
    """(start, end) of every parenthesised group at depth 0 of ``rhs``."""
    spans, depth, start = [], 0, 0
    for i, ch in enumerate(rhs):
        if ch == "(":
            if depth == 0:
                start = i
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _error(text, f"unbalanced ')' at position {i} of the right-hand side")
            if depth == 0:
                spans.append((start, i + 1))
    if depth != 0:
        raise _error(text, "an opening '(' is never closed")
    return spans


def _split_bar(inner: str) -> tuple[str, str, bool] | None:
    """``"1 + x | g"`` -> ("1 + x", "g", True); None when no top-level bar."""
    depth = 0
    for i, ch in enumerate(inner):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            if inner[i + 1:i + 2] == "|":
                return inner[:i], inner[i + 2:], False
            return inner[:i], inner[i + 1:], True
    return None


def _group_terms(expr: str, grouping: str, correlated: bool, text: str) -> list[GroupTermSpec]:
    expr, grouping = expr.strip(), grouping.strip()
    if not expr:
        raise _error(text, f"group term '( | {grouping})' has nothing before the bar",
                     "Write (1 | g) for varying intercepts.")
    if "|" in expr:
        raise _error(text, f"group term '({expr} | {grouping})' has more than one bar")
    nested = [p.strip() for p in grouping.split("/")]
    parts = [[f.strip() for f in p.split(":")] for p in nested]
    for factor in (f for p in parts for f in p):
        if not _NAME.match(factor):
            raise _error(text, f"the grouping {grouping!r} is not a column name (got {factor!r})",
                         "Group by plain columns: (1 | g), (1 | a:b) or (1 | a/b).")
    out, prefix = [], []
    for part in parts:  # a/b/c -> a, a:b, a:b:c
        prefix = prefix + part
        out.append(GroupTermSpec(expr=expr, factors=tuple(prefix), correlated=correlated))
    return out


def _fixed_part(rhs: str, spans: list[tuple[int, int]], text: str) -> str:
    """The right-hand side without its bar terms, with the '+' signs tidied."""
    pieces, last = [], 0
    for start, end in spans:
        before = rhs[last:start].rstrip()
        if before.endswith("-"):
            raise _error(text, f"a group term cannot be subtracted: '- {rhs[start:end]}'")
        pieces.append(before)
        last = end
    pieces.append(rhs[last:])
    fixed = " ".join(pieces)
    fixed = re.sub(r"\+(\s*\+)+", "+", fixed).strip()
    fixed = re.sub(r"^\+|\+$", "", fixed).strip()
    return fixed or "1"


def _response(lhs: str, text: str) -> tuple[str, str | None]:
    lhs = lhs.strip()
    match = _TRIALS.match(lhs)
    if match:
        return match.group(1), match.group(2)
    if not _NAME.match(lhs):
        raise _error(text, f"the response {lhs!r} is not a column name",
                     "Compute it as a column first (df['log_y'] = np.log(df.y)); binomial counts "
                     "take 'successes | trials(n) ~ ...'.")
    return lhs, None


def parse_formula(text: str) -> FormulaSpec:
    """Parse ``"y ~ fixed + (expr | g) + ..."`` into a :class:`FormulaSpec`.

    Raises ``ValueError`` naming the part it cannot read (a missing ``~``, an
    unbalanced parenthesis, a grouping that is not a column, a population-level
    formula formulaic rejects) and ``TypeError`` if ``text`` is not a string.

    Examples
    --------
    >>> spec = parse_formula("y ~ 1 + x + (1 + x || g) + (1 | a/b)")
    >>> spec.fixed, [(g.expr, g.name, g.correlated) for g in spec.groups]
    ('1 + x', [('1 + x', 'g', False), ('1', 'a', True), ('1', 'a:b', True)])
    """
    from formulaic import Formula
    from formulaic.errors import FormulaicError

    if not isinstance(text, str):
        raise TypeError(f"formula must be a string such as 'y ~ 1 + x + (1 | g)', got {type(text).__name__}")
    if text.count("~") != 1:
        raise _error(text, f"expected exactly one '~', found {text.count('~')}",
                     "Write 'response ~ predictors'.")
    lhs, rhs = text.split("~")
    response, trials = _response(lhs, text)
    spans = _top_level_spans(rhs, text)
    groups, bar_spans = [], []
    for start, end in spans:
        split = _split_bar(rhs[start + 1:end - 1])
        if split is not None:
            groups += _group_terms(*split, text)
            bar_spans.append((start, end))
    fixed = _fixed_part(rhs, bar_spans, text)
    if "|" in fixed:
        raise _error(text, f"a bar '|' outside parentheses in {fixed!r}", "Group terms read (expr | g).")
    seen: dict[str, GroupTermSpec] = {}
    for g in groups:
        if g.name in seen:
            raise _error(text, f"the grouping {g.name!r} appears in more than one group term",
                         f"Combine them into one term, e.g. ({seen[g.name].expr} + ... | {g.name}).")
        seen[g.name] = g
    for expr in [fixed] + [g.expr for g in groups]:
        try:
            Formula(expr)
        except (FormulaicError, SyntaxError, ValueError) as err:
            raise _error(text, f"formulaic cannot read {expr!r} ({_plain(err)})") from err
    return FormulaSpec(text=text, response=response, trials=trials, fixed=fixed, groups=tuple(groups))


# ---------------------------------------------------------------- designs on data


@dataclass(frozen=True, eq=False)
class FixedDesignSpec:
    """The population-level design, rebuildable on new rows with the same coding.

    Attributes
    ----------
    model_spec : formulaic.ModelSpec
        ``model_spec.get_model_matrix(new_frame)`` rebuilds the design (categorical
        levels, contrasts and transforms as in training).
    columns : tuple of str
        The slope columns, in the order of the site ``b`` (the Intercept excluded).
    intercept : bool
        Whether the formula has a population intercept.
    means : np.ndarray, shape (len(columns),)
        Training means of the slope columns; the model centres them internally.
    """

    model_spec: object
    columns: tuple[str, ...]
    intercept: bool
    means: np.ndarray

    def matrix(self, frame) -> np.ndarray:
        """Slope columns for the rows of ``frame``, shape (n_rows, len(columns))."""
        mm = self.model_spec.get_model_matrix(frame, na_action="raise")
        return _columns(mm, self.columns)


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
    """

    term: GroupTermSpec
    model_spec: object
    columns: tuple[str, ...]
    encoding: GroupEncoding

    @property
    def name(self) -> str:
        return self.term.name

    def matrix(self, frame) -> np.ndarray:
        """The term's columns for the rows of ``frame``, shape (n_rows, len(columns))."""
        return _columns(self.model_spec.get_model_matrix(frame, na_action="raise"), self.columns)

    def codes(self, frame, *, allow_new: bool = False) -> tuple[np.ndarray, tuple]:
        """Group codes of new rows (unseen levels get codes >= num_groups)."""
        return self.encoding.encode(group_values(self.term, frame), allow_new=allow_new)


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


def build_fixed(spec: FormulaSpec, frame) -> tuple[FixedDesignSpec, np.ndarray]:
    """Formulaic's design of ``spec.fixed`` on ``frame``: the spec and X (slopes only)."""
    from formulaic import model_matrix

    mm = model_matrix(spec.fixed, frame, na_action="raise")
    names = tuple(str(c) for c in mm.columns)
    columns = tuple(c for c in names if c != "Intercept")
    x = _columns(mm, columns)
    design = FixedDesignSpec(model_spec=mm.model_spec, columns=columns,
                             intercept="Intercept" in names, means=x.mean(axis=0))
    return design, x


def build_group(term: GroupTermSpec, frame) -> tuple[GroupDesignSpec, np.ndarray, np.ndarray]:
    """One group term on ``frame``: its spec, its columns Z (n, k) and codes (n,)."""
    from formulaic import model_matrix

    mm = model_matrix(term.expr, frame, na_action="raise")
    columns = tuple(str(c) for c in mm.columns)
    if not columns:
        raise ValueError(f"the group term ({term.expr} | {term.name}) has no columns; "
                         "write (1 | g) for varying intercepts.")
    encoding = encode_groups(group_values(term, frame), name=term.name)
    design = GroupDesignSpec(term=term, model_spec=mm.model_spec, columns=columns, encoding=encoding)
    return design, _columns(mm, columns), encoding.codes
