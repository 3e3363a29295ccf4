"""Formula strings to model specs: lme4/brms bars parsed here, the rest handed to formulaic.

``"y ~ 1 + x + (1 + x | g)"`` splits into a response, the population-level
formula ``"1 + x"`` (formulaic builds its design, so categorical coding,
interactions and transforms are formulaic's) and group terms, each a formulaic
formula of its own columns (``"1 + x"``) with the grouping it varies over.

Supported bars: ``(expr | g)`` correlated effects, ``(expr || g)`` uncorrelated,
``(expr | a:b)`` an interaction grouping, ``(expr | a/b)`` nested, which is
``(expr | a) + (expr | a:b)``. Besides formulaic's terms the right-hand side takes
``offset(expr)`` (added to the linear predictor with coefficient 1) and penalized
splines ``s(x)`` / ``s(x, k = 10)`` (see ``smooth.py``). The response may carry
brms' addition terms, joined by ``+``: ``trials(n)`` (binomial), ``weights(w)``
and ``cens(c)`` / ``cens(c, upper)``: ``"r | trials(n) ~ ..."``,
``"time | cens(censored) + weights(w) ~ ..."``.

An auxiliary parameter's formula (distributional regression) has no response:
``"~ x + (1 | g)"`` (or brms' ``"sigma ~ x + (1 | g)"``), parsed by
:func:`parse_dpar_formula`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FormulaSpec", "GroupTermSpec", "SmoothTermSpec", "parse_formula", "parse_dpar_formula"]

_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")
_CALL = re.compile(r"^\s*([A-Za-z_.][A-Za-z0-9_.]*)\s*\((.*)\)\s*$", re.S)
_ADDITIONS = {"trials": (1, 1), "weights": (1, 1), "cens": (1, 2)}  # name -> (min, max) arguments
_SPECIALS = ("offset", "s")  # right-hand side calls bhmjax handles itself


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
class SmoothTermSpec:
    """A penalized spline ``s(variable, k = k)``: ``k`` basis functions (``k - 2`` penalized)."""

    variable: str
    k: int = 10


@dataclass(frozen=True)
class FormulaSpec:
    """A parsed formula.

    Attributes
    ----------
    text : str
        The formula as given.
    response : str
        The response column ("" for an auxiliary parameter's formula).
    trials : str or None
        The binomial trials column (``r | trials(n) ~ ...``).
    fixed : str
        Formulaic formula of the population-level design (bars, offsets and splines removed).
    groups : tuple of GroupTermSpec
        The group terms, nested ones expanded, in formula order.
    offsets : tuple of str
        Expressions of ``offset(...)`` terms.
    smooths : tuple of SmoothTermSpec
        The ``s(...)`` terms.
    weights, cens, cens_upper : str or None
        Columns of brms' ``weights(w)`` and ``cens(c, upper)`` addition terms.
    """

    text: str
    response: str
    trials: str | None
    fixed: str
    groups: tuple[GroupTermSpec, ...]
    offsets: tuple[str, ...] = ()
    smooths: tuple[SmoothTermSpec, ...] = ()
    weights: str | None = None
    cens: str | None = None
    cens_upper: str | None = None

    def variables(self) -> list[str]:
        """Every data column the formula reads: response and addition columns, then population
        terms, group terms, offsets, splines and groupings.

        The interval-censoring bound is left out: it may be missing on rows that are
        not interval censored (the caller checks it).
        """
        from formulaic import Formula

        out = ([self.response] if self.response else []) + [
            c for c in (self.trials, self.weights, self.cens) if c]
        for expr in [self.fixed] + [g.expr for g in self.groups] + [f"I({o})" for o in self.offsets]:
            out += sorted(Formula(expr).required_variables)
        out += [sm.variable for sm in self.smooths]
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


def _split_top(inner: str, sep: str) -> list[str]:
    """``inner`` split at every ``sep`` outside parentheses and quotes."""
    parts, depth, last, quote = [], 0, 0, None
    for i, ch in enumerate(inner):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(inner[last:i])
            last = i + 1
    return parts + [inner[last:]]


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
    """The right-hand side without the terms at ``spans``, with the '+' signs tidied."""
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


def _smooth(args: str, text: str) -> SmoothTermSpec:
    """``s(x)``, ``s(x, k = 8)``, ``s(x, bs = "ps")``."""
    parts = [p.strip() for p in _split_top(args, ",")]
    if not _NAME.match(parts[0]):
        raise _error(text, f"s({args}) needs one column name first, got {parts[0]!r}",
                     "Splines take one numeric column: s(x) or s(x, k = 10).")
    k = 10
    for part in parts[1:]:
        key, _, value = (v.strip() for v in part.partition("="))
        value = value.strip("'\"")
        if key == "k" and value.isdigit() and int(value) >= 4:
            k = int(value)
        elif key == "bs" and value == "ps":
            continue
        elif key == "bs":
            raise _error(text, f"s({args}) asks for the basis {value!r}",
                         "bhmjax fits P-splines (bs = 'ps': cubic B-splines with a second-order difference "
                         "penalty); drop bs or write bs = 'ps'.")
        else:
            raise _error(text, f"s({args}) has the argument {part!r}",
                         "s() takes k (an integer >= 4, the number of basis functions) and bs = 'ps'.")
    return SmoothTermSpec(variable=parts[0], k=k)


def _special_call(rhs: str, start: int, end: int) -> tuple[str, int] | None:
    """(name, start of the name) when the span ``rhs[start:end]`` is the argument list of offset() or s()."""
    match = re.search(r"([A-Za-z_.][A-Za-z0-9_.]*)\s*$", rhs[:start])
    if match is None or match.group(1) not in _SPECIALS:
        return None
    return match.group(1), match.start(1)


def _parse_rhs(rhs: str, text: str) -> tuple[str, list, list, list]:
    """(fixed formula, group terms, offsets, smooths) of a right-hand side."""
    groups, offsets, smooths, removed = [], [], [], []
    for start, end in _top_level_spans(rhs, text):
        inner = rhs[start + 1:end - 1]
        call = _special_call(rhs, start, end)
        if call is not None:
            name, begin = call
            if name == "offset":
                offsets.append(inner.strip())
            else:
                smooths.append(_smooth(inner, text))
            removed.append((begin, end))
            continue
        split = _split_bar(inner)
        if split is not None:
            groups += _group_terms(*split, text)
            removed.append((start, end))
    fixed = _fixed_part(rhs, removed, text)
    if "|" in fixed:
        raise _error(text, f"a bar '|' outside parentheses in {fixed!r}", "Group terms read (expr | g).")
    seen: dict[str, GroupTermSpec] = {}
    for g in groups:
        if g.name in seen:
            raise _error(text, f"the grouping {g.name!r} appears in more than one group term",
                         f"Combine them into one term, e.g. ({seen[g.name].expr} + ... | {g.name}).")
        seen[g.name] = g
    if len({sm.variable for sm in smooths}) < len(smooths):
        raise _error(text, "a variable has more than one s() term", "Write s(x) once.")
    _check_formulaic([fixed] + [g.expr for g in groups] + [f"0 + I({o})" for o in offsets], text)
    return fixed, groups, offsets, smooths


def _check_formulaic(exprs: list[str], text: str) -> None:
    from formulaic import Formula
    from formulaic.errors import FormulaicError

    for expr in exprs:
        try:
            Formula(expr)
        except (FormulaicError, SyntaxError, ValueError) as err:
            raise _error(text, f"formulaic cannot read {expr!r} ({_plain(err)})") from err


def _response(lhs: str, text: str) -> tuple[str, dict[str, tuple[str, ...]]]:
    """The response column and its addition terms: ``"y | cens(c) + weights(w)"``."""
    response, bar, rest = lhs.partition("|")
    response = response.strip()
    if not _NAME.match(response):
        raise _error(text, f"the response {lhs.strip()!r} is not a column name",
                     "Compute it as a column first (df['log_y'] = np.log(df.y)); binomial counts "
                     "take 'successes | trials(n) ~ ...'.")
    additions: dict[str, tuple[str, ...]] = {}
    for term in (_split_top(rest, "+") if bar else []):
        call = _CALL.match(term)
        name = call.group(1) if call else term.strip()
        args = tuple(a.strip() for a in _split_top(call.group(2), ",")) if call else ()
        if name not in _ADDITIONS or not _ADDITIONS[name][0] <= len(args) <= _ADDITIONS[name][1] \
                or not all(_NAME.match(a) for a in args) or name in additions:
            raise _error(text, f"cannot read the addition term {term.strip()!r} of the response",
                         "Supported: trials(n), weights(w), cens(c) and cens(c, upper), each once, naming "
                         "columns.")
        additions[name] = args
    return response, additions


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
    >>> spec = parse_formula("time | cens(c) ~ x + s(z) + offset(log(e))")
    >>> spec.fixed, spec.cens, spec.smooths[0].variable, spec.offsets
    ('x', 'c', 'z', ('log(e)',))
    """
    if not isinstance(text, str):
        raise TypeError(f"formula must be a string such as 'y ~ 1 + x + (1 | g)', got {type(text).__name__}")
    if text.count("~") != 1:
        raise _error(text, f"expected exactly one '~', found {text.count('~')}",
                     "Write 'response ~ predictors'.")
    lhs, rhs = text.split("~")
    response, add = _response(lhs, text)
    fixed, groups, offsets, smooths = _parse_rhs(rhs, text)
    cens = add.get("cens", ())
    return FormulaSpec(text=text, response=response, trials=add.get("trials", (None,))[0], fixed=fixed,
                       groups=tuple(groups), offsets=tuple(offsets), smooths=tuple(smooths),
                       weights=add.get("weights", (None,))[0], cens=cens[0] if cens else None,
                       cens_upper=cens[1] if len(cens) > 1 else None)


def parse_dpar_formula(dpar: str, text: str) -> FormulaSpec:
    """Parse an auxiliary parameter's formula: ``"~ x + (1 | g)"`` or brms' ``"sigma ~ x"``.

    The left-hand side, if any, must name ``dpar``; splines, offsets and group terms
    are read as in :func:`parse_formula`.
    """
    if not isinstance(text, str):
        raise TypeError(f"the formula of {dpar} must be a string such as '~ x + (1 | g)', got "
                        f"{type(text).__name__}")
    if text.count("~") != 1:
        raise _error(text, f"expected exactly one '~', found {text.count('~')}",
                     f"Write the formula of {dpar} as '~ predictors'.")
    lhs, rhs = text.split("~")
    if lhs.strip() not in ("", dpar):
        raise _error(text, f"the formula of {dpar} has the left-hand side {lhs.strip()!r}",
                     f"Write '~ predictors' (or '{dpar} ~ predictors').")
    fixed, groups, offsets, smooths = _parse_rhs(rhs, text)
    return FormulaSpec(text=text, response="", trials=None, fixed=fixed, groups=tuple(groups),
                       offsets=tuple(offsets), smooths=tuple(smooths))
