"""chg.report: ranks, suspects, saving and plotting of data values, checked against brute-force definitions."""
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from chg import report as R


def _values(n=40, seed=0):
    v = np.random.default_rng(seed).normal(size=n)
    v[[3, 17]] = v[5]  # ties
    return v


def test_rank_is_ordinal_rank_with_ties_by_position():
    v = _values()
    np.testing.assert_array_equal(R.rank(v), rankdata(v, method="ordinal").astype(np.int64))
    np.testing.assert_array_equal(R.rank(torch.tensor(v)), R.rank(v))  # torch in, same answer


@pytest.mark.parametrize("k", [None, 0, 1, 7, 100])
@pytest.mark.parametrize("threshold", [None, 0.0, -0.5, 10.0])
def test_suspects_match_the_definition(k, threshold):
    v = _values()
    want = sorted((i for i in range(v.size) if threshold is None or v[i] < threshold), key=lambda i: (v[i], i))
    want = want if k is None else want[:k]
    got = R.suspects(v, k=k, threshold=threshold)
    assert got.dtype == np.int64 and got.tolist() == want


def test_default_threshold_is_zero():
    v = np.array([0.5, -1.0, 0.0, -0.1, 2.0])
    assert R.suspects(v).tolist() == [1, 3]  # strictly below 0, lowest first


@pytest.mark.parametrize("bad, match", [
    (np.array([0.1, np.nan, 0.2, np.nan]), r"2 NaN/Inf .* first rows: \[1, 3\]"),
    (np.array([np.inf, 0.0]), r"first rows: \[0\]"),
    (np.zeros((2, 2)), "1-D"),
    (np.zeros(0), "non-empty"),
])
def test_bad_values_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        R.suspects(bad)


def test_k_must_be_a_count():
    with pytest.raises(ValueError, match="non-negative integer"):
        R.suspects(np.zeros(3), k=-1)
    with pytest.raises(ValueError, match="non-negative integer"):
        R.suspects(np.zeros(3), k=1.5)


def test_report_validates_its_columns():
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        R.ValuationReport.from_values(np.zeros(3), labels=[0, 1])
    with pytest.raises(ValueError, match="repeated row ids"):
        R.ValuationReport.from_values(np.zeros(3), index=["a", "b", "a"])
    with pytest.raises(ValueError, match="loss has 1 NaN"):
        R.ValuationReport.from_values(np.zeros(3), loss=[0.1, np.nan, 0.2])


def _report(n=30):
    rng = np.random.default_rng(1)
    return R.ValuationReport.from_values(
        torch.tensor(rng.normal(size=n)), labels=np.array(["cat", "dog", "eel"])[rng.integers(0, 3, n)],
        index=[f"id{i:03d}" for i in range(n)], loss=rng.random(n) * 3)


def test_suspects_are_row_ids_and_frame_is_in_row_order():
    rep = _report()
    pos = R.suspects(rep.values, k=5)
    assert rep.suspects(k=5).tolist() == [f"id{i:03d}" for i in pos]
    frame = rep.to_frame()
    assert list(frame.columns) == ["row", "label", "value", "rank", "loss"]
    assert frame["row"].tolist() == rep.index.tolist() and frame["rank"].tolist() == R.rank(rep.values).tolist()


def test_csv_and_npz_round_trip_exactly(tmp_path):
    rep = _report()
    back = R.ValuationReport.read_csv(rep.to_csv(tmp_path / "v.csv"))
    np.testing.assert_array_equal(back.values, rep.values)  # 17 significant digits: bit-exact
    np.testing.assert_array_equal(back.loss, rep.loss)
    assert back.index.tolist() == rep.index.tolist() and back.labels.tolist() == rep.labels.tolist()
    with np.load(rep.to_npz(tmp_path / "v.npz")) as z:
        np.testing.assert_array_equal(z["values"], rep.values)
        assert z["index"].tolist() == rep.index.tolist() and z["rank"].tolist() == rep.rank().tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.csv", "v.npz"]  # atomic: no temporary files left
    with pytest.raises(ValueError, match="no 'value' column"):
        (tmp_path / "x.csv").write_text("row,score\n0,1\n")
        R.ValuationReport.read_csv(tmp_path / "x.csv")


def test_plot_writes_png_and_pdf_without_touching_the_backend(tmp_path):
    backend = matplotlib.get_backend()
    fig = _report().plot(tmp_path / "report.png", k=8)
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "report.pdf").read_bytes()[:4] == b"%PDF"
    assert matplotlib.get_backend() == backend
    titles = [ax.get_title() for ax in fig.axes]
    assert "the 8 lowest-valued rows (most suspect)" in titles and "loss vs value" in titles


def _grid_rows(fig):
    return [int(ax.get_title().split()[0][1:]) for ax in fig.axes if ax.get_title()]


@pytest.mark.parametrize("shape", [(25, 8, 8), (25, 1, 8, 8), (25, 3, 6, 6), (25, 6, 6, 3)])
def test_image_grid_shows_the_k_lowest_in_order(shape):
    import matplotlib.pyplot as plt
    rng = np.random.default_rng(2)
    v = rng.normal(size=25)
    labels = rng.integers(0, 10, 25)
    fig = R.plot_lowest_images(rng.random(shape), v, labels, k=6)
    want = R.suspects(v, k=6, threshold=None).tolist()
    assert _grid_rows(fig) == want
    assert [ax.get_title().split()[1] for ax in fig.axes if ax.get_title()] == [str(labels[i]) for i in want]
    plt.close(fig)


def test_image_grid_reads_a_dataset_and_its_labels():
    import matplotlib.pyplot as plt
    v = np.linspace(1, -1, 12)  # the last rows are the lowest
    data = [(torch.rand(1, 5, 5), 10 + i) for i in range(12)]  # a Dataset of (image, label); no .shape
    fig = R.plot_lowest_images(data, v, k=3, classes=None)
    assert _grid_rows(fig) == [11, 10, 9]
    assert [ax.get_title().split()[1] for ax in fig.axes if ax.get_title()] == ["21", "20", "19"]
    plt.close(fig)
    with pytest.raises(ValueError, match="12 images but 5 values"):
        R.plot_lowest_images(data, v[:5])


@pytest.mark.parametrize("script, stem", [("bench_thresholds.py", "thresholds_quick"),
                                          ("bench_modes.py", "modes_quick")])
def test_the_benchmarks_behind_the_guidance_run(tmp_path, script, stem):
    """Quick mode of the scripts that measured the threshold and mode advice (the full runs are committed)."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / script), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stderr
    runs = json.loads((tmp_path / f"{stem}.json").read_text())["runs"]
    assert len(runs) == 1 and runs[0]["data"] == "breast_cancer"
    aucs = [runs[0]["auc"]] if isinstance(runs[0]["auc"], float) else list(runs[0]["auc"].values())
    assert all(0.5 < a <= 1.0 for a in aucs)  # better than chance even after 2 epochs
    assert (tmp_path / f"{stem}.md").read_text().startswith("# ")
