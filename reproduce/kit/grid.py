"""Grids of runs: the one "already done?" rule, ``--shard i/k``, and the loop that runs and records each run.

A grid is a list of :class:`Run` (a run id, its seed, the config that determines its result). For each run of this
shard, :func:`run_grid` applies the rule of :func:`is_done` — no record → run it; a record with the same config →
skip (so an interrupted grid resumes with the same command); a record with another config → :class:`ConfigMismatch`
naming the differing fields, unless ``replace`` (``--replace``) is given, then the run is redone and its record
overwritten — then executes it and writes its record atomically (:func:`chg.experiments.results.save_run`), with the
whole
preset beside the run's config.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import chg.experiments.results as results

from .config import as_dict

__all__ = ["Run", "Outcome", "ConfigMismatch", "parse_shard", "is_done", "run_grid", "normalise", "config_value"]


@dataclass(frozen=True)
class Run:
    """One run of a grid: ``config`` (JSON-ready) is what the already-done rule compares; ``task`` is what the
    executor needs (e.g. a ``TrainConfig``)."""
    run_id: str
    seed: int
    config: dict
    task: Any = None


@dataclass(frozen=True)
class Outcome:
    """What an executor returns: the metrics, wall seconds, the device it ran on, extra top-level record keys, and
    files to delete once the record is written (checkpoints)."""
    metrics: dict
    wall_time_s: float
    device: Any = None
    extra: dict = field(default_factory=dict)
    cleanup: tuple = ()


class ConfigMismatch(ValueError):
    """A record exists under this run id with another configuration."""


def normalise(config: dict) -> dict:
    """``config`` as it reads back from JSON (tuples → lists, other non-JSON values → str)."""
    return json.loads(json.dumps(config, default=str))


def config_value(records: list, key: str) -> str:
    """The value of config field ``key`` over run records, as text: the one value, or every value joined by '/'
    (captions state settings from the records, never from the code)."""
    vals = sorted({str(r["config"][key]) for r in records})
    return vals[0] if len(vals) == 1 else "/".join(vals)


def parse_shard(text: str | None) -> tuple:
    """``"i/k"`` → ``(i, k)`` with 0 ≤ i < k; None → ``(0, 1)`` (the whole grid).

    Raises:
        ValueError: not of the form i/k, or i outside 0..k-1.
    """
    if text is None:
        return 0, 1
    try:
        i, k = (int(p) for p in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/k (e.g. 0/4), got {text!r}") from None
    if not (k >= 1 and 0 <= i < k):
        raise ValueError(f"--shard i/k needs 0 <= i < k, got {text!r}")
    return i, k


def _diff(stored: dict, now: dict) -> str:
    keys = sorted(set(stored) | set(now))
    return ", ".join(f"{k}: {stored.get(k, '<absent>')!r} stored vs {now.get(k, '<absent>')!r} now" for k in keys
                     if stored.get(k, "<absent>") != now.get(k, "<absent>"))


def _stored_config(experiment: str, scale: str, run: Run):
    """The config of the run's record, or None when there is no record."""
    path = results.run_path(experiment, run.run_id, scale)
    return json.loads(path.read_text())["config"] if path.is_file() else None


def is_done(experiment: str, scale: str, run: Run, replace: bool = False) -> bool:
    """True when the run's record exists with the same config (skip it), False when there is none (or ``replace``).

    Raises:
        ConfigMismatch: a record exists with another config and ``replace`` is False; the message names the file,
            every differing field, and ``--replace``.
    """
    stored = _stored_config(experiment, scale, run)
    if stored is None:
        return False
    if stored == normalise(run.config):
        return True
    if replace:
        return False
    path = results.run_path(experiment, run.run_id, scale)
    raise ConfigMismatch(f"{path} holds run {run.run_id!r} with another configuration "
                         f"({_diff(stored, normalise(run.config))}); "
                         f"rerun with --replace to redo it with the new settings (its record is overwritten), or "
                         f"delete the file")


def run_grid(experiment: str, scale: str, preset, runs: list, execute: Callable[[Run], Outcome], *,
             shard: tuple = (0, 1), replace: bool = False, log=print) -> dict:
    """Run (or skip, by :func:`is_done`) every run ``runs[i::k]`` of shard ``(i, k)``; returns
    ``{"ran", "skipped", "total"}`` for this shard.

    Raises:
        ValueError: two runs share a run id (the grid is ill-formed).
        ConfigMismatch: see :func:`is_done` (raised before anything runs: every record of the shard is checked first).
    """
    ids = [r.run_id for r in runs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{experiment}: run ids occur twice in the grid: {dup[:5]}")
    i, k = shard
    mine = runs[i::k]
    todo = [r for r in mine if not is_done(experiment, scale, r, replace)]
    preset_dict = as_dict(preset)
    t_start = time.perf_counter()
    ran = 0
    for n, run in enumerate(todo, 1):
        if _stored_config(experiment, scale, run) == normalise(run.config):  # finished meanwhile by another process
            continue
        out = execute(run)
        ran += 1
        results.save_run(experiment, run.run_id, config=normalise(run.config), seed=run.seed, scale=scale,
                         metrics=out.metrics, wall_time_s=out.wall_time_s, device=out.device,
                         extra={"preset": preset_dict, **out.extra})
        for path in out.cleanup:  # incl. leftovers of a kill mid-write
            path = Path(path)
            for stale in [path, *path.parent.glob(path.name + ".*.partial")]:
                stale.unlink(missing_ok=True)
        log(f"[{experiment} {scale} {n}/{len(todo)}] {run.run_id} ({out.wall_time_s:.1f} s; "
            f"{time.perf_counter() - t_start:.0f} s in all)")
    return {"ran": ran, "skipped": len(mine) - ran, "total": len(mine)}


def compute_and_render(experiment: str, args, preset, grid_runs: list, execute: Callable[[Run], Outcome],
                       render: Callable) -> int:
    """The body of every reproduce script's ``main`` after its arguments are parsed: the grid's runs (skipped with
    ``--render-only``; ``--shard`` and ``--replace`` as given), then the render from the records (skipped with
    ``--no-render``).

    Args:
        experiment: the records' folder name. args: from :func:`kit.cli.parse`. preset: the scale's preset.
        grid_runs: the runs of the grid. execute: one run → :class:`Outcome`. render: ``render(scale, preset)``.
    Returns:
        0 (the script's exit status).
    Raises:
        SystemExit: a stored run whose configuration differs (:class:`ConfigMismatch`), naming it.
    """
    if not args.render_only:
        t0 = time.perf_counter()
        try:
            counts = run_grid(experiment, args.scale, preset, grid_runs, execute, shard=args.shard,
                              replace=args.replace)
        except ConfigMismatch as exc:
            raise SystemExit(f"{experiment}: {exc}") from None
        print(f"{experiment}: ran {counts['ran']}, skipped {counts['skipped']} (already done) of {counts['total']} "
              f"in {time.perf_counter() - t0:.0f}s")
    if not args.no_render:
        render(args.scale, preset)
    return 0
