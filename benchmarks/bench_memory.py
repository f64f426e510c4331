r"""What ride-along's rows cost in memory at ImageNet size, and what half-precision storage costs in value error.

Synthetic factors at the shape of a ResNet-50 on ImageNet (C = 1,000 logits, D = 2,048 features, float32): random
logits (2·N(0, 1)), post-ReLU features (max(N(0, 1), 0)) and uniform random targets, drawn batch by batch (seed 0,
so every case of the same n sees the same rows), pushed through ``chg.EpochValuer(n, storage_dtype=...,
offload=...)`` with ``add_logits`` in batches of 256 rows, then one ``end_epoch()``.

Cases (each in a fresh subprocess, one after the other, so that its memory readings are its own):

* ``n50k_float32`` / ``n50k_bfloat16`` / ``n50k_float16``: n = 50,000 rows kept in memory (``offload=None``);
* ``n50k_float32_host``: the same with ``offload="host"`` (on a CPU-only machine the same buffers as ``None``;
  pinned only when the batches come from CUDA);
* ``n50k_float32_mmap128k``: ``n50k_float32`` with glibc's ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB. By default
  glibc raises that threshold to the size of each large block freed, after which the engine's per-chunk temporaries
  (a few MiB each) come from the heap, and the heap keeps what they leave behind: the resident set then grows during
  ``end_epoch`` by far more than the library ever holds at once. With the threshold fixed, every block above 128 KiB
  is returned to the system when freed, so this case shows what ``end_epoch`` itself holds;
* ``imagenet_disk``: n = 1,280,000 rows in the memory-mapped store (``offload="disk"``, float32: 15.6 GB in a
  temporary folder under ``--disk-dir``). The free space is checked first (``shutil.disk_usage``); if the disk cannot
  hold the store and 1 GiB to spare, the case runs the largest n that fits and says so.

Measured per case: bytes kept per row (the store's ``nbytes()`` / n, and the growth of the process's resident set
over the adds / n); the peak resident set during ``end_epoch`` over the baseline before the valuer was made — the
larger of a sampling thread's maximum (``/proc/self/statm`` every millisecond) and ``getrusage``'s ``ru_maxrss``
(the subprocess's lifetime peak, so a spike between samples is not missed) — in all and, from the samples, its
anonymous part (for the disk store the rest is the page cache's pages of the mapped files, which the kernel can
reclaim); the wall and CPU time of ``end_epoch`` (taken under whatever load the machine has: see the load average in
the report). Targets: kept ≤ 4·(C + D) + 64 bytes per row in float32 and ≤ 2·(C + D) + 64 in half precision;
``end_epoch``'s peak ≤ 1.25 × kept + 64 MiB.

Value error of half-precision storage: the values of the bfloat16 and float16 cases against those of the float32
case (same rows): max |Δφ| / std φ and Spearman's rank correlation (scipy).

Writes ``benchmarks/results/memory.json`` and renders ``memory.md`` from it, atomically (``memory_quick.*`` with
``--quick``: n = 1,024 and 4,096 rows at the same C and D, seconds — a smoke test, not a measurement).

Usage: python benchmarks/bench_memory.py [--cases n50k_float32,...] [--disk-dir /tmp] [--threads 1] [--out DIR]
                                         [--quick] [--render-only]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _machine import machine, write_report  # noqa: E402

import chg  # noqa: E402
from chg.experiments.results import provenance  # noqa: E402
from chg.io import write_text_atomic  # noqa: E402

C, D, BATCH, SEED = 1000, 2048, 256, 0
MiB = 1 << 20
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MMAP_THRESHOLD = 128 << 10  # the *_mmap128k cases: glibc's M_MMAP_THRESHOLD fixed at its 128 KiB default
CASES = {  # name: (n, storage dtype, offload, glibc's mmap threshold fixed (True) or dynamic); --quick: QUICK_N
    "n50k_float32": (50_000, "float32", None, False),
    "n50k_bfloat16": (50_000, "bfloat16", None, False),
    "n50k_float16": (50_000, "float16", None, False),
    "n50k_float32_host": (50_000, "float32", "host", False),
    "n50k_float32_mmap128k": (50_000, "float32", None, True),
    "imagenet_disk": (1_280_000, "float32", "disk", False),
}
QUICK_N = {50_000: 1_024, 1_280_000: 4_096}
DISK_SPARE = 1 << 30  # the disk case leaves this much free


def row_bytes(dtype: str) -> int:
    """Bytes the store keeps per row (chg.store: C- and D-vectors in the storage dtype, index and target int64,
    loss float32; what a batch holds is kept per batch)."""
    return DTYPES[dtype].itemsize * (C + D) + 8 + 8 + 4


# ---- one case, in its own process ---------------------------------------------------------------------------------
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss() -> tuple:
    """(resident bytes, its anonymous part) of this process, from /proc/self/statm (resident − shared = anon)."""
    with open("/proc/self/statm") as fh:
        f = fh.read().split()
    return int(f[1]) * PAGE, (int(f[1]) - int(f[2])) * PAGE


class PeakSampler(threading.Thread):
    """Samples :func:`rss` every ``interval`` seconds until :meth:`stop`; keeps the maxima."""

    def __init__(self, interval: float = 1e-3):
        super().__init__(daemon=True)
        self.interval, self.peak, self.peak_anon, self.samples = interval, 0, 0, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            total, anon = rss()
            self.peak, self.peak_anon, self.samples = max(self.peak, total), max(self.peak_anon, anon), self.samples + 1
            time.sleep(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_case(n: int, dtype: str, offload, directory, values_out: Path) -> dict:
    """Push n synthetic rows through an EpochValuer, then end_epoch; the measurements (bytes, seconds)."""
    gen = torch.Generator().manual_seed(SEED)

    def batch(b: int, m: int):
        z = torch.randn(m, C, generator=gen).mul_(2.0)  # (m, C) logits
        h = torch.randn(m, D, generator=gen).relu_()  # (m, D) post-ReLU features
        return torch.arange(b, b + m), z, torch.randint(0, C, (m,), generator=gen), h

    batch(0, BATCH)  # warm the allocator and the generator before the baseline
    base, base_anon = rss()
    valuer = chg.EpochValuer(n, storage_dtype=DTYPES[dtype], offload=offload, directory=directory)
    w0, c0 = time.perf_counter(), time.process_time()
    for b in range(0, n, BATCH):
        idx, z, t, h = batch(b, min(BATCH, n - b))
        valuer.add_logits(idx, z, t, h, True)
    add_wall, add_cpu = time.perf_counter() - w0, time.process_time() - c0
    kept = valuer.store.nbytes()
    after_adds, after_adds_anon = rss()
    sampler = PeakSampler()
    sampler.start()
    w0, c0 = time.perf_counter(), time.process_time()
    values = valuer.end_epoch()
    end_wall, end_cpu = time.perf_counter() - w0, time.process_time() - c0
    sampler.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    np.save(values_out, values.numpy())
    peak = max(sampler.peak, maxrss)
    return {"n": n, "dtype": dtype, "offload": offload, "kept_bytes": kept, "kept_bytes_per_row": kept / n,
            "rss_base_bytes": base, "rss_growth_adds_bytes": after_adds - base,
            "rss_growth_adds_per_row": (after_adds - base) / n,
            "rss_anon_growth_adds_bytes": after_adds_anon - base_anon,
            "end_epoch_peak_growth_bytes": peak - base,
            "end_epoch_peak_anon_growth_bytes": sampler.peak_anon - base_anon,
            "end_epoch_peak_from": "ru_maxrss" if maxrss > sampler.peak else "sampler",
            "end_epoch_samples": sampler.samples, "end_epoch_wall_s": end_wall, "end_epoch_cpu_s": end_cpu,
            "adds_wall_s": add_wall, "adds_cpu_s": add_cpu, "values_finite": bool(np.isfinite(values.numpy()).all())}


# ---- the driver ---------------------------------------------------------------------------------------------------
def disk_plan(n: int, dtype: str, disk_dir: Path) -> dict:
    """The n the disk case can run: the requested n if the store (and DISK_SPARE) fits on ``disk_dir``'s file system,
    else the largest multiple of 256 rows that does."""
    free = shutil.disk_usage(disk_dir).free
    need = n * row_bytes(dtype)
    fits = (free - DISK_SPARE) // row_bytes(dtype) // BATCH * BATCH
    plan = {"n_requested": n, "disk_dir": str(disk_dir), "disk_free_bytes": free, "store_bytes_needed": need}
    if need + DISK_SPARE <= free:
        return {**plan, "n": n, "note": ""}
    if fits < BATCH:
        return {**plan, "n": 0, "note": f"the disk has {free / 1e9:.1f} GB free: not even {BATCH} rows fit; not run"}
    return {**plan, "n": int(fits), "note": f"the disk has {free / 1e9:.1f} GB free, the store of n = {n:,} needs "
                                            f"{need / 1e9:.1f} GB: ran the largest n that fits, {fits:,}"}


def run_child(name: str, n: int, dtype: str, offload, fixed_mmap: bool, disk_dir: Path, threads: int,
              tmp: Path) -> dict:
    values_out = tmp / f"{name}.npy"
    spec = {"n": n, "dtype": dtype, "offload": offload, "values_out": str(values_out), "threads": threads,
            "disk_dir": str(disk_dir)}
    env = dict(os.environ)
    if fixed_mmap:  # setting it switches off glibc's dynamic threshold: freed blocks > 128 KiB go back to the system
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"case {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(spec: dict) -> None:
    torch.set_num_threads(spec["threads"])
    if spec["offload"] == "disk":
        with tempfile.TemporaryDirectory(prefix="chg-bench-memory-", dir=spec["disk_dir"]) as d:
            out = run_case(spec["n"], spec["dtype"], "disk", d, Path(spec["values_out"]))
    else:
        out = run_case(spec["n"], spec["dtype"], spec["offload"], None, Path(spec["values_out"]))
    out["malloc_mmap_threshold"] = os.environ.get("MALLOC_MMAP_THRESHOLD_", "glibc default (dynamic)")
    print(json.dumps(out))


def targets(case: dict) -> dict:
    """The targets of the module docstring, with the measured values beside them."""
    half = case["dtype"] != "float32"
    kept_target = (2 if half else 4) * (C + D) + 64
    peak_target = 1.25 * case["kept_bytes"] + 64 * MiB
    return {"kept_per_row_target": kept_target, "kept_per_row_met": case["kept_bytes_per_row"] <= kept_target,
            "end_epoch_peak_target_bytes": peak_target,
            "end_epoch_peak_met": case["end_epoch_peak_growth_bytes"] <= peak_target}


def value_error(ref: np.ndarray, other: np.ndarray) -> dict:
    """max |Δφ| / std φ of ``other`` against ``ref`` (the float32 values) and their Spearman rank correlation."""
    from scipy.stats import spearmanr
    return {"max_abs_diff_over_std": float(np.abs(other - ref).max() / ref.std()),
            "spearman": float(spearmanr(ref, other).statistic)}


def malloc(case: dict) -> str:
    t = case.get("malloc_mmap_threshold", "")
    return "" if not t.isdigit() else f", MALLOC_MMAP_THRESHOLD_={int(t) >> 10} KiB"


def render(rep: dict) -> str:
    """The Markdown report, from the JSON report only."""
    m = rep["machine"]
    lines = [f"# Ride-along memory at ImageNet shape ({rep['mode']})", "",
             f"Synthetic rows, C = {rep['C']:,} logits, D = {rep['D']:,} features (ResNet-50 / ImageNet shape): "
             f"2·N(0,1) logits, max(N(0,1), 0) features, uniform targets, seed {rep['seed']}; "
             f"`EpochValuer.add_logits` in batches of {rep['batch']}, then `end_epoch()`. Each case in a fresh "
             f"process. Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s), load average "
             f"{m['loadavg_start']} at start and {m['loadavg_end']} at end (the times are taken under that load; the "
             f"bytes do not depend on it); torch {m['torch']}; commit {rep['provenance']['git_commit']}; "
             f"{rep['date']}. Made by `python benchmarks/bench_memory.py`"
             + (" --quick (a smoke run: not a measurement)" if rep["mode"] == "quick" else "") + ".", "",
             "Kept: the store's `nbytes()`; RSS growth: resident set after the adds − before the valuer; peak: the "
             "largest resident set during `end_epoch` (sampled every ms, and the process's `ru_maxrss`) − that "
             "baseline; anon: its anonymous part (the rest is page cache of the memory-mapped files). glibc's malloc "
             "with its default, dynamic mmap threshold unless the storage column names MALLOC_MMAP_THRESHOLD_ (see "
             "the script's docstring: the default lets the heap keep the freed per-chunk temporaries of "
             "`end_epoch`).", "",
             "| case | n | storage | kept B/row (target) | RSS growth B/row | end_epoch peak MiB (target) | "
             "peak anon MiB | end_epoch wall s | end_epoch CPU s |", "|---|---|---|---|---|---|---|---|---|"]
    for name in rep["case_order"]:
        c = rep["cases"][name]
        if c.get("skipped"):
            lines.append(f"| {name} | – | – | not run: {c['skipped']} | | | | | |")
            continue
        t = c["targets"]
        ok = {True: "met", False: "NOT met"}
        lines.append(
            f"| {name} | {c['n']:,} | {c['dtype']}, {c['offload'] or 'in memory'}{malloc(c)} | "
            f"{c['kept_bytes_per_row']:.1f} "
            f"(≤ {t['kept_per_row_target']}: {ok[t['kept_per_row_met']]}) | {c['rss_growth_adds_per_row']:.1f} | "
            f"{c['end_epoch_peak_growth_bytes'] / MiB:,.0f} (≤ {t['end_epoch_peak_target_bytes'] / MiB:,.0f}: "
            f"{ok[t['end_epoch_peak_met']]}) | {c['end_epoch_peak_anon_growth_bytes'] / MiB:,.0f} | "
            f"{c['end_epoch_wall_s']:.1f} | {c['end_epoch_cpu_s']:.1f} |")
    notes = [f"- `{name}`: {c['plan']['note']}" for name, c in rep["cases"].items() if c.get("plan", {}).get("note")]
    if rep["value_error"]:
        lines += ["", "Value error of half-precision storage against float32 storage (same rows):", "",
                  "| storage | n | max abs Δφ / std φ | Spearman ρ |", "|---|---|---|---|"]
        for name, e in rep["value_error"].items():
            lines.append(f"| {name} | {e['n']:,} | {e['max_abs_diff_over_std']:.2e} | {e['spearman']:.6f} |")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {list(CASES)}")
    ap.add_argument("--disk-dir", type=Path, default=Path(tempfile.gettempdir()),
                    help="where the disk case's memory-mapped store goes (a temporary folder inside it)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--quick", action="store_true", help="n = 1,024 / 4,096: a smoke test")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--render-only", action="store_true", help="re-render the Markdown from the JSON in --out")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return child(json.loads(args.child))
    name = "memory_quick" if args.quick else "memory"
    if args.render_only:
        write_text_atomic(args.out / f"{name}.md", render(json.loads((args.out / f"{name}.json").read_text())))
        return
    if not Path("/proc/self/statm").exists():
        ap.error("the resident set is read from /proc/self/statm: this benchmark runs on Linux only")
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        ap.error(f"--cases: unknown {unknown}; choose from {list(CASES)}")
    torch.set_num_threads(args.threads)
    rep = {"mode": "quick" if args.quick else "full", "C": C, "D": D, "batch": BATCH, "seed": SEED,
           "machine": machine(), "provenance": provenance("cpu"),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "case_order": cases, "cases": {},
           "value_error": {}}
    with tempfile.TemporaryDirectory(prefix="chg-bench-memory-values-") as tmp:
        for case in cases:
            n, dtype, offload, fixed_mmap = CASES[case]
            n = QUICK_N[n] if args.quick else n
            plan = disk_plan(n, dtype, args.disk_dir) if offload == "disk" else {"n": n, "note": ""}
            if plan["n"] == 0:
                rep["cases"][case] = {"skipped": plan["note"], "plan": plan}
                continue
            print(f"{case}: n = {plan['n']:,}, {dtype}, offload {offload} ...", flush=True)
            res = run_child(case, plan["n"], dtype, offload, fixed_mmap, args.disk_dir, args.threads, Path(tmp))
            rep["cases"][case] = {**res, "plan": plan, "targets": targets(res)}
            print(f"  kept {res['kept_bytes_per_row']:.1f} B/row, end_epoch peak "
                  f"{res['end_epoch_peak_growth_bytes'] / MiB:,.0f} MiB, {res['end_epoch_wall_s']:.1f} s", flush=True)
        ref = Path(tmp) / "n50k_float32.npy"
        for case in ("n50k_bfloat16", "n50k_float16"):
            if case in rep["cases"] and not rep["cases"][case].get("skipped") and ref.exists():
                err = value_error(np.load(ref), np.load(Path(tmp) / f"{case}.npy"))
                rep["value_error"][case] = {"n": rep["cases"][case]["n"], **err}
    write_report(args.out, name, rep, render)


if __name__ == "__main__":
    main()
