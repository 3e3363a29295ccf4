"""Render result JSONs as markdown tables and PNG plots.

    python -m benchmarks report benchmarks/results/quick_cpu.json --out benchmarks/report/

Writes ``report.md`` and ``phase_<model>_G<g>.png`` (which parameterization wins where),
``ess_per_s.png`` (ESS/s per sampler), ``scaling.png`` (time per gradient and per
effective draw against G and N). Given a GPU and a CPU result, adds their ratio.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def _load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _ok(results: dict, block: str) -> list[dict]:
    return [c for c in results["cells"] if c["block"] == block and c["status"] == "ok"]


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _spread(cell: dict, key: str) -> str:
    s = cell.get("spread", {}).get(key)
    m = cell["metrics"][key]
    if not s or s[0] == s[1] or len(cell.get("seeds", [])) < 2:
        return _fmt(m)
    return f"{_fmt(m)} [{_fmt(s[0])}, {_fmt(s[1])}]"


# ---------------------------------------------------------------- ratios

def pairs(results: dict, block: str = "regimes") -> dict[tuple, dict[str, dict]]:
    """Cells of one block keyed by everything but the parameterization."""
    out: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for c in _ok(results, block):
        key = (c["model"], c.get("G"), c.get("rows"), c.get("noise_ratio"))
        out[key][c["parameterization"]] = c
    return out


def ncp_cp_ratio(pair: dict[str, dict], metric: str = "ess_per_1k_grads") -> float | None:
    if "centered" not in pair or "noncentered" not in pair:
        return None
    cp, ncp = pair["centered"]["metrics"][metric], pair["noncentered"]["metrics"][metric]
    return ncp / cp if cp else None


SAMPLED = ("centered", "noncentered", "auto")


def marginalized_ratio(pair: dict[str, dict], metric: str = "ess_per_1k_grads") -> float | None:
    """Marginalized over the best sampled parameterization of the same cell (> 1: integrating out wins)."""
    sampled = [pair[p]["metrics"][metric] for p in SAMPLED if p in pair]
    if "marginalized" not in pair or not sampled or not max(sampled):
        return None
    return pair["marginalized"]["metrics"][metric] / max(sampled)


def headline(results: dict) -> list[str]:
    """One line per target, stated as a ratio from this run."""
    lines = []
    for key, pair in sorted(pairs(results, "real").items(), key=str):
        r = ncp_cp_ratio(pair)
        if r is not None:
            d = {p: int(c["metrics"]["divergences"]) for p, c in pair.items()}
            lines.append(f"{key[0]}: non-centered / centered ESS per gradient = {r:.2f}; divergences "
                         f"CP {d.get('centered')} vs NCP {d.get('noncentered')}")
    wins = [(k, ncp_cp_ratio(p)) for k, p in pairs(results).items()]
    wins = [(k, r) for k, r in wins if r is not None]
    if wins:
        cp_wins = sum(r < 1 for _, r in wins)
        best_cp = min(wins, key=lambda kr: kr[1])
        best_ncp = max(wins, key=lambda kr: kr[1])
        text = f"regimes (ESS per gradient): centered wins {cp_wins} of {len(wins)} cells"
        if best_cp[1] < 1:
            text += f"; largest CP win x{1 / best_cp[1]:.1f} at {_key(best_cp[0])}"
        if best_ncp[1] > 1:
            text += f"; largest NCP win x{best_ncp[1]:.1f} at {_key(best_ncp[0])}"
        lines.append(text)
    marg = [(k, marginalized_ratio(p), marginalized_ratio(p, "ess_per_s_total")) for k, p in pairs(results).items()]
    marg = [m for m in marg if m[1] is not None]
    if marg:
        wins = sum(r > 1 for _, r, _ in marg)
        low = min(marg, key=lambda m: m[1])
        lines.append(f"regimes: marginalized beats the best sampled form in ESS per gradient in {wins} of {len(marg)} "
                     f"cells (lowest ratio x{low[1]:.2f} at {_key(low[0])}); ESS/s (wall) ratio median "
                     f"x{float(np.median([m[2] for m in marg if m[2] is not None])):.2f}")
    for c in (c for c in _ok(results, "baselines") if c["sampler"] == "bhmjax"):
        o = c["overhead"]
        lines.append(f"{c['model']}: bhmjax / hand-written NumPyro wall time = {o['wall_ratio']:.2f} "
                     f"(target <= 1.05), ESS/s ratio {o['ess_per_s_ratio']:.2f}")
    peers = [c for c in results["cells"] if c["block"] == "baselines" and c["sampler"] in ("pymc", "nutpie")]
    for c in peers:
        if c["status"] != "ok":
            lines.append(f"{c['model']}: {c['sampler']} {c['status']}")
    return lines


def _key(k: tuple) -> str:
    return f"{k[0]} G={k[1]} rows={k[2]} noise={k[3]:g}"


# ---------------------------------------------------------------- plots

def _phase_panel(ax, fig, grid: dict, title: str) -> None:
    rows = sorted({k[0] for k in grid})
    noise = sorted({k[1] for k in grid})
    z = np.full((len(noise), len(rows)), np.nan)
    for (r, s), v in grid.items():
        z[noise.index(s), rows.index(r)] = v
    lim = max(1.0, float(np.nanmax(np.abs(z))))
    im = ax.imshow(z, cmap="RdBu", vmin=-lim, vmax=lim, origin="lower", aspect="auto")
    for i in range(len(noise)):
        for j in range(len(rows)):
            if np.isfinite(z[i, j]):
                ax.text(j, i, f"{2 ** z[i, j]:.2g}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(rows)), [str(r) for r in rows])
    ax.set_yticks(range(len(noise)), [f"{s:g}" for s in noise])
    ax.set_xlabel("rows per group")
    ax.set_ylabel("noise sd / group sd")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="log2 ratio")


def plot_phase(results: dict, out: Path) -> list[Path]:
    """Per (model, G), over rows per group x noise ratio: log2(NCP/CP ESS per gradient) and, where
    the run has marginalized cells, log2(marginalized / best sampled form ESS per gradient)."""
    import matplotlib.pyplot as plt

    panels: dict[tuple, dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
    for key, pair in pairs(results).items():
        for name, r in (("ncp", ncp_cp_ratio(pair)), ("marginalized", marginalized_ratio(pair))):
            if r is not None and r > 0:
                panels[(key[0], key[1])][name][(key[2], key[3])] = math.log2(r)
    titles = {"ncp": "NCP/CP ESS per gradient\n(blue: non-centered wins)",
              "marginalized": "marginalized / best of CP, NCP, auto\nESS per gradient (blue: marginalized wins)"}
    written = []
    for (model, groups), grids in sorted(panels.items()):
        names = [n for n in titles if grids.get(n)]
        width = max(len({k[0] for k in g}) for g in grids.values())
        height = max(len({k[1] for k in g}) for g in grids.values())
        fig, axes = plt.subplots(1, len(names), figsize=((1.2 + 1.1 * width) * len(names), 1.0 + 0.8 * height),
                                 squeeze=False)
        for ax, name in zip(axes[0], names):
            _phase_panel(ax, fig, grids[name], f"{model}, G={groups}: {titles[name]}")
        fig.tight_layout()
        path = out / f"phase_{model}_G{groups}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def plot_ess_per_s(results: dict, out: Path) -> list[Path]:
    """Bars of min-bulk-ESS per second (wall, compile included) per sampler and model."""
    import matplotlib.pyplot as plt

    cells = _ok(results, "baselines")
    if not cells:
        return []
    models = sorted({c["model"] for c in cells})
    samplers = sorted({c["sampler"] for c in cells})
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3), squeeze=False)
    for ax, model in zip(axes[0], models):
        by = {c["sampler"]: c["metrics"] for c in cells if c["model"] == model}
        names = [s for s in samplers if s in by]
        total = [by[s]["ess_per_s_total"] for s in names]
        run = [by[s].get("ess_per_s_run") or 0.0 for s in names]
        x = np.arange(len(names))
        ax.bar(x - 0.2, total, 0.4, label="wall (compile incl.)")
        ax.bar(x + 0.2, run, 0.4, label="warmup + sampling")
        ax.set_xticks(x, names)
        ax.set_title(model, fontsize=9)
        ax.set_ylabel("min bulk ESS / s")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "ess_per_s.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def plot_scaling(results: dict, out: Path) -> list[Path]:
    """ms per gradient and s per effective draw against N (= G x rows), one line per rows/G sweep."""
    import matplotlib.pyplot as plt

    cells = _ok(results, "scaling")
    if not cells:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for sweep, key in (("vs G", "rows"), ("vs rows", "G")):
        groups = defaultdict(list)
        for c in cells:
            groups[c[key]].append(c)
        for fixed, cs in groups.items():
            if len(cs) < 2:
                continue
            cs = sorted(cs, key=lambda c: c["N"])
            n = [c["N"] for c in cs]
            for ax, metric in zip(axes, ("ms_per_grad", "s_per_eff_draw")):
                ax.plot(n, [c["metrics"][metric] for c in cs], "o-", label=f"{sweep} ({key}={fixed})")
    for ax, label in zip(axes, ("ms per gradient", "s per effective draw")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N rows")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"scaling on {results['machine'].get('device_kind', '')}", fontsize=9)
    fig.tight_layout()
    path = out / "scaling.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


# ---------------------------------------------------------------- markdown

CELL_COLUMNS = [("compile s", "compile_s"), ("warmup s", "warmup_s"), ("sampling s", "sampling_s"),
                ("grads (sampling)", "grad_evals_sampling"), ("min/med bulk ESS", None),
                ("min tail ESS", "min_ess_tail"), ("ESS/s (sampling)", "ess_per_s_sampling"),
                ("ESS/s (wall)", "ess_per_s_total"), ("ESS/1k grads", "ess_per_1k_grads"),
                ("div", "divergences"), ("max R-hat", "max_rhat"), ("depth spread", "tree_depth_spread"),
                ("peak RSS MB", "peak_rss_mb")]


def _cell_table(cells: list[dict], ident: list[tuple[str, str]]) -> str:
    if not cells:
        return ""
    header = [h for h, _ in ident] + [h for h, _ in CELL_COLUMNS]
    rows = []
    for c in cells:
        row = [c.get(k) for _, k in ident]
        if c["status"] != "ok":
            rows.append(row + [f"{c['status']}: {c.get('error', '')[:80]}"] + [""] * (len(CELL_COLUMNS) - 1))
            continue
        m = c["metrics"]
        for _, key in CELL_COLUMNS:
            row.append(f"{_fmt(m['min_ess_bulk'])} / {_fmt(m['median_ess_bulk'])}" if key is None
                       else _spread(c, key) if key in ("ess_per_1k_grads", "ess_per_s_sampling") else m[key])
        rows.append(row)
    return _table(header, rows)


def _block(results: dict, block: str) -> list[dict]:
    return [c for c in results["cells"] if c["block"] == block]


def _baseline_table(results: dict) -> str:
    rows = []
    for c in _block(results, "baselines"):
        if c["status"] != "ok":
            rows.append([c["model"], c["sampler"], c["status"], "", "", "", ""])
            continue
        m = c["metrics"]
        rows.append([c["model"], c["sampler"], m["wall_s"], m.get("run_s"), m["min_ess_bulk"],
                     m["ess_per_s_total"], m.get("ess_per_s_run")])
    return _table(["model", "sampler", "wall s", "warmup+sampling s", "min bulk ESS", "ESS/s (wall)",
                   "ESS/s (run)"], rows)


def gpu_vs_cpu(all_results: list[dict]) -> str:
    """s per effective draw, CPU / GPU, for scaling cells present in both runs."""
    by_backend = {r["machine"]["backend"]: r for r in all_results}
    if "cpu" not in by_backend or len(by_backend) < 2:
        return ""
    gpu = next(r for b, r in by_backend.items() if b != "cpu")
    key = lambda c: (c["model"], c["G"], c["rows"], c["parameterization"])  # noqa: E731
    cpu = {key(c): c for c in _ok(by_backend["cpu"], "scaling")}
    rows = [[*key(c), cpu[key(c)]["metrics"]["s_per_eff_draw"], c["metrics"]["s_per_eff_draw"],
             cpu[key(c)]["metrics"]["s_per_eff_draw"] / c["metrics"]["s_per_eff_draw"]]
            for c in _ok(gpu, "scaling") if key(c) in cpu]
    if not rows:
        return ""
    return "## GPU against CPU (target: >= 10x per effective draw for G >= 10,000)\n\n" + _table(
        ["model", "G", "rows", "param", "CPU s/eff draw", "GPU s/eff draw", "speed-up"], rows)


def markdown(results: dict, images: list[Path], others: list[dict] = ()) -> str:
    m = results["machine"]
    reg = [("model", "model"), ("G", "G"), ("rows", "rows"), ("noise", "noise_ratio"),
           ("param", "parameterization")]
    parts = [
        f"# Benchmarks: suite `{results['suite']}`",
        f"Machine: {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), backend {m['backend']} "
        f"({m['device_kind']}, {results.get('host_devices')} devices); bhmjax {m['versions']['bhmjax']}, "
        f"jax {m['versions']['jax']}, numpyro {m['versions']['numpyro']}; commit {m['git_commit']}, {m['date']}. "
        f"Run took {results['elapsed_s'] / 60:.1f} min; compilation cache: {results.get('compilation_cache')}.",
        f"Automatic parameterization: {'available' if results['auto_parameterization']['available'] else 'unavailable'}"
        f" ({results['auto_parameterization']['reason'] or 'bj.Model accepts it'}). Peers: {results['peers']}.",
        "ESS is the minimum (and median) over every scalar both parameterizations share "
        "(`benchmarks.common.ess_stats`); ESS per gradient uses the sampling phase's gradient evaluations; "
        "`[lo, hi]` is the spread over seeds, the value their median. A compile of ~0 s means the "
        "program was compiled by an earlier cell of the same shapes in this run and reused.",
        "## Headline\n\n" + "\n".join(f"- {line}" for line in headline(results)),
        "## Real models\n\n" + _cell_table(_block(results, "real"), [("model", "model"), ("param", "parameterization")]),
        "## Regimes (simulated)\n\n" + _cell_table(_block(results, "regimes"), reg),
        "## Hand-written models (centered function, non-centered function, auto on the centered one)\n\n"
        + _cell_table(_block(results, "handwritten"), [("model", "model"), ("G", "G"), ("rows", "rows"),
                                                       ("param", "parameterization")]),
        "## Chain methods\n\n" + _cell_table(_block(results, "chain_methods"),
                                            [("model", "model"), ("method", "chain_method_used")]),
        "## float32 against float64\n\n" + _cell_table(_block(results, "precision"), [("model", "model"), ("x64", "x64")]),
        "## Scaling\n\n" + _table(["model", "G", "rows", "N", "ms/gradient", "s/effective draw", "compile s"],
                                  [[c["model"], c["G"], c["rows"], c["N"], c["metrics"]["ms_per_grad"],
                                    c["metrics"]["s_per_eff_draw"], c["metrics"]["compile_s"]]
                                   for c in _ok(results, "scaling")]),
        "## Baselines (same model, priors, data and draws)\n\n" + _baseline_table(results),
        gpu_vs_cpu([results, *others]),
        "## Plots\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in images),
    ]
    return "\n\n".join(p for p in parts if p and not p.endswith(("---|", "\n\n"))) + "\n"


def render(paths: list[Path], out: Path) -> list[Path]:
    """Write report.md and the PNGs for the first result (others: GPU/CPU comparison)."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = [_load(p) for p in paths]
    main = results[0]
    images = plot_phase(main, out) + plot_ess_per_s(main, out) + plot_scaling(main, out)
    md = out / "report.md"
    md.write_text(markdown(main, images, results[1:]))
    return [md, *images]
