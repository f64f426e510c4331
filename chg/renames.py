"""Keywords renamed or removed in a release: a call with an old one is a ``TypeError`` that names the new one.

Version 0.2.0 gave the public API the field's names: ``utility`` (was ``weighting``) for the choice of CHG /
Gradient / Hardness Shapley, ``loss`` (was ``weight``) for the per-sample loss; ``weights`` now means sample weights
only. Version 0.3.0 passes every setting one way, as keywords: ``options=`` (a :class:`chg.Options`) and
``value_data``'s ``config=`` were removed. :func:`renamed` is the one place that turns an old keyword into that
error; CHANGELOG.md lists every rename. A keyword the callable does not take at all (a misspelling) is the same
``TypeError`` Python raises, with the closest keyword it does take (``difflib``).
"""
from __future__ import annotations

import difflib
import functools
import inspect
from typing import Callable, Optional

__all__ = ["renamed", "Removed", "OPTIONS_REMOVED", "unexpected_keyword"]


class Removed(str):
    """A keyword removed without a successor; the string says what to pass instead (it ends the error message)."""


def _error(name: str, version: str, old: str, new: Optional[str]) -> TypeError:
    if isinstance(new, Removed):
        return TypeError(f"{name}() got the keyword {old!r}, removed in {version}: {new} (see CHANGELOG.md)")
    what = f"renamed to {new!r}" if new is not None else "removed"
    return TypeError(f"{name}() got the keyword {old!r}, {what} in {version} (see CHANGELOG.md)")


def unexpected_keyword(name: str, key: str, takes, where: str = "") -> TypeError:
    """Python's error for a keyword a callable does not take, with the closest keyword it does take (``difflib``),
    else the list of them — the one wording of :func:`renamed`, ``EpochValuer(unit=...)`` and the trainer callbacks.

    Args:
        name: the callable's name, e.g. ``"EpochValuer"``. key: the keyword given. takes: the keywords it takes (an
            iterable of str). where: words after the keyword, e.g. ``" for a sequence valuer (unit='token')"``.
    Returns:
        the ``TypeError``: ``"EpochValuer() got an unexpected keyword argument 'utilty'; did you mean 'utility'?"``.
    """
    takes = sorted(takes)
    close = difflib.get_close_matches(key, takes, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; it takes {', '.join(takes)}"
    return TypeError(f"{name}() got an unexpected keyword argument {key!r}{where}{hint}")


def _unknown(name: str, kwargs: dict, takes: Optional[frozenset], old: frozenset) -> Optional[TypeError]:
    """The error for a keyword the callable does not take (nor an old name of one); None if all are known."""
    bad = sorted(kwargs.keys() - takes - old) if takes is not None else []
    return unexpected_keyword(name, bad[0], takes) if bad else None


def renamed(version: str, **old_to_new: Optional[str]) -> Callable:
    """Decorator: a call with an old keyword raises a ``TypeError`` naming its new name, before the call runs; a
    keyword the callable does not take at all raises Python's ``TypeError`` with the closest one it does take.

    Args:
        version: the release that renamed the keywords, e.g. ``"0.2.0"``.
        **old_to_new: old keyword → new keyword (a str), or None for a keyword removed without a successor, or a
            :class:`Removed` saying what to pass instead.
    Returns:
        a decorator. On a function it returns a wrapper (``functools.wraps``: name, docstring and signature are the
        function's); on a class it wraps the class's ``__init__`` in place and returns the class.
    Raises:
        ValueError: an old name equal to its new one. The decorated callable raises ``TypeError``:
            ``"value_data() got the keyword 'weighting', renamed to 'utility' in 0.2.0 (see CHANGELOG.md)"``, or
            ``"EpochValuer() got an unexpected keyword argument 'utilty'; did you mean 'utility'?"``.
    """
    for old, new in old_to_new.items():
        if old == new:
            raise ValueError(f"renamed: {old!r} renamed to itself")

    def decorate(target):
        fn = target.__init__ if isinstance(target, type) else target
        name = target.__name__
        params = inspect.signature(inspect.unwrap(fn)).parameters.values()
        old_names = frozenset(old_to_new) | getattr(fn, "_renamed_keywords", frozenset())  # stacked decorators
        takes = None if any(p.kind is p.VAR_KEYWORD for p in params) else frozenset(
            p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in ("self", "cls"))

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if kwargs:
                for old in sorted(old_to_new.keys() & kwargs.keys()):
                    raise _error(name, version, old, old_to_new[old])
                err = _unknown(name, kwargs, takes, old_names)
                if err is not None:
                    raise err
            return fn(*args, **kwargs)

        wrapper._renamed_keywords = old_names  # an outer @renamed leaves these to the inner one's message
        if isinstance(target, type):
            target.__init__ = wrapper
            return target
        return wrapper
    return decorate


OPTIONS_REMOVED = Removed("pass its fields as keywords (utility=, gradient=, alpha=, per_class=), e.g. "
                          "**dataclasses.asdict(options)")
