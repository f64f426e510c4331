"""Where results live, and how they are written: one JSON per run, atomically, with full provenance.

Every reproduce script writes its runs through :func:`save_run` and renders tables/figures only from the files
:func:`load_runs` returns. Paths come from here (override the root with ``CHG_ROOT``):

* run records: ``reproduce/results/<scale>/<experiment>/<run_id>.json`` (:func:`run_path`);
* rendered tables and figures: ``figures/<name>`` at the quick scale (the committed default) and
  ``figures/<scale>/<name>`` at every other scale (:func:`figure_path`).

Every file is written by :func:`chg.io.atomic_write` (a reader never sees half a file; a killed writer leaves the old
one).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from ..io import atomic_write, write_csv_atomic, write_json_atomic, write_text_atomic  # re-exported for the harness

__all__ = ["ROOT", "RESULTS_DIR", "FIGURES_DIR", "CHECKPOINT_DIR", "DATA_DIR", "write_json_atomic", "atomic_write",
           "write_csv_atomic", "write_text_atomic", "provenance", "save_run", "load_runs", "run_path", "figure_path",
           "default_scale", "device_name", "state_digest"]

ROOT = Path(os.environ.get("CHG_ROOT", Path(__file__).resolve().parents[2]))
RESULTS_DIR = ROOT / "reproduce" / "results"
FIGURES_DIR = ROOT / "figures"
CHECKPOINT_DIR = ROOT / "reproduce" / "checkpoints"
DATA_DIR = Path(os.environ.get("CHG_DATA", ROOT / "data"))

_PACKAGES = ("torch", "torchvision", "numpy", "sympy", "scikit-learn", "opendataval", "pandas", "matplotlib")


def state_digest(state: dict) -> str:
    """SHA-256 of a state_dict's names, dtypes, shapes and bytes (on the CPU, contiguous): two models have the same
    digest exactly when every parameter and buffer is bit-identical.

    Args:
        state: a ``state_dict()`` (name → tensor, or a module's non-tensor extra state).
    Returns:
        64 hex characters.
    """
    import torch
    h = hashlib.sha256()
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):  # a module's non-tensor extra state
            h.update(f"{name}|{t!r}|".encode())
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git_commit() -> str | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        # untracked code counts too; result records, benchmark results and rendered figures do not (runs write them
        # as they go: one benchmark's new file made the next one's record "+dirty")
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!reproduce/results", ":!figures",
                                ":!benchmarks/results"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def device_name(device=None) -> str:
    """What a run record says about the device.

    Args:
        device: a ``torch.device`` or its name; None: CUDA if available, else the CPU.
    Returns:
        ``"cuda:<GPU name>"`` or ``"cpu:<processor> x<cores> (torch threads <k>)"``.
    """
    import torch
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    cpu = platform.processor() or platform.machine()
    return f"cpu:{cpu} x{os.cpu_count()} (torch threads {torch.get_num_threads()})"


def default_scale() -> str:
    """The scale a reproduce script runs at when none is given (DESIGN.md, Scales).

    Returns:
        ``"paper"`` with CUDA, else ``"quick"``.
    """
    import torch
    return "paper" if torch.cuda.is_available() else "quick"


def provenance(device=None) -> dict:
    """Where a result comes from.

    Args:
        device: as in :func:`device_name`.
    Returns:
        dict with ``device``, ``versions`` (Python and the packages), ``git_commit`` (``+dirty`` if the code has
        uncommitted changes; None outside a git checkout) and ``host``.
    """
    return {"device": device_name(device), "versions": _versions(), "git_commit": _git_commit(),
            "host": platform.node()}


def run_path(experiment: str, run_id: str, scale: str) -> Path:
    """Where a run's record lives.

    Args:
        experiment: e.g. ``"table2"``. run_id: the run's name. scale: ``"quick"``, ``"paper"``, ...
    Returns:
        ``reproduce/results/<scale>/<experiment>/<run_id>.json`` (a ``Path``).
    """
    return RESULTS_DIR / scale / experiment / f"{run_id}.json"


def figure_path(scale: str, name: str) -> Path:
    """Where a rendered table or figure file goes.

    Args:
        scale: the results' scale. name: the file name, e.g. ``"table2.md"``.
    Returns:
        ``figures/<name>`` for the quick scale, ``figures/<scale>/<name>`` for every other scale (a ``Path``).
    """
    return FIGURES_DIR / name if scale == "quick" else FIGURES_DIR / scale / name


def save_run(experiment: str, run_id: str, *, config: dict, seed: int, scale: str, metrics: dict,
             wall_time_s: float, device=None, extra: dict | None = None) -> Path:
    """Write one run's JSON record atomically to :func:`run_path`.

    Args:
        experiment, run_id, scale: as in :func:`run_path`. config: the run's settings. seed: its seed. metrics: its
            results. wall_time_s: seconds it took. device: as in :func:`provenance`. extra: more top-level keys.
    Returns:
        the path written (config, seed, scale, metrics, wall time and :func:`provenance` in the record).
    """
    record = {"experiment": experiment, "run_id": run_id, "config": config, "seed": seed, "scale": scale,
              "metrics": metrics, "wall_time_s": wall_time_s, **provenance(device)}
    if extra:
        record.update(extra)
    path = run_path(experiment, run_id, scale)
    write_json_atomic(path, record)
    return path


def load_runs(experiment: str, scale: str) -> list:
    """All run records of an experiment at one scale.

    Args:
        experiment, scale: as in :func:`run_path`.
    Returns:
        list of the records (dicts), sorted by run id; [] if there are none.
    """
    folder = RESULTS_DIR / scale / experiment
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
