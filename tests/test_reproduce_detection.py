"""reproduce/detection.py (kit.detect): the smoke grid end to end, resume and the already-done rule, the render and
its verdicts from records, and --render-only on the committed records."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import chg.experiments.results as results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "reproduce"))
from kit import config, detect, grid  # noqa: E402


def _redirect(mp, root):
    mp.setattr(results, "RESULTS_DIR", root / "results")
    mp.setattr(results, "FIGURES_DIR", root / "figures")
    mp.setattr(results, "CHECKPOINT_DIR", root / "checkpoints")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke preset run once through the command line into a temporary results folder: (root, record, md,
    scored), ``scored`` = {SHA-256 of the scores: (the one scorer's metrics, its higher_is)} of every call of
    chg.detection.detection_metrics during the run."""
    import chg.detection
    import chg.experiments.detection
    root = tmp_path_factory.mktemp("detect")
    scored = {}

    def spy(scores, noisy, **kw):
        out = chg.detection.detection_metrics(scores, noisy, **kw)
        digest = hashlib.sha256(np.ascontiguousarray(scores, dtype=np.float64).tobytes()).hexdigest()
        scored[digest] = (out, kw.get("higher_is"))
        return out
    with pytest.MonkeyPatch.context() as mp:
        _redirect(mp, root)
        mp.setattr(chg.experiments.detection, "detection_metrics", spy)
        assert detect.main(["--scale", "smoke"]) == 0
    (path,) = (root / "results" / "smoke" / "detection").glob("*.json")
    return root, json.loads(path.read_text()), (root / "figures" / "smoke" / "detection.md").read_text(), scored


def test_smoke_end_to_end_writes_one_record_per_run_and_the_table(smoke):
    root, rec, md, _ = smoke
    m = rec["metrics"]
    assert rec["run_id"] == "digits-noise0.3-s0" and rec["config"]["noise_rate"] == 0.3
    assert m["flipped"] == round(0.3 * m["pool_size"]) == 388  # exactly round(rate · pool) labels flipped
    assert set(m["detectors"]) == set(detect.METHODS)
    for name, d in m["detectors"].items():
        assert d["k"] == m["flipped"], name
        for key, _ in detect.METRICS:
            assert 0.0 <= d[key] <= 1.0, (name, key)
        assert d["roc_auc"] > 0.8, name  # every detector finds 30% flipped digits far better than chance (0.5)
    assert set(m["scores_sha256"]) == set(detect.METHODS)
    assert set(detect.method_times(m["times_s"])) == set(detect.METHODS)
    assert (root / "figures" / "smoke" / "detection.tex").is_file()
    for m_name in detect.METHODS:  # one row per detector, its AUC cell as recorded (one seed: no spread)
        assert f"| {detect.LABELS[m_name]} | {m['detectors'][m_name]['roc_auc']:.3f} (n = 1) |" in md
    assert "**Verdict at 30% noise**" in md
    assert "AUC no verdict from one seed: 0." in md and " beats (" not in md and "does not beat (" not in md
    assert "(n = 1)×" not in md and "(n = 1)%" not in md


def test_rerun_skips_the_done_run_and_a_changed_setting_is_an_error(smoke, monkeypatch, capsys):
    root, rec, _, _ = smoke
    _redirect(monkeypatch, root)
    path = results.run_path("detection", rec["run_id"], "smoke")
    before = path.read_bytes()
    assert detect.main(["--scale", "smoke", "--no-render"]) == 0
    assert "ran 0, skipped 1 (already done) of 1" in capsys.readouterr().out
    assert path.read_bytes() == before
    with pytest.raises(SystemExit, match=r"knn_k: 10 stored vs 5 now.*--replace"):
        detect.main(["--scale", "smoke", "--no-render", "--set", "detection.knn_k=5"])
    assert path.read_bytes() == before


def test_every_detector_is_scored_by_the_one_scorer_on_its_suspicion(smoke):
    """Each detector's recorded metrics are chg.detection.detection_metrics of exactly its scores (matched by the
    scores' SHA-256 in the record), called with higher_is="suspicious" — the scorer Table 1 uses on its values."""
    _, rec, _, scored = smoke
    m = rec["metrics"]
    for name, digest in m["scores_sha256"].items():
        metrics, higher_is = scored[digest]
        assert higher_is == "suspicious" and m["detectors"][name] == metrics, name


def test_render_only_without_records_says_to_run_the_compute_step(tmp_path, monkeypatch):
    _redirect(monkeypatch, tmp_path)
    with pytest.raises(SystemExit, match="run the compute step"):
        detect.main(["--scale", "smoke", "--render-only"])


def test_noise_rate_zero_is_a_usage_error(tmp_path, monkeypatch, capsys):
    _redirect(monkeypatch, tmp_path)
    with pytest.raises(SystemExit) as exc:
        detect.main(["--scale", "smoke", "--set", "noise_rates=0", "--no-render"])
    assert exc.value.code == 2 and "noise rate in (0, 1)" in capsys.readouterr().err


def test_grid_axes_ids_and_shards():
    medium = detect.presets()["medium"]
    rs = detect.runs(medium)
    assert [r.run_id for r in rs][:3] == ["fashion_mnist-noise0.1-s0", "fashion_mnist-noise0.3-s0",
                                          "fashion_mnist-noise0.1-s1"]
    assert len({r.run_id for r in rs}) == len(rs) == 10
    assert {r.config["seed"] for r in rs} == {0, 1, 2, 3, 4} and {r.config["noise_rate"] for r in rs} == {0.1, 0.3}
    assert all(r.config["seed"] == r.seed for r in rs)
    shards = [{r.run_id for r in rs[i::2]} for i in range(2)]
    assert not shards[0] & shards[1] and shards[0] | shards[1] == {r.run_id for r in rs}
    assert all("noise0.1" in i for i in shards[0]) and all("noise0.3" in i for i in shards[1])
    with pytest.raises(ValueError, match="set per run"):
        config.apply_sets(medium, ["detection.seed=3"])
    assert config.apply_sets(medium, ["folds=3"]).detection.folds == 3


def test_help_lists_the_shared_options():
    out = subprocess.run([sys.executable, "reproduce/detection.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for opt in ("--scale", "--set", "--shard", "--replace", "--render-only", "--threads", "smoke", "medium"):
        assert opt in out.stdout, opt


# ---- render from records: numbers and verdicts -----------------------------------------------------------------

TIMES = {"train_with_values": 10.0, "separate_pass": 3.0, "el2n_passes": 0.5, "knn_shapley": 2.0,
         "kfold_training": 40.0, "cleanlab": 1.0}


def _save(rate, seed, aucs, aps, times=TIMES):
    """A record with AUC ``aucs[m]`` and AP ``aps[m]`` for each detector m (other metrics fixed)."""
    dets = {m: {"roc_auc": aucs[m], "average_precision": aps[m], "precision_at_k": 0.5, "k": 30, "f1_2means": 0.25}
            for m in detect.METHODS}
    preset = detect.presets()["smoke"]
    run = [r for r in detect.runs(config.apply_sets(preset, [f"noise_rates={rate}", f"seeds={seed}"]))][0]
    results.save_run("detection", run.run_id, config=grid.normalise(run.config), seed=seed, scale="smoke",
                     metrics={"detectors": dets, "times_s": times, "test_acc": 90.0 + seed, "cleanlab_flagged": 28,
                              "cleanlab_find_label_issues_f1": 0.75, "pool_size": 100, "flipped": 30, "val_size": 10,
                              "test_size": 10, "cpu_s": 60.0, "scores_sha256": {}},
                     wall_time_s=60.0, device="cpu")


def test_render_reports_means_and_paired_verdicts_from_the_records(tmp_path, monkeypatch):
    """CHG (Alg. 1) vs mean loss on AUC: 0.90/0.80 (win), 0.70/0.75 (loss), 0.60/0.60 (tie: not a win) → 1 of 3
    seeds, 'partly beats'; vs EL2N higher in every seed → 'beats'; vs cleanlab lower in every seed → 'does not beat'."""
    _redirect(monkeypatch, tmp_path)
    chg = [0.90, 0.70, 0.60]
    loss = [0.80, 0.75, 0.60]
    for seed in range(3):
        aucs = {"chg_algorithm1": chg[seed], "chg_ride_along": chg[seed], "chg_algorithm1_skip": chg[seed],
                "chg_ride_skip": chg[seed], "mean_loss": loss[seed],
                "el2n": chg[seed] - 0.1, "cleanlab": chg[seed] + 0.05, "knn_shapley": 0.5}
        _save(0.3, seed, aucs, {m: 0.5 for m in detect.METHODS})
    md = detect.render("smoke", config.apply_sets(detect.presets()["smoke"], ["seeds=0,1,2"]))
    assert f"| {detect.LABELS['chg_algorithm1']} | 0.733 ± 0.153 | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.250 ± 0.000 " \
           f"| 13.0 ± 0.0 | 1.30 ± 0.00× |" in md
    assert f"| {detect.LABELS['mean_loss']} | 0.717 ± 0.104 |" in md
    assert f"| {detect.LABELS['cleanlab']} | 0.783 ± 0.153 | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.250 ± 0.000 " \
           f"| 41.0 ± 0.0 | 4.10 ± 0.00× |" in md
    assert f"| {detect.LABELS['el2n']} | 0.633 ± 0.153 | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.250 ± 0.000 " \
           f"| 10.5 ± 0.0 |" in md
    lines = md.splitlines()
    assert "- CHG (Alg. 1) vs mean loss: AUC beats in 1 of 3 seeds (1/3 seeds, 0.7333 vs 0.7167); AP does not beat " \
           "(0/3 seeds, 0.5000 vs 0.5000)." in lines
    assert "- CHG (Alg. 1) vs EL2N: AUC beats (3/3 seeds, 0.7333 vs 0.6333); AP does not beat (0/3 seeds, 0.5000 " \
           "vs 0.5000)." in lines
    assert any(ln.startswith("- CHG (ride-along) vs cleanlab: AUC does not beat (0/3 seeds, 0.7333 vs 0.7833)")
               for ln in lines)
    assert "flags 28 ± 0 points" in md and "test accuracy of the model trained on the noisy pool: 91.00 ± 1.00%" in md
    assert "(3 runs, 3.0 min of compute in all, 3.0 CPU-min)" in md and "got 100% of a core" in md


def test_method_times_adds_each_detectors_own_step_to_what_it_needs():
    t = detect.method_times(TIMES)
    assert t == {"chg_ride_along": 10.0, "chg_ride_skip": 10.0, "mean_loss": 10.0, "chg_algorithm1": 13.0,
                 "chg_algorithm1_skip": 13.0, "el2n": 10.5, "knn_shapley": 12.0, "cleanlab": 41.0}


# ---- --render-only on the committed records -----------------------------------------------------------------------

def _committed(folder):
    out = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True, text=True)
    return {Path(p).stem for p in out.stdout.split()} if out.returncode == 0 else set()


@pytest.mark.parametrize("scale", ["quick", "medium"])
def test_render_only_rebuilds_the_committed_table_from_the_committed_records(scale, tmp_path):
    """The committed table of a scale is what --render-only makes of the committed records (all or part of the grid:
    the table shows the seeds that are there)."""
    grid_ids = {r.run_id for r in detect.runs(detect.presets()[scale])}
    if not grid_ids & _committed(f"reproduce/results/{scale}/detection"):
        pytest.skip(f"no {scale}-scale detection records are committed")
    shutil.copytree(ROOT / "reproduce" / "results" / scale / "detection",
                    tmp_path / "reproduce" / "results" / scale / "detection")
    env = {**os.environ, "CHG_ROOT": str(tmp_path)}
    out = subprocess.run([sys.executable, "reproduce/detection.py", "--scale", scale, "--render-only"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("detection.md", "detection.tex"):
        made, kept = results.figure_path(scale, name), results.figure_path(scale, name)
        made = tmp_path / made.relative_to(results.FIGURES_DIR.parent)
        assert made.read_bytes() == kept.read_bytes(), f"{kept} differs from its render"
