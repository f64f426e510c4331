"""Files written atomically: a reader never sees half a file, a killed writer leaves the old one.

Every file the library writes (:meth:`chg.Values.save`, :meth:`chg.Values.to_csv`, the reports of
:mod:`chg.report`, ``chg value``'s outputs) goes through :func:`atomic_write`.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "write_text_atomic", "write_csv_atomic", "write_json_atomic"]


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file.

    Args:
        path: the file to (re)write; its folder is created. write: a function that writes the whole file to the
            temporary path it is given (a ``str`` in the same folder).
    Returns:
        None.
    Raises:
        Exception: whatever ``write`` or the file system raises (``OSError``, ...), after removing the temporary
            file; ``path`` is then left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`).

    Args:
        path: the file. text: its whole content.
    """
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_csv_atomic(path, frame) -> Path:
    """Write a pandas DataFrame as CSV atomically, floats with 17 significant digits (they read back exactly).

    Args:
        path: the file. frame: the DataFrame (written without its index).
    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.17g"))
    return path


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically (:func:`atomic_write`, fsync'ed).

    Args:
        path: the file. obj: a JSON-able object; non-JSON values are written as ``str``.
    """
    def write(tmp):
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    atomic_write(path, write)
