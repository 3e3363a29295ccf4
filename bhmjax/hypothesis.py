"""Posterior tests of hypotheses about parameters, with brms' semantics (``hypothesis``).

A hypothesis is ``left OP right`` with OP one of ``<``, ``>`` or ``=``; it is rewritten
as ``(left) - (right) OP 0`` and evaluated on every draw. Names are the rows of
``fit.summary()`` (``b[x]``, ``sd_g[Intercept]``, ``r_g[a, Intercept]``; quotes and
spaces inside brackets optional) and, for formula fits, brms' names (``x``, ``b_x``,
``Intercept``, ``sigma_x``, ``sd_g__Intercept``, ``cor_g__Intercept__x``). The
expression is parsed, never ``eval``-ed: numbers, names, ``+ - * /``, ``^`` or ``**``, parentheses
and the functions in :data:`FUNCTIONS`.

Examples
--------
>>> fit.hypothesis("x > 0.5", "sd_g__Intercept < 1", "Intercept + x = 2")   # doctest: +SKIP
"""

from __future__ import annotations

import ast
import operator
import re
from typing import TYPE_CHECKING, Callable

import numpy as np

from bhmjax import summary
from bhmjax.effects import posterior_summary

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from bhmjax.fit import Fit

__all__ = ["hypothesis", "hypothesis_draws", "FUNCTIONS"]

FUNCTIONS: dict[str, Callable] = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1,
                                  "sqrt": np.sqrt, "abs": np.abs, "inv_logit": lambda v: 1 / (1 + np.exp(-v)),
                                  "logit": lambda v: np.log(v / (1 - v)), "square": np.square}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _key(name: str) -> str:
    """A name as compared: no spaces, no quotes."""
    return re.sub(r"[\s'\"]", "", name)


def _aliases(row: str) -> list[str]:
    """brms' names of a summary row: ``b[x]`` -> x, b_x; ``sd_g[x]`` -> sd_g__x; ``cor_g[a, b]`` -> cor_g__a__b."""
    m = re.fullmatch(r"([A-Za-z_][\w.]*)\[(.*)\]", _key(row))
    if m is None:
        return [f"b_{row}"] if row.endswith("Intercept") else []
    site, inner = m.group(1), m.group(2).split(",")
    if site == "b":
        return [inner[0], f"b_{inner[0]}"] if len(inner) == 1 else []
    if site.startswith("b_") and len(inner) == 1:  # b_sigma[x] -> sigma_x, b_sigma_x
        return [f"{site[2:]}_{inner[0]}", f"{site}_{inner[0]}"]
    if site.startswith("sd_") and len(inner) == 1:
        return [f"{site}__{inner[0]}" if "__" not in site else f"{site}_{inner[0]}"]
    if site.startswith("cor_") and len(inner) == 2:  # cor_g__sigma[a, b] -> cor_g__sigma_a__sigma_b
        base, _, dpar = site.partition("__")
        a, b = (f"{dpar}_{c}" for c in inner) if dpar else inner
        return [f"{base}__{a}__{b}"]
    return []


def _names(fit: "Fit") -> tuple[dict[str, int], "summary.Columns"]:
    """Every scalar's names (its summary row and brms' aliases) -> its position in the columns."""
    cols = summary.columns(fit, [s for s in fit.draws if s not in fit.internal])
    lookup: dict[str, int] = {}
    for i, row in enumerate(cols.names):
        lookup.setdefault(_key(row), i)
    for i, row in enumerate(cols.names):
        for alias in _aliases(row):
            lookup.setdefault(_key(alias), i)
    return lookup, cols


def _split(text: str) -> tuple[str, str, str]:
    """``left OP right`` at the one top-level comparison (``==`` read as ``=``)."""
    text = text.replace("==", "=")
    depth, found = 0, []
    for i, ch in enumerate(text):
        depth += 1 if ch in "([" else -1 if ch in ")]" else 0
        if depth == 0 and ch in "<>=":
            found.append(i)
    if len(found) != 1:
        raise ValueError(f"hypothesis {text!r} must have the form 'left < right', 'left > right' or "
                         "'left = right', with exactly one comparison (<= and >= are not brms' forms).")
    i = found[0]
    return text[:i].strip(), text[i], text[i + 1:].strip()


def _tokenize(expr: str, lookup: dict[str, int]) -> tuple[str, list[int]]:
    """The expression with each parameter name replaced by ``_p<k>``, and the columns they name."""
    out, used, i = [], [], 0
    while i < len(expr):
        ch = expr[i]
        number = _NUMBER.match(expr, i) if ch.isdigit() or ch == "." else None
        if number:
            out.append(number.group(0))
            i = number.end()
        elif ch.isalpha() or ch == "_":
            j = i
            while j < len(expr) and (expr[j].isalnum() or expr[j] in "_.:"):
                j += 1
            if j < len(expr) and expr[j] == "[":
                depth = 0
                while j < len(expr):
                    depth += {"[": 1, "]": -1}.get(expr[j], 0)
                    j += 1
                    if depth == 0:
                        break
            name = expr[i:j]
            rest = expr[j:].lstrip()
            if rest.startswith("(") and name in FUNCTIONS:
                out.append(name)
            elif _key(name) in lookup:
                used.append(lookup[_key(name)])
                out.append(f"_p{len(used) - 1}")
            else:
                raise KeyError(_unknown(name, lookup))
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out), used


def _unknown(name: str, lookup: dict[str, int]) -> str:
    import difflib

    close = difflib.get_close_matches(_key(name), list(lookup), n=3)
    shown = list(lookup)[:30]
    return (f"no parameter named {name!r} in this fit{f' (did you mean {close}?)' if close else ''}. Names are "
            f"fit.summary()'s rows and brms' names, e.g. {shown}{' ...' if len(lookup) > 30 else ''}.")


def _evaluate(node: ast.AST, values: list[np.ndarray], text: str) -> np.ndarray:
    """The value of a parsed expression: numbers, parameters, arithmetic and :data:`FUNCTIONS` only."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, values, text)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return np.float64(node.value)
    if isinstance(node, ast.Name) and re.fullmatch(r"_p\d+", node.id):
        return values[int(node.id[2:])]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left, values, text), _evaluate(node.right, values, text))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand, values, text))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
            and len(node.args) == 1 and not node.keywords):
        return FUNCTIONS[node.func.id](_evaluate(node.args[0], values, text))
    raise ValueError(f"hypothesis {text!r} uses {ast.dump(node)[:60]}...; only numbers, parameter names, "
                     f"+ - * / ^, parentheses and the functions {sorted(FUNCTIONS)} are allowed.")


def hypothesis_draws(fit: "Fit", text: str) -> tuple[str, str, np.ndarray]:
    """One hypothesis as brms writes it (``(x)-(0.5) > 0``), its sign and draws of the left side (chains, draws)."""
    if not isinstance(text, str):
        raise TypeError(f"a hypothesis is a string such as 'x > 0.5', got {type(text).__name__}")
    left, sign, right = _split(text)
    if not left or not right:
        raise ValueError(f"hypothesis {text!r} lacks a side of its comparison.")
    expr = f"({left})" + (f"-({right})" if _key(right) != "0" else "")
    lookup, cols = _names(fit)
    code, used = _tokenize(expr, lookup)
    code = code.replace("^", "**")  # R's power, as brms users write it (names are placeholders by now)
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"hypothesis {text!r} is not an arithmetic expression: {err.msg}") from None
    values = list(np.moveaxis(summary.gather(fit, cols.take(used), np.float64), -1, 0)) if used else []
    with np.errstate(all="ignore"):
        draws = np.broadcast_to(_evaluate(tree, values, text), (fit.num_chains, fit.num_draws))
    written = re.sub(r"\s+", "", expr)
    return f"{written} {sign} 0", sign, np.asarray(draws, dtype=np.float64)


def hypothesis(fit: "Fit", *hypotheses: str, alpha: float = 0.05, summary: bool = True):
    """Posterior evidence for hypotheses about parameters (brms' ``hypothesis``).

    Parameters
    ----------
    fit : Fit
        Any fit (formula or NumPyro model).
    *hypotheses : str
        Such as ``"x > 0.5"``, ``"sd_g__Intercept < 1"``, ``"b[x] + b[z] = 0"``.
    alpha : float
        One-sided hypotheses get the interval ``[q_alpha, inf)`` (``>``) or
        ``(-inf, q_(1-alpha)]`` (``<``); two-sided (``=``) the central ``1 - alpha``
        interval, as brms.
    summary : bool
        False: a dict hypothesis -> draws (chains, draws) of ``left - right``.

    Returns
    -------
    pandas.DataFrame
        One row per hypothesis: Hypothesis (as brms writes it, ``(x)-(0.5) > 0``),
        Estimate and Est.Error (mean and sd of ``left - right``), CI.Lower, CI.Upper,
        Post.Prob (the share of draws where the hypothesis holds), Evid.Ratio
        (``Post.Prob / (1 - Post.Prob)``, inf when every draw agrees) and Star ("*" when
        the interval excludes 0). For ``=`` Post.Prob and Evid.Ratio are NaN: brms
        computes them from prior draws (a Savage-Dickey ratio), which a fit does not keep.
    """
    import pandas as pd

    if not hypotheses:
        raise ValueError("give at least one hypothesis, e.g. fit.hypothesis('x > 0').")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    rows, out = [], {}
    for text in hypotheses:
        name, sign, draws = hypothesis_draws(fit, text)
        out[name] = draws
        if sign == "=":
            (lo, hi), prob = np.quantile(draws, [alpha / 2, 1 - alpha / 2]), np.nan
        elif sign == ">":
            lo, hi, prob = np.quantile(draws, alpha), np.inf, float(np.mean(draws > 0))
        else:
            lo, hi, prob = -np.inf, np.quantile(draws, 1 - alpha), float(np.mean(draws < 0))
        with np.errstate(divide="ignore"):
            ratio = np.float64(prob) / (1 - np.float64(prob)) if sign != "=" else np.nan
        stats = posterior_summary(draws, ())
        rows.append({"Hypothesis": name, "Estimate": float(stats["Estimate"]), "Est.Error": float(stats["Est.Error"]),
                     "CI.Lower": float(lo), "CI.Upper": float(hi), "Evid.Ratio": float(ratio),
                     "Post.Prob": prob, "Star": "*" if not lo <= 0 <= hi else ""})
    if not summary:
        return out
    return pd.DataFrame(rows)
