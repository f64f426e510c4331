"""`chg value`'s reading of text tables as spreadsheets write them (cli.read_table): encodings, .txt and compressed
files, decimal commas with thousands separators, Excel's "sep=" line, trailing separators, spaces, --drop."""
import bz2
import gzip
import logging
import lzma
import zipfile

import numpy as np
import pandas as pd
import pytest

from chg import cli

N = 30


def _frame(seed=0):
    """Two numeric features (two decimals), an int feature and an accented text label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, N)
    return pd.DataFrame({"größe": (rng.normal(size=N) + y).round(2), "höhe": rng.normal(size=N).round(2),
                         "count": rng.integers(0, 500, N), "catégorie": np.array(["chat", "chien", "élan"])[y]})


def _text(frame, sep=",", decimal="."):
    """The frame as a spreadsheet writes it: header, then one line per row."""
    return frame.to_csv(sep=sep, decimal=decimal, index=False, lineterminator="\n")


def _same(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert list(got[2]) == list(want[2]) and got[3] == want[3]


@pytest.fixture
def want(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text(_text(_frame()), encoding="utf-8")
    return cli.read_table(path, "catégorie")


# --- encodings --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding, sep, name", [
    ("cp1252", ";", "d.csv"),  # Excel's "CSV" on a German / French Windows
    ("latin-1", ",", "d.csv"),
    ("utf-16", "\t", "d.txt"),  # Excel's "Unicode Text": UTF-16 with a byte-order mark, tab-separated
    ("utf-32", ",", "d.csv"),
    ("utf-8-sig", ";", "d.csv"),
])
def test_windows_encodings_read_as_utf8(tmp_path, want, encoding, sep, name):
    path = tmp_path / name
    path.write_bytes(_text(_frame(), sep, "," if sep != "," else ".").encode(encoding))
    _same(cli.read_table(path, "catégorie"), want)


def test_a_late_non_utf8_byte_falls_back_to_cp1252(tmp_path):
    """Valid UTF-8 for the first 64 KiB, then a cp1252 'ö': read as cp1252, not refused."""
    rows = [f"{i % 7}.5,{i % 3},{'a' if i % 2 else 'b'}" for i in range(20000)] + ["1.5,2,kö"]
    path = tmp_path / "d.csv"
    path.write_bytes(("x,z,label\n" + "\n".join(rows) + "\n").encode("cp1252"))
    assert path.read_bytes()[:1 << 16].decode("utf-8")
    x, codes, classes, names = cli.read_table(path, "label")
    assert classes == ["a", "b", "kö"] and x.shape == (20001, 2)


def test_encoding_option_overrides_detection(tmp_path, capsys):
    """A Cyrillic cp1251 file would be read as cp1252 (mojibake labels); --encoding cp1251 reads it right."""
    frame = _frame().set_axis(["a", "b", "count", "вид"], axis=1)
    frame["вид"] = frame["вид"].map({"chat": "кот", "chien": "пёс", "élan": "лось"})
    path = tmp_path / "d.csv"
    path.write_bytes(_text(frame, ";", ",").encode("cp1251"))
    assert cli.read_table(path, "вид", encoding="cp1251")[2] == ["кот", "лось", "пёс"]
    with pytest.raises(cli.InputError, match="no column 'вид'"):  # read as cp1252
        cli.read_table(path, "вид")
    rc = cli.main(["value", str(path), "--label", "вид", "--encoding", "cp1251", "--out", str(tmp_path / "o"),
                   "--epochs", "1", "--quiet", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert set(pd.read_csv(tmp_path / "o" / "values.csv")["label"]) == {"кот", "пёс", "лось"}
    with pytest.raises(cli.InputError, match="--encoding klingon: unknown encoding"):
        cli.read_table(path, "вид", encoding="klingon")
    with pytest.raises(cli.InputError, match="cannot decode it as ascii.*--encoding"):
        cli.read_table(path, "вид", encoding="ascii")


# --- .txt and compressed files ----------------------------------------------------------------------------------

COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".txt"])
@pytest.mark.parametrize("compression", ["", ".gz", ".bz2", ".xz", ".zip"])
def test_txt_and_compressed_text_files_are_sniffed(tmp_path, want, ext, compression):
    """Excel's tab-delimited "Text" (.txt), and ';'-separated decimal-comma files compressed any way pandas reads."""
    sep = "\t" if ext == ".tsv" else ";"
    data = _text(_frame(), sep, ",").encode("utf-8")
    path = tmp_path / f"d{ext}{compression}"
    if compression == ".zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(f"d{ext}", data)
    else:
        path.write_bytes(COMPRESS.get(compression, bytes)(data))
    _same(cli.read_table(path, "catégorie"), want)


def test_a_zip_of_two_files_is_refused_by_name(tmp_path):
    path = tmp_path / "d.csv.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", "x,y\n1,2\n")
        archive.writestr("b.csv", "x,y\n1,2\n")
    with pytest.raises(cli.InputError, match=r"exactly one file.*a\.csv.*b\.csv"):
        cli.read_table(path, "y")


# --- decimal commas, thousands separators -----------------------------------------------------------------------

def _write(tmp_path, header, rows, name="d.csv"):
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_decimal_comma_with_dot_thousands(tmp_path, caplog):
    """"1.000,5" is 1000.5; "49.130" beside a decimal-comma column is 49130 (found by review: the message blamed the
    decimal-comma column 'alpha')."""
    rows = [f"{i},{i + 10};{1 + i}.{7 * i:03d},5;{10 + i}.{130 + i};{i % 2}" for i in range(20)]
    path = _write(tmp_path, "alpha;money;population;target", rows)
    with caplog.at_level(logging.WARNING, logger="chg"):
        x, codes, classes, names = cli.read_table(path, "target")
    assert names == ["alpha", "money", "population"] and not caplog.records
    np.testing.assert_array_equal(x[:, 0], [float(f"{i}.{i + 10}") for i in range(20)])
    np.testing.assert_array_equal(x[:, 1], [(1 + i) * 1000 + 7 * i + 0.5 for i in range(20)])
    np.testing.assert_array_equal(x[:, 2], [(10 + i) * 1000 + 130 + i for i in range(20)])


def test_the_column_that_really_fails_is_named(tmp_path):
    rows = [f"0,{i};{10 + i}.130;n/a{i};{i % 2}" for i in range(20)]
    path = _write(tmp_path, "alpha;population;note;target", rows)
    with pytest.raises(cli.InputError, match=r"column 'note' is not numeric \(row 0: 'n/a0'\)") as exc:
        cli.read_table(path, "target")
    assert "also non-numeric" not in str(exc.value)


def test_ambiguous_thousands_are_read_with_a_warning_naming_the_column(tmp_path, caplog):
    """Alone in a ';' file, "49.130" is 49.13 and "50,130" is 50.13 (the file does not tell which separator groups
    thousands): read so, and a warning names the column."""
    path = _write(tmp_path, "age;population;target", [f"{20 + i};{40 + i}.130;{i % 2}" for i in range(20)])
    with caplog.at_level(logging.WARNING, logger="chg"):
        x = cli.read_table(path, "target")[0]
    np.testing.assert_array_equal(x[:, 1], [40.13 + i for i in range(20)])
    assert len(caplog.records) == 1 and "'population'" in caplog.text and "'40.130'" in caplog.text
    caplog.clear()
    path = _write(tmp_path, "age;income;target", [f"{20 + i};\"{50 + i},130\";{i % 2}" for i in range(20)])
    with caplog.at_level(logging.WARNING, logger="chg"):
        x = cli.read_table(path, "target")[0]
    np.testing.assert_allclose(x[:, 1], [50.13 + i for i in range(20)], rtol=1e-15)
    assert len(caplog.records) == 1 and "'income'" in caplog.text and "'50,130'" in caplog.text


def test_comma_thousands_beside_decimal_points_are_thousands(tmp_path, caplog):
    """A ';' file writing "0.35" (decimal point): its "1,037" is 1037, not 1.037."""
    path = _write(tmp_path, "alpha;income;target", [f"0.{i + 10};{1 + i},037;{i % 2}" for i in range(20)])
    with caplog.at_level(logging.WARNING, logger="chg"):
        x = cli.read_table(path, "target")[0]
    np.testing.assert_array_equal(x[:, 1], [(1 + i) * 1000 + 37 for i in range(20)])
    np.testing.assert_array_equal(x[:, 0], [float(f"0.{i + 10}") for i in range(20)])
    assert not caplog.records


def test_a_decimal_comma_is_read_exactly(tmp_path):
    """17 significant digits with a decimal comma read to the same doubles as with a point (pandas' thousands=
    would round some of them differently)."""
    x = np.random.default_rng(0).normal(size=(200, 2))
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": np.arange(200) % 2})
    frame.to_csv(tmp_path / "d.csv", sep=";", decimal=",", index=False, float_format="%.17g")
    np.testing.assert_array_equal(cli.read_table(tmp_path / "d.csv", "y")[0], x)


@pytest.mark.parametrize("space", [" ", "\u00a0", "\u202f", "\u2009"])
def test_space_grouped_thousands_and_a_unicode_minus_are_numbers(tmp_path, space):
    """What a French spreadsheet writes — "1 234,5" with a (no-break, narrow no-break, thin) space grouping thousands
    — and a minus sign U+2212 are numbers (they were "column 'income' is not numeric"); a text column beside them
    is still named."""
    rows = [f"{i + 1}{space}{234 + i:03d},5;\u2212{i},25;{i % 2}" for i in range(20)]
    path = _write(tmp_path, "income;delta;target", rows)
    x = cli.read_table(path, "target")[0]
    np.testing.assert_array_equal(x[:, 0], [(i + 1) * 1000 + 234 + i + 0.5 for i in range(20)])
    np.testing.assert_array_equal(x[:, 1], [-(i + 0.25) for i in range(20)])
    path = _write(tmp_path, "income,delta,target", [f"{i + 1}{space}234.5,\u2212{i}.5,{i % 2}" for i in range(20)])
    x = cli.read_table(path, "target")[0]  # a ',' file: the decimal point
    np.testing.assert_array_equal(x[:, 0], [(i + 1) * 1000 + 234.5 for i in range(20)])
    np.testing.assert_array_equal(x[:, 1], [-(i + 0.5) for i in range(20)])
    rows = [f"{i + 1}{space}234,5;n/a{i};{i % 2}" for i in range(20)]
    with pytest.raises(cli.InputError, match=r"column 'note' is not numeric \(row 0: 'n/a0'\)"):
        cli.read_table(_write(tmp_path, "income;note;target", rows), "target")
    rows = [f"{i + 1}{space}234,5;12{space}3{i % 10};{i % 2}" for i in range(20)]  # "12 30": no group of 3
    with pytest.raises(cli.InputError, match=r"column 'odd' is not numeric"):
        cli.read_table(_write(tmp_path, "income;odd;target", rows), "target")


# --- layout: "sep=" line, trailing separators, spaces ------------------------------------------------------------

def test_excel_sep_line_sets_the_separator(tmp_path, want):
    path = tmp_path / "d.csv"
    path.write_text("sep=;\n" + _text(_frame(), ";", ","), encoding="utf-8-sig")
    _same(cli.read_table(path, "catégorie"), want)


def test_a_separator_ending_every_line_adds_no_column(tmp_path, want):
    lines = _text(_frame(), ";", ",").splitlines()
    path = tmp_path / "d.csv"
    path.write_text("\n".join(r + ";" for r in lines) + "\n")
    _same(cli.read_table(path, "catégorie"), want)


def test_a_separator_ending_every_data_row_only_shifts_no_column(tmp_path, want, caplog):
    """(pandas would take the first column for the index: every name on its neighbour's values)"""
    lines = _text(_frame(), "\t", ",").splitlines()
    path = tmp_path / "d.tsv"
    path.write_text("\n".join([lines[0]] + [r + "\t" for r in lines[1:]]) + "\n")
    with caplog.at_level(logging.WARNING, logger="chg"):
        _same(cli.read_table(path, "catégorie"), want)
    assert not caplog.records
    path.write_text("\n".join([lines[0]] + [r + "\tlost" for r in lines[1:]]) + "\n")  # data past the names
    with caplog.at_level(logging.WARNING, logger="chg"):
        _same(cli.read_table(path, "catégorie"), want)
    assert "more fields than the header has names: the fields past the last name are left out" in caplog.text


def test_spaces_around_separators_and_names_are_dropped(tmp_path, want):
    lines = _text(_frame()).splitlines()
    path = tmp_path / "d.csv"
    path.write_text("\n".join([" " + lines[0].replace(",", " , ") + " "] + [r.replace(",", ", ") for r in lines[1:]]))
    _same(cli.read_table(path, "catégorie"), want)


# --- --drop and row numbers -------------------------------------------------------------------------------------

def test_drop_keeps_a_column_name_holding_a_comma(tmp_path, capsys):
    frame = _frame()
    frame.insert(0, "name, full", [f"Smith, J{i}" for i in range(N)])
    frame.insert(0, "id", [f"r{i}" for i in range(N)])
    path = tmp_path / "d.csv"
    frame.to_csv(path, index=False)
    for drop in (["id", "name, full"], ["id,name, full"], ["name, full,id"]):
        x, _, _, names = cli.read_table(path, "catégorie", drop)
        assert names == ["größe", "höhe", "count"], drop
    rc = cli.main(["value", str(path), "--label", "catégorie", "--drop", "id", "--drop", "name, full", "--out",
                   str(tmp_path / "o"), "--epochs", "1", "--quiet", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    with pytest.raises(cli.InputError, match=r'leave it out with --drop "name, full"'):
        cli.read_table(path, "catégorie", ["id"])
    with pytest.raises(cli.InputError, match=r"--drop 'id,nam': no column 'nam'"):
        cli.read_table(path, "catégorie", ["id,nam"])


def test_a_row_is_named_by_its_position_from_0_as_in_values_csv(tmp_path):
    """Every message naming a row says how rows are counted (0-based data rows, the header not counted)."""
    lines = _text(_frame()).splitlines()
    for k, (row, cells) in enumerate([(3, "1.5,,7,chat"), (4, "x1,2.5,7,chat"), (5, "1.5,2.5,7,")]):
        path = tmp_path / f"d{k}.csv"
        path.write_text("\n".join(lines[:row + 1] + [cells] + lines[row + 2:]) + "\n")
        with pytest.raises(cli.InputError) as exc:
            cli.read_table(path, "catégorie")
        assert f"row {row}" in str(exc.value) and "from 0, a header not counted, as values.csv" in str(exc.value)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_byte_order_mark_is_read(tmp_path, want, encoding):
    """UTF-16 without a mark (what some exporters write): every other byte of ASCII text is NUL — read as UTF-16,
    not as UTF-8 with NULs in every name (third reviewer)."""
    path = tmp_path / "d.csv"
    path.write_bytes(_text(_frame()).encode(encoding))
    _same(cli.read_table(path, "catégorie"), want)


def test_a_missing_label_among_garbled_names_points_to_encoding(tmp_path):
    """A Cyrillic cp1251 file is read as cp1252: the label is not found among mojibake names, and the message says
    to pass --encoding (it listed the garbled names only)."""
    path = tmp_path / "d.csv"
    path.write_bytes("вес,рост,класс\n1,2,a\n3,4,b\n".encode("cp1251"))
    with pytest.raises(cli.InputError, match="look garbled.*--encoding cp1251"):
        cli.read_table(path, "класс")


# ---- the label column read as given (a reviewer, 2026-12-07) -----------------------------------------------------
def test_label_codes_with_leading_zeros_stay_apart_and_numbers_still_sort_as_numbers(tmp_path):
    """"007", "7" and "070" were read as the numbers 7, 7 and 70: two classes, the first two merged, silently. A
    label column is now read as the text of its cells and made numbers only where no two labels read as the same
    number — so 1, 2, 10 still sort as numbers (and the continuous-target check still sees numbers)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 2)).round(3)
    codes = ["007", "7", "070"] * 4
    path = tmp_path / "codes.csv"
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "code": codes}).to_csv(path, index=False)
    got = cli.read_table(path, "code")
    assert got[2] == ["007", "070", "7"] and np.bincount(got[1]).tolist() == [4, 4, 4]
    assert [got[2][c] for c in got[1][:3]] == ["007", "7", "070"]
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "code": [1, 2, 10] * 4}).to_csv(path, index=False)
    got = cli.read_table(path, "code")
    assert got[2] == [1, 2, 10] and all(isinstance(c, (int, np.integer)) for c in got[2])


def test_spaces_around_a_label_cell_are_dropped(tmp_path):
    """"cat " and " cat" were two classes beside "cat" (only the space after a separator was dropped)."""
    rng = np.random.default_rng(1)
    path = tmp_path / "t.csv"
    labels = ["cat", "cat ", " dog", "dog", "eel", "eel  "] * 3
    lines = ["a,b,lab"] + [f"{u:.3f},{v:.3f},{w}" for (u, v), w in zip(rng.normal(size=(18, 2)), labels)]
    path.write_text("\n".join(lines) + "\n")
    got = cli.read_table(path, "lab")
    assert got[2] == ["cat", "dog", "eel"] and np.bincount(got[1]).tolist() == [6, 6, 6]


@pytest.mark.parametrize("word", ["None", "NA", "null"])
def test_a_class_named_as_pandas_missing_words_is_a_class_with_a_warning_and_an_empty_cell_is_missing(
        tmp_path, word, caplog):
    """A class "None" (severity) or "NA" (North America) was "row 0 has no label", with no way to keep it. It is a
    class now, with a warning that names the word; an empty label cell is still a missing label, named by its row."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(9, 2)).round(3)
    path = tmp_path / "r.csv"
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "region": [word, "EU", "APAC"] * 3}).to_csv(path, index=False)
    with caplog.at_level(logging.WARNING, logger="chg"):
        got = cli.read_table(path, "region")
    assert sorted(got[2]) == sorted([word, "EU", "APAC"]) and np.bincount(got[1]).tolist() == [3, 3, 3]
    assert f"3 row(s) hold {word!r}, taken as a class" in caplog.text
    lines = path.read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ","  # data row 4: an empty label
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(cli.InputError, match="row 4 has no label"):
        cli.read_table(path, "region")


def test_drop_of_nothing_is_refused_and_a_saved_index_used_as_a_feature_is_named(tmp_path, caplog):
    """--drop "" was accepted and dropped nothing, and a spreadsheet's saved index (a column without a header name,
    0..n-1) went in as a feature with no notice. Now --drop "" is an error naming the columns and what the unnamed
    one is called, and a row-counting unnamed column used as a feature is a warning saying how to drop it."""
    rng = np.random.default_rng(3)
    path = tmp_path / "c1.csv"
    pd.DataFrame({"sl": rng.normal(size=12).round(3), "species": ["a", "b", "c"] * 4}).to_csv(path)  # index saved
    for empty in ("", " ", ","):
        with pytest.raises(cli.InputError, match=r"--drop .* names no column.*called 'Unnamed: 0': --drop "
                                                 r"\"Unnamed: 0\""):
            cli.read_table(path, "species", drop=[empty])
    with caplog.at_level(logging.WARNING, logger="chg"):
        got = cli.read_table(path, "species")
    assert got[3] == ["Unnamed: 0", "sl"] and "counts the rows (a saved index?)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="chg"):
        got = cli.read_table(path, "species", drop=["Unnamed: 0"])
    assert got[3] == ["sl"] and "saved index" not in caplog.text


def test_one_number_written_two_ways_is_one_class_and_a_header_name_given_twice_is_refused(tmp_path):
    """(a reviewer of the day's fixes) "1" beside "1.0" — two exports concatenated — became two classes once the
    label column was read as text (before: one); codes with a leading zero ("007" beside "7") stay apart. A header
    naming two columns "y" was read as y and a feature "y.1", silently; it is refused like names equal up to spaces."""
    rng = np.random.default_rng(4)
    path = tmp_path / "f.csv"
    labels = ["0", "1", "0.0", "1.0"] * 5
    lines = ["a,y"] + [f"{v:.3f},{w}" for v, w in zip(rng.normal(size=20), labels)]
    path.write_text("\n".join(lines) + "\n")
    got = cli.read_table(path, "y")
    assert got[2] == [0, 1] and np.bincount(got[1]).tolist() == [10, 10]
    path.write_text("y,a,b,y\n" + "".join(f"{i % 2},{i},{i / 3:.2f},{i % 3}\n" for i in range(9)))
    with pytest.raises(cli.InputError, match=r"the column names \['y'\] occur more than once in the header"):
        cli.read_table(path, "y")
