"""Notebook display: compact HTML cards for fits, models, reports, predictions and collections.

Each object's ``_repr_html_`` builds a card here: a title, a few key/value lines
(what ran, the verdict, the key numbers), an optional list of problems and an optional
small table. Everything is escaped. :func:`echo_suppressed` lets a function that has
just printed an object (``fit.diagnose()``) keep IPython from echoing the same object
again at the end of that cell.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["card", "current_cell", "echo_suppressed"]

_STYLE = ("font-family: var(--jp-content-font-family, sans-serif); font-size: 13px; line-height: 1.4; "
          "border: 1px solid #d0d0d0; border-radius: 4px; padding: 6px 10px; display: inline-block")
_OK, _BAD = "#1a7f37", "#cf222e"


def card(title: str, lines: Sequence[tuple[str, Any]] = (), *, verdict: tuple[str, bool] | None = None,
         problems: Sequence[str] = (), table: "pd.DataFrame | None" = None, note: str | None = None) -> str:
    """An HTML card: bold title, an optional coloured verdict, key/value rows, problems, a table."""
    out = [f'<div class="bhmjax-card" style="{_STYLE}">', f"<b>{html.escape(title)}</b>"]
    if verdict is not None:
        text, ok = verdict
        out.append(f'<div style="color: {_OK if ok else _BAD}; font-weight: bold">{html.escape(text)}</div>')
    if lines:
        rows = "".join(f'<tr><td style="text-align: left; padding-right: 1em; color: #555">{html.escape(k)}</td>'
                       f'<td style="text-align: left">{html.escape(str(v))}</td></tr>' for k, v in lines)
        out.append(f"<table>{rows}</table>")
    if problems:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
        out.append(f'<ul style="margin: 2px 0; color: {_BAD}">{items}</ul>')
    if table is not None:
        out.append(table.to_html(float_format=lambda v: f"{v:.3g}", na_rep="nan", border=0))
    if note:
        out.append(f'<div style="color: #555">{html.escape(note)}</div>')
    out.append("</div>")
    return "".join(out)


def current_cell() -> int | None:
    """The execution count of the running IPython cell, or None outside IPython."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return None if shell is None else int(getattr(shell, "execution_count", 0))


def echo_suppressed(printed_in: int | None) -> bool:
    """True while still in the cell that printed the object (its echo would repeat it)."""
    return printed_in is not None and printed_in == current_cell()
