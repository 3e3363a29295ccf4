"""Smoke run of the benchmark harness on a tiny grid, in-process.

Checks that the JSON carries every field, that a failed or unavailable cell is recorded
while the run goes on, that the report renders, and the two directions that are not in
doubt even with 2 chains x 150 draws: eight schools has fewer divergences non-centered,
and with 1,000 rows per group and noise sd 0.1 x the group sd, centered has more ESS
per gradient than non-centered.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import harness, peers, report, suites

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, posteriordb):
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    cells = suites.cells("smoke")
    # A broken cell in the middle: its error is recorded and the next cells still run.
    broken = {**cells[0], "block": "regimes", "model": "no_such_model", "G": 8, "rows": 2, "noise_ratio": 1.0}
    auto = {**cells[1], "parameterization": "auto"}
    cells = cells[:2] + [broken, auto] + cells[2:]
    harness.run_suite("smoke", out, cells=cells, log=lambda _: None)
    return json.loads(out.read_text()), out


def _cell(results, block, model, param):
    return next(c for c in results["cells"]
                if c["block"] == block and c["model"] == model and c.get("parameterization") == param)


def test_json_has_every_field(smoke):
    results, _ = smoke
    for key in ("cpu", "cores", "memory_gib", "backend", "device_kind", "versions", "git_commit"):
        assert key in results["machine"]
    assert {"jax", "numpyro", "bhmjax"} <= set(results["machine"]["versions"])
    assert set(results["peers"]) == {"pymc", "nutpie"}
    assert "available" in results["auto_parameterization"]
    ok = [c for c in results["cells"] if c["status"] == "ok"]
    assert len(ok) == 6  # eight schools x 2, intercepts x 3 (centered, noncentered, marginalized), auto
    for cell in ok:
        assert set(cell["metrics"]) == set(harness.METRICS), cell["label"]
        assert set(cell["spread"]) == set(harness.METRICS)
        assert len(cell["per_seed"]) == len(cell["seeds"])
        m = cell["metrics"]
        assert m["grad_evals_sampling"] > 0 and m["sampling_s"] > 0 and m["compile_s"] > 0
        assert 0 < m["min_ess_bulk"] <= m["median_ess_bulk"]
        assert m["ess_per_1k_grads"] == pytest.approx(1000 * m["min_ess_bulk"] / m["grad_evals_sampling"])
        assert m["max_rhat"] >= 0.99 and m["tree_depth_spread"] >= 0 and m["peak_rss_mb"] > 0


def test_failed_and_unavailable_cells_are_recorded(smoke):
    results, _ = smoke
    broken = next(c for c in results["cells"] if c["model"] == "no_such_model")
    assert broken["status"] == "error" and "no_such_model" in broken["error"]
    auto = _cell(results, "real", "eight_schools", "auto")  # a hand-written model: bj.sample(..., parameterization="auto")
    assert auto["status"] == "ok" and set(auto["centeredness"]) == {"theta"}
    assert auto["metrics"]["divergences"] < _cell(results, "real", "eight_schools", "centered")["metrics"]["divergences"]
    # the cells after the failure ran
    assert _cell(results, "regimes", "intercepts", "noncentered")["status"] == "ok"


def test_eight_schools_noncentered_has_fewer_divergences(smoke):
    results, _ = smoke
    cp = _cell(results, "real", "eight_schools", "centered")["metrics"]
    ncp = _cell(results, "real", "eight_schools", "noncentered")["metrics"]
    assert ncp["divergences"] < cp["divergences"]


def test_informative_groups_favour_centered(smoke):
    results, _ = smoke
    cp = _cell(results, "regimes", "intercepts", "centered")
    ncp = _cell(results, "regimes", "intercepts", "noncentered")
    assert cp["rows"] == 1000 and cp["noise_ratio"] <= 0.1
    assert cp["metrics"]["ess_per_1k_grads"] > ncp["metrics"]["ess_per_1k_grads"]


def test_marginalized_cell_beats_the_sampled_forms(smoke):
    """Group effects integrated out: no funnel and no ridge, so more ESS per gradient than either form."""
    results, _ = smoke
    pair = report.pairs(results)[("intercepts", 8, 1000, 0.1)]
    assert pair["marginalized"]["status"] == "ok" and report.marginalized_ratio(pair) > 1


def test_report_renders(smoke, tmp_path):
    _, path = smoke
    written = report.render([path], tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "## Headline" in text and "eight_schools" in text
    assert any(p.name.startswith("phase_intercepts") for p in written)
    assert "marginalized beats the best sampled form" in text
    assert all(p.stat().st_size > 0 for p in written)


def test_every_suite_lists_its_cells():
    for name in suites.SUITES:
        cells = suites.cells(name)
        assert cells and all({"block", "model", "chains", "warmup", "draws", "seeds"} <= set(c) for c in cells)
    gpu = suites.cells("gpu")
    assert max(c.get("G", 0) for c in gpu) == 100_000
    blocks = {c["block"] for c in suites.cells("full")}
    assert blocks == {"regimes", "real", "handwritten", "chain_methods", "precision", "scaling", "baselines"}
    assert {c["parameterization"] for c in suites.cells("quick") if c["block"] == "handwritten"} == {
        "centered", "noncentered", "auto"}
    with pytest.raises(ValueError, match="unknown suite"):
        suites.cells("huge")


def test_missing_peer_is_recorded_not_raised():
    for name in peers.PEERS:
        if peers.available()[name] == "not installed":
            row = peers.run_peer(name, "eight_schools_ncp", {}, {})
            assert row["status"] == "not installed"


def test_tree_spread_measures_lockstep_waste():
    import numpy as np

    from benchmarks.overhead import tree_spread

    out = tree_spread(np.array([[3, 7, 15], [7, 7, 3]]))
    assert out["lockstep_efficiency"] == pytest.approx(42 / 58)  # steps used / (chains x longest tree)
    assert out["tree_depth_spread_mean"] == pytest.approx(1.0)
    assert tree_spread(np.full((4, 5), 7))["lockstep_efficiency"] == 1.0
