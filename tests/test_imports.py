"""chg's import graph has no cycle, and a broken selection method fails when chg.selection is imported.

The graph is read from the source with ``ast`` (every module under chg/, imports at any depth — inside functions
too — relative and absolute, and ``importlib.import_module("chg....")`` calls with a constant name). An import of
``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``, so those count as edges too, except the importing module's
own parent packages (already being imported when it runs). A module importing itself (``python -m chg.opendataval``
imports the plugin under its own name) is not a cycle."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

CHG = Path(__file__).resolve().parents[1] / "chg"


def _module_names(root: Path) -> dict:
    """{dotted module name: path} for every .py file of the package at ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name,) + path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _ancestors(name: str) -> list:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imported(tree: ast.AST, module: str, is_package: bool, modules: dict) -> set:
    """The names of ``modules`` that the module ``module`` imports anywhere in its body, as written."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module
            subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
            found.update(subs)
            if len(subs) < len(node.names):  # names defined by base itself (not only its submodules)
                found.add(base)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__"):
                found.add(node.args[0].value)
    return found


def import_graph(root: Path) -> dict:
    """{module: set of modules of the same package whose code runs when it is imported}."""
    modules = _module_names(root)
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        edges = set()
        for target in _imported(tree, module, path.name == "__init__.py", modules):
            own_parents = set(_ancestors(module))
            for name in _ancestors(target) + [target]:
                if name in modules and name not in own_parents and name != module:
                    edges.add(name)
            if target in own_parents and target in modules:
                edges.add(target)  # a module importing names from its own package's __init__
        graph[module] = edges
    return graph


def find_cycles(graph: dict) -> list:
    """The strongly connected components with more than one module, or a self-loop (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_chg_has_no_import_cycle():
    graph = import_graph(CHG)
    assert find_cycles(graph) == []
    assert "chg.selection" in graph["chg.experiments.train"]
    assert "chg.selection.interface" in graph["chg.selection.gradmatch"]


def _reaches(graph: dict, start: str) -> set:
    seen, todo = set(), [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_the_library_never_imports_the_paper_harness():
    """chg.experiments (the tables' data sets, models, training pipeline, results paths) sits beside the library:
    no module outside it reaches it, at any depth, so an installed chg knows no repository folder."""
    graph = import_graph(CHG)
    library = [m for m in graph if not m.startswith("chg.experiments")]
    assert "chg.valuation" in library and "chg.experiments.train" in graph
    offenders = {m: sorted(w for w in _reaches(graph, m) if w.startswith("chg.experiments")) for m in library}
    assert {m: w for m, w in offenders.items() if w} == {}


def test_the_harness_check_finds_a_planted_import(tmp_path):
    root = _write(tmp_path, {"pkg/__init__.py": "", "pkg/lib.py": "def f():\n    from .experiments import run\n",
                             "pkg/experiments/__init__.py": "", "pkg/experiments/run.py": "X = 1\n"})
    graph = import_graph(root)
    assert "pkg.experiments.run" in _reaches(graph, "pkg.lib")


def _write(root: Path, files: dict) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


@pytest.mark.parametrize("files, cycle", [
    # a lazy import inside a function closes the cycle (the shape of the old selection <-> baselines)
    ({"pkg/__init__.py": "", "pkg/a.py": "from .b import f\n",
      "pkg/b.py": "def f():\n    from pkg.a import g\n    return g\n"}, ["pkg.a", "pkg.b"]),
    # importlib.import_module with a constant name
    ({"pkg/__init__.py": "", "pkg/a.py": "import importlib\nB = importlib.import_module('pkg.sub.b')\n",
      "pkg/sub/__init__.py": "", "pkg/sub/b.py": "from ..a import B\n"}, ["pkg.a", "pkg.sub.b"]),
    # importing pkg.sub.x runs pkg/sub/__init__.py, which imports the importer back
    ({"pkg/__init__.py": "", "pkg/a.py": "from pkg.sub.x import X\n", "pkg/sub/__init__.py": "from ..a import A\n",
      "pkg/sub/x.py": "X = 1\n"}, ["pkg.a", "pkg.sub"]),
    # a submodule importing names from its own package's __init__, which imports it
    ({"pkg/__init__.py": "from .a import A\nB = 1\n", "pkg/a.py": "from . import B\nA = B\n"}, ["pkg", "pkg.a"]),
])
def test_the_checker_finds_planted_cycles(tmp_path, files, cycle):
    assert find_cycles(import_graph(_write(tmp_path, files))) == [cycle]


def test_the_checker_accepts_a_package_whose_modules_import_their_siblings(tmp_path):
    root = _write(tmp_path, {"pkg/__init__.py": "from .a import A\nfrom .b import B\n", "pkg/a.py": "A = 1\n",
                             "pkg/b.py": "from .a import A\nfrom pkg import a\nB = A\n"})
    graph = import_graph(root)
    assert graph == {"pkg": {"pkg.a", "pkg.b"}, "pkg.a": set(), "pkg.b": {"pkg.a"}}
    assert find_cycles(graph) == []


def test_a_broken_selection_method_fails_at_import_time():
    """GradMatch-PB needs scipy: without it, ``import chg.experiments.train`` itself fails (not the first
    GradMatch-PB selection in the middle of a run)."""
    code = ("import sys\nsys.modules['scipy.optimize'] = None\ntry:\n    import chg.experiments.train\n"
            "except ImportError as e:\n    print('ImportError', e)\nelse:\n    print('imported')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=CHG.parent, env={**__import__("os").environ, "PYTHONPATH": str(CHG.parent)})
    assert out.stdout.startswith("ImportError"), out.stdout + out.stderr
    assert "scipy.optimize" in out.stdout
