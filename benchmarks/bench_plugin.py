"""The OpenDataVal plugin as fast as a fit: CHGShapley vs the bare model.fit, side by side in one run.

Writes benchmarks/results/plugin.{json,md} (atomically). The same opendataval ``LogisticRegression`` (fresh copies of
one initialisation), the same 1,000 points, the same ``epochs`` / ``batch_size`` / ``lr``:

* ``fit``: opendataval's own ``TorchClassMixin.fit`` (Adam, its DataLoader, its criterion) — the training alone;
* ``chgshapley``: ``CHGShapley(mode)`` ``train_data_values`` — the same training plus every epoch's values (mode
  "pass": a no-grad pass over the 1,000 points at the start of each epoch, Algorithm 1; "ride": values from the
  training forward passes) and ``evaluate_data_values``.

The runs take turns (fit, pass, ride, fit, pass, ride, ...) so that a drift of the machine hits all alike; the report
gives the median of each and the ratios median(chgshapley) / median(fit). Target (issue 12 item 8): ≤ 1.3.

Usage: python benchmarks/bench_plugin.py [--quick] [--rounds R] [--threads T]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
TARGET = 1.3


def _data(n: int, d: int, classes: int, seed: int = 0):
    """Gaussian classes (float32 features, one-hot labels as opendataval gives them)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(scale=2.0, size=(classes, d))
    x = centres[y] + rng.normal(size=(n, d))
    return torch.tensor(x, dtype=torch.float32), F.one_hot(torch.tensor(y), classes).float()


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(n: int, d: int, classes: int, epochs: int, batch_size: int, rounds: int) -> dict:
    from opendataval.model import LogisticRegression

    import chg.opendataval  # noqa: F401  (registers the evaluator)
    from chg.opendataval import CHGShapley
    x, y = _data(n, d, classes)
    torch.manual_seed(0)
    base = LogisticRegression(d, classes)
    kw = {"epochs": epochs, "batch_size": batch_size, "lr": 0.01}

    def fit():
        copy.deepcopy(base).fit(x, y, **kw)

    def value(mode):
        def go():
            ev = CHGShapley(mode=mode, random_state=np.random.RandomState(0))
            ev.input_data(x, y, x[:100], y[:100]).input_model(copy.deepcopy(base))
            ev.train_data_values(**kw)
            v = ev.evaluate_data_values()
            assert v.shape == (n,) and np.isfinite(v).all()
        return go

    jobs = {"fit": fit, "chgshapley_pass": value("pass"), "chgshapley_ride": value("ride")}
    for fn in jobs.values():  # warm-up: imports, allocator, first-call costs
        fn()
    times = {k: [] for k in jobs}
    for _ in range(rounds):
        for k, fn in jobs.items():
            times[k].append(_time(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"n": n, "d": d, "classes": classes, "epochs": epochs, "batch_size": batch_size, "rounds": rounds,
            "seconds": times, "median_s": med,
            "ratio_pass": med["chgshapley_pass"] / med["fit"], "ratio_ride": med["chgshapley_ride"] / med["fit"]}


def render(r: dict) -> str:
    lines = ["# OpenDataVal plugin vs a bare fit", "",
             f"{r['date']}, {r['device']}, torch {r['torch']}, {r['threads']} thread(s), load average at start "
             f"{r['loadavg_start']}. opendataval LogisticRegression, n = {r['n']}, d = {r['d']}, C = {r['classes']}, "
             f"{r['epochs']} epochs, batch size {r['batch_size']}, lr 0.01; the three runs take turns, "
             f"{r['rounds']} rounds after one warm-up each; median seconds.", "",
             "| run | median s | ratio to fit |", "|---|---:|---:|",
             f"| model.fit (opendataval) | {r['median_s']['fit']:.3f} | 1.00 |",
             f"| CHGShapley(mode='pass') | {r['median_s']['chgshapley_pass']:.3f} | {r['ratio_pass']:.2f} |",
             f"| CHGShapley(mode='ride') | {r['median_s']['chgshapley_ride']:.3f} | {r['ratio_ride']:.2f} |", "",
             f"Target: ≤ {TARGET} (issue 12 item 8). Made by `python benchmarks/bench_plugin.py"
             f"{' --quick' if r['mode'] == 'quick' else ''}`.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds and 2 epochs (a smoke run; plugin_quick.*)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-core machine)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE.parent))
    from chg.experiments.results import atomic_write, device_name, write_json_atomic
    report = {"mode": "quick" if args.quick else "full", "device": device_name(torch.device("cpu")),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "loadavg_start": " ".join(open("/proc/loadavg").read().split()[:3]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    report.update(run(1000, 20, 2, 2 if args.quick else 10, 32, 2 if args.quick else args.rounds))
    name = "plugin_quick" if args.quick else "plugin"
    write_json_atomic(args.out / f"{name}.json", report)
    atomic_write(args.out / f"{name}.md", lambda tmp: Path(tmp).write_text(render(report)))
    print(render(report))


if __name__ == "__main__":
    main()
