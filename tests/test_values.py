"""``chg.Values``: the numbers, the view, the sum of two runs, and files that round-trip without pickle."""
import numpy as np
import pandas as pd
import pytest

import chg


def _history():
    return np.array([[1.0, -2.0, 0.5, np.nan], [3.0, -1.0, 0.25, 2.0], [2.0, 0.0, -0.5, 4.0]])


def test_values_count_std_and_the_skip_view():
    v = chg.Values(_history())
    np.testing.assert_array_equal(v.count, [3, 3, 3, 2])
    np.testing.assert_allclose(v.values, [2.0, -1.0, 0.25 / 3, 3.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(v.std[0], np.std([1.0, 3.0, 2.0]), rtol=1e-15)
    w = v.skip_epochs(1)
    np.testing.assert_allclose(w.values, [2.5, -0.5, -0.125, 3.0], rtol=0, atol=1e-15)
    assert w.history is v.history and v.skipped == 0  # a view; the original is unchanged
    assert np.asarray(v).shape == (4,) and v.shape == (4,) and len(v) == 4 and v[1] == -1.0
    with pytest.raises(ValueError, match=r"skip_epochs must lie in \[0, 3\)"):
        v.skip_epochs(3)
    with pytest.raises(TypeError, match="skip_epochs must be an integer"):
        v.skip_epochs(1.0)


def test_adding_two_runs_is_the_count_weighted_mean():
    h = _history()
    a, b = chg.Values(h[:2]), chg.Values(h[2:])
    np.testing.assert_allclose((a + b).values, chg.Values(h).values, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="different rows"):
        a + chg.Values(np.zeros((1, 3)))


def test_save_load_round_trip_without_pickle(tmp_path):
    v = chg.Values(_history(), 1, index=["a", "b", "c", "d"], labels=np.array([0, 1, 1, 2]), meta={"mode": "ride"})
    back = chg.Values.load(v.save(tmp_path / "v.npz"))
    np.testing.assert_array_equal(back.history, v.history)
    assert back.skipped == 1 and back.meta == {"mode": "ride"} and back.index.tolist() == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(back.labels, v.labels)
    np.savez(tmp_path / "other.npz", history=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="not a chg.Values file"):
        chg.Values.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="numbers or strings"):
        chg.Values(np.zeros((1, 2)), index=np.array([object(), object()], dtype=object)).save(tmp_path / "x.npz")


def test_csv_reads_back_exactly_and_suspects_are_lowest_first(tmp_path):
    v = chg.Values(_history()[1:], labels=[0, 1, 1, 2])
    frame = pd.read_csv(v.to_csv(tmp_path / "v.csv"))
    assert list(frame.columns) == ["row", "label", "value", "rank", "std", "epochs"]
    np.testing.assert_array_equal(frame["value"].to_numpy(), v.values)
    assert frame["rank"].tolist() == [3, 1, 2, 4]
    assert v.suspects().tolist() == [1, 2]  # below 0: -0.5, -0.125
    assert v.suspects(k=3, threshold=None).tolist() == [1, 2, 0]


def test_bad_histories_are_refused():
    with pytest.raises(ValueError, match="Inf"):
        chg.Values(np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match="at least one epoch"):
        chg.Values(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="repeated row ids"):
        chg.Values(np.zeros((1, 2)), index=[1, 1])


def test_rows_never_valued_are_left_out_of_suspects_rank_and_plot(tmp_path):
    """partial_epochs=True leaves rows NaN; the acting methods work on the valued rows (reported by a new user: they
    raised before). Rank 0 marks a row never valued."""
    v = chg.Values(np.array([[0.1, np.nan, -0.2, -0.5, np.nan, 0.3]]))
    assert v.suspects().tolist() == [3, 2]  # below 0, lowest first; the NaN rows are not suspects
    assert v.suspects(k=10, threshold=None).tolist() == [3, 2, 0, 5]
    assert v.rank().tolist() == [3, 0, 2, 1, 0, 4]
    v.plot(tmp_path / "report")
    assert (tmp_path / "report.png").is_file()
    with pytest.raises(ValueError, match="no row was valued"):
        chg.Values(np.array([[np.nan, np.nan]])).suspects()


def test_load_of_a_csv_says_what_load_reads(tmp_path):
    v = chg.Values(np.array([[0.1, -0.2]]))
    v.to_csv(tmp_path / "values.csv")
    with pytest.raises(ValueError, match=r"Values.load reads the .npz that Values.save writes"):
        chg.Values.load(tmp_path / "values.csv")


def test_load_of_a_truncated_or_missing_file_says_so(tmp_path):
    """A .npz cut short (a copy interrupted, a full disk) is named corrupt or truncated, with the path and the zip
    error — not 'not a chg.Values file … the CSV of Values.to_csv' (the reviewer's trunc.npz); a missing file is
    FileNotFoundError naming it; a CSV still gets the message that says what load reads."""
    good = chg.Values(_history(), labels=[0, 1, 1, 2]).save(tmp_path / "v.npz")
    data = good.read_bytes()
    for cut in (200, len(data) // 2, len(data) - 10):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"cut\d+\.npz: a corrupt or truncated \.npz file.*\(BadZipFile: ") as e:
            chg.Values.load(bad)
        assert "to_csv" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        chg.Values.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "objects.npz", history=np.array([object()], dtype=object), meta=np.array("{}"))
    with pytest.raises(ValueError, match="objects.npz: not a chg.Values file .*pickled"):
        chg.Values.load(tmp_path / "objects.npz")


def test_the_meta_of_a_sum_is_true_of_the_sum(tmp_path):
    """Values(h, meta={"epochs": 2}) + Values(h, meta={"epochs": 3}) was a 4-epoch history whose meta said epochs 2
    (the left part's meta won every key). Now: shared settings stay, "epochs" counts the sum's history (the epochs it
    averages, skipped ones dropped), and settings that differ live only under "parts", each part's meta as it was."""
    h = _history()
    a = chg.Values(h[:2], meta={"epochs": 2, "mode": "ride", "lr": 0.1})
    b = chg.Values(h, 1, meta={"epochs": 3, "mode": "ride", "lr": 0.01})
    s = a + b
    assert s.epochs == 4 and s.meta["epochs"] == 4  # 2 + (3 − 1 skipped)
    assert s.meta["mode"] == "ride" and "lr" not in s.meta
    assert s.meta["parts"] == [a.meta, b.meta]
    c = chg.Values(h[2:], meta={"epochs": 1, "mode": "pass"})
    t = s + c
    assert t.meta["epochs"] == 5 and "mode" not in t.meta
    assert t.meta["parts"] == [a.meta, b.meta, c.meta]  # a sum's parts listed in its place, not nested
    one = {"epochs": 1, "mode": "ride"}
    same = chg.Values(h[:1], meta=one) + chg.Values(h[1:2], meta=one)
    assert same.meta == {"mode": "ride", "epochs": 2}  # nothing differed: no parts
    assert (chg.Values(h) + chg.Values(h)).meta == {}
    back = chg.Values.load(t.save(tmp_path / "t.npz"))
    assert back.meta == t.meta  # JSON-ready, saved as it is


def test_a_meta_format_key_is_kept_and_the_file_still_loads(tmp_path):
    """meta={"format": ...} overwrote the file's format tag: save wrote a file load refused (reviewer R7's
    r7_values_meta_format.py). The tag has its own array now; files of 0.3.0 (the tag in meta) still load."""
    v = chg.Values(np.array([[0.1, -0.2, 0.3]]), meta={"format": "images", "lr": 0.1})
    back = chg.Values.load(v.save(tmp_path / "v.npz"))
    assert back.meta == {"format": "images", "lr": 0.1}
    np.testing.assert_array_equal(back.history, v.history)
    import json
    old = tmp_path / "old.npz"  # as 0.3.0 wrote it: the tag inside meta
    np.savez(old, history=v.history, skip_epochs=np.int64(0), index=v.index,
             meta=np.array(json.dumps({"format": chg.values.FORMAT, "lr": 0.1})))
    assert chg.Values.load(old).meta == {"lr": 0.1}


def test_state_dict_loads_weights_only_beside_a_valuer(tmp_path):
    """Values.state_dict held NumPy arrays, which torch.load (weights-only, its default) refuses, although it is
    'for a training checkpoint' beside EpochValuer.state_dict (reviewer R7's r8_values_state_dict_torch.py)."""
    import torch
    for index, labels in ((None, None), (["a", "b", "c"], [1, 0, 1]), ([10, 20, 30], [True, False, True]),
                          (pd.Index(["a", "b", "c"]), pd.Series(["x", "y", "x"]).to_numpy()),  # object strings
                          (np.array([2**64 - 1, 5, 7], dtype=np.uint64), None)):  # hashes above 2**63
        v = chg.Values(np.array([[0.1, np.nan, 0.3], [0.2, -0.1, 0.0]]), 1, index=index, labels=labels,
                       meta={"lr": 0.1})
        torch.save({"values": v.state_dict()}, tmp_path / "ck.pt")
        back = chg.Values.from_state_dict(torch.load(tmp_path / "ck.pt")["values"])  # weights_only=True
        np.testing.assert_array_equal(back.history, v.history)
        assert back.skipped == 1 and back.meta == {"lr": 0.1}
        assert back.index.tolist() == v.index.tolist()
        assert back.index.dtype == v.index.dtype or v.index.dtype == object  # (object strings come back as str)
        assert (back.labels is None) == (labels is None)
        if labels is not None:
            assert back.labels.tolist() == v.labels.tolist()


def test_half_precision_tensors_nan_row_ids_and_bad_suspect_arguments():
    import torch
    v = chg.Values(torch.tensor([[0.5, -0.25, 1.0]], dtype=torch.bfloat16))  # numpy has no bfloat16
    np.testing.assert_array_equal(v.values, [0.5, -0.25, 1.0])
    for ids in ([1.0, np.nan, np.nan], np.array(["a", np.nan], dtype=object), ["a", pd.NA], ["a", None],
                pd.array(["a", None], dtype="string")):
        with pytest.raises(ValueError, match=r"missing row ids \(None, NaN, NaT, pd.NA\)"):
            chg.Values(np.zeros((1, len(ids))), index=ids)
    mixed = chg.Values(np.zeros((1, 2)), index=["a", 1])  # not made "a", "1" by NumPy
    assert mixed.index.tolist() == ["a", 1]
    for ids, which in (([0, False, 2], "0 and False: equal in Python, so one id"), (["x", "y", "x"], "'x' twice")):
        with pytest.raises(ValueError, match=f"repeated row ids \\({which}\\)"):  # 0 was made False's twin
            chg.Values(np.zeros((1, 3)), index=ids)
    w = chg.Values(np.array([[0.3, -0.2, -0.1]]))
    assert w.suspects(k=1).tolist() == [1] and w.suspects(k=2.0, threshold=None).tolist() == [1, 2]
    for k in (True, np.nan, 2.5, -1, "2"):
        with pytest.raises(ValueError, match="k must be a non-negative integer"):
            w.suspects(k=k)
    for t in (np.nan, True, "0"):
        with pytest.raises(ValueError, match="threshold must be a number"):
            w.suspects(threshold=t)


def test_sum_of_runs():
    a, b = chg.Values(np.array([[1.0, 2.0]])), chg.Values(np.array([[3.0, 4.0]]))
    np.testing.assert_array_equal(sum([a, b]).values, (a + b).values)
    with pytest.raises(TypeError):
        1 + a


def test_exact_theorem_api_refuses_bad_input_and_stays_exact():
    """Reviewer R10's chg_utility_alpha.py, theorem_probe.py, exact_inputs.py: chg_utility cut an alpha of the wrong
    length to the shorter (zip); chg_shapley_exact returned floats for float input and overflowed NumPy ints; NaN,
    text and n as a float or a bool were raw Python errors or accepted."""
    from fractions import Fraction as F
    from chg.games import chg_utility, exact_shapley
    from chg.shapley import chg_shapley_exact, coefficients
    x = [[F(1), F(2)], [F(0), F(-1)], [F(3), F(1)]]
    with pytest.raises(ValueError, match="chg_utility: alpha has 1 entries but the vectors have 2"):
        chg_utility(x, [F(1)])
    with pytest.raises(ValueError, match=r"x\[0\] has 2 entries, x\[1\] 1"):
        chg_utility([[F(1), F(2)], [F(0)]], [F(1), F(1)])
    floats = chg_shapley_exact([[0.5, 0.25], [1.0, 2.0], [0.1, 0.3]])
    assert all(isinstance(v, F) for v in floats)
    assert floats == chg_shapley_exact([[F(0.5), F(0.25)], [F(1.0), F(2.0)], [F(0.1), F(0.3)]])  # the floats' values
    big = np.array([[2**31, 1], [40000, 3], [-5, 2**40]], dtype=np.int64)
    assert chg_shapley_exact(big) == chg_shapley_exact([[int(v) for v in r] for r in big])  # no int64 overflow
    with pytest.raises(ValueError, match=r"x\[1\]\[0\] is nan"):
        chg_shapley_exact([[1.0, 2.0], [float("nan"), 1.0]])
    with pytest.raises(TypeError, match=r"alpha\[0\] must be a number"):
        chg_shapley_exact(x, ["a", 1])
    for n in (2.0, True):
        with pytest.raises(ValueError, match="n must be an integer"):
            exact_shapley(lambda s: 0, n)
        with pytest.raises(ValueError, match="n must be an integer"):
            coefficients(n)


def test_exact_takes_every_rational_and_every_float_width():
    """Reviewer R11's t1.py: sympy.Rational and Decimal (exact rationals) were refused as "not a number" after
    the R10 fix, and a longdouble was rounded to float64."""
    from decimal import Decimal
    from fractions import Fraction as F
    from chg.shapley import chg_shapley_exact, exact
    sympy = pytest.importorskip("sympy")
    assert exact(sympy.Rational(1, 3), "v") == F(1, 3) and exact(Decimal("0.1"), "v") == F(1, 10)
    third = np.longdouble(1) / 3
    assert exact(third, "v") == F(*third.as_integer_ratio())
    assert chg_shapley_exact([[sympy.Rational(1, 3), 1], [Decimal("0.5"), 2]]) == \
        chg_shapley_exact([[F(1, 3), 1], [F(1, 2), 2]])
    with pytest.raises(ValueError, match="is Decimal"):
        exact(Decimal("NaN"), "v")
