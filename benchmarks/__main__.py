"""Command line of the benchmark harness.

    python -m benchmarks run --suite quick --out benchmarks/results/quick_cpu.json
    python -m benchmarks run --suite gpu --dry-run          # list the cells, run nothing
    python -m benchmarks report benchmarks/results/quick_cpu.json --out benchmarks/report/

``run`` turns XLA's persistent compilation cache off (``--cache`` keeps it), so every
compile time in the JSON is a cold compile; within one run a program is compiled once
and reused by later seeds and cells of the same shapes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _run(args) -> int:
    if not args.cache:
        os.environ["BHMJAX_COMPILATION_CACHE"] = "0"
    from . import harness, suites  # imports bhmjax (and JAX) only now, after the cache choice

    cells = suites.cells(args.suite)
    if args.only:
        cells = [c for c in cells if c["block"] in args.only]
    if args.dry_run:
        print(f"suite {args.suite}: {len(cells)} cells")
        for c in cells:
            n = f"  N={c['G'] * c['rows']:,}" if "G" in c else ""
            print(f"  {suites.describe(c)}{n}  [{c['chains']} chains x {c['warmup']}+{c['draws']}, "
                  f"seeds {c['seeds']}, {c['chain_method']}]")
        return 0
    out = args.out or Path(f"benchmarks/results/{args.suite}.json")
    results = harness.run_suite(args.suite, out, cells=cells)
    failed = [c["label"] for c in results["cells"] if c["status"] == "error"]
    if failed:
        print(f"{len(failed)} cell(s) failed (errors recorded in {out}): {failed}")
    return 0


def _report(args) -> int:
    from . import report

    written = report.render(args.results, args.out)
    for path in written:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a suite and write its JSON")
    run.add_argument("--suite", default="quick", choices=["smoke", "quick", "full", "gpu"])
    run.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/<suite>.json)")
    run.add_argument("--only", nargs="+", metavar="BLOCK",
                     help="blocks to run: regimes real chain_methods precision scaling baselines")
    run.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    run.add_argument("--cache", action="store_true", help="keep the persistent compilation cache on")
    rep = sub.add_parser("report", help="render markdown tables and PNG plots from result JSONs")
    rep.add_argument("results", type=Path, nargs="+", help="result JSON(s); a GPU and a CPU run are compared")
    rep.add_argument("--out", type=Path, default=Path("benchmarks/report"))
    args = parser.parse_args(argv)
    return _run(args) if args.command == "run" else _report(args)


if __name__ == "__main__":
    sys.exit(main())
