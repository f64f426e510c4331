r"""The engine against its floor: eq. (3) for one epoch of n = 10⁶ rows, C = 10, D = 512, float32, one CPU thread.

Eq. (3) for every row from the factors (chg/factored.py) needs, of the O(n·C·D) work, exactly three passes over the
(n, D) features: GEMM 1, :math:`s = (l\odot E)^\top [H\ 1]` (C × n by n × D); the row norms :math:`\|h_i\|^2` (for
:math:`\|x_i\|^2 = l_i^2\|e_i\|^2(\|h_i\|^2 + 1)`); and GEMM 2, :math:`H M^\top` (n × D by D × C, for
:math:`\langle m, x_j\rangle = l_j e_j^\top M \tilde h_j` with :math:`M = c_2 s + c_5\alpha`). Everything else is
O(n·C) or O(C·D). The library also combines per row in float64, and centres features that share a large offset on a
reference point (a subtraction per chunk and pass, for float32 accuracy; features whose mean is no larger than their
spread — these ReLU features — are used as they are; see chg/factored.py).

Rows (each on the same float32 inputs: err = softmax(N(0,1)) − onehot, feat = max(N(0,1), 0), loss ~ U(0, 3),
labels uniform over C; seed 0):

* ``factored_shapley`` — ``chg.factored_shapley(err, feat, loss)``;
* ``factored_shapley_offset`` — the same with ``feat + 4`` (features sharing an offset 7× their spread: the library
  centres them, so this row shows what centring costs);
* ``epoch_values`` — ``chg.epoch_values(chg.Factors(loss, err, feat), chg.Options())``, the path of
  ``EpochValuer.end_epoch`` (its group statistics, then the values);
* ``epoch_values_per_class`` — the same with ``groups`` = the labels (the per-class games of Algorithm 2);
* ``floor_gemms`` — the two GEMMs alone, ``(l·err).T @ feat`` and ``feat @ M.T`` (M a (C, D) float32 matrix);
* ``floor_gemms_norms`` — the two GEMMs and the row norms: all three passes over the features eq. (3) needs.

Rounds: one untimed warm-up round, then ``--rounds`` (≥ 5) rounds, each running every row once in an order that
rotates from round to round. Times: this process's CPU time and wall time; medians over rounds and the ratio to each
floor (median over rounds of the within-round ratio). Also recorded: ``factored_shapley`` vs ``epoch_values``
(max |Δφ| / std φ). Writes ``benchmarks/results/engine.json`` and renders ``engine.md`` from it, atomically
(``engine_quick.*`` with ``--quick``: n = 10⁴, 1 round — a smoke test, not a measurement).

Usage: python benchmarks/bench_engine.py [--rounds 5] [--threads 1] [--n 1000000] [--out DIR] [--quick]
                                         [--render-only]
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _machine import machine, write_report  # noqa: E402

import chg  # noqa: E402
from chg.experiments.results import provenance  # noqa: E402
from chg.io import write_text_atomic  # noqa: E402

C, D, N, SEED, MIN_ROUNDS = 10, 512, 1_000_000, 0, 5
ROWS = ("factored_shapley", "factored_shapley_offset", "epoch_values", "epoch_values_per_class", "floor_gemms",
        "floor_gemms_norms")
FLOORS = ("floor_gemms", "floor_gemms_norms")
NAMES = {"factored_shapley": "chg.factored_shapley(err, feat, loss)",
         "factored_shapley_offset": "chg.factored_shapley(err, feat + 4, loss) (centred: offset 7× the spread)",
         "epoch_values": "chg.epoch_values(Factors, Options()) (end_epoch's path)",
         "epoch_values_per_class": "chg.epoch_values(..., groups=labels) (per-class games)",
         "floor_gemms": "floor: the two GEMMs, (l·E)ᵀH and HMᵀ",
         "floor_gemms_norms": "floor: the two GEMMs + the row norms ‖h_i‖²"}


def inputs(n: int, seed: int = SEED) -> dict:
    """err (n, C), feat (n, D) post-ReLU-like, loss (n,) float32, labels (n,) int64, as a model's factors."""
    gen = torch.Generator().manual_seed(seed)
    feat = torch.randn(n, D, generator=gen).relu_()
    labels = torch.randint(0, C, (n,), generator=gen)
    err = torch.softmax(torch.randn(n, C, generator=gen), 1)
    err[torch.arange(n), labels] -= 1
    loss = torch.rand(n, generator=gen) * 3
    return {"err": err, "feat": feat, "feat_offset": feat + 4, "loss": loss, "labels": labels,
            "le": err * loss[:, None],  # (n, C) l·e for the floors (O(n·C), made outside their timing)
            "M": torch.randn(C, D, generator=gen)}


def run(row: str, d: dict):
    """One call of ``row``; returns the values (n,) for the library's rows, else the products."""
    if row == "factored_shapley":
        return chg.factored_shapley(d["err"], d["feat"], d["loss"])
    if row == "factored_shapley_offset":
        return chg.factored_shapley(d["err"], d["feat_offset"], d["loss"])
    if row == "epoch_values":
        return chg.epoch_values(chg.Factors(d["loss"], d["err"], d["feat"]), chg.Options())
    if row == "epoch_values_per_class":
        return chg.epoch_values(chg.Factors(d["loss"], d["err"], d["feat"]), chg.Options(), groups=d["labels"])
    s = d["le"].T @ d["feat"]  # (C, D) GEMM 1
    hm = d["feat"] @ d["M"].T  # (n, C) GEMM 2
    if row == "floor_gemms":
        return s, hm
    return s, hm, torch.linalg.vector_norm(d["feat"], dim=1)  # (n,) ‖h_i‖ (squared: O(n))


def bench(n: int, rounds: int) -> dict:
    d = inputs(n)
    cpu, wall = {r: [] for r in ROWS}, {r: [] for r in ROWS}
    out = {"n": n}
    for r in range(rounds + 1):  # round 0: warm-up, not recorded
        got = {}
        for row in ROWS[r % len(ROWS):] + ROWS[:r % len(ROWS)]:
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            got[row] = run(row, d)
            c1, w1 = time.process_time(), time.perf_counter()
            if r:
                cpu[row].append(c1 - c0)
                wall[row].append(w1 - w0)
            got[row] = got[row] if row not in FLOORS else None  # drop the products now
        if r == 0:
            ref = got["factored_shapley"]
            out["epoch_values_vs_factored_shapley_max_abs_diff_over_std"] = float(
                (got["epoch_values"] - ref).abs().max() / ref.std())
            out["values_finite"] = all(bool(torch.isfinite(got[k]).all()) for k in ROWS if k not in FLOORS)
    out.update(seconds_cpu=cpu, seconds_wall=wall, median_cpu_s={}, median_wall_s={})
    for kind, t in (("cpu", cpu), ("wall", wall)):
        for row in ROWS:
            out[f"median_{kind}_s"][row] = statistics.median(t[row])
        for f in FLOORS:
            out[f"ratio_{kind}_to_{f}"] = {row: statistics.median(a / b for a, b in zip(t[row], t[f])) for row in ROWS}
    return out


def render(rep: dict) -> str:
    """The Markdown report, from the JSON report only."""
    m, res = rep["machine"], rep["result"]
    lines = [f"# The engine against its floor ({rep['mode']})", "",
             f"Eq. (3) for one group of n = {res['n']:,} rows, C = {rep['C']}, D = {rep['D']}, float32 factors "
             f"(seed {rep['seed']}); {rep['rounds']} rounds after an untimed warm-up, every row once per round in "
             f"rotating order. Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s); load "
             f"average {m['loadavg_start']} at start, {m['loadavg_end']} at end; torch {m['torch']}; commit "
             f"{rep['provenance']['git_commit']}; {rep['date']}. Times: medians over rounds; × floor: median over "
             "rounds of the row ÷ the floor within the round. Made by `python benchmarks/bench_engine.py`"
             + (" --quick (a smoke run: not a measurement)" if rep["mode"] == "quick" else "") + ".", "",
             "| row | median CPU s | median wall s | × GEMMs (CPU) | × GEMMs + norms (CPU) | × GEMMs (wall) | "
             "× GEMMs + norms (wall) |", "|---|---|---|---|---|---|---|"]
    for row in ROWS:
        ratios = [res[f"ratio_{k}_to_{f}"][row] for k in ("cpu", "wall") for f in FLOORS]
        lines.append(f"| {NAMES[row]} | {res['median_cpu_s'][row]:.3f} | {res['median_wall_s'][row]:.3f} | "
                     + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    lines += ["", f"`epoch_values` vs `factored_shapley`: max |Δφ| / std φ = "
              f"{res['epoch_values_vs_factored_shapley_max_abs_diff_over_std']:.1e}; all values finite: "
              f"{res['values_finite']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=MIN_ROUNDS, help=f"timed rounds (>= {MIN_ROUNDS}; --quick: 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--n", type=int, default=N, help="rows (default 10^6: 2 GB of float32 features)")
    ap.add_argument("--quick", action="store_true", help="n = 10^4, 1 round: a smoke test")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--render-only", action="store_true", help="re-render the Markdown from the JSON in --out")
    args = ap.parse_args()
    name = "engine_quick" if args.quick else "engine"
    if args.render_only:
        write_text_atomic(args.out / f"{name}.md", render(json.loads((args.out / f"{name}.json").read_text())))
        return
    rounds = 1 if args.quick else args.rounds
    if not args.quick and rounds < MIN_ROUNDS:
        ap.error(f"--rounds must be >= {MIN_ROUNDS} for a measurement (use --quick for a smoke run)")
    if args.n < 3:
        ap.error("--n must be >= 3")
    torch.set_num_threads(args.threads)
    rep = {"mode": "quick" if args.quick else "full", "C": C, "D": D, "seed": SEED, "rounds": rounds,
           "machine": machine(), "provenance": provenance("cpu"),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": list(ROWS)}
    rep["result"] = bench(10_000 if args.quick else args.n, rounds)
    write_report(args.out, name, rep, render)


if __name__ == "__main__":
    main()
