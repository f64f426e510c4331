"""Theorem 1 demo: the closed form (eq. 3) against Definition 1's exhaustive enumeration, and its cost.

Compute step: for n = 1..N_MAX, a random instance with rational vectors and α; the closed form in exact Fractions is
compared with exact enumeration over all 2^n subsets (difference must be exactly 0), and both are timed. Then the
efficiency axiom Σφ = U(N) is checked in float64 at n = 10^6 (d = 16). One JSON per run under
reproduce/results/theorem1/; render step writes figures/theorem1.md.

Usage: python reproduce/theorem1.py [--n-max 12] [--seed 0]
"""
from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np

from chg.games import chg_utility, exact_shapley
from chg.results import FIGURES_DIR, load_runs, save_run
from chg.shapley import chg_shapley, chg_shapley_exact


@dataclass
class Config:
    n_max: int = 12          # largest player set enumerated exactly (2^n subsets)
    d: int = 3               # vector dimension of the exact instances
    n_efficiency: int = 10**6
    d_efficiency: int = 16
    seed: int = 0


def run(cfg: Config) -> dict:
    rng = random.Random(cfg.seed)
    rows = []
    for n in range(1, cfg.n_max + 1):
        x = [[Fraction(rng.randint(-9, 9), rng.randint(1, 4)) for _ in range(cfg.d)] for _ in range(n)]
        alpha = [Fraction(rng.randint(-9, 9), rng.randint(1, 4)) for _ in range(cfg.d)]
        t0 = time.perf_counter()
        oracle = exact_shapley(chg_utility(x, alpha), n)
        t_enum = time.perf_counter() - t0
        t0 = time.perf_counter()
        closed = chg_shapley_exact(x, alpha)
        t_closed = time.perf_counter() - t0
        rows.append({"n": n, "max_abs_diff": str(max(abs(a - b) for a, b in zip(closed, oracle))),
                     "exactly_equal": closed == oracle, "seconds_enumeration": t_enum,
                     "seconds_closed_form": t_closed})
        print(f"n={n:2d}: closed form == enumeration exactly: {closed == oracle} "
              f"(enumeration {t_enum:.3f} s, closed form {t_closed * 1e3:.2f} ms)", flush=True)
    gen = np.random.default_rng(cfg.seed)
    xs = gen.normal(size=(cfg.n_efficiency, cfg.d_efficiency)) + 0.5
    a = gen.normal(size=cfg.d_efficiency)
    t0 = time.perf_counter()
    phi = chg_shapley(xs, a)
    t_big = time.perf_counter() - t0
    mean = xs.mean(0)
    u_n = float(a @ a - (mean - a) @ (mean - a))
    eff = {"n": cfg.n_efficiency, "d": cfg.d_efficiency, "sum_phi": math.fsum(phi), "U_N": u_n,
           "rel_error": abs(math.fsum(phi) - u_n) / abs(u_n), "seconds": t_big}
    print(f"efficiency at n={cfg.n_efficiency:,}: Σφ = {eff['sum_phi']:.15g}, U(N) = {u_n:.15g}, "
          f"relative error {eff['rel_error']:.1e} ({t_big:.2f} s)")
    return {"exact": rows, "efficiency": eff}


def render() -> None:
    runs = load_runs("theorem1")
    if not runs:
        raise SystemExit("no theorem1 results: run `python reproduce/theorem1.py` first")
    r = runs[-1]
    lines = ["# Theorem 1: closed form vs exhaustive enumeration", "",
             f"Scale: exact (any machine). Made by `python reproduce/theorem1.py` (seed {r['seed']}, "
             f"d = {r['config']['d']}, rational entries p/q with |p| ≤ 9, q ≤ 4) on {r['device']}, "
             f"commit {r['git_commit']}.", "",
             "| n | closed form == enumeration (exact rationals) | enumeration (s) | closed form (ms) |",
             "|---|---|---|---|"]
    for row in r["metrics"]["exact"]:
        lines.append(f"| {row['n']} | {'yes' if row['exactly_equal'] else 'NO, diff ' + row['max_abs_diff']} | "
                     f"{row['seconds_enumeration']:.3f} | {row['seconds_closed_form'] * 1e3:.2f} |")
    e = r["metrics"]["efficiency"]
    lines += ["", f"Efficiency axiom in float64 at n = {e['n']:,}, d = {e['d']}: Σφ = {e['sum_phi']:.15g}, "
              f"U(N) = {e['U_N']:.15g}, relative error {e['rel_error']:.1e}; {e['seconds']:.2f} s for all values."]
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    (FIGURES_DIR / "theorem1.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {FIGURES_DIR / 'theorem1.md'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for k, v in asdict(Config()).items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if not args.render_only:
        cfg = Config(**{k: getattr(args, k) for k in asdict(Config())})
        t0 = time.perf_counter()
        metrics = run(cfg)
        save_run("theorem1", f"seed{cfg.seed}", config=asdict(cfg), seed=cfg.seed, scale="exact", metrics=metrics,
                 wall_time_s=time.perf_counter() - t0, device="cpu")
    render()


if __name__ == "__main__":
    main()
