"""What valuing the data costs on top of training: one Fashion-MNIST epoch of the medium model, four ways, side by side.

Paths (each its own copy of the same freshly initialised model, SGD + Nesterov, batch 128, the 54,000-image pool in
memory, batches drawn by index from a fresh permutation per epoch — the loop of chg.experiments.train without
augmentation, as
the medium preset trains the MLP):

1. **plain** — the training epoch alone.
2. **ride-along** — the same epoch with a :class:`chg.lastlayer.LastLayerTap` around the forward pass and
   :meth:`chg.EpochValuer.add_logits` of each batch's logits and features, then :meth:`~chg.EpochValuer.end_epoch`
   (every row's loss and error in one call, then eq. 3 for every point). Goal: ≤ 1.05× plain.
   **ride-along, per batch** — the same values through :meth:`chg.EpochValuer.add` of each batch's factors
   (``tap.factors``: loss and error computed batch by batch), for comparison.
3. **separate pass** — Algorithm 1 exactly: :meth:`chg.EpochValuer.value_epoch` (a no-grad, eval-mode forward pass
   over the pool, batches of 2,048, then eq. 3) before the plain epoch. Goal: ≤ 1.5× plain (its floor is 1 + the cost
   of a forward pass over that of a training step).
4. **Algorithm 2 step** — one selection (chg.experiments.train's factor pass over the pool +
:func:`chg.selection.select_chg`,
   per class top a·N_c with a = 0.1 and min-max weights) before the plain epoch. Algorithm 2 runs it every R epochs,
   so the table also gives the cost per epoch for R = 5 (medium preset) and R = 20 (paper).

Rounds: every path runs one epoch per round, in an order that rotates from round to round; one untimed warm-up round
first. Times: wall clock (``perf_counter``) and this process's CPU time (``process_time``; with one thread it is far
less disturbed by other processes on a shared machine). Reported: per-path medians over rounds, and each path's
ratio to plain = median over rounds of the within-round ratio (paired). Writes benchmarks/results/overhead.{json,md}
atomically.

Usage: python benchmarks/bench_overhead.py [--rounds 7] [--threads 1] [--quick]
(quick: 4,096 synthetic images, 2 rounds — a smoke test that exercises every path in seconds; written to
overhead_quick.*)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from chg.experiments.data import load_dataset, synthetic_bundle  # noqa: E402
from chg.lastlayer import LastLayerTap  # noqa: E402
from chg.experiments.models import build_model  # noqa: E402
from chg.experiments.results import device_name, provenance, write_json_atomic, write_text_atomic  # noqa: E402
from chg.selection import SelectionInput, select_chg  # noqa: E402
from chg.experiments.train import TrainConfig, pool_factors  # noqa: E402
from chg.valuation import EpochValuer  # noqa: E402

PATHS = ("plain", "ride_along", "ride_along_per_batch", "separate_pass", "algorithm2_step")
BATCH, FACTOR_BATCH, FRACTION = 128, 2048, 0.1


def _epoch(model, opt, x, y, gen, valuer=None, per_batch=False) -> None:
    """One training epoch; with ``valuer`` every batch is recorded (``add_logits``, or ``add`` of its factors when
    ``per_batch``) and the epoch valued."""
    model.train()
    perm = torch.randperm(len(y), generator=gen)
    tap = LastLayerTap(model) if valuer is not None else None
    if tap is not None:
        tap.__enter__()
    try:
        for b in range(0, len(y), BATCH):
            rows = perm[b:b + BATCH]
            xb, yb = x[rows], y[rows]
            logits = model(xb)  # (B, C)
            if per_batch:
                valuer.add(rows, tap.factors(logits, yb), yb)
            elif valuer is not None:
                z, feat = tap.read(logits)
                valuer.add_logits(rows, z, yb, feat, tap.bias)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        if tap is not None:
            tap.__exit__(None, None, None)
    if valuer is not None:
        valuer.end_epoch()


def _batches(x, y):
    """Algorithm 1's pass: sequential (x, y, index) batches of the pool."""
    return [(x[b:b + FACTOR_BATCH], y[b:b + FACTOR_BATCH], torch.arange(b, min(b + FACTOR_BATCH, len(y))))
            for b in range(0, len(y), FACTOR_BATCH)]


def run_path(name, model, opt, x, y, gen, num_classes) -> None:
    if name == "plain":
        _epoch(model, opt, x, y, gen)
    elif name == "ride_along":
        _epoch(model, opt, x, y, gen, EpochValuer(len(y)))
    elif name == "ride_along_per_batch":
        _epoch(model, opt, x, y, gen, EpochValuer(len(y)), per_batch=True)
    elif name == "separate_pass":
        EpochValuer(len(y)).value_epoch(model, _batches(x, y))
        _epoch(model, opt, x, y, gen)
    else:
        cfg = TrainConfig(factor_batch_size=FACTOR_BATCH, amp=False, channels_last=False)
        f = pool_factors(model, x, y, cfg, torch.device("cpu"))
        select_chg(SelectionInput(factors=f, labels=y, num_classes=num_classes, fraction=FRACTION,
                                  generator=torch.Generator().manual_seed(0)))
        _epoch(model, opt, x, y, gen)


def bench(x, y, num_classes, model_name, width, rounds) -> dict:
    models, opts, gens = {}, {}, {}
    for p in PATHS:
        torch.manual_seed(0)
        models[p] = build_model(model_name, num_classes, tuple(x.shape[1:]), width)
        opts[p] = torch.optim.SGD(models[p].parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
        gens[p] = torch.Generator().manual_seed(1)
    wall = {p: [] for p in PATHS}
    cpu = {p: [] for p in PATHS}
    for r in range(rounds + 1):  # round 0: warm-up, not recorded
        order = PATHS[r % len(PATHS):] + PATHS[:r % len(PATHS)]
        for p in order:
            w0, c0 = time.perf_counter(), time.process_time()
            run_path(p, models[p], opts[p], x, y, gens[p], num_classes)
            if r:
                wall[p].append(time.perf_counter() - w0)
                cpu[p].append(time.process_time() - c0)
    out = {"rounds": rounds, "seconds_wall": wall, "seconds_cpu": cpu, "median_wall_s": {}, "median_cpu_s": {},
           "ratio_wall": {}, "ratio_cpu": {}}
    for p in PATHS:
        out["median_wall_s"][p] = statistics.median(wall[p])
        out["median_cpu_s"][p] = statistics.median(cpu[p])
        out["ratio_wall"][p] = statistics.median(a / b for a, b in zip(wall[p], wall["plain"]))
        out["ratio_cpu"][p] = statistics.median(a / b for a, b in zip(cpu[p], cpu["plain"]))
    for kind in ("wall", "cpu"):  # Algorithm 2 amortised: the selection step once every R epochs
        step = out[f"ratio_{kind}"]["algorithm2_step"] - 1.0
        out[f"ratio_{kind}"]["algorithm2_per_epoch_R5"] = 1.0 + step / 5
        out[f"ratio_{kind}"]["algorithm2_per_epoch_R20"] = 1.0 + step / 20
    return out


def render(rep: dict) -> str:
    res = rep["result"]
    lines = [f"# Valuation overhead per training epoch ({rep['mode']})", "",
             f"{rep['data']}; model `{rep['model']}` (width {rep['width']}), batch {BATCH}, SGD; "
             f"device {rep['device']}, {rep['threads']} torch thread(s); load average at start {rep['loadavg_start']};"
             f" {res['rounds']} rounds after a warm-up, paths in rotating order; {rep['date']}. Ratios: median over "
             "rounds of path ÷ plain within the round. CPU = this process's CPU time (robust to other processes on a "
             "shared machine); wall = elapsed time. Made by `python benchmarks/bench_overhead.py`.", "",
             "| path | median wall (s) | median CPU (s) | × plain (wall) | × plain (CPU) | goal |",
             "|---|---|---|---|---|---|"]
    goals = {"plain": "", "ride_along": "≤ 1.05", "ride_along_per_batch": "", "separate_pass": "≤ 1.5",
             "algorithm2_step": ""}
    names = {"plain": "plain training epoch", "ride_along": "ride-along values (EpochValuer.add_logits)",
             "ride_along_per_batch": "ride-along values, factors per batch (EpochValuer.add)",
             "separate_pass": "Algorithm 1 separate pass (value_epoch)",
             "algorithm2_step": f"Algorithm 2 selection step (a = {FRACTION}) + epoch"}
    for p in PATHS:
        verdict = ""
        if goals[p]:
            met = res["ratio_cpu"][p] <= float(goals[p].split()[-1])
            verdict = f"{goals[p]}: {'met' if met else 'NOT met'} (CPU)"
        lines.append(f"| {names[p]} | {res['median_wall_s'][p]:.3f} | {res['median_cpu_s'][p]:.3f} | "
                     f"{res['ratio_wall'][p]:.3f} | {res['ratio_cpu'][p]:.3f} | {verdict} |")
    for R in (5, 20):
        key = f"algorithm2_per_epoch_R{R}"
        lines.append(f"| Algorithm 2, selection every R = {R} epochs (per epoch) | | | {res['ratio_wall'][key]:.3f} | "
                     f"{res['ratio_cpu'][key]:.3f} | paper: ≤ 2 |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one core of the 2-core target)")
    ap.add_argument("--model", default="image_mlp")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="4,096 synthetic 28×28 images, 2 rounds (a smoke test)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        d = synthetic_bundle(4096, 10, (1, 28, 28), seed=0, n_eval=8)
        data_label, rounds = "synthetic 4,096 images 1×28×28 (quick smoke run: not a measurement)", 2
    else:
        d = load_dataset("fashion_mnist", seed=0, noise_rate=0.3)
        data_label, rounds = "Fashion-MNIST pool (54,000 images, 30% label noise)", args.rounds
    rep = {"mode": "quick" if args.quick else "full", "data": data_label, "model": args.model,
           "width": args.width or build_model(args.model, 10, (1, 28, 28)).linear.in_features,
           "threads": torch.get_num_threads(), "device": device_name("cpu"),
           "loadavg_start": " ".join(open("/proc/loadavg").read().split()[:3]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "provenance": provenance("cpu")}
    rep["result"] = bench(d.train.x, d.train.y, d.num_classes, args.model, args.width, rounds)
    rep["loadavg_end"] = " ".join(open("/proc/loadavg").read().split()[:3])
    name = "overhead_quick" if args.quick else "overhead"
    write_json_atomic(args.out / f"{name}.json", rep)
    write_text_atomic(args.out / f"{name}.md", render(rep))
    print(render(rep))
    print(f"wrote {args.out / name}.json and .md")


if __name__ == "__main__":
    main()
