"""Presets: every setting of a reproduce script is a field of a frozen dataclass, one instance per named scale.

``--set key=value`` (any number of times) replaces one field, the value parsed by the field's type annotation:
``int``, ``float`` (finite), ``bool`` (true/false/1/0/yes/no), ``str``, ``X | None`` (``none`` for None) and
``tuple[X, ...]`` (comma-separated: ``--set seeds=0,1,2``). A field of a nested dataclass is ``outer.inner``
(``--set train.epochs=50``) or just ``inner`` when exactly one nested dataclass has a field of that name. Fields a
grid sets per run (a preset's ``GRID_FIELDS``, e.g. ``train.dataset``) cannot be set.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing

__all__ = ["SCALES", "apply_sets", "as_dict", "settings", "describe"]

SCALES = ("smoke", "quick", "medium", "paper")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def as_dict(preset) -> dict:
    """The preset as JSON-ready data (tuples become lists, exactly as they read back from a result file), without
    the fields the grid sets per run (``GRID_FIELDS``)."""
    out = json.loads(json.dumps(dataclasses.asdict(preset), default=str))
    for path in getattr(preset, "GRID_FIELDS", ()):
        *outer, last = path.split(".")
        node = out
        for name in outer:
            node = node[name]
        node.pop(last, None)
    return out


def settings(preset, axes: tuple) -> dict:
    """:func:`as_dict` without the fields in ``axes`` (those that choose which runs exist, e.g. seeds): what every run
    of the preset shares and its result depends on."""
    return {k: v for k, v in as_dict(preset).items() if k not in axes}


def describe(preset) -> str:
    """One line per field, ``key = value`` (nested fields as ``outer.inner``; the grid's per-run fields are left
    out), for ``--show``."""
    grid_fields = getattr(preset, "GRID_FIELDS", ())

    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{prefix}{f.name}.")
            elif prefix + f.name not in grid_fields:
                yield f"{prefix}{f.name} = {value!r}"
    lines = list(walk(preset, ""))
    if grid_fields:
        lines.append(f"(set per run by the grid: {', '.join(grid_fields)})")
    return "\n".join(lines)


def _convert(text: str, hint, key: str):
    """``text`` parsed as type ``hint``; ValueError naming ``key`` and the expected type otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() == "none" and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(text, inner, key)
    if origin is tuple:
        elem = args[0] if args else str
        return tuple(_convert(part.strip(), elem, key) for part in text.split(",") if part.strip())
    if hint is bool:
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError(f"--set {key}={text}: expected a bool (true/false), got {text!r}")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--set {key}={text}: expected an integer, got {text!r}") from None
    if hint is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"--set {key}={text}: expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"--set {key}={text}: expected a finite number, got {text!r}")
        return value
    if hint is str:
        return text
    raise ValueError(f"--set {key}: a field of type {hint} cannot be set from the command line")


def _fields(obj) -> dict:
    return {f.name: f for f in dataclasses.fields(obj)}


def _resolve(preset, key: str) -> list:
    """The path of field names that ``key`` names in ``preset`` (see the module docstring)."""
    if "." in key:
        return key.split(".")
    if key in _fields(preset):
        return [key]
    hits = [[name, key] for name, f in _fields(preset).items()
            if dataclasses.is_dataclass(getattr(preset, name)) and key in _fields(getattr(preset, name))]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ValueError(f"--set {key}: ambiguous, say which: {', '.join('.'.join(h) for h in hits)}")
    return [key]


def _set(obj, path: list, text: str, key: str):
    """A copy of ``obj`` with the field at ``path`` set from ``text``."""
    name = path[0]
    if name not in _fields(obj):
        raise ValueError(f"--set {key}: {type(obj).__name__} has no field {name!r}; fields: "
                         f"{', '.join(sorted(_fields(obj)))}")
    value = getattr(obj, name)
    if len(path) > 1:
        if not dataclasses.is_dataclass(value):
            raise ValueError(f"--set {key}: {name!r} is not a group of settings")
        return dataclasses.replace(obj, **{name: _set(value, path[1:], text, key)})
    if dataclasses.is_dataclass(value):
        raise ValueError(f"--set {key}: {name!r} is a group of settings; set one of its fields ({name}.FIELD)")
    hint = typing.get_type_hints(type(obj))[name]
    return dataclasses.replace(obj, **{name: _convert(text, hint, key)})


def apply_sets(preset, items) -> object:
    """``preset`` with every ``key=value`` of ``items`` applied in order (a new instance; the preset is unchanged).

    Raises:
        ValueError: an item without ``=``, an unknown or grid-controlled key, or a value that does not parse as the
            field's type (the message names the key and the expected type).
    """
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        path = _resolve(preset, key)
        if ".".join(path) in getattr(preset, "GRID_FIELDS", ()):
            raise ValueError(f"--set {key}: set per run by the grid, not settable")
        preset = _set(preset, path, text, key)
    return preset
