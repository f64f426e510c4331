"""Command-line entry points: ``python -m chg --help`` (or the installed ``chg`` script).

``chg value DATA --label COLUMN --out DIR`` values every row of your own table: it standardises the numeric feature
columns, trains a logistic regression or an MLP with Algorithm 1 (:func:`chg.value_data`) and writes

- ``DIR/values.csv``: one line per input row, in input order: ``row`` (0-based position), ``label`` (as given),
  ``value`` (CHG Shapley value averaged over the epochs; higher = better), ``rank`` (1 = lowest value = most
  suspect), ``loss`` (the row's cross-entropy under the final model);
- ``DIR/report.png`` and ``DIR/report.pdf``: value histogram, the lowest-valued rows, loss vs value
  (:class:`chg.report.ValuationReport`), plus the lowest-valued images when an ``.npz`` holds images;
- ``DIR/values.npz``: the whole :class:`chg.Values` (each epoch's values, the labels), read back exactly by
  ``chg.Values.load`` — what ``value_data`` returns in Python;
- ``DIR/classes.json``: the label → class-index mapping and the class sizes; ``DIR/summary.json``: the settings.

Bad input (a missing column, a non-numeric feature column, NaN/Inf in a row, one class only, an empty file) stops
with a message naming the column or row and exit status 2. ``chg demo`` checks Theorem 1's closed form against
exhaustive enumeration. The paper's tables and figures are made by the repository's ``reproduce/`` scripts, not by
this command (an installed ``chg`` knows no repository folder).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

FORMATS = (".csv", ".tsv", ".parquet", ".npz")
SEPARATORS = (",", ";", "\t", "|")  # what spreadsheets write; sniffed from the first 64 KiB


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
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] in ([".gz"], [".bz2"], [".zip"], [".xz"], [".zst"]) and suffixes[-2:-1] in ([".csv"], [".tsv"]):
        return suffixes[-2]  # compressed CSV: pandas reads it
    return suffixes[-1] if suffixes else ""


def _separator(path: Path, kind: str) -> str:
    """The field separator of a delimited text file: tab for .tsv; else sniffed (csv.Sniffer) among SEPARATORS from
    the first 64 KiB (decompressed for .gz/.bz2/.xz), ',' when the sample is one column or ambiguous."""
    import csv
    if kind == ".tsv":
        return "\t"
    import bz2
    import gzip
    import lzma
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix.lower(), open)
    if path.suffix.lower() in (".zip", ".zst"):
        return ","  # not sniffed: pandas decompresses these itself
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as handle:
            sample = handle.read(1 << 16)
    except (OSError, EOFError, lzma.LZMAError):
        return ","  # pandas then says what is wrong with the file
    lines = sample.splitlines()
    sample = "\n".join(lines[:-1] if len(lines) > 1 and not sample.endswith("\n") else lines)  # no cut last line
    try:
        sep = csv.Sniffer().sniff(sample, delimiters="".join(SEPARATORS)).delimiter
    except csv.Error:
        return ","
    return sep if sep in SEPARATORS else ","


def _read_delimited(path: Path, kind: str):
    """A CSV / TSV as a DataFrame: separator sniffed (:func:`_separator`), a UTF-8 byte-order mark dropped, quoted
    fields as the csv module reads them; with ';' or tab, a decimal comma ("1,5") is read as a number when that makes
    more columns numeric (a European spreadsheet's export)."""
    import pandas as pd
    sep = _separator(path, kind)
    frame = pd.read_csv(path, sep=sep, encoding="utf-8-sig")
    if sep != ",":
        numeric = pd.api.types.is_numeric_dtype
        text = [c for c in frame.columns if not numeric(frame[c])]
        if text:
            alt = pd.read_csv(path, sep=sep, encoding="utf-8-sig", decimal=",")
            if sum(not numeric(alt[c]) for c in alt.columns) < len(text):
                frame = alt
    return frame


def read_table(path, label: str | None, drop=()):
    """Read ``path`` (.csv or .tsv — separator ``,`` ``;`` tab or ``|`` sniffed, BOM and quoted fields handled —,
    .parquet, or .npz with arrays ``x`` and ``y``) into features and labels.

    Args:
        path: the data file.
        label: the label column (CSV/Parquet; required) or the npz array holding the labels (default ``y``).
        drop: columns to leave out of the features (ids, names, free text).

    Returns:
        ``(x, codes, classes, feature_names)``: ``x`` float64 (n, d) (npz images keep their shape (n, ...));
        ``codes`` int64 (n,) class indices 0..C-1; ``classes`` the original label of each class index, sorted;
        ``feature_names`` list of d names.

    Raises:
        InputError: unreadable or empty file, unknown format, missing column, non-numeric feature column, NaN/Inf in
            a row's features, a missing label, fewer than two classes.
    """
    import numpy as np
    import pandas as pd
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    kind = _suffix(path)
    if kind not in FORMATS:
        raise InputError(f"{path}: unknown format {kind or '(no suffix)'}; give a {', '.join(FORMATS)} file")
    if kind == ".npz":
        return _read_npz(path, label or "y", drop)
    if label is None:
        raise InputError("--label COLUMN is required for a CSV, TSV or Parquet file: name the column holding the "
                         "labels")
    try:
        frame = _read_delimited(path, kind) if kind in (".csv", ".tsv") else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError, ImportError) as exc:
        raise InputError(f"{path}: cannot read it as {kind[1:]}: {exc}") from None
    if len(frame) == 0:
        raise InputError(f"{path}: no data rows (only a header)")
    frame = frame.reset_index(drop=True)  # rows are named by position (a Parquet file may carry its own index)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    for name in [label, *drop]:
        if name not in columns:
            raise InputError(f"{path}: no column {name!r}; the columns are {columns}")
    features = [c for c in columns if c != label and c not in set(drop)]
    if not features:
        raise InputError(f"{path}: no feature columns left besides the label {label!r}")
    bad = [c for c in features if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))]
    if bad:
        c = bad[0]
        example = frame[c][pd.to_numeric(frame[c], errors="coerce").isna() & frame[c].notna()]
        what = f" (row {example.index[0]}: {example.iloc[0]!r})" if len(example) else ""
        raise InputError(f"{path}: column {c!r} is not numeric{what}; features must be numbers — encode it, or "
                         f"leave it out with --drop {c}" + (f" (also non-numeric: {bad[1:]})" if bad[1:] else ""))
    x = frame[features].to_numpy(dtype=np.float64, na_value=np.nan)  # (n, d); nullable NA → NaN, refused below
    codes, classes = _classes(frame[label].to_numpy(), f"label column {label!r}")
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
                         f"{missing[:10].tolist()}); drop those rows or give them a label")
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
                         f"have missing or infinite features (first rows {rows[:10].tolist()}): fill or drop them")


def _model(kind: str, d: int, num_classes: int, hidden: int):
    """A logistic regression (one Linear) or an MLP (two hidden ReLU layers of ``hidden``, then the output Linear)."""
    from torch import nn
    if kind == "logreg":
        return nn.Linear(d, num_classes)
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def _value(args) -> int:
    import numpy as np
    import torch
    from sklearn.preprocessing import StandardScaler

    from . import __version__
    from .lastlayer import compute_factors
    from .progress import get_logger
    from .report import ValuationReport
    from .io import write_json_atomic
    from .loop import value_data
    from .values import Values

    log = get_logger("cli")
    for name in ("epochs", "batch_size", "hidden"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.lr > 0:
        raise InputError(f"--lr must be > 0, got {args.lr}")
    drop = [c.strip() for item in args.drop for c in item.split(",") if c.strip()]
    x, codes, classes, features = read_table(args.data, args.label, drop)
    n, C = len(codes), len(classes)
    images = x if x.ndim >= 3 else None
    raw = x.reshape(n, -1)
    flat = StandardScaler().fit_transform(raw).astype(np.float32)  # (n, d), zero mean, unit variance
    const = raw.min(0) == raw.max(0)  # a constant column carries nothing: exactly 0 (the scaler's mean of 1e30s is
    flat[:, const] = 0.0  # not exact, and left ~1e14 in it)
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
                            seed=args.seed, mode=args.mode, gradient=args.gradient)
    except ValueError as exc:  # e.g. diverged training: NaN logits
        log.error(f"chg value: training failed: {exc} (try a smaller --lr)")
        return 1
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        loss = torch.cat([compute_factors(model, xs[i:i + 4096], ys[i:i + 4096]).loss for i in range(0, n, 4096)])
        acc = float((torch.cat([model(xs[i:i + 4096]).argmax(1) for i in range(0, n, 4096)]) == ys).float().mean())
    labels = np.asarray(classes, dtype=object)[codes]
    report = ValuationReport.from_values(values, labels=labels, loss=loss)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
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
        "gradient": args.gradient,
        "hidden": args.hidden if args.model == "mlp" else None, "train_seconds": round(seconds, 3),
        "train_accuracy_given_labels": acc, "rows_below_0": int(below.size), "chg_version": __version__,
        "torch_version": torch.__version__})
    log.info(f"trained {args.model} for {args.epochs} epochs in {seconds:.1f} s; accuracy on the given labels "
             f"{acc:.3f}; {below.size} of {n} rows have value < 0")
    low = report.suspects(k=min(5, n), threshold=None)
    log.info("lowest values: " + ", ".join(f"row {r} ({labels[r]!s}: {report.values[r]:.3g})" for r in low))
    for name in ("values.csv", "values.npz", "report.png", "report.pdf", "classes.json", "summary.json"):
        print(out / name)
    return 0


def _plain(v):
    """A label as a JSON value (numpy scalars → Python)."""
    return v.item() if hasattr(v, "item") else v


def _add_value_parser(sub) -> None:
    p = sub.add_parser("value", help="value every row of your own CSV / Parquet / npz file (Algorithm 1)",
                       description="Train a logistic regression or MLP on DATA with Algorithm 1 and write each row's "
                                   "CHG Shapley value (DIR/values.csv; rank 1 = lowest value = most suspect) and a "
                                   "report (DIR/report.png, .pdf).")
    p.add_argument("data", metavar="DATA", help="a .csv or .tsv (separator , ; tab or | sniffed), .parquet or .npz "
                                                 "(arrays x, y) file")
    p.add_argument("--label", metavar="COLUMN", help="the label column (required for CSV/Parquet; any type)")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder (created if missing)")
    p.add_argument("--drop", metavar="COLUMN", action="append", default=[],
                   help="leave a column out of the features (ids, names); repeat or comma-separate")
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
