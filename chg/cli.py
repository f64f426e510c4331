"""Command-line entry points: ``python -m chg --help`` (or the ``chg`` script)."""
from __future__ import annotations

import argparse
import runpy
import sys

from .results import ROOT

REPRODUCE = ("theorem1", "table1", "figure1", "figure2", "table2", "table3")


def _demo(args) -> int:
    """Closed form vs exhaustive enumeration on random rational instances."""
    import random
    from fractions import Fraction

    from .games import chg_utility, exact_shapley
    from .shapley import chg_shapley
    rng = random.Random(args.seed)
    for n in range(1, args.n + 1):
        x = [[Fraction(rng.randint(-9, 9), rng.randint(1, 4)) for _ in range(3)] for _ in range(n)]
        alpha = [Fraction(rng.randint(-9, 9), rng.randint(1, 4)) for _ in range(3)]
        oracle = [float(v) for v in exact_shapley(chg_utility(x, alpha), n)]
        closed = chg_shapley([[float(v) for v in r] for r in x], [float(v) for v in alpha])
        err = max(abs(a - b) for a, b in zip(closed, oracle))
        print(f"n={n:2d}  max |closed form − enumeration| = {err:.2e}")
    return 0


def _run_script(path, argv) -> int:
    if not path.exists():
        print(f"{path} not found: `chg {path.stem}` runs from a source checkout of the repository", file=sys.stderr)
        return 2
    sys.argv = [str(path), *argv]
    sys.path.insert(0, str(path.parent))  # as `python reproduce/x.py` does: the script's folder (its kit/) first
    runpy.run_path(str(path), run_name="__main__")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m chg", description="CHG Shapley: data valuation and selection.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    p = sub.add_parser("demo", help="Theorem 1: closed form vs exhaustive enumeration, n = 1..N")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    for name in REPRODUCE:
        sub.add_parser(name, help=f"regenerate {name} (reproduce/{name}.py; see its --help)", add_help=False)
    sub.add_parser("bench", help="core speed/memory benchmark (benchmarks/bench_core.py)", add_help=False)
    args, rest = ap.parse_known_args(argv)
    if args.cmd == "demo":
        if rest:
            ap.error(f"demo: unrecognized arguments: {' '.join(rest)}")
        if not 1 <= args.n <= 16:
            ap.error("demo: --n must be in 1..16 (enumeration visits 2^n subsets)")
        return _demo(args)
    if args.cmd == "bench":
        return _run_script(ROOT / "benchmarks" / "bench_core.py", rest)
    return _run_script(ROOT / "reproduce" / f"{args.cmd}.py", rest)


if __name__ == "__main__":
    sys.exit(main())
