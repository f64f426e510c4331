"""Table 1 (reproduce/kit/odv*): scored by the one chg.detection.detection_metrics (the committed records' metrics
are what it gives on their values), fits counted through an object the run passes to its model, opendataval's bars
off only around its calls, and nothing patched when the kit is imported."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "reproduce"))
from kit import odv, odv_presets  # noqa: E402

import table1  # noqa: E402

from chg.detection import detection_metrics, noisy_mask  # noqa: E402


def _committed_records() -> list:
    out = subprocess.run(["git", "ls-files", "reproduce/results/*/table1/*.json"], cwd=ROOT, capture_output=True,
                         text=True)
    return [json.loads((ROOT / p).read_text()) for p in out.stdout.split()] if out.returncode == 0 else []


def test_every_committed_record_holds_what_the_one_scorer_gives():
    """Each committed Table 1 record's detection metrics, stored by its run (before the one scorer as ``auc`` and
    ``f1_kmeans``), equal bit for bit chg.detection.detection_metrics on its stored values and noisy indices — so the
    table, which now scores the stored values, shows the numbers the runs measured."""
    pytest.importorskip("opendataval")
    recs = _committed_records()
    if not recs:
        pytest.skip("no Table 1 records committed")
    old_keys = {"auc": "roc_auc", "f1_kmeans": "f1_2means_opendataval"}
    for rec in recs:
        got = odv.detection(rec)
        stored = {old_keys.get(k, k): v for k, v in rec["metrics"].items() if k in old_keys or k in got}
        assert stored and all(got[k] == v for k, v in stored.items()), (rec["run_id"], stored, got)


def _rec(values, noisy, method="chg", seed=0):
    return {"config": {"dataset": "d", "method": method, "noise": "label"}, "seed": seed,
            "metrics": {"wall_time_s": 1.0, "model_fits": 1}, "values": list(values), "noisy_indices": list(noisy),
            "n_train": len(values)}


def test_table1_cells_score_low_value_as_corrupted():
    """Table 1's AUC is 'low value ⇒ corrupted': values that put every corrupted point lowest give AUC 1, the
    reverse 0; the F1 and the flagged-cluster size are OpenDataVal's 2-means split (the two low values)."""
    pytest.importorskip("opendataval")
    good = _rec([0.0, 0.1, 5.0, 5.1, 5.2, 5.3], [0, 1])
    bad = _rec([5.2, 5.3, 0.0, 0.1, 5.0, 5.1], [0, 1], seed=1)
    cell = table1.aggregate(odv_presets.PRESETS["smoke"], [good, bad])["d"]["chg"]
    assert cell["label_auc"] == [1.0, 0.0] and cell["label_f1"] == [1.0, 0.0]
    assert cell["label_flagged"] == [2, 2] and cell["label_corrupted"] == [2, 2]
    assert cell["label_auc"][0] == detection_metrics([0.0, 0.1, 5.0, 5.1, 5.2, 5.3], noisy_mask([0, 1], 6),
                                                     higher_is="valuable")["roc_auc"]


def test_reproduce_has_no_second_detection_metric():
    """The metrics are computed in chg/detection.py only: no script or kit module imports a scorer of its own."""
    scorers = {"roc_auc_score", "average_precision_score", "f1_score", "oned_twonn_clustering", "KMeans",
               "discover_corrupted_sample", "noisy_detection"}
    for path in (ROOT / "reproduce").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                found = scorers & {a.name for a in node.names}
                assert not found, f"{path.relative_to(ROOT)} imports {found}: score with chg.detection"


def test_importing_the_kit_patches_nothing():
    """Importing every Table 1 module (and running its grid's set-up) leaves tqdm and opendataval's model classes as
    they were."""
    pytest.importorskip("opendataval")
    code = """
import sys, tqdm
sys.path.insert(0, "reproduce")
from opendataval.model import LogisticRegression
init, fit = vars(tqdm.tqdm)["__init__"], LogisticRegression.fit
import table1, figure1, figure2
from kit import odv, odv_data, odv_presets, odv_run, odv_text
odv.runs(odv_presets.PRESETS["quick"])
assert vars(tqdm.tqdm)["__init__"] is init, "tqdm patched"
assert LogisticRegression.fit is fit, "the model class patched"
assert not [k for k in vars(odv_data) if k.startswith("_DOWNLOAD")], "a download flag in the module"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_fit_counter_counts_the_model_and_its_clones_only():
    pytest.importorskip("opendataval")
    import torch
    from kit.odv_data import make_fetcher
    from kit.odv_run import FitCounter, make_model
    cfg = odv_presets.PRESETS["smoke"]
    fetcher = make_fetcher(cfg, cfg.datasets[0], "label", 0)
    counter = FitCounter()
    model = make_model(cfg, fetcher, torch.device("cpu"), counter)
    cls_fit = type(model).fit
    x, y, *_ = fetcher.datapoints  # the tensors opendataval trains on
    model.fit(x, y, epochs=1)
    clone = model.clone()
    clone.fit(x, y, epochs=1)
    clone.clone().fit(x, y, epochs=1)
    assert counter.n == 3 and clone.fit_counter is counter
    other = make_model(cfg, fetcher, torch.device("cpu"), FitCounter())
    other.fit(x, y, epochs=1)
    assert counter.n == 3 and other.fit_counter.n == 1  # another run's model counts apart
    assert type(model).fit is cls_fit and "fit" not in vars(type(model))  # the class is untouched


@pytest.mark.parametrize("method, fits", [("dataoob", 8), ("chg", 1)])
def test_smoke_run_counts_fits_and_is_scored_by_the_one_scorer(method, fits):
    """One smoke run (40 breast-cancer points): Data-OOB with 8 bagged models fits 8 models, CHG one training run;
    the run's metrics are chg.detection.detection_metrics of its values; tqdm is as it was afterwards."""
    pytest.importorskip("opendataval")
    import tqdm
    from kit.odv_run import run_one
    init = vars(tqdm.tqdm)["__init__"]
    cfg = odv_presets.PRESETS["smoke"]
    assert cfg.oob_models == 8
    out = run_one(cfg, cfg.datasets[0], "label", method, 0)
    m = out["metrics"]
    assert m["model_fits"] == fits
    want = detection_metrics(np.asarray(out["values"]), noisy_mask(out["noisy_indices"], out["n_train"]),
                             higher_is="valuable", opendataval=True)
    assert {k: m[k] for k in want} == want
    assert odv.detection(_rec(out["values"], out["noisy_indices"])) == want
    assert len(out["noisy_indices"]) == round(cfg.noise_rate * cfg.train_count) and "removal" in m
    assert vars(tqdm.tqdm)["__init__"] is init
