"""The one table writer: a document is a list of blocks (headings, paragraphs, tables), written as Markdown and LaTeX.

Scripts build blocks from aggregated rows (aggregate → rows → format); :func:`write` renders both files atomically to
``chg.experiments.results.figure_path(scale, stem + ".md" | ".tex")``. The LaTeX file holds the tables (booktabs),
each with its
caption; the Markdown file holds everything.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import chg.experiments.results as results

__all__ = ["Heading", "Table", "markdown", "latex", "write", "mean_std", "pm", "PAPER_NUMBERS", "paper_numbers"]

PAPER_NUMBERS = Path(__file__).resolve().parents[1] / "paper_numbers.txt"


def _section(section: str) -> list:
    """The non-blank, non-comment lines of the ``[section]`` of :data:`PAPER_NUMBERS`, stripped; [] when there is
    no such section."""
    out, current = [], None
    for line in PAPER_NUMBERS.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            out.append(line)
    return out


def paper_numbers(section: str, keys: int, width: int) -> dict:
    """The one reader of reproduce/paper_numbers.txt (the published numbers printed beside ours): every line of
    ``[section]`` is ``keys`` names and then ``width`` numbers (``–`` = not given: None), read into a dict nested
    ``keys`` deep whose leaves are the lists of numbers — e.g. ``keys=2`` for ``dataset method v1 … v5`` lines gives
    ``{dataset: {method: [v1, …, v5]}}``; {} when there is no such section.

    Raises:
        ValueError: a line with another number of fields (the message names the file, the section and the line).
    """
    out: dict = {}
    for line in _section(section):
        parts = line.split()
        if len(parts) != keys + width:
            raise ValueError(f"{PAPER_NUMBERS}: [{section}] lines are {keys} name(s) and {width} number(s), got "
                             f"{line!r}")
        node = out
        for name in parts[:keys - 1]:
            node = node.setdefault(name, {})
        node[parts[keys - 1]] = [None if v == "–" else float(v) for v in parts[keys:]]
    return out


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Table:
    """``head``: column names; ``rows``: lists of cell strings, one per column; ``caption``: printed above the
    Markdown table (if not empty) and as the LaTeX caption; ``title``: the LaTeX caption when ``caption`` is empty
    (a Markdown file names its tables by headings)."""
    head: tuple
    rows: tuple
    caption: str = ""
    title: str = ""

    def __post_init__(self):
        bad = [r for r in self.rows if len(r) != len(self.head)]
        if bad:
            raise ValueError(f"table row with {len(bad[0])} cells under {len(self.head)} columns: {bad[0]}")


def mean_std(xs) -> tuple:
    """(mean, sample std) of a list; (None, None) if empty; std 0.0 for one value."""
    xs = [float(x) for x in xs]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def pm(xs, digits: int = 2, unit: str = "") -> str:
    """``"mean ± std<unit>"`` over ``xs`` with ``digits`` decimals; ``"value<unit> (n = 1)"`` for one value (it has
    no spread: not "± 0"); ``"not run"`` when empty. ``unit``: what follows the number ("×", "%", " nats/byte")."""
    xs = list(xs)
    mean, std = mean_std(xs)
    if mean is None:
        return "not run"
    return f"{mean:.{digits}f}{unit} (n = 1)" if len(xs) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}{unit}"


def _md_table(t: Table) -> list:
    out = [t.caption, ""] if t.caption else []
    out += ["| " + " | ".join(t.head) + " |", "|" + "---|" * len(t.head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in t.rows]
    return out


def markdown(blocks: list) -> str:
    """Headings as ``#``, paragraphs as they are, tables as pipe tables; one blank line between blocks."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Table):
            out += _md_table(b)
        else:
            out.append(str(b))
        out.append("")
    return "\n".join(out)


_TEX = (("\\", "\\textbackslash{}"), ("%", "\\%"), ("&", "\\&"), ("_", "\\_"), ("#", "\\#"), ("$", "\\$"),
        ("±", "$\\pm$"), ("−", "$-$"), ("″", "''"), ("·", "$\\cdot$"), ("↓", "$\\downarrow$"), ("↑", "$\\uparrow$"),
        ("≥", "$\\geq$"), ("≤", "$\\leq$"), ("×", "$\\times$"), ("⇒", "$\\Rightarrow$"), ("**", ""), ("`", ""))


def tex_escape(s) -> str:
    s = str(s)
    for a, b in _TEX:
        s = s.replace(a, b)
    return s


def _tex_table(t: Table) -> str:
    lines = ["\\begin{table}[h]\\centering\\small"]
    if t.caption or t.title:
        lines.append(f"\\caption{{{tex_escape(t.caption or t.title)}}}")
    lines += ["\\begin{tabular}{l" + "r" * (len(t.head) - 1) + "}", "\\toprule",
              " & ".join(tex_escape(h) for h in t.head) + " \\\\", "\\midrule"]
    lines += [" & ".join(tex_escape(c) for c in r) + " \\\\" for r in t.rows]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines)


def latex(blocks: list, comment: str) -> str:
    """The tables of ``blocks`` as booktabs LaTeX, after ``comment`` (one ``%`` line)."""
    body = "\n\n".join(_tex_table(b) for b in blocks if isinstance(b, Table))
    return f"% {comment}\n% needs \\usepackage{{booktabs}}\n{body}\n"


def write(scale: str, stem: str, blocks: list, comment: str) -> str:
    """Write ``<stem>.md`` and ``<stem>.tex`` for ``scale`` atomically; returns the Markdown."""
    md = markdown(blocks)
    for name, text in ((f"{stem}.md", md), (f"{stem}.tex", latex(blocks, comment))):
        path = results.figure_path(scale, name)
        results.write_text_atomic(path, text)
        print(f"wrote {path}")
    return md
