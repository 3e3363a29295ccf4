"""examples/workflow.ipynb runs top to bottom in a Jupyter kernel and shows tables, figures and reports."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOK = EXAMPLES / "workflow.ipynb"


def _outputs(cell) -> list[dict]:
    return list(cell.get("outputs", []))


def test_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not _outputs(c) and c.get("execution_count") is None for c in code)


@pytest.mark.slow
def test_workflow_notebook_executes(posteriordb):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    outputs = [o for c in cells for o in _outputs(c)]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("<table" in h for h in html), "no HTML table among the outputs"
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure among the outputs"
    assert any("bhmjax-card" in h and "bhmjax Fit" in h for h in html)  # the Fit's card
    assert any("bhmjax-card" in h and "bhmjax Model" in h for h in html)
    assert any("bhmjax Prediction" in h for h in html)
    for cell in cells:
        if cell.source.strip().endswith(".diagnose()"):
            # printed once; the returned report is not echoed after it
            assert [o["output_type"] for o in _outputs(cell)] == ["stream"], _outputs(cell)
            assert "Diagnostics (2 chains x 300 draws)" in _outputs(cell)[0]["text"]


def test_diagnose_report_is_not_echoed_in_the_cell_that_printed_it(monkeypatch, capsys):
    """fit.diagnose() prints; IPython's echo of the returned report shows nothing in that cell only."""
    pytest.importorskip("IPython")
    import IPython.display

    from bhmjax import display
    from tests.test_summary import synthetic_fit

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    monkeypatch.setattr(display, "current_cell", lambda: 7)
    report = synthetic_fit().diagnose()
    assert capsys.readouterr().out.count("Diagnostics (2 chains x 200 draws)") == 1
    report._ipython_display_()  # the echo at the end of cell 7
    assert shown == []
    monkeypatch.setattr(display, "current_cell", lambda: 8)
    report._ipython_display_()  # `report` in a later cell shows it
    assert "Diagnostics (2 chains x 200 draws)" in shown[0]["text/plain"]
    assert "bhmjax-card" in shown[0]["text/html"] and "NOT converged" in shown[0]["text/html"]
