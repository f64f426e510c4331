"""Cost of Algorithm 1's separate pass: chg.value_data(mode="pass") ÷ chg.value_data(mode="ride"), side by side,
for several sizes of the pass's batch (``eval_batch_size``); written to benchmarks/results/pass_cost.{json,md}.

Setting (issue 12, item 4): chg.experiments.models.SmallCNN (BatchNorm; width 8) on 8,000 Fashion-MNIST training
images (28×28),
value_data's defaults otherwise (batch 64, Adam), one epoch per call, the pass's batch at the default (256) and at
the old default (1,024). Each round runs every path once, in rotating
order, in this one process; a path's ratio is its time ÷ the ride-along run's time in the same round, and the table
gives the median over rounds. Time is this process's CPU time (``time.process_time``, one torch thread): on a
machine shared with other work, wall time measures the other work too, CPU time does not. Wall times are recorded
beside it.

Usage: python benchmarks/bench_pass_cost.py [--quick] [--rounds R] [--out DIR]   (quick: 1,000 images, 1 round)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a source checkout without installing

import chg  # noqa: E402
from chg.experiments.data import load_dataset  # noqa: E402
from chg.experiments.models import SmallCNN  # noqa: E402
from chg.experiments.results import provenance, write_json_atomic, write_text_atomic  # noqa: E402
from chg.loop import ValueDataConfig  # noqa: E402

SIZES = (256, 1024)  # the pass's batch: the default, the old default


def paths() -> dict:
    out = {"ride": dict(mode="ride")}
    for b in SIZES:
        out[f"pass, eval batch {b}"] = dict(mode="pass", eval_batch_size=b)
    return out


def run(rows: int, rounds: int, width: int) -> dict:
    b = load_dataset("fashion_mnist", 0, val_fraction=0.1, noise_rate=0.2)
    data = torch.utils.data.TensorDataset(b.train.x[:rows], b.train.y[:rows])
    ps = paths()
    names = list(ps)
    cpu = {p: [] for p in names}
    wall = {p: [] for p in names}
    warm = torch.utils.data.TensorDataset(data.tensors[0][:256], data.tensors[1][:256])
    for p in names:  # warm-up (allocator, oneDNN kernels), not counted
        chg.value_data(SmallCNN(10, 1, width), warm, epochs=1, progress=False, **ps[p])
    for r in range(1, rounds + 1):
        order = names[r % len(names):] + names[:r % len(names)]
        for p in order:
            torch.manual_seed(0)
            net = SmallCNN(10, 1, width)
            c0, w0 = time.process_time(), time.perf_counter()
            chg.value_data(net, data, epochs=1, progress=False, **ps[p])
            c, w = time.process_time() - c0, time.perf_counter() - w0
            if r:
                cpu[p].append(c)
                wall[p].append(w)
            print(f"round {r} {p}: cpu {c:.2f} s, wall {w:.2f} s", flush=True)
    ratio = {p: [cpu[p][i] / cpu["ride"][i] for i in range(rounds)] for p in names}
    wall_ratio = {p: [wall[p][i] / wall["ride"][i] for i in range(rounds)] for p in names}
    return {"cpu_s": cpu, "wall_s": wall, "ratio_cpu": ratio, "ratio_wall": wall_ratio}


def render(res: dict, meta: dict) -> str:
    lines = ["# Cost of the separate pass (benchmarks/bench_pass_cost.py)", "",
             f"chg.value_data on {meta['rows']:,} Fashion-MNIST images, chg.experiments.models.SmallCNN (width "
             f"{meta['width']}, "
             f"BatchNorm), one epoch per call, batch {meta['batch_size']}; {meta['rounds']} rounds after a warm-up "
             "(each path once on 256 images), "
             "paths in rotating order in one process; ratio = path ÷ `ride` in the same round, median over rounds "
             f"(min–max). CPU time of this process, {meta['threads']} torch thread(s); the machine was shared with "
             f"other work (load average at start {meta['load']}), so wall times are shown but not to be trusted.", "",
             "| path | median CPU s | × ride (CPU) | median wall s | × ride (wall) |", "|---|---|---|---|---|"]
    for p in res["cpu_s"]:
        rc = res["ratio_cpu"][p]
        rw = res["ratio_wall"][p]
        lines.append(f"| {p} | {statistics.median(res['cpu_s'][p]):.2f} | {statistics.median(rc):.3f} "
                     f"({min(rc):.3f}–{max(rc):.3f}) | {statistics.median(res['wall_s'][p]):.2f} | "
                     f"{statistics.median(rw):.3f} |")
    d = ValueDataConfig().eval_batch_size
    lines += ["", f"value_data's default eval_batch_size is {d}. Goal (issue 12): pass ≤ 1.5× ride.", "",
              f"Device: {meta['device']}; {meta['when']}; total {meta['wall_s']:.0f} s wall.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 images, 1 round (CI smoke run)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows, rounds, width = (1000, 1, 8) if args.quick else (8000, args.rounds, 8)
    t0 = time.time()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    res = run(rows, rounds, width)
    meta = {"rows": rows, "rounds": rounds, "width": width, "batch_size": ValueDataConfig().batch_size,
            "threads": torch.get_num_threads(), "load": load, "wall_s": time.time() - t0,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **provenance()}
    stem = "pass_cost_quick" if args.quick else "pass_cost"
    write_json_atomic(args.out / f"{stem}.json", {"meta": meta, "result": res})
    text = render(res, meta)
    write_text_atomic(args.out / f"{stem}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
