"""Speed guard for issue 10 item 3: chg.factored (one computation of eq. 3) side by side with the code it replaced.

Both versions are imported into ONE process: this checkout's ``chg.factored`` and the one of a reference commit
(default bbe090b, from a git worktree of it, imported by path as ``chg_ref``). Each case times the two in alternating
turns on the same inputs (float32 features, C = 10, CHG weighting, weight + bias gradient):

- ``n=1e6``: ``factored_shapley(err, feat, loss)`` on one group of n = 10⁶ rows, D = 512 (2 GB of features);
- ``batch128``: the same on one batch of 128 rows, D = 512 (the per-batch cost; many calls per timing);
- ``epoch54k``: one epoch of the image_mlp setting, n = 54,000 rows, D = 128 (what ``end_epoch`` computes there).

Reported: the median seconds per call of each, their ratio new / reference (the guard: ≤ 1.25), and the largest
difference between the two versions' values relative to their spread. Written atomically to
benchmarks/results/guard.{json,md}.

Usage: python benchmarks/bench_guard.py [--ref-tree /work/wt/old] [--quick]   (quick: n = 10⁵, fewer rounds)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from chg import factored as new  # noqa: E402
from chg.io import atomic_write  # noqa: E402


def load_reference(tree: Path):
    """``chg_ref.factored`` of another checkout, imported by path (its package ``__init__`` is not run)."""
    pkg = types.ModuleType("chg_ref")
    pkg.__path__ = [str(tree / "chg")]
    sys.modules["chg_ref"] = pkg
    spec = importlib.util.spec_from_file_location("chg_ref.factored", tree / "chg" / "factored.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["chg_ref.factored"] = mod
    spec.loader.exec_module(mod)
    return mod


def inputs(n: int, C: int, D: int, seed: int = 0):
    """err (n, C), feat (n, D) post-ReLU-like, loss (n,): float32, as a model's factors."""
    gen = torch.Generator().manual_seed(seed)
    feat = torch.randn(n, D, generator=gen).relu_()
    err = torch.softmax(torch.randn(n, C, generator=gen), 1)
    err[torch.arange(n), torch.randint(0, C, (n,), generator=gen)] -= 1
    return err, feat, torch.rand(n, generator=gen) * 3


def side_by_side(case: str, n: int, D: int, rounds: int, calls: int, ref) -> dict:
    err, feat, loss = inputs(n, 10, D)
    fns = {"new": new.factored_shapley, "ref": ref.factored_shapley}
    values = {k: f(err, feat, loss) for k, f in fns.items()}  # warm-up, and the values compared
    times = {k: [] for k in fns}
    for r in range(rounds):
        for k in (("new", "ref") if r % 2 == 0 else ("ref", "new")):  # alternate who goes first
            t0 = time.perf_counter()
            for _ in range(calls):
                fns[k](err, feat, loss)
            times[k].append((time.perf_counter() - t0) / calls)
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = ((values["new"] - values["ref"]).abs().max() / values["ref"].std()).item()
    return {"case": case, "n": n, "C": 10, "D": D, "dtype": "float32", "rounds": rounds, "calls_per_round": calls,
            "seconds_new": med["new"], "seconds_ref": med["ref"], "ratio_new_over_ref": med["new"] / med["ref"],
            "all_seconds": times, "max_abs_diff_over_std": diff}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref-tree", default="/work/wt/old", help="a checkout of the reference commit")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--name", default="guard", help="the results' file stem (benchmarks/results/NAME.json|md)")
    ap.add_argument("--guard", type=float, default=1.25, help="the largest ratio new / reference that passes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: guards are timed on one)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tree = Path(args.ref_tree)
    ref = load_reference(tree)
    ref_commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    new_commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "chg/factored.py"],
                                capture_output=True, text=True).stdout.strip())
    big = 10 ** 5 if args.quick else 10 ** 6
    cases = [side_by_side("batch128", 128, 512, 7 if args.quick else 15, 50 if args.quick else 200, ref),
             side_by_side("epoch54k", 54_000, 128, 5 if args.quick else 11, 2 if args.quick else 10, ref),
             side_by_side(f"n={big:.0e}", big, 512, 3 if args.quick else 5, 1, ref)]
    out = {"what": "chg.factored.factored_shapley, this checkout vs a reference commit, one process, alternating",
           "ref_commit": ref_commit, "new_commit": new_commit, "new_factored_uncommitted_changes": dirty,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or "cpu",
           "load_avg_1min": os.getloadavg()[0], "quick": args.quick, "guard": args.guard, "cases": cases,
           "pass": all(c["ratio_new_over_ref"] <= args.guard for c in cases)}
    res = HERE / "results"
    atomic_write(res / f"{args.name}.json", lambda p: Path(p).write_text(json.dumps(out, indent=1) + "\n"))
    lines = [f"# Speed guard: chg.factored vs {ref_commit[:7]} (one process, alternating turns)", "",
             f"torch {out['torch']}, {out['threads']} threads, load {out['load_avg_1min']:.1f}; float32, C = 10, "
             "D = 512 (epoch54k: 128), CHG weighting, weight + bias gradient; median seconds per call.", "",
             "| case | n | new s | reference s | new / reference | max |Δ| / std |", "|---|---|---|---|---|---|"]
    lines += [f"| {c['case']} | {c['n']} | {c['seconds_new']:.4g} | {c['seconds_ref']:.4g} | "
              f"{c['ratio_new_over_ref']:.2f} | {c['max_abs_diff_over_std']:.1e} |" for c in cases]
    lines += ["", f"Guard (every ratio ≤ {args.guard:g}): {'pass' if out['pass'] else 'FAIL'}."]
    atomic_write(res / f"{args.name}.md", lambda p: Path(p).write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
