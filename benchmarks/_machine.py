"""What every benchmark records about the machine it ran on (one place; the benchmarks import it)."""
from __future__ import annotations

import os
import platform

import torch

__all__ = ["machine", "loadavg"]


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
