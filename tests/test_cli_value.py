"""`chg value DATA --label COLUMN --out DIR`: a user's own table valued from the command line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import chg
import chg.experiments.models  # the oracle builds the CLI's MLP independently
from chg import cli
from chg.report import ValuationReport

ROOT = Path(__file__).resolve().parents[1]


def _frame(n=60, seed=0, d=4):
    """A small 3-class table: numeric features, string labels, one bool feature."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, d)) + y[:, None]
    f = pd.DataFrame(x, columns=[f"f{j}" for j in range(d)])
    f["flag"] = rng.random(n) < 0.5
    f["kind"] = np.array(["cat", "dog", "eel"])[y]
    return f


def _value(tmp_path, *args):
    return cli.main(["value", *map(str, args), "--no-progress", "--quiet"])


def _expected_values(frame, label, epochs, seed=0, model="logreg", batch_size=64, lr=0.01, trained=None, **options):
    """The oracle for the command's plumbing: value_data run directly on the standardised features (``trained``, a
    dict, receives the model, x and y)."""
    from sklearn.preprocessing import StandardScaler
    feats = frame.drop(columns=[label]).to_numpy(dtype=np.float64)
    x = torch.from_numpy(StandardScaler().fit_transform(feats).astype(np.float32))
    codes, classes = pd.factorize(frame[label], sort=True)
    torch.manual_seed(seed)
    C = len(classes)
    m = torch.nn.Linear(x.shape[1], C) if model == "logreg" else chg.experiments.models.MLP(x.shape[1], C, 64)
    data = torch.utils.data.TensorDataset(x, torch.from_numpy(codes.astype(np.int64)))
    if trained is not None:
        trained.update(model=m, x=x, y=data.tensors[1])
    return chg.value_data(m, data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, **options).numpy()


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_csv_values_rows_in_input_order(tmp_path, model):
    frame = _frame()
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert _value(tmp_path, tmp_path / "d.csv", "--label", "kind", "--out", tmp_path / "out", "--epochs", 3,
                  "--model", model, "--batch-size", 16) == 0
    out = pd.read_csv(tmp_path / "out" / "values.csv")
    assert list(out.columns[:4]) == ["row", "label", "value", "rank"]
    assert out["row"].tolist() == list(range(len(frame)))
    assert out["label"].tolist() == frame["kind"].tolist()  # the labels as given, not class indices
    want = _expected_values(frame, "kind", epochs=3, model=model, batch_size=16)
    np.testing.assert_allclose(out["value"].to_numpy(), want, rtol=1e-12, atol=1e-15)
    order = np.argsort(want, kind="stable")
    assert out["rank"].to_numpy()[order].tolist() == list(range(1, len(frame) + 1))  # rank 1 = lowest value
    assert (out["loss"] > 0).all()
    classes = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert [(c["class"], c["label"], c["rows"]) for c in classes["classes"]] == [
        (i, k, int((frame["kind"] == k).sum())) for i, k in enumerate(["cat", "dog", "eel"])]
    for name in ("report.png", "report.pdf", "summary.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert not list((tmp_path / "out").glob("*.partial"))  # atomic writes leave nothing behind


def test_parquet_and_npz_give_the_csv_values(tmp_path):
    frame = _frame(n=40, seed=1).drop(columns="flag")
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    codes = pd.factorize(frame["kind"], sort=True)[0]
    np.savez(tmp_path / "d.npz", x=frame.drop(columns="kind").to_numpy(), y=frame["kind"].to_numpy().astype(str))
    vals = {}
    for ext in ("csv", "parquet", "npz"):
        label = ["--label", "kind"] if ext != "npz" else []
        assert _value(tmp_path, tmp_path / f"d.{ext}", *label, "--out", tmp_path / ext, "--epochs", 2) == 0
        out = pd.read_csv(tmp_path / ext / "values.csv")
        assert out["label"].tolist() == frame["kind"].tolist()
        vals[ext] = out["value"].to_numpy()
    assert codes.max() == 2
    np.testing.assert_array_equal(vals["csv"], vals["parquet"])
    np.testing.assert_array_equal(vals["csv"], vals["npz"])


def test_npz_images_get_a_grid_and_values(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 30)
    x = rng.normal(size=(30, 6, 6)) + 2.0 * y[:, None, None]
    np.savez(tmp_path / "img.npz", x=x, y=y)
    assert _value(tmp_path, tmp_path / "img.npz", "--out", tmp_path / "o", "--epochs", 2) == 0
    out = pd.read_csv(tmp_path / "o" / "values.csv")
    assert len(out) == 30 and np.isfinite(out["value"]).all()
    assert (tmp_path / "o" / "report.png").stat().st_size > 0


def test_drop_mode_gradient_and_lr_reach_value_data(tmp_path):
    frame = _frame(n=30)
    frame["name"] = [f"row{i}" for i in range(30)]
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert _value(tmp_path, tmp_path / "d.csv", "--label", "kind", "--out", tmp_path / "o", "--epochs", 1,
                  "--drop", "name,flag", "--mode", "ride", "--gradient", "bias", "--lr", 0.05) == 0
    want = _expected_values(frame.drop(columns=["name", "flag"]), "kind", epochs=1, mode="ride", gradient="bias",
                            lr=0.05)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "o" / "values.csv")["value"], want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("weight", ["1,5,2", "dog=5, eel=2,cat=1"])
def test_weight_and_label_smoothing_reach_value_data(tmp_path, weight):
    """--weight (class weights in the order of classes.json: the labels sorted; or by label) and --label-smoothing
    give value_data(weight=, label_smoothing=)'s values; values.csv's loss is the row's loss under them."""
    frame = _frame(n=40).drop(columns="flag")
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert _value(tmp_path, tmp_path / "d.csv", "--label", "kind", "--out", tmp_path / "o", "--epochs", 2,
                  "--weight", weight, "--label-smoothing", 0.1) == 0
    out = pd.read_csv(tmp_path / "o" / "values.csv")
    trained = {}
    want = _expected_values(frame, "kind", epochs=2, weight=[1.0, 5.0, 2.0], label_smoothing=0.1, trained=trained)
    np.testing.assert_allclose(out["value"].to_numpy(), want, rtol=1e-12, atol=1e-15)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(trained["model"](trained["x"]).double(), trained["y"],
                                                 weight=torch.tensor([1.0, 5.0, 2.0], dtype=torch.float64),
                                                 label_smoothing=0.1, reduction="none")
    np.testing.assert_allclose(out["loss"].to_numpy(), loss.numpy(), rtol=1e-6)
    plain = _expected_values(frame, "kind", epochs=2)
    assert np.abs(want - plain).max() > 1e-3  # the options matter
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["weight"] == [1.0, 5.0, 2.0] and summary["label_smoothing"] == 0.1
    classes = json.loads((tmp_path / "o" / "classes.json").read_text())["classes"]
    assert [c["label"] for c in classes] == ["cat", "dog", "eel"]


def test_integer_labels_take_weights_by_value(tmp_path):
    frame = _frame(n=40).drop(columns="flag")
    frame["kind"] = frame["kind"].map({"cat": 10, "dog": 2, "eel": 7})  # classes sorted by value: 2, 7, 10
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert cli.class_weights("10=1,2=5,7=2", cli.read_table(tmp_path / "d.csv", "kind")[2]) == [5.0, 2.0, 1.0]
    assert cli.class_weights("10.0=1, 2=5, 7=2", [2.0, 7.0, 10.0]) == [5.0, 2.0, 1.0]


@pytest.mark.parametrize("args, needles", [
    (["--weight", "1,5"], ["2 weights for 3 classes", "in the order cat, dog, eel", "--weight cat=1"]),
    (["--weight", "1,-5,2"], ["weight 2 '-5'", ">= 0"]),
    (["--weight", "1,five,2"], ["weight 2 'five' is not a number"]),
    (["--weight", "1,nan,2"], ["weight 2 'nan'", "finite"]),
    (["--weight", "0,0,0"], ["every weight is 0"]),
    (["--weight", "cat=1,dog=5"], ["no weight for the classes ['eel']"]),
    (["--weight", "cat=1,dog=5,eel=2,emu=1"], ["no class 'emu'", "cat, dog, eel"]),
    (["--weight", "cat=1,dog=5,cat=2,eel=1"], ["'cat' is given twice"]),
    (["--weight", "cat=1,5,eel=2"], ["'5' has no label"]),
    (["--weight", "cat=x,dog=5,eel=2"], ["the weight of 'cat' 'x' is not a number"]),
    (["--label-smoothing", "1.5"], ["--label-smoothing must lie in [0, 1]", "1.5"]),
])
def test_bad_loss_options_are_named_with_exit_status_2(tmp_path, capsys, args, needles):
    frame = _frame(n=12)
    frame.to_csv(tmp_path / "d.csv", index=False)
    rc = _value(tmp_path, tmp_path / "d.csv", "--label", "kind", "--out", tmp_path / "o", *args)
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not (tmp_path / "o").exists()


def _write(tmp_path, frame, name="d.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("case, needles", [
    ("missing_label", ["'target'", "columns are", "kind"]),
    ("text_feature", ["'colour'", "not numeric", "row 0", "--drop colour"]),
    ("one_class", ["'kind'", "at least two classes"]),
    ("nan_row", ["row 7", "'f2'", "nan"]),
    ("inf_row", ["row 3", "'f0'", "inf"]),
    ("empty_cell", ["row 5", "'f1'"]),
    ("missing_label_value", ["row 4", "no label"]),
    ("empty_file", ["empty"]),
    ("header_only", ["no data rows"]),
    ("unknown_format", ["unknown format", ".csv"]),
    ("no_file", ["no such file"]),
    ("parquet_na", ["row 2", "'f0'"]),
    ("parquet_text", ["'colour'", "(row 1: 'red')"]),
    ("npz_without_y", ["no array 'y'"]),
    ("continuous_target", ["'kind'", "12 distinct labels among 12 rows", "continuous target"]),
])
def test_bad_input_is_named_with_exit_status_2(tmp_path, capsys, case, needles):
    frame = _frame(n=12)
    label = "kind"
    if case == "missing_label":
        path, label = _write(tmp_path, frame), "target"
    elif case == "text_feature":
        frame.insert(1, "colour", ["red", "blue"] * 6)
        path = _write(tmp_path, frame)
    elif case == "one_class":
        frame["kind"] = "cat"
        path = _write(tmp_path, frame)
    elif case == "continuous_target":  # a regression target (as sklearn's diabetes data): every row its own "class"
        frame["kind"] = np.linspace(25.0, 346.0, 12)
        path = _write(tmp_path, frame)
    elif case == "nan_row":
        frame.loc[7, "f2"] = np.nan
        path = _write(tmp_path, frame)
    elif case == "inf_row":
        frame.loc[3, "f0"] = np.inf
        path = _write(tmp_path, frame)
    elif case == "empty_cell":
        path = _write(tmp_path, frame)
        lines = path.read_text().splitlines()
        cells = lines[6].split(",")  # line 6 of the file = data row 5
        cells[1] = ""
        lines[6] = ",".join(cells)
        path.write_text("\n".join(lines) + "\n")
    elif case == "missing_label_value":
        frame.loc[4, "kind"] = None
        path = _write(tmp_path, frame)
    elif case == "empty_file":
        path = tmp_path / "d.csv"
        path.write_text("")
    elif case == "header_only":
        path = tmp_path / "d.csv"
        path.write_text("f0,f1,kind\n")
    elif case == "unknown_format":
        path = _write(tmp_path, frame, "d.xlsx")
    elif case == "no_file":
        path = tmp_path / "missing.csv"
    elif case == "parquet_na":  # a nullable integer column with <NA>, and an index that is not 0..n-1
        frame["f0"] = pd.array([1, 2, None] + [4] * 9, dtype="Int64")
        frame.index = frame.index + 100
        path = tmp_path / "d.parquet"
        frame.to_parquet(path)
    elif case == "parquet_text":  # rows are named by position, not by the file's own index
        frame.insert(1, "colour", ["1.5", "red"] + ["2"] * 10)
        frame.index = frame.index + 100
        path = tmp_path / "d.parquet"
        frame.to_parquet(path)
    else:
        path, label = tmp_path / "d.npz", None
        np.savez(path, x=np.zeros((3, 2)), labels=np.arange(3))
    rc = _value(tmp_path, path, *(["--label", label] if label else []), "--out", tmp_path / "o")
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "error:" in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not (tmp_path / "o" / "values.csv").exists()


def test_usage_names_the_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    top = capsys.readouterr().out
    assert top.startswith("usage: chg ") and "value" in top and "your own CSV" in top
    with pytest.raises(SystemExit) as exc:
        cli.main(["value", "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: chg value ")
    with pytest.raises(SystemExit) as exc:
        cli.main(["value", "x.csv"])  # --out missing: argparse's usage error, status 2
    assert exc.value.code == 2


def test_python_m_chg_value_end_to_end(tmp_path):
    """In a fresh interpreter, as a user runs it: a bad file exits 2 without a traceback, a good one writes files."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    frame = _frame(n=24)
    frame.to_csv(tmp_path / "good.csv", index=False)
    frame.assign(f0=frame["f0"].astype(str) + "x").to_csv(tmp_path / "bad.csv", index=False)
    cmd = [sys.executable, "-m", "chg", "value", "--label", "kind", "--epochs", "2"]
    bad = subprocess.run([*cmd, str(tmp_path / "bad.csv"), "--out", str(tmp_path / "b")], capture_output=True,
                         text=True, timeout=300, env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("python -m chg value: error:") and "'f0'" in bad.stderr
    good = subprocess.run([*cmd, str(tmp_path / "good.csv"), "--out", str(tmp_path / "g")], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "24 rows, 5 features, 3 classes" in good.stderr
    report = ValuationReport.read_csv(tmp_path / "g" / "values.csv")
    assert len(report) == 24 and report.labels.tolist() == frame["kind"].tolist()


@pytest.mark.parametrize("name,sep,extra", [
    ("d.csv", ";", {}), ("d.csv", "\t", {}), ("d.csv", "|", {}), ("d.tsv", "\t", {}), ("d.csv", ",", {"bom": True}),
    ("d.csv", ";", {"decimal": ","}), ("d.csv", ",", {"quote": True}), ("d.csv.gz", ";", {}),
    ("d.tsv.gz", "\t", {})])
def test_spreadsheet_exports_read_as_the_plain_csv(tmp_path, name, sep, extra):
    """Issue 22, item 5: what spreadsheets write — a sniffed separator, .tsv, a byte-order mark, quoted fields holding
    the separator, a decimal comma — reads to the same features and labels as the plain comma CSV."""
    frame = _frame(n=30, seed=3).drop(columns="flag")
    frame.to_csv(tmp_path / "plain.csv", index=False)
    want = cli.read_table(tmp_path / "plain.csv", "kind")
    out = frame.copy()
    if extra.get("quote"):
        out["kind"] = out["kind"].map(lambda k: f"{k}, the animal")  # a comma inside a quoted label
    path = tmp_path / name
    out.to_csv(path, sep=sep, index=False, decimal=extra.get("decimal", "."), float_format="%.17g",
               encoding="utf-8-sig" if extra.get("bom") else "utf-8")
    if extra.get("bom"):
        assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    got = cli.read_table(path, "kind")
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[3] == want[3]
    assert list(got[2]) == ([f"{k}, the animal" for k in want[2]] if extra.get("quote") else list(want[2]))


def test_semicolon_csv_values_end_to_end(tmp_path):
    """`chg value d.csv` on a semicolon-separated file gives the comma file's values, bit for bit."""
    frame = _frame(n=40, seed=1).drop(columns="flag")
    frame.to_csv(tmp_path / "c.csv", index=False, float_format="%.17g")
    frame.to_csv(tmp_path / "s.csv", sep=";", index=False, float_format="%.17g")
    for name in ("c", "s"):
        assert _value(tmp_path, tmp_path / f"{name}.csv", "--label", "kind", "--out", tmp_path / name,
                      "--epochs", 2) == 0
    a, b = (pd.read_csv(tmp_path / n / "values.csv") for n in ("c", "s"))
    np.testing.assert_array_equal(a["value"].to_numpy(), b["value"].to_numpy())


def test_unknown_format_lists_the_accepted_ones(tmp_path):
    (tmp_path / "d.xlsx").write_bytes(b"x")
    with pytest.raises(cli.InputError, match=r"\.csv, \.tsv, \.txt, \.parquet, \.npz file \(text also compressed: "
                                              r"\.gz, \.bz2, \.zip, \.xz, \.zst\)"):
        cli.read_table(tmp_path / "d.xlsx", "kind")


def test_values_npz_is_the_whole_result_read_back_by_values_load(tmp_path):
    """Issue 20: `chg value` saves the chg.Values it computed (every epoch, the labels as given); its mean is the
    values.csv column bit for bit."""
    frame = _frame(n=30, seed=2).drop(columns="flag")
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert _value(tmp_path, tmp_path / "d.csv", "--label", "kind", "--out", tmp_path / "o", "--epochs", 3) == 0
    got = chg.Values.load(tmp_path / "o" / "values.npz")
    assert got.history.shape == (3, 30)
    assert got.labels.tolist() == frame["kind"].tolist()
    np.testing.assert_array_equal(got.values, pd.read_csv(tmp_path / "o" / "values.csv")["value"].to_numpy())


def test_a_constant_column_of_any_magnitude_changes_no_value(tmp_path):
    """A constant column carries nothing: at 1e30 (the scaler's mean of it is not exact) or at 3.0 the values are
    those of the same table with the column at 0 — not values of 1e53 (found by review)."""
    got = {}
    for k, const in enumerate((0.0, 1e30, 3.0)):
        f = _frame(n=1000, seed=3)  # (at 40 rows the scaler happens to be exact)
        f.insert(0, "const", const)
        f.to_csv(tmp_path / f"c{k}.csv", index=False)
        out = tmp_path / f"o{k}"
        assert _value(tmp_path, tmp_path / f"c{k}.csv", "--label", "kind", "--out", out, "--epochs", 2) == 0
        got[const] = pd.read_csv(out / "values.csv")["value"].to_numpy()
    assert np.abs(got[0.0]).max() < 10
    np.testing.assert_array_equal(got[1e30], got[0.0])
    np.testing.assert_array_equal(got[3.0], got[0.0])


# --- the output folder: one run's complete set, or the previous one ---------------------------------------------

def _summary_rows(out):
    import json
    return json.loads((out / "summary.json").read_text())["rows"]


def test_a_rerun_replaces_the_whole_set_and_says_so(tmp_path, caplog):
    """A second run into the same folder replaces every file (a kill between files mixed two runs' files: the
    reviewer found values.csv of 17,970 rows beside summary.json of 569), warns, and leaves no staging folder."""
    import logging
    small, big = _write(tmp_path, _frame(n=30), "small.csv"), _write(tmp_path, _frame(n=45, seed=1), "big.csv")
    out = tmp_path / "out"
    assert _value(tmp_path, small, "--label", "kind", "--out", out, "--epochs", 1) == 0
    with caplog.at_level(logging.WARNING, logger="chg"):
        assert cli.main(["value", str(big), "--label", "kind", "--out", str(out), "--epochs", "1",
                         "--no-progress"]) == 0
    assert "replacing the results of a previous run" in caplog.text
    assert _summary_rows(out) == 45 and len(pd.read_csv(out / "values.csv")) == 45
    assert sorted(p.name for p in out.iterdir()) == sorted(cli.OUTPUTS)


def test_a_failure_while_writing_keeps_the_previous_set(tmp_path, monkeypatch, capsys):
    """An error (or Ctrl-C) while the files are written leaves the previous run's complete set untouched, and a
    killed run's leftovers (a staging folder, an atomic write's .partial file) go with the next run."""
    small, big = _write(tmp_path, _frame(n=30), "small.csv"), _write(tmp_path, _frame(n=45, seed=1), "big.csv")
    out = tmp_path / "out"
    assert _value(tmp_path, small, "--label", "kind", "--out", out, "--epochs", 1) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    from chg import report

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(report.ValuationReport, "plot", boom)
    assert _value(tmp_path, big, "--label", "kind", "--out", out, "--epochs", 1) == 130
    assert "interrupted" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing new, nothing lost
    monkeypatch.undo()
    (out / (cli._STAGING + "x")).mkdir()  # what a SIGKILL while writing leaves
    (out / "values.csv.abc123.partial").write_text("")
    assert _value(tmp_path, big, "--label", "kind", "--out", out, "--epochs", 1) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(cli.OUTPUTS) and _summary_rows(out) == 45


def test_a_column_too_large_to_standardise_and_a_true_false_column_with_an_empty_cell_are_named(tmp_path, capsys):
    """Finite values near 1e200 overflowed the scaler's squares: "training failed ... (try a smaller --lr)" at any
    learning rate. A TRUE/FALSE column with one empty cell was "not numeric; encode it", no row named. Now the first
    names the column and what to do, the second the row of the empty cell (exit status 2 for both)."""
    rng = np.random.default_rng(0)
    f = pd.DataFrame({"a": rng.normal(size=30) * 1e200, "b": rng.normal(size=30), "lab": ["x", "y", "z"] * 10})
    f.to_csv(tmp_path / "huge.csv", index=False)
    assert _value(tmp_path, tmp_path / "huge.csv", "--label", "lab", "--out", tmp_path / "o1", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert "column(s) ['a'] hold values too large to standardise" in err and "--drop a" in err
    assert "smaller --lr" not in err
    lines = ["smoker,b,lab"] + [f"{'TRUE' if i % 2 else 'FALSE'},{i / 7:.3f},{'xyz'[i % 3]}" for i in range(12)]
    lines[8] = "," + lines[8].split(",", 1)[1]  # data row 7: an empty cell
    (tmp_path / "boolna.csv").write_text("\n".join(lines) + "\n")
    assert _value(tmp_path, tmp_path / "boolna.csv", "--label", "lab", "--out", tmp_path / "o2", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert "row 7, column 'smoker'" in err and "not numeric" not in err
