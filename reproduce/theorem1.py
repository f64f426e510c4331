"""Theorem 1 demo: the closed form (eq. 3) against Definition 1's exhaustive enumeration, and its cost.

Compute step: per seed, for n = 1..n_max, a random instance with rational vectors and α; the closed form in exact
Fractions is compared with exact enumeration over all 2^n subsets (the difference must be exactly 0), and both are
timed. Then the efficiency axiom Σφ = U(N) is checked in float64 at n = n_efficiency. One record per seed,
``reproduce/results/<scale>/theorem1/seed<k>.json`` (resumable, ``--shard``, the already-done rule of kit.grid);
the render step writes ``figures/[<scale>/]theorem1.md`` (and ``.tex``) from the record of the largest seed of the
preset (numeric order), with every other seed's verdict listed.

    python reproduce/theorem1.py [--scale smoke|quick|medium|paper] [--set n_max=14] [--set seeds=0,1,2] [--render-only]

Presets: smoke n ≤ 8 and 10^4 points for the efficiency check; quick, medium and paper (exact arithmetic is the
same on any machine) n ≤ 12 and 10^6 points.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from kit import cli, config, grid, tables

import chg.experiments.results as results
from chg.games import chg_utility, exact_shapley
from chg.shapley import chg_shapley, chg_shapley_exact


@dataclass(frozen=True)
class Theorem1Preset:
    seeds: tuple[int, ...] = (0,)
    n_max: int = 12          # largest player set enumerated exactly (2^n subsets)
    d: int = 3               # vector dimension of the exact instances
    n_efficiency: int = 10**6
    d_efficiency: int = 16


PRESETS = {"smoke": Theorem1Preset(n_max=8, n_efficiency=10**4), "quick": Theorem1Preset(),
           "medium": Theorem1Preset(), "paper": Theorem1Preset()}


def run(cfg: Theorem1Preset, seed: int) -> dict:
    rng = random.Random(seed)
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
    gen = np.random.default_rng(seed)
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


def runs(cfg: Theorem1Preset) -> list:
    settings = config.settings(cfg, ("seeds",))
    return [grid.Run(f"seed{s}", s, {**settings, "seed": s}) for s in cfg.seeds]


def execute(cfg: Theorem1Preset):
    def one(r: grid.Run) -> grid.Outcome:
        t0 = time.perf_counter()
        metrics = run(cfg, r.seed)
        return grid.Outcome(metrics, time.perf_counter() - t0, "cpu")
    return one


def render(cfg: Theorem1Preset, scale: str) -> str:
    want = {r.run_id: r.config for r in runs(cfg)}
    recs = sorted((r for r in results.load_runs("theorem1", scale) if want.get(r["run_id"]) == r["config"]),
                  key=lambda r: r["seed"])  # numeric order: seed 10 after seed 2
    if not recs:
        raise SystemExit(f"no theorem1 results of scale {scale}: run `python reproduce/theorem1.py --scale {scale}`")
    r = recs[-1]
    c = r["config"]
    rows = tuple((str(row["n"]), "yes" if row["exactly_equal"] else "NO, diff " + row["max_abs_diff"],
                  f"{row['seconds_enumeration']:.3f}", f"{row['seconds_closed_form'] * 1e3:.2f}")
                 for row in r["metrics"]["exact"])
    e = r["metrics"]["efficiency"]
    others = [f"seed {o['seed']}: " + ("all exactly equal" if all(x["exactly_equal"] for x in o["metrics"]["exact"])
                                      else "NOT all equal") for o in recs[:-1]]
    blocks = [tables.Heading("Theorem 1: closed form vs exhaustive enumeration", 1),
              f"Scale: {scale} (exact arithmetic: the same on any machine). Made by `python reproduce/theorem1.py "
              f"--scale {scale}` (seed {r['seed']}, d = {c['d']}, n = 1..{c['n_max']}, rational entries p/q with "
              f"|p| ≤ 9, q ≤ 4) on {r['device']}, commit {r['git_commit']}, from "
              f"reproduce/results/{scale}/theorem1/{r['run_id']}.json."
              + (f" Other seeds: {'; '.join(others)}." if others else ""),
              tables.Table(("n", "closed form == enumeration (exact rationals)", "enumeration (s)",
                            "closed form (ms)"), rows, title="Theorem 1: closed form vs exhaustive enumeration"),
              f"Efficiency axiom in float64 at n = {e['n']:,}, d = {e['d']}: Σφ = {e['sum_phi']:.15g}, "
              f"U(N) = {e['U_N']:.15g}, relative error {e['rel_error']:.1e}; {e['seconds']:.2f} s for all values."]
    return tables.write(scale, "theorem1", blocks, f"Theorem 1, {scale} scale; made by reproduce/theorem1.py")


def main(argv=None) -> None:
    p = cli.parser(__doc__.splitlines()[0], PRESETS)
    args, cfg = cli.parse(p, PRESETS, argv)
    if not args.render_only:
        try:
            grid.run_grid("theorem1", args.scale, cfg, runs(cfg), execute(cfg), shard=args.shard,
                          replace=args.replace)
        except grid.ConfigMismatch as exc:
            raise SystemExit(f"theorem1: {exc}") from None
    if not args.no_render:
        render(cfg, args.scale)


if __name__ == "__main__":
    main()
