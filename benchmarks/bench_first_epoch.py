r"""A fresh ride-along store's first epoch: what its page faults cost, with and without transparent huge pages.

Ride-along's store (:class:`chg.store.RowStore`) allocates its buffers at an epoch's first batch and reuses them in
later epochs. The first epoch's copies therefore write memory the process has never touched: on Linux each 4 KiB
page costs a page fault, which on a virtual machine is several microseconds. :func:`chg.store.huge_pages` asks for
2 MiB pages on the buffers (``madvise(MADV_HUGEPAGE)``). This benchmark times one epoch of
``EpochValuer.add_logits`` (no training: the batches' logits and features are made before the clock) into a fresh
valuer, alternating a store that asks for huge pages with one that does not (``chg.store.huge_pages`` replaced by
the identity), and then a second epoch into the same valuer (its buffers reused: the floor without faults). Each
measurement runs in a fresh process, as a user's first epoch does (in one process the allocator would hand a later
valuer the pages an earlier one had touched).

Shapes: ``image_mlp`` (n = 54,000, C = 10, D = 128: the overhead benchmark's) and the Lightning MLP of
``bench_callbacks`` (n = 60,000, C = 10, D = 256); batch 128, float32, one torch thread. Rounds: ``--rounds``
(default 9) after a warm-up, each round both variants in alternating order. Reported: medians over rounds of the
first epoch's adds (ms), its minor page faults (``getrusage``), the second epoch's adds, and the paired ratio
huge ÷ 4 KiB. Writes ``benchmarks/results/first_epoch.json`` (``first_epoch_quick.json`` with ``--quick``) atomically
and renders the Markdown from it.

Usage: python benchmarks/bench_first_epoch.py [--rounds 9] [--out DIR] [--quick]
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
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
import chg.store  # noqa: E402
from chg.experiments.results import provenance  # noqa: E402

SHAPES = {"image_mlp": (54_000, 10, 128), "lightning_mlp": (60_000, 10, 256)}
BATCH = 128


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def epoch_of(n: int, C: int, D: int, seed: int = 0) -> list:
    """One epoch's batches (rows, logits, targets, features), made before the clock."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    return [(perm[a:a + BATCH], 3 * torch.randn(len(perm[a:a + BATCH]), C, generator=g),
             torch.randint(0, C, (len(perm[a:a + BATCH]),), generator=g),
             torch.relu(torch.randn(len(perm[a:a + BATCH]), D, generator=g))) for a in range(0, n, BATCH)]


def one(n: int, batches: list, huge: bool) -> dict:
    """A fresh valuer: its first epoch's adds (seconds, faults), then a second epoch's adds."""
    original = chg.store.huge_pages
    chg.store.huge_pages = original if huge else (lambda t: t)
    try:
        gc.collect()
        v = chg.EpochValuer(n)
        out = {}
        for k in ("first", "second"):
            f0, t0 = _faults(), time.perf_counter()
            for rows, z, y, h in batches:
                v.add_logits(rows, z, y, h, True)
            out[f"{k}_s"], out[f"{k}_faults"] = time.perf_counter() - t0, _faults() - f0
            v.discard_epoch()
        del v
        return out
    finally:
        chg.store.huge_pages = original


def fresh(n: int, C: int, D: int, huge: bool) -> dict:
    """:func:`one` in a new process (its first epoch writes pages this process never touched)."""
    proc = subprocess.run([sys.executable, __file__, "--one", f"{n},{C},{D},{int(huge)}"], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(rounds: int, shapes: dict) -> dict:
    res = {}
    for name, (n, C, D) in shapes.items():
        runs = {True: [], False: []}
        for r in range(rounds + 1):
            for huge in ((True, False) if r % 2 else (False, True)):
                got = fresh(n, C, D, huge)
                if r:
                    runs[huge].append(got)
        med = {("huge" if h else "small"): {k: statistics.median(x[k] for x in runs[h]) for k in runs[h][0]}
               for h in runs}
        ratio = statistics.median(a["first_s"] / b["first_s"] for a, b in zip(runs[True], runs[False]))
        res[name] = {"n": n, "C": C, "D": D, "median": med, "ratio_first_huge_over_small": ratio,
                     "runs": {("huge" if h else "small"): runs[h] for h in runs}}
    return res


def render(rep: dict) -> str:
    m = rep["machine"]
    lines = [f"# A fresh store's first epoch: page faults, with and without huge pages ({rep['mode']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s); load average "
             f"{m['loadavg_start']} at start, {m['loadavg_end']} at end; torch {m['torch']}; commit "
             f"{rep['provenance']['git_commit']}; {rep['date']}. THP setting: {rep['thp']}.",
             f"Data: synthetic rows (`epoch_of`, seed 0: random logits, ReLU features, targets, a shuffled order). "
             f"One epoch of `EpochValuer.add_logits` (batch {BATCH}, float32; no training) into a fresh valuer, "
             f"then a second epoch into the same valuer (buffers reused); {rep['rounds']} rounds after a warm-up, "
             "the two variants alternating. Medians over rounds; ratio: median of the paired ratio huge ÷ 4 KiB "
             "pages. Made by `python benchmarks/bench_first_epoch.py`.", "",
             "| shape | n | C | D | first epoch, 4 KiB pages (ms) | faults | first epoch, huge pages (ms) | faults "
             "| huge ÷ 4 KiB | second epoch (ms, 4 KiB / huge) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rep["result"].items():
        s, h = r["median"]["small"], r["median"]["huge"]
        lines.append(f"| {name} | {r['n']:,} | {r['C']} | {r['D']} | {1e3 * s['first_s']:.1f} | "
                     f"{s['first_faults']:,.0f} | {1e3 * h['first_s']:.1f} | {h['first_faults']:,.0f} | "
                     f"{r['ratio_first_huge_over_small']:.2f} | {1e3 * s['second_s']:.1f} / "
                     f"{1e3 * h['second_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--quick", action="store_true", help="2,048 rows per shape, 1 round: a smoke test")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # n,C,D,huge: one measurement, printed as JSON (a child)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.one:
        n, C, D, huge = (int(v) for v in args.one.split(","))
        batches = epoch_of(n, C, D)
        print(json.dumps(one(n, batches, bool(huge))))
        return {}
    shapes = {k: (2048, C, D) for k, (n, C, D) in SHAPES.items()} if args.quick else SHAPES
    rounds = 1 if args.quick else args.rounds
    try:
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        thp = "n/a"
    rep = {"mode": "quick" if args.quick else "full", "rounds": rounds, "machine": machine(), "thp": thp,
           "provenance": provenance(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    rep["result"] = bench(rounds, shapes)
    write_report(Path(args.out), "first_epoch_quick" if args.quick else "first_epoch", rep, render)
    return rep


if __name__ == "__main__":
    main()
