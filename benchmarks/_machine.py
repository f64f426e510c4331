"""What the benchmarks share: the record of the machine they ran on, and how a report is written (JSON, then the
Markdown rendered from the file as written). One place; the benchmarks import it."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Callable

import torch

from chg.io import write_json_atomic, write_text_atomic

__all__ = ["machine", "loadavg", "write_report"]


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages as text ("n/a" where /proc is missing)."""
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def machine() -> dict:
    """CPU model, cores, torch threads and version, Python version and the load average at the start."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "loadavg_start": loadavg()}


def write_report(out: Path, name: str, rep: dict, render: Callable[[dict], str]) -> str:
    """Write ``rep`` to ``out/name.json`` with the load average at its end, then ``out/name.md`` rendered from the JSON
    as written (so the Markdown never shows what the file does not hold); print and return the Markdown."""
    rep["machine"]["loadavg_end"] = loadavg()
    write_json_atomic(Path(out) / f"{name}.json", rep)
    text = render(json.loads((Path(out) / f"{name}.json").read_text()))
    write_text_atomic(Path(out) / f"{name}.md", text)
    print(text)
    print(f"wrote {Path(out) / name}.json and .md")
    return text
