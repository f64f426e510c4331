"""Table 1 at medium scale: the notebook protocol of the preset, Fashion-MNIST embeddings disjoint from the splits
they are valued on, the authors' notebook numbers, the verdicts, and the render from the committed records."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import chg.experiments.results as results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "reproduce"))
from kit import grid, odv, odv_data, odv_presets, odv_text  # noqa: E402

import table1  # noqa: E402


def _fashion_available() -> bool:
    from chg.experiments.data import FASHION_MNIST_FILES, fashion_mnist_dirs
    return any(all((d / f).is_file() for f in FASHION_MNIST_FILES) for d in fashion_mnist_dirs(results.DATA_DIR))


# ---- the preset ----------------------------------------------------------------------------------------------------

def test_medium_preset_is_the_notebook_protocol():
    p = odv_presets.PRESETS["medium"]
    assert p.datasets == (odv_presets.EMBED_DATASET,)
    assert (p.train_count, p.valid_count, p.test_count) == (1000, 100, 300)
    assert p.noise_rate == 0.1 and "label" in p.noises
    assert p.model == "LogisticRegression" and p.epochs == 10
    assert len(p.seeds) >= 5 and len(set(p.seeds)) == len(p.seeds)
    assert set(p.methods) <= set(odv_presets.METHODS) and {"chg", "chg_ride", "random", "dataoob"} <= set(p.methods)
    # every quick method is either run or left out with a stated reason
    for m in odv_presets.PRESETS["quick"].methods:
        assert m in p.methods or len(odv_presets.OMITTED.get(m, "")) > 20, m
    runs = odv.runs(p)
    assert len(runs) == len(p.seeds) * len(p.methods) * len(p.noises)
    assert all(r.config["embedder"] == odv_data.EMBEDDER for r in runs)


def test_quick_preset_still_matches_its_committed_records():
    """Adding the medium preset changed nothing of the quick grid: every committed quick record is 'already done'."""
    runs = odv.runs(odv_presets.PRESETS["quick"])
    if not all(results.run_path(odv_presets.EXPERIMENT, r.run_id, "quick").is_file() for r in runs):
        pytest.skip("quick Table 1 records not committed in full")
    assert all(grid.is_done(odv_presets.EXPERIMENT, "quick", r) for r in runs)
    assert all("embedder" not in r.config for r in runs)


def test_notebook_f1_numbers_are_the_published_ones():
    assert odv_text.notebook_f1() == {"dataoob": 0.369, "chg": 0.334, "dvrl": 0.298, "lava": 0.212,
                                 "influence_subsample": 0.200, "loo": 0.185, "ame": 0.182, "random": 0.174,
                                 "databanzhaf": 0.161}


# ---- the embeddings ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not _fashion_available(), reason="Fashion-MNIST not on this machine (apt-get install "
                    "dataset-fashion-mnist)")
def test_embeddings_are_disjoint_from_the_table1_splits(tmp_path, monkeypatch):
    """The embedder's training rows and the rows of every split (train/valid/test, five seeds) do not intersect, and
    each split's features are the embedder's features of exactly those rows (recomputed from the raw images)."""
    from chg.experiments.data import load_dataset
    from chg.experiments.models import ImageMLP
    monkeypatch.setattr(results, "DATA_DIR", tmp_path)
    monkeypatch.setattr(odv_data, "EMBEDDER", {**odv_data.EMBEDDER, "epochs": 1})  # cheap embedder, same construction
    torch.set_num_threads(1)
    e = odv_data.load_embeddings()
    assert odv_data.embedding_path().is_file() and odv_data.embedding_path().parent == tmp_path / "embeddings"
    again = odv_data.load_embeddings()  # from the cache
    assert all(np.array_equal(e[k], again[k]) for k in ("x", "y", "rows", "embedder_rows", "units"))
    assert len(e["embedder_rows"]) == odv_data.N_FASHION_TRAIN and len(e["rows"]) == 10_000

    images = load_dataset("fashion_mnist", seed=0, val_fraction=0.0)
    model = ImageMLP((1, 28, 28), 10, odv_data.EMBEDDER["hidden"])
    model.load_state_dict({k: torch.from_numpy(v) for k, v in e["state"].items()})
    with torch.no_grad():  # the embedder's test accuracy (chg.experiments.train.evaluate), counted by hand
        correct = int((model(images.test.x).argmax(1) == images.test.y).sum())
    assert e["test_accuracy"] == pytest.approx(correct / len(images.test.y), abs=1e-12)
    cfg = odv_presets.PRESETS["medium"]
    for seed in cfg.seeds:
        f = odv_data.make_fetcher(cfg, odv_presets.EMBED_DATASET, "label", seed)
        parts = [np.asarray(i) for i in (f.train_indices, f.valid_indices, f.test_indices)]
        assert [len(i) for i in parts] == [1000, 100, 300]
        rows = e["rows"][np.concatenate(parts)]
        assert len(set(rows.tolist())) == 1400  # the three splits do not overlap
        assert not set(rows.tolist()) & set(e["embedder_rows"].tolist())  # nor meet the embedder's images
        with torch.no_grad():
            feats = model.features(images.test.x[torch.from_numpy(rows[:1000] - odv_data.N_FASHION_TRAIN)].flatten(1))
        feats = (feats[:, torch.from_numpy(e["units"])] - torch.from_numpy(e["mu"])) / torch.from_numpy(e["sd"])
        assert torch.allclose(torch.as_tensor(np.asarray(f.x_train)), feats, atol=1e-4)
        clean = images.test.y[torch.from_numpy(rows[:1000] - odv_data.N_FASHION_TRAIN)].numpy()
        changed = np.flatnonzero(np.asarray(f.y_train).argmax(1) != clean)
        assert sorted(changed.tolist()) == sorted(np.asarray(f.noisy_train_indices).tolist())
        assert len(changed) == 100


# ---- render: verdicts, the notebook block, the committed records ---------------------------------------------------

def _cell(auc, f1=None, removal=None, addition=None):
    c = {"label_auc": list(auc.values()), "label_auc_by_seed": dict(auc),
         "label_f1": list((f1 or auc).values()), "label_f1_by_seed": dict(f1 or auc)}
    if removal is not None:
        c.update(removal=list(removal.values()), removal_by_seed=dict(removal),
                 addition=list(addition.values()), addition_by_seed=dict(addition))
    return c


def test_verdicts_say_whether_each_chg_symbol_holds():
    seeds = range(5)
    table = {"d": {
        "chg": _cell({s: 0.9 + 0.01 * s for s in seeds}, removal={s: 0.60 for s in seeds},
                     addition={s: 0.70 + 0.001 * s for s in seeds}),
        "random": _cell({s: 0.5 for s in seeds}, removal={s: 0.70 + 0.01 * s for s in seeds},
                        addition={s: 0.70 for s in seeds}),
        "dataoob": _cell({s: 0.95 + 0.01 * s for s in seeds})}}
    text = table1.verdicts(["d"], table)
    lines = {ln.split(":")[0]: ln for ln in text.splitlines() if ln.startswith("- d, ")}
    assert "measured '++'" in lines["- d, noisy label detection"]
    assert "→ holds" in lines["- d, noisy label detection"]
    assert "vs Data-OOB: AUC lower (-0.050 ± 0.000, n = 5)" in lines["- d, noisy label detection"]
    assert "vs Random: AUC higher (+0.420 ± 0.007, n = 5)" in lines["- d, noisy label detection"]
    assert "not run at this scale" in lines["- d, noisy feature detection"]
    assert "measured '++'" in lines["- d, point removal"] and "→ holds" in lines["- d, point removal"]
    assert "no claim in the paper (NA)" in lines["- d, point addition"]
    # a CHG no better than chance: the claim fails
    table["d"]["chg"] = _cell({s: 0.5 + (0.01 if s % 2 else -0.01) for s in seeds}, removal={s: 0.8 for s in seeds},
                              addition={s: 0.6 for s in seeds})
    lines = {ln.split(":")[0]: ln for ln in table1.verdicts(["d"], table).splitlines() if ln.startswith("- d, ")}
    assert "measured '-'" in lines["- d, noisy label detection"]
    assert "does NOT hold" in lines["- d, noisy label detection"] and "does NOT hold" in lines["- d, point removal"]
    assert "vs Random: AUC tie (" in lines["- d, noisy label detection"]


def test_notebook_block_only_beside_the_embeddings():
    row = {m: _cell({0: 0.8, 1: 0.9}) for m in ("chg", "dataoob", "random", "knnshapley")}
    assert table1.notebook_block({"digits": row}, ["digits"]) == []
    text, tab = table1.notebook_block({odv_presets.EMBED_DATASET: row}, [odv_presets.EMBED_DATASET])
    assert "[authors' notebook, CIFAR-10 embeddings]" in tab.head[-1] and "NOT comparable" in text
    by_method = {r[0]: r for r in tab.rows}
    labels = odv_presets.LABELS
    assert by_method[labels["dataoob"]][-1] == "0.369" and by_method[labels["knnshapley"]][-1] == "—"
    assert by_method[odv_presets.LABELS["loo"]][1] == "not run"


def test_medium_render_only_rebuilds_the_committed_table_from_the_committed_records(tmp_path):
    """The committed medium records (the whole grid, or the part of it committed so far) render to the committed
    figures/medium files byte for byte."""
    out = subprocess.run(["git", "ls-files", "reproduce/results/medium/table1"], cwd=ROOT, capture_output=True,
                         text=True)
    committed = [ROOT / p for p in out.stdout.split()] if out.returncode == 0 else []
    if not committed or not (ROOT / "figures" / "medium" / "table1.md").is_file():
        pytest.skip("no medium Table 1 records committed")
    dest = tmp_path / "reproduce" / "results" / "medium" / "table1"
    dest.mkdir(parents=True)
    for p in committed:
        shutil.copy(p, dest / p.name)
    # the caption compares Data-OOB's 100 and 1,000 models from the quick records (table1.oob_models_effect)
    quick = subprocess.run(["git", "ls-files", "reproduce/results/quick/table1"], cwd=ROOT, capture_output=True,
                           text=True).stdout.split()
    (tmp_path / "reproduce" / "results" / "quick" / "table1").mkdir(parents=True)
    for p in quick:
        shutil.copy(ROOT / p, tmp_path / p)
    env = {**os.environ, "CHG_ROOT": str(tmp_path), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    for script in ("table1", "figure1", "figure2"):
        out = subprocess.run([sys.executable, f"reproduce/{script}.py", "--scale", "medium", "--render-only"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
    for name in ("table1.md", "table1.tex", "figure1.png", "figure1.pdf", "figure2.png", "figure2.pdf"):
        made, kept = tmp_path / "figures" / "medium" / name, ROOT / "figures" / "medium" / name
        assert made.read_bytes() == kept.read_bytes(), f"figures/medium/{name} differs from its render"
    md = (ROOT / "figures" / "medium" / "table1.md").read_text()
    assert "[authors' notebook, CIFAR-10 embeddings]" in md and "**Verdicts" in md


def test_one_seed_gives_no_symbol_and_no_verdict():
    """One seed has no standard error: no '+' and no 'higher' from it (the caption's rule needs two standard
    errors)."""
    table = {"d": {"chg": _cell({0: 0.6}, removal={0: 0.6}, addition={0: 0.7}),
                   "random": _cell({0: 0.5}, removal={0: 0.7}, addition={0: 0.69}),
                   "dataoob": _cell({0: 0.599})}}
    assert table1.symbol("label", table["d"]["chg"], table["d"]["random"]) == table1.NO_SE
    lines = {ln.split(":")[0]: ln for ln in table1.verdicts(["d"], table).splitlines() if ln.startswith("- d, ")}
    for task in ("noisy label detection", "point removal", "point addition"):
        assert f"measured '{table1.NO_SE}'" in lines[f"- d, {task}"] and "no verdict" in lines[f"- d, {task}"]
        assert "holds" not in lines[f"- d, {task}"]
    assert table1.versus("label_auc", table["d"]["chg"], table["d"]["dataoob"]) == f"{table1.NO_SE}: +0.001"
