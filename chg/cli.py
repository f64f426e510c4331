"""Command-line entry points: ``python -m chg --help`` (or the installed ``chg`` script).

``chg value DATA --label COLUMN --out DIR`` values every row of your own table: it standardises the numeric feature
columns, trains a logistic regression or an MLP with Algorithm 1 (:func:`chg.value_data`) and writes

- ``DIR/values.csv``: one line per input row, in input order: ``row`` (0-based position), ``label`` (as given),
  ``value`` (CHG Shapley value averaged over the epochs; higher = better), ``rank`` (1 = lowest value = most
  suspect), ``loss`` (the row's loss — cross-entropy, with ``--weight`` and ``--label-smoothing`` if given — under
  the final model);
- ``DIR/report.png`` and ``DIR/report.pdf``: value histogram, the lowest-valued rows, loss vs value
  (:class:`chg.report.ValuationReport`), plus the lowest-valued images when an ``.npz`` holds images;
- ``DIR/values.npz``: the whole :class:`chg.Values` (each epoch's values, the labels), read back exactly by
  ``chg.Values.load`` — what ``value_data`` returns in Python;
- ``DIR/classes.json``: the label → class-index mapping and the class sizes; ``DIR/summary.json``: the settings.
  The files are written in a staging folder inside DIR and moved in together, summary.json last: DIR holds one
  run's complete set exactly when it has a summary.json (a rerun replaces the set, with a warning; an error or
  Ctrl-C while writing leaves the previous set as it was).

What it reads (:func:`read_table`): ``.csv``, ``.tsv`` and ``.txt`` (also compressed: ``.gz``, ``.bz2``, ``.xz``,
``.zip`` of one file, ``.zst``), ``.parquet``, and ``.npz`` with arrays ``x`` and ``y``. A text file's encoding is
told by its byte-order mark (UTF-8, UTF-16, UTF-32: Excel's "Unicode Text"), else it is UTF-8, or cp1252 (Excel's
plain "CSV" on Windows; a superset of latin-1's printable characters) when it is not valid UTF-8; ``--encoding``
overrides this. The separator is that of Excel's ``sep=X`` first line, tab for ``.tsv``, else sniffed among ``,``
``;`` tab ``|``. Spaces after a separator and around header names are dropped, and a separator ending every line
adds no column. In a ``;``, tab or ``|`` file a decimal comma is read (``1,5``, ``1.000,5``); a number whose
separator could group thousands (``49.130``, ``12,345``) follows the file's other numbers (``49.130`` is 49130 in
a file that writes ``0,19``, ``12,345`` is 12345 in one that writes ``0.35``) and, when they do not tell, is read
with that separator as the decimal one (49.13, 12.345), with a warning naming the column. Thousands grouped by a
space (also no-break, narrow no-break or thin: ``1 234,5``) and a minus sign U+2212 (``−0,5``) are read too.

The loss trained on and valued takes ``--weight`` (class weights, as ``weight=`` of
``torch.nn.functional.cross_entropy``: one number per class, in class-index order — that of ``classes.json``, the
labels sorted, numbers by value and text as text — or by label, ``--weight cat=1,dog=5``) and ``--label-smoothing
S`` (its ``label_smoothing=``), as :func:`chg.value_data` does. ``--drop`` may be repeated; a name holding a comma is
kept whole (``--drop "name, full"``), other commas separate names.

Bad input (a missing column, a non-numeric feature column, NaN/Inf in a row, one class only, an empty file, a bad
``--weight``) stops with a message naming the column or row and exit status 2; a row is named by its position from
0 below the header, as in ``values.csv``. ``chg demo`` checks Theorem 1's closed form against
exhaustive enumeration. The paper's tables and figures are made by the repository's ``reproduce/`` scripts, not by
this command (an installed ``chg`` knows no repository folder).
"""
from __future__ import annotations

import argparse
import codecs
import re
import sys
import time
from pathlib import Path

TEXT_FORMATS = (".csv", ".tsv", ".txt")  # delimited text, also compressed (d.csv.gz: any of COMPRESSIONS)
COMPRESSIONS = (".gz", ".bz2", ".zip", ".xz", ".zst")
FORMATS = (*TEXT_FORMATS, ".parquet", ".npz")
SEPARATORS = (",", ";", "\t", "|")  # what spreadsheets write; sniffed from the first 64 KiB
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # UTF-32-LE's FF FE 00 00 before FF FE
GROUPED = {".": r"[+-]?[1-9]\d{0,2}(\.\d{3})+(,\d*)?", ",": r"[+-]?[1-9]\d{0,2}(,\d{3})+"}  # 1.234.567,8 / 12,345
ROWS = "(row numbers count the data rows from 0, a header not counted, as values.csv's row column does)"


def _demo(args) -> int:
    """Closed form vs exhaustive enumeration on random rational instances."""
    import random
    from fractions import Fraction

    from .games import chg_utility, exact_shapley
    from .shapley import chg_shapley
    rng = random.Random(args.seed)
    for n in range(1, args.n + 1):
        x = [[Fraction(rng.randint(-9, 9), rng.randint(1, 4)) for _ in range(3)] for _ in range(n)]
        alpha = [Fraction(rng.randint(-9, 9), rng.randint(1, 4)) for _ in range(3)]
        oracle = [float(v) for v in exact_shapley(chg_utility(x, alpha), n)]
        closed = chg_shapley([[float(v) for v in r] for r in x], [float(v) for v in alpha])
        err = max(abs(a - b) for a, b in zip(closed, oracle))
        print(f"n={n:2d}  max |closed form − enumeration| = {err:.2e}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# chg value: a user's own table

class InputError(ValueError):
    """The user's data cannot be valued as given; the message names the column or row (exit status 2)."""


def _suffix(path: Path) -> str:
    """The format: ``.csv`` for ``d.csv`` and for ``d.csv.gz`` (a text suffix, then one of COMPRESSIONS)."""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) > 1 and suffixes[-1] in COMPRESSIONS and suffixes[-2] in TEXT_FORMATS:
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def _head(path: Path, size: int = 1 << 16) -> bytes:
    """The first ``size`` bytes of a text file, decompressed (.gz, .bz2, .xz, .zip of one file, .zst)."""
    import bz2
    import gzip
    import lzma
    import zipfile
    ext = path.suffix.lower()
    try:
        if ext == ".zip":
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise InputError(f"{path}: a .zip must hold exactly one file; this one holds {names}")
                with archive.open(names[0]) as handle:
                    return handle.read(size)
        if ext == ".zst":
            try:
                import zstandard
            except ImportError:
                raise InputError(f"{path}: reading .zst needs the zstandard package (pip install zstandard); or "
                                 f"decompress the file first") from None
            with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as handle:
                return handle.read(size)
        opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(ext, open)
        with opener(path, "rb") as handle:
            return handle.read(size)
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: cannot read it: {exc}") from None


def _dialect(path: Path, kind: str, encoding: str | None) -> tuple[str, str, int]:
    """``(separator, encoding, lines to skip)`` of a delimited text file, from its first 64 KiB (decompressed).

    The encoding: ``encoding`` if given; else the one a byte-order mark names (UTF-8, UTF-16, UTF-32); else UTF-16
    when most odd (or even) bytes are NUL (mostly ASCII text in UTF-16 without a mark); else UTF-8 if
    the sample is valid UTF-8 (:func:`_read_delimited` falls back to cp1252 should a later byte not be), else cp1252.
    The separator: that of an Excel ``sep=X`` first line (the line is then skipped); tab for .tsv; else sniffed
    (csv.Sniffer) among SEPARATORS, ',' when the sample is one column or ambiguous."""
    import csv
    import re
    head = _head(path)
    if encoding is None:
        encoding = next((name for bom, name in BOMS if head.startswith(bom)), None)
    if encoding is None and len(head) >= 4:  # UTF-16 without a byte-order mark: text of ASCII, a NUL byte each
        even, odd = head[0::2].count(0), head[1::2].count(0)
        if max(even, odd) > 0.4 * (len(head) // 2) and min(even, odd) == 0:
            encoding = "utf-16-le" if odd > even else "utf-16-be"
    if encoding is None:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # (a character cut at 64 KiB is fine)
            encoding = "utf-8"
        except UnicodeDecodeError:
            encoding = "cp1252"
    try:
        sample = head.decode(encoding, errors="replace").lstrip("\ufeff")
    except LookupError:
        raise InputError(f"--encoding {encoding}: unknown encoding; give one Python knows (utf-8, cp1252, latin-1, "
                         f"utf-16, ...)") from None
    lines = sample.splitlines()
    hint = re.fullmatch(r"sep=(.)\1*", lines[0]) if lines else None  # Excel's "sep=;" line
    if hint:
        return hint.group(1), encoding, 1
    if kind == ".tsv":
        return "\t", encoding, 0
    sample = "\n".join(lines[:-1] if len(lines) > 1 and not sample.endswith("\n") else lines)  # no cut last line
    try:
        sep = csv.Sniffer().sniff(sample, delimiters="".join(SEPARATORS)).delimiter
    except csv.Error:
        return ",", encoding, 0
    return (sep if sep in SEPARATORS else ","), encoding, 0


def _read_delimited(path: Path, kind: str, encoding: str | None = None, label: str | None = None):
    """A .csv / .tsv / .txt file (compressed or not) as a DataFrame: encoding and separator as :func:`_dialect`
    finds them, quoted fields as the csv module reads them, spaces after a separator and around header names dropped,
    all-empty unnamed columns (from a separator ending every line) dropped; with ';', tab or '|' as the separator,
    decimal commas read as :func:`_decimal_comma` says."""
    import warnings

    import pandas as pd

    from .progress import get_logger
    sep, enc, skip = _dialect(path, kind, encoding)

    def read(enc, **options):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = pd.read_csv(path, sep=sep, encoding=enc, skiprows=skip, skipinitialspace=True, index_col=False,
                                **options)  # (index_col=False: a separator ending each data row shifts no column)
        for w in caught:
            if issubclass(w.category, pd.errors.ParserWarning) and "Length of header" in str(w.message):
                if not options:  # (once, not for each reading again)
                    get_logger("cli").warning(f"{path}: some data rows have more fields than the header has names: "
                                              f"the fields past the last name are left out")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        empty = [c for c in frame.columns if str(c).startswith("Unnamed: ") and frame[c].isna().all()]
        frame = frame.drop(columns=empty)
        frame.columns = [str(c).strip() for c in frame.columns]
        return frame
    try:
        try:
            frame = read(enc)
        except UnicodeDecodeError:
            if encoding is not None or enc != "utf-8":
                raise
            enc = "cp1252"  # UTF-8 for 64 KiB, then not: a Windows export with a late accent
            frame = read(enc)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: cannot decode it as {enc} ({exc}); give the file's encoding with --encoding "
                         f"(e.g. --encoding latin-1)") from None
    if enc not in ("utf-8", "utf-8-sig") and encoding is None:
        get_logger("cli").info(f"{path}: read as {enc}")
    header = _header(path, sep, enc, skip)  # the names as written (pandas renames a second "y" to "y.1")
    named = [c for c in header if c]
    twice = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1} | {c for c in named
                                                                                      if named.count(c) > 1})
    if twice:
        raise InputError(f"{path}: the column names {twice} occur more than once in the header (spaces around a name "
                         f"not counted): the data cannot say which is meant; "
                         f"rename them")
    if sep != ",":
        frame = _decimal_comma(path, frame, lambda **options: read(enc, **options))
    frame = _spaced_numbers(frame, sep)
    text = None if label not in frame.columns or label not in header else \
        _label_text(path, sep, enc, skip, header.index(label), len(frame))
    if text is not None:
        frame[label] = text.to_numpy(dtype=object)
    return frame


def _header(path: Path, sep: str, enc: str, skip: int) -> list:
    """The header line's names as written, spaces around them dropped ("" for a column without a name)."""
    import warnings

    import pandas as pd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = pd.read_csv(path, sep=sep, encoding=enc, skiprows=skip, header=None, nrows=1, dtype=str,
                           keep_default_na=False, skipinitialspace=True, index_col=False)
    return [str(v).strip() for v in head.iloc[0].tolist()] if len(head) else []


def _label_text(path: Path, sep: str, enc: str, skip: int, position: int, rows: int):
    """The label column (the header's ``position``-th) as the text of its cells (only an empty cell is missing):
    "007" stays "007" beside "7", a class named "None" or "NA" stays a class — read apart from the features, which
    keep pandas' reading. None when the rows do not line up with ``rows`` (the caller keeps its own)."""
    import warnings

    import pandas as pd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the first reading said what there was to say)
        col = pd.read_csv(path, sep=sep, encoding=enc, skiprows=skip, skipinitialspace=True, index_col=False,
                          usecols=[position], dtype=str, keep_default_na=False, na_values=[""]).iloc[:, 0]
    return col if len(col) == rows else None


def _label_values(col, what: str):
    """A label column as the classes it names: text cells stripped of surrounding spaces ("cat " is "cat"), an empty
    cell missing; then numbers when every label reads as one, unless an integer code with a leading zero reads as
    the number of another label — so 1, 2, 10 sort as numbers, "1" beside "1.0" (one number written two ways) is one
    class, and "007" beside "7" stay two classes, as given. A text pandas reads as missing elsewhere ("NA", "None",
    "null") is a class here, with a warning naming it.

    Args:
        col: the column (a pandas Series). what: its name, for the warning.
    Returns:
        a NumPy array: numbers, or text (object) with None where a cell is empty.
    """
    import numpy as np
    import pandas as pd
    from pandas._libs.parsers import STR_NA_VALUES

    from .progress import get_logger
    if not (pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col)):
        return col.to_numpy()
    cells = col.map(lambda v: v.strip() if isinstance(v, str) else v)
    cells = cells.where(~cells.isin([""]), None)
    words = sorted({v for v in cells.dropna().unique() if isinstance(v, str) and v in STR_NA_VALUES})
    if words:
        rows = int(cells.isin(words).sum())
        get_logger("cli").warning(f"{what}: {rows} row(s) hold {', '.join(map(repr, words))}, taken as a class "
                                  "(a label, not a missing one); if they mean \"no label\", drop those rows")
    given = cells.dropna()
    numbers = pd.to_numeric(given, errors="coerce") if len(given) else given
    if len(given) and not numbers.isna().any() and not words:
        pairs = pd.DataFrame({"text": given.to_numpy(), "number": numbers.to_numpy()}).drop_duplicates()
        shared = pairs[pairs["number"].duplicated(keep=False)]["text"]  # texts of a number written two ways
        codes = shared.str.fullmatch(r"[+-]?0\d+").any()  # "007" beside "7": codes (1 and 1.0: one number)
        if not codes:  # the numbers name the classes
            out = pd.to_numeric(cells, errors="coerce")
            if np.all(np.mod(out.dropna().to_numpy(), 1) == 0) and out.notna().all():
                return out.to_numpy().astype(np.int64)
            return out.to_numpy()
    return cells.to_numpy(dtype=object)


_SPACE_GROUP = re.compile(r"(?<=\d)[ \u00a0\u202f\u2009](?=\d{3}(?!\d))")  # "1 234", "1\u202f234,5"
_SPACED_NUMBER = re.compile(r"[+-]?(\d+|\d{1,3}([ \u00a0\u202f\u2009]\d{3})+)([.,]\d*)?([eE][+-]?\d+)?")


def _spaced_numbers(frame, sep: str):
    """``frame`` with the text columns that hold numbers as a French or Unicode-minded spreadsheet writes them read
    as numbers: thousands grouped by a space, a no-break space (U+00A0), a narrow no-break space (U+202F) or a thin
    space (U+2009) — ``1 234,5`` — and a minus sign U+2212 (``−0,5``); the decimal separator a comma in a ';', tab or
    '|' file (a '.' in a ',' file). A column changes only when every one of its cells reads so and one of them is
    written that way; any other text column is left as it is (the caller names it as not numeric)."""
    import pandas as pd
    for c in frame.columns:
        col = frame[c]
        if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            continue
        cells = col.dropna().astype(str).str.strip().str.replace("\u2212", "-", regex=False)
        if len(cells) == 0 or not cells.str.fullmatch(_SPACED_NUMBER).all():
            continue
        plain = cells.str.replace(_SPACE_GROUP, "", regex=True)
        if sep != ",":
            if plain.str.contains(".", regex=False).any():
                continue  # '.' beside a decimal comma: not a form this reads
            plain = plain.str.replace(",", ".", regex=False)
        elif plain.str.contains(",", regex=False).any():
            continue  # a quoted decimal comma in a ',' file: ambiguous, left to the caller's message
        if plain.equals(col.dropna().astype(str).str.strip()):
            continue  # nothing written the spreadsheet way: not this reader's column
        values = pd.to_numeric(plain, errors="coerce")
        if values.isna().any():
            continue
        frame[c] = values.reindex(col.index)  # missing cells stay missing (NaN: the caller names their rows)
    return frame


def _decimal_comma(path: Path, frame, read):
    """``frame``, a ';', tab or '|' separated file read with a decimal point, with the columns written with a
    decimal comma read as such (pandas' ``decimal=","``, ``thousands="."``).

    A text column is read with a decimal comma when that makes it numeric and each of its values with a '.' has '.'
    grouping thousands ("1.000,5"). A column whose separators could all group thousands ("49.130", or "12,345" with
    no '.') follows the file's unambiguous numbers: in a file that writes "0,19", "49.130" is 49130; in one that
    writes "0.35", "12,345" is 12345. Otherwise (no unambiguous numbers, or both kinds) "49.130" is 49.13 and
    "12,345" is 12.345, with a warning naming the column. ``read(**options)`` reads the file again with the same
    settings and ``options``."""
    import functools

    import pandas as pd
    numeric = pd.api.types.is_numeric_dtype
    if all(numeric(frame[c]) and not pd.api.types.is_float_dtype(frame[c]) for c in frame.columns):
        return frame  # integers and booleans only: no decimal separator anywhere
    raw = read(dtype=str)
    cells = {c: raw[c].dropna().str.strip() for c in frame.columns}
    dots = {c: v[v.str.contains(".", regex=False)] for c, v in cells.items()}
    commas = {c: v[v.str.contains(",", regex=False)] for c, v in cells.items()}
    dot_grouped = {c: len(dots[c]) > 0 and bool(dots[c].str.fullmatch(GROUPED["."]).all()) for c in cells}
    comma_grouped = {c: len(commas[c]) > 0 and len(dots[c]) == 0 and bool(commas[c].str.fullmatch(GROUPED[","]).all())
                     for c in cells}
    reread = functools.cache(read)  # each reading once, only if needed (with thousands= pandas rounds less exactly)
    comma = {}  # column → its reading with a decimal comma
    for c in frame.columns:
        if numeric(frame[c]):
            continue
        if len(dots[c]) == 0 and numeric(reread(decimal=",")[c]):
            comma[c] = reread(decimal=",")[c]
        elif dot_grouped[c] and numeric(reread(decimal=",", thousands=".")[c]):  # "1.000,5"
            comma[c] = reread(decimal=",", thousands=".")[c]
    file_comma = any(not comma_grouped[c] for c in comma)  # "0,19", "1.000,5"
    file_point = any(numeric(frame[c]) and len(dots[c]) and not dot_grouped[c] for c in frame.columns)  # "0.35"
    for c, values in comma.items():
        if comma_grouped[c] and file_point and not file_comma:  # the file writes decimal points: ',' groups thousands
            frame[c] = reread(thousands=",")[c]
            continue
        frame[c] = values
        if comma_grouped[c] and not (file_comma and not file_point):
            _ambiguous(path, c, commas[c], frame[c], ",")
    for c in frame.columns:
        if c in comma or not numeric(frame[c]) or not dot_grouped[c]:
            continue
        if file_comma and not file_point:  # the file writes decimal commas: '.' groups thousands
            frame[c] = reread(decimal=",", thousands=".")[c]
        else:
            _ambiguous(path, c, dots[c], frame[c], ".")
    return frame


def _ambiguous(path: Path, column: str, cells, values, sep: str) -> None:
    """Warn that ``column``'s numbers (``cells`` as written, ``values`` as read) were read with ``sep`` as the decimal
    separator, though it may group thousands."""
    from .progress import get_logger
    cell = cells.iloc[0]
    get_logger("cli").warning(
        f"{path}: column {column!r} holds numbers like {cell!r} only, where {sep!r} may group thousands or be the "
        f"decimal separator, and the file's other numbers do not tell: read {cell!r} as {values[cells.index[0]]}; "
        f"if {sep!r} groups thousands there, remove those {'dots' if sep == '.' else 'commas'} from the file")


def _drop_columns(items, columns: list, path: Path) -> list:
    """The columns ``--drop`` names: each item a column's name, or names separated by commas; a piece that is no
    column's name joins the next ("id,name, full" names ``id`` and ``name, full`` when that is a column)."""
    names = []
    for item in items:
        if not item.replace(",", "").strip():  # --drop "" names nothing: say which names there are
            unnamed = [c for c in columns if c.startswith("Unnamed: ")]
            raise InputError(f"{path}: --drop {item!r} names no column; the columns are {columns}"
                             + (f" (a column without a header name is called {unnamed[0]!r}: --drop "
                                f"{_arg(unnamed[0])})" if unnamed else ""))
        if item.strip() in columns:
            names.append(item.strip())
            continue
        pieces, i = item.split(","), 0
        while i < len(pieces):
            j = next((j for j in range(i + 1, len(pieces) + 1) if ",".join(pieces[i:j]).strip() in columns), None)
            if j is None and pieces[i].strip():
                raise InputError(f"{path}: --drop {item!r}: no column {pieces[i].strip()!r}; the columns are "
                                 f"{columns}")
            if j is not None:
                names.append(",".join(pieces[i:j]).strip())
            i = i + 1 if j is None else j
    return names


def _arg(name: str) -> str:
    """A column name as a shell argument: quoted when it holds spaces, commas or other signs."""
    import re
    return name if re.fullmatch(r"[\w.+-]+", name) else '"' + name.replace('"', '\\"') + '"'


def read_table(path, label: str | None, drop=(), encoding: str | None = None):
    """Read ``path`` into features and labels: a .csv, .tsv or .txt file (also compressed: .gz, .bz2, .xz, .zip,
    .zst), a .parquet, or an .npz with arrays ``x`` and ``y``.

    A text file's encoding is ``encoding`` if given; else the one its byte-order mark names (UTF-8, UTF-16,
    UTF-32); else UTF-8, or cp1252 (Windows' "ANSI", a superset of latin-1's printable characters) when it is not
    valid UTF-8. Its separator is that of an Excel ``sep=X`` first line, tab for .tsv, else sniffed among ``,``
    ``;`` tab ``|``. Quoted fields, blank lines, spaces after a separator and around header names are handled, and
    a separator ending every line adds no column. With ``;``, tab or ``|`` as the separator, a decimal comma is
    read: ``1,5`` and ``1.000,5`` (then ``49.130`` in a column of '.'-grouped numbers is 49130); without a decimal
    comma in the file ``49.130`` is 49.13, and a column of only such numbers gets a warning naming it, as does a
    column of only ``12,345``-like numbers read with a decimal comma (12.345). Thousands grouped by a space (also a
    no-break, narrow no-break or thin space: ``1 234,5``) and a minus sign U+2212 are read (:func:`_spaced_numbers`).

    Args:
        path: the data file.
        label: the label column (text/Parquet; required) or the npz array holding the labels (default ``y``).
        drop: columns to leave out of the features (ids, names, free text): each item a column's name, or names
            separated by commas (a piece that is no column's name joins the next: ``"id,name, full"`` names ``id``
            and ``name, full`` when that is a column).
        encoding: a text file's encoding (any Python codec name), overriding the detection.

    Returns:
        ``(x, codes, classes, feature_names)``: ``x`` float64 (n, d) (npz images keep their shape (n, ...));
        ``codes`` int64 (n,) class indices 0..C-1; ``classes`` the original label of each class index, sorted
        (numbers by value, text as text); ``feature_names`` list of d names.

    Raises:
        InputError: unreadable, undecodable or empty file, unknown format or encoding, missing column, non-numeric
            feature column, NaN/Inf in a row's features, a missing label, fewer than two classes (a row is named by
            its 0-based position below the header, as values.csv's ``row``).
    """
    import numpy as np
    import pandas as pd
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    kind = _suffix(path)
    if kind not in FORMATS:
        raise InputError(f"{path}: unknown format {kind or '(no suffix)'}; give a {', '.join(FORMATS)} file (text "
                         f"also compressed: {', '.join(COMPRESSIONS)})")
    if encoding is not None and kind not in TEXT_FORMATS:
        raise InputError(f"--encoding applies to text files ({', '.join(TEXT_FORMATS)}), not to {kind}")
    if kind == ".npz":
        return _read_npz(path, label or "y", drop)
    if label is None:
        raise InputError("--label COLUMN is required for a text or Parquet file: name the column holding the "
                         "labels")
    try:
        frame = _read_delimited(path, kind, encoding, label) if kind in TEXT_FORMATS else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError, ImportError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: cannot read it as {kind[1:]}: {exc}") from None
    if len(frame) == 0:
        raise InputError(f"{path}: no data rows (only a header)")
    frame = frame.reset_index(drop=True)  # rows are named by position (a Parquet file may carry its own index)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if label not in columns:
        garbled = kind in TEXT_FORMATS and any(not c.isascii() or "\x00" in c for c in columns)
        raise InputError(f"{path}: no column {label!r}; the columns are {columns}" + (
            " (if these names look garbled, the file is in another encoding than the one read: pass --encoding, "
            "e.g. --encoding cp1251 for Cyrillic, --encoding utf-16 for UTF-16 without a byte-order mark)"
            if garbled else ""))
    dropped = set(_drop_columns(drop, columns, path))
    features = [c for c in columns if c != label and c not in dropped]
    if not features:
        raise InputError(f"{path}: no feature columns left besides the label {label!r}")
    for c in features:  # TRUE/FALSE with an empty cell: pandas leaves an object column; 1/0 and the cell missing
        col = frame[c]
        if pd.api.types.is_object_dtype(col) and col.isna().any() and col.notna().any() and \
                all(isinstance(v, (bool, np.bool_)) for v in col.dropna()):
            frame[c] = col.map(lambda v: float(v) if isinstance(v, (bool, np.bool_)) else np.nan)
    bad = [c for c in features if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))]
    if bad:
        c = bad[0]
        example = frame[c][pd.to_numeric(frame[c], errors="coerce").isna() & frame[c].notna()]
        what = f" (row {example.index[0]}: {example.iloc[0]!r})" if len(example) else ""
        raise InputError(f"{path}: column {c!r} is not numeric{what}; features must be numbers — encode it, or "
                         f"leave it out with --drop {_arg(c)}" + (f" (also non-numeric: {bad[1:]})" if bad[1:] else "")
                         + (f" {ROWS}" if what else ""))
    x = frame[features].to_numpy(dtype=np.float64, na_value=np.nan)  # (n, d); nullable NA → NaN, refused below
    for j, c in enumerate(features):  # a saved index (pandas' to_csv writes one): the row number as a feature
        if c.startswith("Unnamed: ") and len(x) > 2 and any(np.array_equal(x[:, j], np.arange(k, k + len(x)))
                                                            for k in (0, 1)):
            from .progress import get_logger
            get_logger("cli").warning(f"{path}: column {c!r} has no header name and counts the rows (a saved "
                                      f"index?); it is used as a feature — leave it out with --drop {_arg(c)}")
    codes, classes = _classes(_label_values(frame[label], f"label column {label!r}"), f"label column {label!r}")
    check_finite(x, features)
    return x, codes, classes, features


def _read_npz(path: Path, label: str, drop):
    import numpy as np
    if drop:
        raise InputError("--drop applies to CSV and Parquet columns, not to .npz arrays")
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read it as .npz: {exc}") from None
    for name in ("x", label):
        if name not in arrays.files:
            raise InputError(f"{path}: no array {name!r}; the arrays are {arrays.files} (need x and {label})")
    try:
        x, y = arrays["x"], arrays[label]
    except ValueError as exc:  # e.g. an object array, which would need pickle
        raise InputError(f"{path}: cannot read arrays x and {label}: {exc}") from None
    if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise InputError(f"{path}: x must be (n, features...) and {label} (n,), got {x.shape} and {y.shape}")
    if x.shape[0] == 0:
        raise InputError(f"{path}: no rows (x has shape {x.shape})")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise InputError(f"{path}: x must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64)
    names = [f"x[{j}]" for j in range(int(np.prod(x.shape[1:])))]
    codes, classes = _classes(y, f"array {label!r}")
    check_finite(x.reshape(len(x), -1), names)
    return x, codes, classes, names


def _classes(y, what: str):
    import numpy as np
    import pandas as pd
    missing = np.flatnonzero(pd.isna(y))
    if missing.size:
        raise InputError(f"{what}: row {missing[0]} has no label ({missing.size} rows without one; first "
                         f"{missing[:10].tolist()}); drop those rows or give them a label {ROWS}")
    try:
        codes, classes = pd.factorize(y, sort=True)
    except TypeError:  # labels of mixed types that cannot be ordered: keep the order of first appearance
        codes, classes = pd.factorize(y, sort=False)
    if len(classes) < 2:
        raise InputError(f"{what}: every row has the label {_plain(classes[0])!r}; valuing needs at least two "
                         "classes")
    sizes = np.bincount(codes)
    numeric = pd.api.types.is_numeric_dtype(pd.Series(list(classes)))  # (text labels are categories whatever)
    if numeric and len(classes) >= 10 and (sizes[codes] <= 2).mean() > 0.5:  # most rows alone or in pairs
        raise InputError(f"{what}: {len(classes)} distinct labels among {len(codes)} rows, and most rows share their "
                         f"numeric label with at most one other: this looks like a continuous target, not classes. CHG "
                         f"Shapley values classification data: give the class column with --label, or bin the "
                         f"target into classes first")
    return codes.astype(np.int64), list(classes)


def check_finite(x, names) -> None:
    import numpy as np
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        r = int(rows[0])
        c = int(np.flatnonzero(bad[r])[0])
        raise InputError(f"row {r}, column {names[c]!r}: {x[r, c]} (NaN, empty or infinite); {rows.size} rows "
                         f"have missing or infinite features (first rows {rows[:10].tolist()}): fill or drop them "
                         f"{ROWS}")


def _model(kind: str, d: int, num_classes: int, hidden: int):
    """A logistic regression (one Linear) or an MLP (two hidden ReLU layers of ``hidden``, then the output Linear)."""
    from torch import nn
    if kind == "logreg":
        return nn.Linear(d, num_classes)
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def _value(args) -> int:
    import shutil

    import numpy as np
    import torch
    from sklearn.preprocessing import StandardScaler

    from . import __version__
    from .lastlayer import loss_and_error
    from .progress import get_logger
    from .report import ValuationReport
    from .io import CheckpointError, write_json_atomic
    from .loop import value_data
    from .values import Values

    log = get_logger("cli")
    for name in ("epochs", "batch_size", "hidden"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.lr > 0:
        raise InputError(f"--lr must be > 0, got {args.lr}")
    if not 0.0 <= args.label_smoothing <= 1.0:
        raise InputError(f"--label-smoothing must lie in [0, 1] (as in torch's cross_entropy), got "
                         f"{args.label_smoothing}")
    x, codes, classes, features = read_table(args.data, args.label, args.drop, args.encoding)
    n, C = len(codes), len(classes)
    weight = None if args.weight is None else class_weights(args.weight, classes)
    images = x if x.ndim >= 3 else None
    raw = x.reshape(n, -1)
    with np.errstate(over="ignore", invalid="ignore"):  # (a column too large to square: named below)
        flat = StandardScaler().fit_transform(raw).astype(np.float32)  # (n, d), zero mean, unit variance
    const = raw.min(0) == raw.max(0)  # a constant column carries nothing: exactly 0 (the scaler's mean of 1e30s is
    flat[:, const] = 0.0  # not exact, and left ~1e14 in it)
    wild = np.flatnonzero(~np.isfinite(flat).all(0)).tolist()  # finite input, non-finite scaled: an overflow
    if wild:
        names = [features[j] if j < len(features) else f"x[{j}]" for j in wild]
        top = float(np.abs(raw[:, wild[0]]).max())
        raise InputError(f"{args.data}: column(s) {names} hold values too large to standardise (up to {top:.3g} in "
                         f"{names[0]!r}; their squares overflow float64): rescale them (a log, or a unit) or leave "
                         f"them out with --drop {_arg(names[0])}")
    if const.any():
        log.info(f"{args.data}: {int(const.sum())} constant feature column(s) carry no information; set to 0")
    counts = np.bincount(codes, minlength=C)
    log.info(f"{args.data}: {n} rows, {flat.shape[1]} features, {C} classes (sizes {counts.tolist()})")

    torch.manual_seed(args.seed)
    model = _model(args.model, flat.shape[1], C, args.hidden)
    xs, ys = torch.from_numpy(flat), torch.from_numpy(codes)
    data = torch.utils.data.TensorDataset(xs, ys)
    t0 = time.perf_counter()
    try:
        values = value_data(model, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed, mode=args.mode, gradient=args.gradient, weight=weight,
                            label_smoothing=args.label_smoothing, checkpoint=args.checkpoint)
    except CheckpointError as exc:
        raise InputError(f"--checkpoint: {exc}") from None
    except OSError as exc:
        if args.checkpoint is not None and exc.filename == str(Path(args.checkpoint)):
            raise InputError(f"--checkpoint: {exc.strerror}") from None
        raise
    except ValueError as exc:  # e.g. diverged training: NaN logits
        log.error(f"chg value: training failed: {exc} (try a smaller --lr)")
        return 1
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        loss = torch.cat([loss_and_error(model(xs[i:i + 4096]), ys[i:i + 4096], weight, args.label_smoothing)[0]
                          for i in range(0, n, 4096)])  # (n,) the loss trained on, per row
        acc = float((torch.cat([model(xs[i:i + 4096]).argmax(1) for i in range(0, n, 4096)]) == ys).float().mean())
    labels = np.asarray(classes, dtype=object)[codes]
    report = ValuationReport.from_values(values, labels=labels, loss=loss)
    final = Path(args.out)
    final.mkdir(parents=True, exist_ok=True)
    out = _staging(final)  # the whole set is written here, then moved into place (summary.json last)
    try:
        report.to_csv(out / "values.csv")
        plain = np.asarray([_plain(c) for c in classes])[codes]  # (n,) str or numeric: storable without pickle
        Values.from_state_dict({**values.state_dict(), "labels": plain}).save(out / "values.npz")
        report.plot(out / "report", k=15, images=images,
                    title=f"{Path(args.data).name}: {args.model}, {args.epochs} epochs, {n} rows")
        write_json_atomic(out / "classes.json", {"label": args.label or "y", "classes": [
            {"class": i, "label": _plain(c), "rows": int(counts[i])} for i, c in enumerate(classes)]})
        below = report.suspects()
        write_json_atomic(out / "summary.json", {
            "data": str(args.data), "rows": n, "features": flat.shape[1], "classes": C, "model": args.model,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "mode": args.mode,
            "gradient": args.gradient, "weight": weight, "label_smoothing": args.label_smoothing,
            "hidden": args.hidden if args.model == "mlp" else None, "train_seconds": round(seconds, 3),
            "train_accuracy_given_labels": acc, "rows_below_0": int(below.size), "chg_version": __version__,
            "torch_version": torch.__version__})
        log.info(f"trained {args.model} for {args.epochs} epochs in {seconds:.1f} s; accuracy on the given labels "
                 f"{acc:.3f}; {below.size} of {n} rows have value < 0")
        low = report.suspects(k=min(5, n), threshold=None)
        log.info("lowest values: " + ", ".join(f"row {r} ({labels[r]!s}: {report.values[r]:.3g})" for r in low))
        _publish(out, final, log)
    except BaseException:  # an error or Ctrl-C while writing: the previous run's files stay as they were
        shutil.rmtree(out, ignore_errors=True)
        raise
    for name in OUTPUTS:
        print(final / name)
    return 0


OUTPUTS = ("values.csv", "values.npz", "report.png", "report.pdf", "classes.json", "summary.json")  # summary: last
_STAGING = ".chg-value-partial-"


def _staging(final: Path) -> Path:
    """A new folder inside ``final`` for this run's files (a folder left by a killed run is removed first).

    Raises:
        InputError: ``final`` cannot be written.
    """
    import shutil
    import tempfile
    for old in final.glob(_STAGING + "*"):
        shutil.rmtree(old, ignore_errors=True)
    for name in OUTPUTS:  # an atomic write's temporary file (io.atomic_write), left by a killed run of an older chg
        for old in final.glob(f"{name}.*.partial"):
            old.unlink(missing_ok=True)
    try:
        return Path(tempfile.mkdtemp(prefix=_STAGING, dir=final))
    except OSError as exc:
        raise InputError(f"--out {final}: cannot write there ({exc.strerror or exc})") from None


def _publish(staged: Path, final: Path, log) -> None:
    """Move a finished run's files from ``staged`` into ``final``, replacing a previous run's: its summary.json goes
    first and the new one comes last, so a folder holds one run's complete set exactly when it has a summary.json (a
    run killed while moving leaves none). The staging folder is removed."""
    import os
    previous = [name for name in OUTPUTS if (final / name).exists()]
    if previous:
        log.warning(f"{final}: replacing the results of a previous run ({', '.join(previous)})")
        (final / "summary.json").unlink(missing_ok=True)
        for name in previous:
            (final / name).unlink(missing_ok=True)
    for name in OUTPUTS:
        if (staged / name).exists():
            os.replace(staged / name, final / name)
    staged.rmdir()


def class_weights(spec: str, classes) -> list:
    """``--weight``'s class weights, in class-index order (that of ``classes``: the labels sorted, as classes.json
    lists them).

    Args:
        spec: C numbers separated by commas, one per class in that order (``"1,5"``), or one ``label=number`` per
            class (``"cat=1,dog=5"``; a numeric label matches by value, ``0=1`` for a label 0.0).
        classes: the labels, one per class index (:func:`read_table`'s ``classes``).
    Returns:
        C floats, finite and ≥ 0, not all 0.
    Raises:
        InputError: a wrong count, an unknown or repeated label, a missing class, a weight that is not a number,
            negative, not finite, or all weights 0.
    """
    import math
    names = [str(_plain(c)) for c in classes]
    order = ", ".join(names)

    def number(text, what):
        try:
            w = float(text)
        except ValueError:
            raise InputError(f"--weight {spec}: {what} {text.strip()!r} is not a number") from None
        if not (math.isfinite(w) and w >= 0):
            raise InputError(f"--weight {spec}: {what} {text.strip()!r} must be a finite number >= 0")
        return w

    def index(key):
        for i, c in enumerate(classes):
            if key == names[i]:
                return i
        for i, c in enumerate(classes):
            try:
                if not isinstance(_plain(c), (str, bool)) and float(key) == float(_plain(c)):
                    return i
            except (TypeError, ValueError):
                continue
        raise InputError(f"--weight {spec}: no class {key!r}; the classes are {order}")

    pieces = spec.split(",")
    if any("=" in p for p in pieces):
        given = {}
        for p in pieces:
            if "=" not in p:
                raise InputError(f"--weight {spec}: {p.strip()!r} has no label; give every weight as label=number, "
                                 f"or numbers only, in the order {order}")
            key, value = (t.strip() for t in p.rsplit("=", 1))
            i = index(key)
            if i in given:
                raise InputError(f"--weight {spec}: the class {names[i]!r} is given twice")
            given[i] = number(value, f"the weight of {key!r}")
        missing = [names[i] for i in range(len(classes)) if i not in given]
        if missing:
            raise InputError(f"--weight {spec}: no weight for the classes {missing}; give one for every class "
                             f"({order})")
        weights = [given[i] for i in range(len(classes))]
    else:
        if len(pieces) != len(classes):
            raise InputError(f"--weight {spec}: {len(pieces)} weights for {len(classes)} classes; give one per "
                             f"class, in the order {order} (or by label: --weight {names[0]}=1,...)")
        weights = [number(p, f"weight {i + 1}") for i, p in enumerate(pieces)]
    if not any(weights):
        raise InputError(f"--weight {spec}: every weight is 0; at least one class must count")
    return weights


def _plain(v):
    """A label as a JSON value (numpy scalars → Python)."""
    return v.item() if hasattr(v, "item") else v


def _add_value_parser(sub) -> None:
    p = sub.add_parser("value", help="value every row of your own CSV / Parquet / npz file (Algorithm 1)",
                       description="Train a logistic regression or MLP on DATA with Algorithm 1 and write each row's "
                                   "CHG Shapley value (DIR/values.csv; rank 1 = lowest value = most suspect) and a "
                                   "report (DIR/report.png, .pdf).")
    p.add_argument("data", metavar="DATA", help="a .csv, .tsv or .txt (also .gz, .bz2, .xz, .zip, .zst; separator , "
                                                 "; tab or | sniffed), .parquet or .npz (arrays x, y) file")
    p.add_argument("--label", metavar="COLUMN", help="the label column (required for CSV/Parquet; any type)")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder (created if missing)")
    p.add_argument("--drop", metavar="COLUMN", action="append", default=[],
                   help="leave a column out of the features (ids, names); repeat it, or separate names with commas "
                        "(a name that holds a comma is kept whole)")
    p.add_argument("--encoding", metavar="CODEC", help="a text file's encoding (utf-8, cp1252, latin-1, utf-16, ...); "
                   "default: by its byte-order mark, else UTF-8, else cp1252")
    p.add_argument("--weight", metavar="W1,W2,...", help="class weights of the loss, as torch's cross_entropy's "
                   "weight=: one number per class in the order of classes.json (the labels sorted), or by label: "
                   "cat=1,dog=5")
    p.add_argument("--label-smoothing", metavar="S", type=float, default=0.0,
                   help="label smoothing of the loss in [0, 1], as torch's cross_entropy's label_smoothing=")
    p.add_argument("--model", choices=("logreg", "mlp"), default="logreg")
    p.add_argument("--hidden", type=int, default=64, help="MLP hidden width")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    p.add_argument("--mode", choices=("pass", "ride"), default="pass",
                   help="pass: a separate no-grad pass per epoch (Algorithm 1); ride: on the training forward pass")
    p.add_argument("--gradient", choices=("full", "bias"), default="full",
                   help="full: last-layer weight+bias gradient (Algorithm 1); bias: bias gradient only (see "
                        "benchmarks/results/modes.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", metavar="FILE", help="write the training run's state to FILE after every epoch; "
                   "the same command again resumes after the last finished epoch (values bit for bit those of an "
                   "uncut run), or with more --epochs trains only the new ones")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quiet", action="store_true", help="only warnings and errors on stderr")


def main(argv=None, prog: str = "chg") -> int:
    """Run one command and return its exit status (0 ok, 2 bad input or usage); ``prog`` is the name usage shows."""
    ap = argparse.ArgumentParser(prog=prog, description="CHG Shapley: data valuation and selection.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _add_value_parser(sub)
    p = sub.add_parser("demo", help="Theorem 1: closed form vs exhaustive enumeration, n = 1..N")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args, rest = ap.parse_known_args(argv)
    if args.cmd == "value":
        if rest:
            ap.error(f"value: unrecognized arguments: {' '.join(rest)}")
        from .progress import log_to_stderr, set_progress
        previous = set_progress(False) if args.no_progress else None  # bars of the library's loops, if any
        try:
            with log_to_stderr(-1 if args.quiet else 0):
                return _value(args)
        except InputError as exc:
            print(f"{ap.prog} value: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{ap.prog} value: interrupted; {args.out} holds what it held before (a previous run's complete "
                  f"set, if any)", file=sys.stderr)
            return 130
        finally:
            if args.no_progress:
                set_progress(previous)
    if args.cmd == "demo":
        if rest:
            ap.error(f"demo: unrecognized arguments: {' '.join(rest)}")
        if not 1 <= args.n <= 16:
            ap.error("demo: --n must be in 1..16 (enumeration visits 2^n subsets)")
        return _demo(args)
    raise AssertionError(f"unhandled command {args.cmd!r}")  # pragma: no cover (argparse allows only the above)


if __name__ == "__main__":
    sys.exit(main())
