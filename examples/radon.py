"""Radon in Minnesota homes: complete, no and partial pooling with formula models.

The classic multilevel example (Gelman and Hill 2007, ch. 12): log radon in 919
homes of 85 counties, measured in the basement (floor_measure = 0) or on the
first floor (1). We fit

1. complete pooling  ``log_radon ~ 1 + floor_measure``              (one intercept)
2. no pooling        ``log_radon ~ 0 + C(county) + floor_measure``   (one per county)
3. partial pooling   ``log_radon ~ 1 + floor_measure + (1 | county)``
4. varying slopes    ``log_radon ~ 1 + floor_measure + (1 + floor_measure | county)``

and plot the county intercepts of (2) and (3) against the counties' numbers of
homes: partial pooling shrinks small counties towards the state mean.

    python examples/radon.py [DATA] [--out FOLDER] [--quick]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

import bhmjax as bj

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "posteriordb" / "radon_mn.json"


def load(path: Path) -> pd.DataFrame:
    """The posteriordb radon_mn data as a frame: log_radon, floor_measure, county (1-based ids)."""
    if not path.is_file():
        raise SystemExit(f"radon data not found at {path}; pass its path (radon_mn.json from posteriordb).")
    d = json.loads(path.read_text())
    return pd.DataFrame({"log_radon": d["log_radon"], "floor_measure": d["floor_measure"],
                         "county": d["county_idx"]})


def show(title: str, fit: bj.Fit, rows: list[str]) -> None:
    print(f"\n=== {title} ===")
    table = fit.summary()
    print(table.loc[[r for r in rows if r in table.index], ["mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "r_hat"]]
          .round(3).to_string())
    print(f"divergences: {int(fit.stats['diverging'].sum())}; compile {fit.timings['compile']:.1f} s, "
          f"sampling {fit.timings['warmup'] + fit.timings['sampling']:.1f} s")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA, help="path to radon_mn.json")
    parser.add_argument("--out", type=Path, default=Path("radon_out"), help="folder for the figure")
    parser.add_argument("--quick", action="store_true", help="few draws (a smoke test)")
    args = parser.parse_args(argv)
    df = load(args.data)
    settings = dict(chains=2, warmup=150, draws=150) if args.quick else dict(chains=4, warmup=1000, draws=1000)
    settings.update(seed=0, progress=False)
    print(f"{len(df)} homes in {df.county.nunique()} counties")

    complete = bj.Model("log_radon ~ 1 + floor_measure", df).fit(**settings)
    show("complete pooling", complete, ["Intercept", "b[floor_measure]", "sigma"])

    no_pool_model = bj.Model("log_radon ~ 0 + C(county) + floor_measure", df)
    no_pool = no_pool_model.fit(**settings)
    show("no pooling (first counties)", no_pool, ["b[C(county)[1]]", "b[C(county)[2]]", "b[floor_measure]", "sigma"])

    partial_model = bj.Model("log_radon ~ 1 + floor_measure + (1 | county)", df)
    partial_model.describe()
    partial = partial_model.fit(**settings)
    show("partial pooling: varying intercepts", partial,
         ["Intercept", "b[floor_measure]", "sigma", "sd_county[Intercept]", "r_county[1, Intercept]"])

    slopes = bj.Model("log_radon ~ 1 + floor_measure + (1 + floor_measure | county)", df).fit(
        **settings, target_accept=0.9)
    show("partial pooling: varying intercepts and slopes", slopes,
         ["Intercept", "b[floor_measure]", "sigma", "sd_county[Intercept]", "sd_county[floor_measure]",
          "cor_county[Intercept, floor_measure]"])

    # county intercepts (basement level): no pooling vs partial pooling
    labels = partial.spec.groups[0].encoding.labels
    columns = list(no_pool_model.spec.fixed.columns)
    b = no_pool.draws["b"].reshape(-1, len(columns))
    unpooled = np.array([b[:, columns.index(f"C(county)[{c}]")].mean() for c in labels])
    pooled = (partial.draws["Intercept"][..., None] + partial.draws["r_county"][..., 0]).reshape(-1, len(labels))
    pooled = pooled.mean(axis=0)
    sizes = df.county.value_counts().reindex(labels).to_numpy()
    state = float(complete.draws["Intercept"].mean())
    path = plot(sizes, unpooled, pooled, state, args.out)
    print(f"\nsaved {path}")
    return {"unpooled": unpooled, "pooled": pooled, "sizes": sizes, "figure": path}


def plot(sizes, unpooled, pooled, state: float, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    jitter = np.exp(rng.uniform(-0.08, 0.08, len(sizes)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, values, title in [(axes[0], unpooled, "no pooling"), (axes[1], pooled, "partial pooling")]:
        ax.scatter(sizes * jitter, values, s=14, alpha=0.7)
        ax.axhline(state, color="k", lw=1, ls="--", label="complete pooling")
        ax.set_xscale("log")
        ax.set_xlabel("homes in the county (log scale)")
        ax.set_title(title)
    axes[0].set_ylabel("county intercept (log radon, basement)")
    axes[0].legend(loc="lower right")
    fig.suptitle("Partial pooling shrinks small counties towards the state mean")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "radon_shrinkage.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
