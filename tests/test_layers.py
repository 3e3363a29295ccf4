"""Layers you can see: ``_src`` never imports the public modules; public modules import downwards only.

The public modules are declared below in layer order, lowest first. A module may import
those before it (at module level or inside a function; imports for type annotations only,
under ``if TYPE_CHECKING:``, do not count). Declared exceptions: ``Fit``'s convenience
methods (``fit.predict``, ``fit.plot_trace``, ``fit.extend`` ...), which reach up into the
modules that do the work, and ``records.from_record``, which builds a saved formula model
again as a ``bj.Model`` (the file layer loading a fit must construct the model layer's object).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bhmjax"

LAYERS = ["_terms", "display", "summary", "fit", "marginal", "diagnose", "records", "io", "stream", "checkpoint",
          "runner", "_build", "model", "design", "predict", "effects", "conditional", "hypothesis", "arviz", "plots", "comparison", "sampler", "batch",
          "__init__"]
EXEMPT = {"fit": ("Fit", None), "records": (None, "from_record")}  # module: (class whose methods, function)


def _typing_only(tree: ast.AST) -> set[int]:
    """Lines under ``if TYPE_CHECKING:`` (annotations only: no import at run time)."""
    return {line for node in ast.walk(tree) if isinstance(node, ast.If) and getattr(node.test, "id", "") ==
            "TYPE_CHECKING" for child in node.body for line in range(child.lineno, child.end_lineno + 1)}


def _imports(path: Path) -> list[tuple[str, ast.AST]]:
    """Every ``bhmjax`` module ``path`` imports at run time, with the import node."""
    out = []
    tree = ast.parse(path.read_text())
    typing_only = _typing_only(tree)
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("bhmjax"):
            if node.module == "bhmjax":
                out += [(f"bhmjax.{a.name}", node) for a in node.names]
            else:
                out.append((node.module, node))
        elif isinstance(node, ast.Import):
            out += [(a.name, node) for a in node.names if a.name.startswith("bhmjax")]
    return out


def _public(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return None if parts[1] == "_src" else parts[1]


def _exempt_lines(path: Path, cls: str | None, function: str | None) -> set[int]:
    """Lines inside the methods of class ``cls`` or inside ``function`` (the declared exceptions)."""
    lines = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    lines |= set(range(item.lineno, item.end_lineno + 1))
        if isinstance(node, ast.FunctionDef) and node.name == function:
            lines |= set(range(node.lineno, node.end_lineno + 1))
    return lines


def test_src_never_imports_the_public_modules():
    bad = [(p.name, m) for p in sorted((PACKAGE / "_src").glob("*.py")) for m, _ in _imports(p)
           if _public(m) is not None]
    assert not bad, f"_src modules import public modules: {bad}"


def test_every_public_module_has_a_declared_layer():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert sorted(LAYERS) == modules, "declare each public module's layer in LAYERS"


@pytest.mark.parametrize("module", LAYERS)
def test_public_modules_import_downwards_only(module):
    path = PACKAGE / f"{module}.py"
    exempt = _exempt_lines(path, *EXEMPT[module]) if module in EXEMPT else set()
    here = LAYERS.index(module)
    upward = [(target, node.lineno) for target, node in _imports(path)
              if (layer := _public(target)) is not None and layer != module and node.lineno not in exempt
              and LAYERS.index(layer) > here]
    assert not upward, f"bhmjax/{module}.py imports upwards (module, line): {upward}"
