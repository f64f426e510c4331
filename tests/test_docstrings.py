"""Every public callable of chg/ documents its interface (issue 10 item 7).

Public: what ``chg.__all__`` and each chg module's ``__all__`` export that is a function or a class defined in chg/,
and the public methods (no leading underscore) that such a class defines itself. The rule, read from the source:

- a docstring;
- ``Args:`` (``Attributes:`` for a dataclass's fields) when the callable takes parameters besides ``self``/``cls`` —
  for a class, those of its ``__init__``;
- ``Returns:`` (or ``Yields:``) when a ``return`` statement of its own body returns a value (or it yields);
- ``Raises:`` when its body (nested functions included) has a ``raise`` statement — for a class, its ``__init__``
  and ``__post_init__``.

A section is a line of its own that starts with the section's name and a colon. Errors raised only by callees are not
required (they are named where it helps), so the rule cannot demand a section that does not apply.
"""
import ast
import dataclasses
import importlib
import inspect
import pkgutil
import textwrap

import pytest

import chg

SKIP_MODULES = {"chg.__main__"}  # __main__ runs the CLI
OPTIONAL = {"chg.integrations.huggingface": ("transformers", "accelerate"),
            "chg.integrations.lightning": ("lightning",)}


def _modules():
    names = ["chg"] + [m.name for m in pkgutil.walk_packages(chg.__path__, "chg.") if m.name not in SKIP_MODULES]
    out = []
    for name in names:
        if name == "chg.opendataval" and importlib.util.find_spec("opendataval") is None:
            continue
        if any(importlib.util.find_spec(dep) is None for dep in OPTIONAL.get(name, ())):
            continue  # an integration whose framework is not installed (its own tests skip too)
        out.append(importlib.import_module(name))
    return out


def _public():
    """{qualified name: object} of every public function and class (and the classes' own public methods)."""
    found = {}
    for module in _modules():
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not obj.__module__.startswith("chg"):
                continue
            found[f"{obj.__module__}.{obj.__qualname__}"] = obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if inspect.isfunction(member):
                        found[f"{obj.__module__}.{obj.__qualname__}.{attr}"] = member
    return found


def _tree(fn):
    """The ast of the function's own definition (its undecorated code)."""
    fn = inspect.unwrap(fn)
    return ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]


def _own_nodes(node):
    """The nodes of a function body, not descending into nested functions, lambdas or classes."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        n = stack.pop()
        yield n
        if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(n))


def _params(fn) -> list:
    return [p for p in inspect.signature(inspect.unwrap(fn)).parameters if p not in ("self", "cls")]


SECTIONS = ("Args", "Attributes", "Returns", "Yields", "Raises")


def _sections(doc: str) -> set:
    return {s for line in doc.splitlines() for s in SECTIONS if line.strip().startswith(s + ":")}


def _raises(fn) -> bool:
    return any(isinstance(n, ast.Raise) for n in ast.walk(_tree(fn)))


def required(obj) -> set:
    """The sections ``obj``'s docstring must have under the rule of the module docstring."""
    need = set()
    if inspect.isclass(obj):
        init = inspect.unwrap(vars(obj)["__init__"]) if "__init__" in vars(obj) else None
        if dataclasses.is_dataclass(obj):
            if dataclasses.fields(obj):
                need.add("Attributes|Args")
        elif init is not None and _params(init):
            need.add("Args")
        hooks = [vars(obj)[n] for n in ("__init__", "__post_init__") if inspect.isfunction(vars(obj).get(n))]
        if any(_raises(h) for h in hooks if not _generated(h)):
            need.add("Raises")
        return need
    if _params(obj):
        need.add("Args")
    tree = _tree(obj)
    own = list(_own_nodes(tree))
    if any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in own):
        need.add("Returns|Yields")
    elif any(isinstance(n, ast.Return) and n.value is not None and not (isinstance(n.value, ast.Constant) and
             n.value.value is None) for n in own):
        need.add("Returns|Yields")
    if _raises(obj):
        need.add("Raises")
    return need


def _generated(fn) -> bool:
    """A dataclass's generated ``__init__`` has no source file of its own."""
    try:
        inspect.getsource(inspect.unwrap(fn))
    except (OSError, TypeError):
        return True
    return False


def missing(obj) -> list:
    doc = inspect.getdoc(obj) or ""
    if not doc.strip():
        return ["docstring"]
    have = _sections(doc)
    return [need for need in sorted(required(obj)) if not any(alt in have for alt in need.split("|"))]


PUBLIC = _public()


def test_the_walk_finds_the_public_api():
    for name in ("chg.shapley.chg_shapley", "chg.factored.Options", "chg.valuation.EpochValuer.end_epoch",
                 "chg.selection.algorithm2.select_chg", "chg.selection.interface.budget", "chg.renames.renamed"):
        assert name in PUBLIC, name
    assert len(PUBLIC) > 100


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_docstring_has_its_sections(name):
    assert missing(PUBLIC[name]) == [], f"{name}: docstring lacks {missing(PUBLIC[name])}"


def test_the_rule_catches_a_missing_section():
    def f(x):
        """Doubles x.

        Args:
            x: a number.
        """
        if x is None:
            raise ValueError("x is None")
        return 2 * x
    assert missing(f) == ["Raises", "Returns|Yields"]

    def g():
        """Nothing to say.

        Returns:
            nothing.
        """
    assert missing(g) == []
