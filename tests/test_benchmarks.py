"""The benchmarks of ride-along's floor, its memory and the engine run end to end in their --quick modes.

Each script runs into a temporary folder (never benchmarks/results/), writes a JSON with every row / case, and its
Markdown is rendered from that JSON alone (--render-only gives it back byte for byte). The timings are not checked:
these are smoke runs on a busy machine.
"""
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
C, D = 1000, 2048  # bench_memory's ImageNet shape


def _results_state() -> dict:
    return {p.name: p.stat().st_mtime_ns for p in RESULTS.iterdir()}


def _quick(script: str, out: Path, *extra: str) -> dict:
    """Run ``script --quick --out out``, check it left benchmarks/results/ alone and that its Markdown re-renders
    from the JSON byte for byte; the JSON report."""
    before = _results_state()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, f"benchmarks/{script}.py", "--quick", "--out", str(out), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    assert _results_state() == before, "a --quick run wrote into benchmarks/results/"
    name = f"{script.removeprefix('bench_')}_quick"
    assert sorted(p.name for p in out.iterdir()) == [f"{name}.json", f"{name}.md"]
    rep = json.loads((out / f"{name}.json").read_text())
    assert _module(script).render(rep) == (out / f"{name}.md").read_text(encoding="utf-8")
    return rep


def _module(script: str):
    """benchmarks/<script>.py imported (its own path setup makes it import this checkout's chg)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(script)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_the_hand_made_floor_computes_the_librarys_values_from_uneven_batches_across_its_groups():
    """The floor's eq. (3) from per-batch lists (groups of 4 batches here, batches of uneven sizes, features far from
    0 so that its centring matters, rows in shuffled order, some rows never seen) against the library's values of the
    same rows, float64 rows: equal to 1e-12 of the largest value."""
    import torch

    import chg
    bench = _module("bench_overhead")
    g = torch.Generator().manual_seed(3)
    n, C, D = 400, 7, 9
    sizes = [13, 1, 40, 7, 29, 64, 3, 50, 33, 21, 17, 2]  # 280 rows in 12 batches: 3 groups of 4
    perm = torch.randperm(n, generator=g)[:sum(sizes)]
    rows, y, z, h, a = [], [], [], [], 0
    for b in sizes:
        rows.append(perm[a:a + b])
        y.append(torch.randint(0, C, (b,), generator=g))
        z.append(3 * torch.randn(b, C, generator=g, dtype=torch.float64))
        h.append(5 + torch.rand(b, D, generator=g, dtype=torch.float64))
        a += b
    got = bench.floor_values(rows, y, z, h, n, group=4)
    lib = chg.EpochValuer(n, partial_epochs=True)
    lib.add_logits(torch.cat(rows), torch.cat(z), torch.cat(y), torch.cat(h), True)
    with pytest.warns(UserWarning, match="not valued this epoch"):
        want = lib.end_epoch()
    assert torch.isnan(got).sum() == n - sum(sizes) and torch.equal(torch.isnan(got), torch.isnan(want))
    seen = ~torch.isnan(want)
    assert (got[seen] - want[seen]).abs().max() <= 1e-12 * want[seen].abs().max()


def test_overhead_quick_every_path_and_the_floor_check(tmp_path):
    rep = _quick("bench_overhead", tmp_path)
    paths = ["plain", "tap_only", "copies", "ride_along", "floor", "separate_pass"]
    assert rep["mode"] == "quick" and rep["paths"] == paths and rep["rounds"] == 1
    assert set(rep["settings"]) == {"image_mlp", "stride_cnn"}
    for s in rep["settings"].values():
        for key in ("median_cpu_s", "median_wall_s", "ratio_cpu", "ratio_wall", "seconds_cpu", "seconds_wall"):
            assert set(s[key]) == set(paths), key
        assert all(len(v) == 1 and v[0] > 0 for v in s["seconds_cpu"].values())
        assert s["ratio_cpu"]["plain"] == 1.0 and s["ride_along_over_floor_cpu"] > 0
        fc = s["floor_check"]  # the hand-made floor computes the library's values (float32 rows)
        assert fc["ok"] and fc["rtol"] == 1e-6 and fc["max_abs_diff_over_max_abs"] <= 1e-6
        assert fc["library_float32_vs_float64"] <= 1e-6
        inter = s["interleaved"]  # the per-batch paths, block by block: every path timed, plain the unit
        per = ["plain", "tap_only", "copies", "ride_along", "floor"]
        assert inter["rounds"] == 1 and inter["block"] == 10
        for key in ("ratio_batches", "ratio_total", "ratio_total_range", "median_end_ms"):
            assert set(inter[key]) == set(per), key
        assert inter["ratio_total"]["plain"] == 1.0 and all(v[0] > 0 for v in inter["seconds_cpu_batches"].values())
        assert inter["median_end_ms"]["ride_along"] > 0 and inter["median_end_ms"]["plain"] >= 0
    assert "Interleaved in blocks of 10 batches" in (tmp_path / "overhead_quick.md").read_text()
    for key in ("cpu", "cores", "torch_threads", "torch", "loadavg_start", "loadavg_end"):
        assert key in rep["machine"]
    assert rep["machine"]["torch_threads"] == 1 and rep["provenance"]["git_commit"] is not None


def test_overhead_refuses_too_few_rounds(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/bench_overhead.py", "--rounds", "3", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--rounds must be >= 7" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_memory_quick_every_case(tmp_path):
    rep = _quick("bench_memory", tmp_path)
    cases = ["n50k_float32", "n50k_bfloat16", "n50k_float16", "n50k_float32_host", "n50k_float32_mmap128k",
             "imagenet_disk"]
    assert rep["mode"] == "quick" and rep["case_order"] == cases and set(rep["cases"]) == set(cases)
    assert (rep["C"], rep["D"]) == (C, D)
    for name, c in rep["cases"].items():
        size = 4 if c["dtype"] == "float32" else 2
        # the store keeps exactly the documented bytes per row: C + D values, index, target, loss, kind
        assert c["kept_bytes_per_row"] == size * (C + D) + 8 + 8 + 4, name
        assert c["targets"]["kept_per_row_target"] == size * (C + D) + 64 and c["targets"]["kept_per_row_met"]
        assert c["values_finite"] and c["end_epoch_wall_s"] > 0 and c["end_epoch_samples"] >= 1
        assert c["end_epoch_peak_growth_bytes"] > 0 and c["rss_growth_adds_bytes"] > 0
        fixed = name.endswith("_mmap128k")  # only that case runs with glibc's mmap threshold fixed
        assert c["malloc_mmap_threshold"] == ("131072" if fixed else "glibc default (dynamic)"), name
    assert rep["cases"]["imagenet_disk"]["offload"] == "disk" and rep["cases"]["imagenet_disk"]["n"] == 4096
    assert rep["cases"]["imagenet_disk"]["plan"]["disk_free_bytes"] > 0
    assert set(rep["value_error"]) == {"n50k_bfloat16", "n50k_float16"}
    for e in rep["value_error"].values():  # half storage moves the values a little, the ranking hardly at all
        assert 0 < e["max_abs_diff_over_std"] < 0.5 and e["spearman"] > 0.99


def test_memory_disk_plan_runs_what_fits(tmp_path):
    bench_memory = _module("bench_memory")
    row = bench_memory.row_bytes("float32")
    assert row == 4 * (C + D) + 20 and bench_memory.row_bytes("bfloat16") == 2 * (C + D) + 20
    plan = bench_memory.disk_plan(1024, "float32", tmp_path)
    assert plan["n"] == 1024 and plan["note"] == ""
    huge = (plan["disk_free_bytes"] // row) * 4  # a store four times the free space
    plan = bench_memory.disk_plan(huge, "float32", tmp_path)
    assert plan["n_requested"] == huge and 0 <= plan["n"] < huge and plan["n"] % 256 == 0
    assert plan["n"] * row + bench_memory.DISK_SPARE <= plan["disk_free_bytes"]
    assert "ran the largest n that fits" in plan["note"] or "not run" in plan["note"]


def test_engine_quick_every_row(tmp_path):
    rep = _quick("bench_engine", tmp_path)
    rows = ["factored_shapley", "factored_shapley_offset", "epoch_values", "epoch_values_per_class", "floor_gemms",
            "floor_gemms_norms"]
    assert rep["mode"] == "quick" and rep["rows"] == rows and (rep["C"], rep["D"]) == (10, 512)
    res = rep["result"]
    assert res["n"] == 10_000 and res["values_finite"]
    for key in ("median_cpu_s", "median_wall_s", "ratio_cpu_to_floor_gemms", "ratio_cpu_to_floor_gemms_norms",
                "ratio_wall_to_floor_gemms", "ratio_wall_to_floor_gemms_norms"):
        assert set(res[key]) == set(rows), key
    assert res["ratio_cpu_to_floor_gemms"]["floor_gemms"] == 1.0
    assert res["epoch_values_vs_factored_shapley_max_abs_diff_over_std"] <= 1e-10


def test_first_epoch_quick_both_variants_in_fresh_processes(tmp_path):
    """bench_first_epoch --quick: both shapes, both page sizes, each measurement a child process (its first epoch
    takes page faults: a measurement in a process that had touched the pages would show none), the second epoch into
    the reused buffers; the ratio is the paired one of the runs recorded."""
    rep = _quick("bench_first_epoch", tmp_path)
    assert rep["mode"] == "quick" and set(rep["result"]) == {"image_mlp", "lightning_mlp"}
    for r in rep["result"].values():
        runs = r["runs"]
        assert len(runs["huge"]) == len(runs["small"]) == rep["rounds"] == 1
        assert all(x["first_faults"] > 0 for v in runs.values() for x in v)  # a fresh process: its pages are new
        assert r["ratio_first_huge_over_small"] == runs["huge"][0]["first_s"] / runs["small"][0]["first_s"]
