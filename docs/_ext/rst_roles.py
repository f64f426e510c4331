"""Griffe extension for the docs build: chg's docstrings use Google sections with a few reST constructs; this turns
those into the Markdown that mkdocstrings renders, before the docstrings are parsed.

- ``:func:`x``` (and ``:class:``, ``:meth:``, ``:mod:``, ``:attr:``, ``:data:``, ``:exc:``, ``:obj:``): a link to
  ``x`` where the site documents it, else ``x`` as code. ``x`` is resolved in the docstring's own scope, as Sphinx
  does (``end_epoch`` inside ``EpochValuer`` is ``chg.valuation.EpochValuer.end_epoch``), and a full ``chg.`` path
  links to where the object is defined (``chg.sequence.SequenceValuer``: ``chg.sequence_valuation.SequenceValuer``);
  ``~a.b.c`` shows ``c``.
  The link is an *optional* autorefs cross-reference, so a name the site does not document (a private helper, a
  standard-library module) is plain code, not a broken reference.
- ``:math:`t``` and ``.. math::`` blocks: the LaTeX source as code (the site loads no script, so nothing renders
  maths; the source is what the docstring says).
- A paragraph ending in ``::`` (reST's literal block marker): ``:``, the indented block after it stays a code block.
- A section header (``Args:``, ``Returns:``, ``Raises:``, ...) right under the previous section gets the blank line
  above it that griffe's Google parser needs to see a section (the docstrings here stack their sections).
- A public module attribute bound at import time to a function made by a factory (``select_chg =
  _variant(...)`` in :mod:`chg.selection.algorithm2`) has no docstring in the source; it gets the function's runtime
  ``__doc__`` (the module is imported for that), so the site documents it and links to it.

The docstrings document several parameters in one entry (``utility, gradient: ...``), which griffe's own check of
parameter names cannot read, so mkdocs.yml turns that check off and :func:`check_args` does it instead: every name of
an ``Args:`` entry (split at commas and slashes) must be a parameter of the function (of ``__init__`` for a class,
or a field of a dataclass), else the build warns (and ``--strict`` fails).

Loaded by mkdocs.yml (``plugins.mkdocstrings.handlers.python.options.extensions``); not part of the library.
"""
from __future__ import annotations

import html
import importlib
import inspect
import logging
import re

import griffe

ROLE = re.compile(r":(?:py:)?(func|class|meth|mod|attr|data|exc|obj):`(~?)([^`<>]+?)(?:\(\))?`")
MATH = re.compile(r":math:`([^`]+)`")
MATH_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)\n(?P<rest>(?:(?P=indent)[ \t]+\S.*\n)*)",
                        re.M)
LITERAL = re.compile(r"(\S)::[ \t]*\n(?=[ \t]*\n)")

log = logging.getLogger("mkdocs.plugins.chg_docs")  # a warning here counts in `mkdocs build --strict`


SECTION = re.compile(r"^(?P<line>[ \t]*(?:Args|Arguments|Parameters|Attributes|Returns|Yields|Raises|Warns|Examples?|"
                     r"Notes?):[ \t]*)$", re.M)


def _identifier(obj: griffe.Object, target: str) -> str:
    """The full path of ``target`` as seen from ``obj``'s scope, or ``target`` when it does not resolve."""
    head, _, tail = target.partition(".")
    scope = obj
    while scope is not None:
        try:
            path = scope.resolve(head)
        except griffe.NameResolutionError:
            scope = scope.parent
            continue
        return f"{path}.{tail}" if tail else path
    return target


def _canonical(obj: griffe.Object, target: str) -> str:
    """The path where the object a full ``chg.`` path names is defined (documented), or ``target`` when it does not
    resolve: a name re-exported by a module that imports it (``chg.sequence.SequenceValuer``) links to the page of the
    module that defines it (``chg.sequence_valuation.SequenceValuer``)."""
    package = obj.package
    try:
        found = package if target == package.path else package[target[len(package.path) + 1:]]
        return found.canonical_path
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return target


def _code(text: str) -> str:
    r"""A Markdown code span of ``text`` (its content is not read as Markdown: ``\sum_{k}`` stays as written)."""
    ticks = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def convert(text: str, obj: griffe.Object) -> str:
    """``text`` (a docstring) with its reST roles, maths and literal-block markers made Markdown."""
    def math_block(m: re.Match) -> str:
        indent = m["indent"]
        body = [m["first"].strip()] + [line.strip() for line in m["rest"].splitlines()]
        fence = f"{indent}```text\n" + "".join(f"{indent}{line}\n" for line in body if line) + f"{indent}```\n"
        return fence

    text = MATH_BLOCK.sub(math_block, text)
    text = MATH.sub(lambda m: _code(m[1]), text)

    def role(m: re.Match) -> str:
        target = m[3].strip()
        shown = target.rsplit(".", 1)[-1] if m[2] else target
        if m[1] in ("func", "meth"):
            shown += "()"
        identifier = _canonical(obj, target) if target.startswith("chg.") else _identifier(obj, target)
        return f'<autoref identifier="{html.escape(identifier)}" optional>{_code(shown)}</autoref>'

    text = ROLE.sub(role, text)
    text = SECTION.sub(lambda m: "\n" + m["line"], text)
    text = re.sub(r"\n{3,}", "\n\n", text)  # one blank line where the docstring already had one
    return LITERAL.sub(r"\1:\n", text)


def _parameters(obj: griffe.Object) -> set | None:
    """The names an ``Args:`` entry of ``obj``'s docstring may use, or None when there is no signature to check."""
    if obj.is_function:
        return {p.name for p in obj.parameters}
    if obj.is_class:
        names = {m.name for m in obj.members.values() if not m.is_alias and m.is_attribute}  # dataclass fields
        init = obj.members.get("__init__")
        if init is not None and not init.is_alias and init.is_function:
            names |= {p.name for p in init.parameters}
        return names
    return None


def check_args(obj: griffe.Object) -> None:
    """Warn for an ``Args:`` entry that names something that is not a parameter of ``obj``."""
    allowed = _parameters(obj)
    if allowed is None or obj.docstring is None or obj.path.startswith("chg.experiments"):  # the harness: not rendered
        return
    for section in griffe.parse(obj.docstring, griffe.Parser.google, warn_unknown_params=False,
                                warn_missing_types=False):
        if section.kind is not griffe.DocstringSectionKind.parameters:
            continue
        for entry in section.value:
            for name in re.split(r"\s*[,/]\s*", entry.name.strip()):
                if name.lstrip("*") not in allowed:
                    log.warning("%s:%s: Args entry %r of %s: %r is not a parameter (%s)", obj.relative_filepath,
                                obj.docstring.lineno, entry.name, obj.path, name, ", ".join(sorted(allowed)))


def runtime_docstring(attr: griffe.Attribute) -> None:
    """Give ``attr`` (a public module attribute without a docstring) the ``__doc__`` of the function it is bound to."""
    module = attr.parent
    if attr.docstring is not None or not module.is_module or attr.name not in (module.exports or ()):
        return
    value = getattr(importlib.import_module(module.path), attr.name, None)
    if inspect.isfunction(value) and value.__doc__:
        attr.docstring = griffe.Docstring(inspect.cleandoc(value.__doc__), parent=attr)


class RstRoles(griffe.Extension):
    """Rewrites every docstring of the loaded package once it is complete (names then resolve across modules)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        seen = set()
        stack = [pkg]
        while stack:
            obj = stack.pop()
            if obj.is_alias or id(obj) in seen:
                continue
            seen.add(id(obj))
            if obj.is_attribute and not obj.path.startswith("chg.experiments"):
                runtime_docstring(obj)
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj)
                check_args(obj)
            stack.extend(obj.members.values())
