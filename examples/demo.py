"""The whole workflow on simulated data: what `make demo` runs.

1. define the models (a linear regression; grouped means),
2. sample them with NUTS (4 chains),
3. examine the posteriors (summary with true values, convergence verdict, trace plots),
4. add hierarchy (partial pooling, centered and non-centered),
then compare the two parameterizations' efficiency.

Run: python examples/demo.py --out demo_output [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grouped_means  # noqa: E402
import linear_regression  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--quick", action="store_true", help="few draws, for a smoke test")
    args = parser.parse_args()
    start = time.perf_counter()
    linear_regression.main(args.out, args.quick)
    fits = grouped_means.main(args.out, args.quick)
    print("\nCentered vs non-centered (grouped means):")
    for name, fit in fits.items():
        ess = fit.summary(var_names=["mu_alpha", "sigma_alpha"])["ess_bulk"]
        grads = fit.num_grad_evals["sampling"]
        print(f"  {name:12s} divergences {int(fit.stats['diverging'].sum()):4d}   "
              f"min bulk ESS {ess.min():7.0f}   ESS per 1,000 gradients {1000 * ess.min() / grads:6.1f}")
    print(f"\nAll outputs are in {args.out.resolve()} (took {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
