"""Progress bars and logging for the library: one helper, so every long loop behaves the same way.

A loop that can take more than a few seconds (training epochs, a valuation pass over the data, a reproduce grid)
wraps its iterable in :func:`progress`::

    from chg.progress import progress
    for epoch in progress(range(epochs), desc="value_data", unit="epoch", enabled=progress_arg):
        ...

``enabled`` is the user's ``progress=`` argument: ``True`` shows a bar, ``False`` never does, ``None`` (the usual
default) follows :func:`set_progress` if it was called (the command line's ``--no-progress``), else shows a bar only
when the bar's stream (stderr) is a terminal — so logs, CI and redirected output get no bars. The bars are tqdm's.

Messages go through :mod:`logging` under the ``"chg"`` logger (:func:`get_logger`), never ``print``; the library
adds no handler (Python's logging convention), so nothing is shown unless the application configures logging —
the ``chg`` command does, with :func:`log_to_stderr`.

Third-party loops that draw their own tqdm bars (OpenDataVal's evaluators) are silenced for one block with
:func:`silenced_bars`; nothing in chg changes tqdm for the whole process.
"""
from __future__ import annotations

import functools
import logging
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional

from tqdm import tqdm

__all__ = ["progress", "progress_enabled", "set_progress", "silenced_bars", "get_logger", "log_to_stderr"]

_DEFAULT: Optional[bool] = None  # set_progress(): the process-wide choice for enabled=None


def set_progress(enabled: Optional[bool]) -> Optional[bool]:
    """Process-wide default for bars whose ``enabled`` is None.

    Args:
        enabled: True (always), False (never), None (only when the bar's stream is a terminal).
    Returns:
        the previous setting (to restore it).
    Raises:
        ValueError: anything but True, False or None.
    """
    global _DEFAULT
    if enabled not in (True, False, None) or not isinstance(enabled, (bool, type(None))):
        raise ValueError(f"set_progress: enabled must be True, False or None, got {enabled!r}")
    previous, _DEFAULT = _DEFAULT, enabled
    return previous


def progress_enabled(enabled: Optional[bool] = None, file=None) -> bool:
    """Resolve a ``progress=`` argument: an explicit bool wins, then :func:`set_progress`'s choice, then whether
    ``file`` is an interactive terminal.

    Args:
        enabled: True | False | None. file: the bar's stream (default ``sys.stderr``).
    Returns:
        bool: whether to draw the bar.
    Raises:
        ValueError: ``enabled`` is not True, False or None.
    """
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise ValueError(f"progress must be True, False or None, got {enabled!r}")
        return enabled
    if _DEFAULT is not None:
        return _DEFAULT
    stream = sys.stderr if file is None else file
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress(iterable: Optional[Iterable] = None, *, desc: Optional[str] = None, total: Optional[int] = None,
             unit: str = "it", enabled: Optional[bool] = None, leave: bool = False, file=None, **kwargs) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual bar with ``total`` and ``.update(k)``), shown per ``enabled``.

    Args:
        iterable: what the loop iterates over; ``None`` for a manual bar.
        desc: the bar's label, e.g. the function's name.
        total: number of steps when ``len(iterable)`` is not defined (or for a manual bar).
        unit: what one step is ("epoch", "batch", "run", ...).
        enabled: True | False | None — see :func:`progress_enabled`.
        leave: keep the finished bar on screen.
        file: stream the bar is drawn on (default ``sys.stderr``).
        **kwargs: passed on to ``tqdm`` (e.g. ``mininterval``).

    Returns:
        a ``tqdm`` object: iterate it like ``iterable``; when disabled it yields the same items and draws nothing.

    Raises:
        ValueError: ``enabled`` is not True, False or None.
    """
    stream = sys.stderr if file is None else file
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=stream,
                disable=not progress_enabled(enabled, stream), dynamic_ncols=True, **kwargs)


@contextmanager
def silenced_bars() -> Iterator[None]:
    """While open, every tqdm bar created (by any code: a third-party loop such as OpenDataVal's evaluators) is
    disabled; on leaving, also by an exception, tqdm is exactly as it was.

    tqdm's own switch, the environment variable ``TQDM_DISABLE``, is read once when tqdm is imported, so it cannot
    be scoped to a block; instead ``disable=True`` becomes the default of ``tqdm.__init__`` for the block only (a
    call that passes ``disable=`` itself still decides). Blocks may nest. Not for threads: a bar another thread
    creates meanwhile is silenced too.

    Yields:
        None, while bars are off.
    """
    saved = vars(tqdm)["__init__"]  # the class's own attribute (tqdm wraps it), put back as it was
    tqdm.__init__ = functools.partialmethod(saved, disable=True)
    try:
        yield
    finally:
        tqdm.__init__ = saved


def get_logger(name: str = "chg") -> logging.Logger:
    """The library's logger; configure it with :mod:`logging`.

    Args:
        name: ``"chg"`` or a child (``"chg.cli"``; a bare ``"cli"`` is prefixed with ``chg.``).
    Returns:
        the ``logging.Logger``.
    """
    if name != "chg" and not name.startswith("chg."):
        name = "chg." + name
    return logging.getLogger(name)


@contextmanager
def log_to_stderr(verbosity: int = 0, stream=None):
    """For applications (the ``chg`` command): while open, show the library's messages on ``stream`` (default: the
    current ``sys.stderr``), plain text, one per line. ``verbosity`` 0 → INFO, ≥ 1 → DEBUG, < 0 → WARNING.

    On exit the handler is removed and the ``chg`` logger's level restored, so a program (or a test) that runs the
    command in-process is left as it was.

    Args:
        verbosity: 0 → INFO, ≥ 1 → DEBUG, < 0 → WARNING. stream: where the messages go.
    Yields:
        the ``chg`` logger, while the handler is attached.
    """
    level = logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0 else logging.WARNING
    log = logging.getLogger("chg")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(level)
    try:
        yield log
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
