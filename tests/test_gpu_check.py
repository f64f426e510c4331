"""benchmarks/gpu_check.sh --dry-run: the prepared GPU check runs end to end on the CPU, tiny, and writes its JSON."""
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_data import _fake_fashion

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_every_step(tmp_path):
    """Cheap: 256 fake 28×28 images, ResNet-18 of width 4, 2 epochs; bench_core --quick is left out here (the
    tests of benchmarks/bench_core.py run it already)."""
    _fake_fashion(tmp_path / "data" / "fashion-mnist", n_train=400, n_test=100)
    env = dict(os.environ, CHG_DATA=str(tmp_path / "data"), PYTHON=sys.executable, CHG_GPU_CHECK_STEPS="tests train",
               OMP_NUM_THREADS="1")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    rep = json.loads((out / "gpu_check.json").read_text())
    assert rep["dry_run"] and rep["all_ok"] and set(rep["steps"]) == {"tests", "train"}
    assert rep["tests"]["tests"] >= 1 and rep["tests"]["failures"] == 0
    train = rep["train"]
    assert train["resnet18_epoch"]["pool"] == 256 and train["resnet18_epoch"]["epoch_s"] > 0
    runs = {(r["method"], r["fraction"]) for r in train["selection_noise30"]}
    assert runs == {("chg", 0.1), ("random", 0.1), ("chg", 0.3), ("random", 0.3)}
    assert all(0 <= r["test_acc"] <= 100 and r["pool_noisy_share"] > 0.2 for r in train["selection_noise30"])
    assert (out / "gpu_check.md").read_text().startswith("# GPU check (dry run, CPU)")


def test_gpu_check_without_data_fails_clearly(tmp_path):
    env = dict(os.environ, CHG_DATA=str(tmp_path / "nothing"), PYTHON=sys.executable, CHG_GPU_CHECK_STEPS="train")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert not json.loads((out / "gpu_check.json").read_text())["all_ok"]
    assert "dataset-fashion-mnist" in (out / "steps" / "train.log").read_text()
