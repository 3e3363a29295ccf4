"""What parameterization="auto" learns, against the theory, and eight schools with it (issue #18).

* The hand-written varying-slopes data of ``benchmarks/handwritten.py`` (G=2,000,
  N=100,000): the pre-pass's raw values by group size, beside the theory for this
  model (c = n / (n + sigma^2 / sd^2): n / (n + 4) for the intercepts, n / (n + 16) for
  the slopes), with one pass and with two (the default).
* Centered eight schools with "auto" (``bj.sample``, 4 chains x 1,000 + 1,000, seeds
  0-3): the learned values, divergent share, min bulk ESS and max R-hat.

Run: python -m benchmarks.auto_checks [--out benchmarks/results/auto_checks_cpu.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

import bhmjax as bj
from bhmjax._src import locscale

from .common import machine, save_json
from .handwritten import slopes_cp, slopes_data
from .harness import eight_schools_cp, eight_schools_data

SIZES = ((1, 2), (2, 5), (5, 20), (20, 100), (100, 10_000))
THEORY = {"a": 4.0, "b": 16.0}  # sigma^2 / sd^2 of the simulated data: 2^2 / 1^2 and 2^2 / 0.5^2


def learned_by_size(num_passes: int) -> dict:
    data = slopes_data(2000, 100_000)
    arrays = {k: v for k, v in data.items() if k != "num_groups"}
    _, _, info = locscale.reparameterize(jax.random.PRNGKey(0), slopes_cp, arrays, {"num_groups": 2000}, "auto",
                                         num_passes=num_passes)
    n = np.bincount(data["g"], minlength=2000)
    out = {"seconds": info.learned.seconds, "compile_seconds": info.learned.compile_seconds, "sites": {}}
    for site, ratio in THEORY.items():
        raw = info.learned.raw[site]
        out["sites"][site] = [{"rows": f"{lo}-{hi - 1}", "groups": int(((n >= lo) & (n < hi)).sum()),
                               "learned_mean": float(raw[(n >= lo) & (n < hi)].mean()),
                               "theory_mean": float((n / (n + ratio))[(n >= lo) & (n < hi)].mean())}
                              for lo, hi in SIZES]
        out["sites"][site + "_values"] = raw.tolist()
    return out


def eight_schools(seeds=range(4)) -> list[dict]:
    data = eight_schools_data()
    rows = []
    for seed in seeds:
        fit = bj.sample(eight_schools_cp, data, parameterization="auto", seed=seed, chains=4, warmup=1000,
                        draws=1000, progress=False)
        s = fit.summary()
        rows.append({"seed": seed, "centeredness": np.asarray(fit.settings["parameterization"]["theta"]).tolist(),
                     "divergent_share": float(np.asarray(fit.stats["diverging"]).mean()),
                     "min_ess_bulk": float(s["ess_bulk"].min()), "max_rhat": float(s["r_hat"].max())})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/auto_checks_cpu.json"))
    args = parser.parse_args()
    result = {"machine": machine(), "slopes_passes": {}}
    for passes in (1, 2):
        result["slopes_passes"][passes] = learned_by_size(passes)
        for site in THEORY:
            print(passes, site, [(b["rows"], round(b["learned_mean"], 2), round(b["theory_mean"], 2))
                                 for b in result["slopes_passes"][passes]["sites"][site]], flush=True)
    result["max_change_second_pass"] = max(
        float(np.abs(np.asarray(result["slopes_passes"][1]["sites"][s + "_values"])
                     - np.asarray(result["slopes_passes"][2]["sites"][s + "_values"])).max()) for s in THEORY)
    print("max change of the second pass:", result["max_change_second_pass"], flush=True)
    result["eight_schools"] = eight_schools()
    save_json(result, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
