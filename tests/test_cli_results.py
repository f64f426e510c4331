"""The command line, the result-file writer, and the benchmark's smoke mode."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chg.experiments import results

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=300):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_help_lists_entry_points():
    out = _run("-m", "chg", "--help")
    assert out.returncode == 0, out.stderr
    for name in ("value", "demo"):
        assert name in out.stdout
    out = _run("-m", "chg", "table2")  # the paper's scripts live in the repository (reproduce/), not in the library
    assert out.returncode == 2 and "invalid choice: 'table2'" in out.stderr


def test_demo_agrees_with_enumeration():
    out = _run("-m", "chg", "demo", "--n", "5")
    assert out.returncode == 0, out.stderr
    errs = [float(line.split("=")[-1]) for line in out.stdout.splitlines()]
    assert len(errs) == 5 and max(errs) < 1e-12


def test_write_json_atomic_leaves_no_partial_file(tmp_path):
    path = tmp_path / "a" / "run.json"
    results.write_json_atomic(path, {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        results.write_json_atomic(path, {"x": Boom()})
    assert json.loads(path.read_text()) == {"x": 1}  # old content intact
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temp files left


def test_save_run_records_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    results.save_run("exp", "r1", config={"a": 1}, seed=3, scale="quick", metrics={"acc": 0.5}, wall_time_s=1.5,
                     device="cpu")
    (rec,) = results.load_runs("exp", "quick")
    assert rec["seed"] == 3 and rec["scale"] == "quick" and rec["metrics"] == {"acc": 0.5}
    assert rec["versions"]["torch"] and rec["device"].startswith("cpu") and "git_commit" in rec
    assert (tmp_path / "quick" / "exp" / "r1.json").is_file() and results.load_runs("exp", "smoke") == []


def test_paths_per_scale(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "FIGURES_DIR", tmp_path)
    assert results.figure_path("quick", "table2.md") == tmp_path / "table2.md"  # the committed default
    assert results.figure_path("smoke", "table2.md") == tmp_path / "smoke" / "table2.md"
    results.write_text_atomic(results.figure_path("medium", "t.md"), "µ ± 1\n")
    assert (tmp_path / "medium" / "t.md").read_text(encoding="utf-8") == "µ ± 1\n"


def test_benchmark_quick_mode_runs(tmp_path):
    out = _run("benchmarks/bench_core.py", "--quick", "--out", str(tmp_path), timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "core_quick.json").read_text())
    assert [r["n"] for r in report["factored"]] == [1000, 10000]
    for row in report["batch"]:  # factored values equal the per-sample-gradient paths
        tol = 1e-5 if row["dtype"] == "float32" else 1e-12
        assert row["max_rel_diff_vs_vmap"] <= tol and row["max_rel_diff_vs_loop"] <= tol, row
