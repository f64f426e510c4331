"""The documentation site and its code.

- ``mkdocs build --strict`` passes (into a temporary directory): a broken link or cross-reference, a page left out of
  the nav, a docstring griffe cannot read, or an ``Args:`` entry naming no parameter fails it;
- the built site loads nothing from another host (offline: no web fonts, scripts or stylesheets from a CDN);
- the API reference covers the library's modules and not the paper's harness (``chg.experiments``);
- every ```python block of README.md and of every docs/ page runs as written, each in a fresh interpreter in an empty
  temporary directory (the shared helper :func:`run_block`, used by tests/test_readme.py too), and the torchrun page's
  script also runs under ``torchrun`` with two processes.
"""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_ext" not in p.parts)

# The library modules the API reference documents: every module of the package but the paper's harness
# (chg.experiments) and the ``python -m chg`` entry point — read from the package, so a new module must get a page.
def _library() -> set:
    import pkgutil

    import chg
    names = {"chg"} | {m.name for m in pkgutil.walk_packages(chg.__path__, "chg.", onerror=lambda name: None)}
    return {n for n in names if not n.startswith("chg.experiments") and n != "chg.__main__"}


LIBRARY = _library()


def python_blocks(text: str) -> list:
    """The ```python blocks of a Markdown text, in order (their code, without the fences)."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def block_env() -> dict:
    """The environment a block runs in: this checkout's chg first, no display, one thread unless set."""
    return {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_block(code: str, cwd: Path, where: str) -> subprocess.CompletedProcess:
    """Run ``code`` as written in a fresh interpreter in ``cwd``; fail naming ``where`` with the block and stderr."""
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=block_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, f"{where} failed:\n{code}\n--- stderr ---\n{out.stderr[-4000:]}"
    return out


DOC_BLOCKS = [(page.relative_to(ROOT).as_posix(), i, code)
              for page in PAGES for i, code in enumerate(python_blocks(page.read_text()))]


def test_the_docs_have_their_blocks():
    """The block test cannot pass by finding nothing: each task page where code helps has code."""
    pages_with_code = {page for page, _, _ in DOC_BLOCKS}
    for page in ("index", "check-the-paper", "value-data", "mislabeled", "selection", "training-loop", "torchrun",
                 "modes", "trainers"):
        assert f"docs/{page}.md" in pages_with_code, page
    assert len(DOC_BLOCKS) >= 12


NEEDS = {"transformers": ("transformers", "accelerate"), "lightning": ("lightning",), "timm": ("timm",)}


@pytest.mark.parametrize("page,i,code", DOC_BLOCKS, ids=[f"{p}:block{i}" for p, i, _ in DOC_BLOCKS])
def test_docs_python_block_runs(page, i, code, tmp_path):
    for word, deps in NEEDS.items():  # an integration's block needs its framework (installed by setup.sh for CI)
        if re.search(rf"^\s*(from|import) {word}\b", code, flags=re.M):
            for dep in deps:
                if importlib.util.find_spec(dep) is None:
                    pytest.skip(f"{dep} is not installed")
    run_block(code, tmp_path, f"{page} block {i}")


def test_torchrun_page_runs_under_torchrun(tmp_path):
    """The torchrun page's script under ``torchrun --nproc-per-node=2`` (gloo on the CPU): it ends, and rank 0 saved
    every row's value — each of the 1,797 rows valued in each of the 3 epochs, although each rank saw half."""
    (code,) = python_blocks((DOCS / "torchrun.md").read_text())
    (tmp_path / "train_ddp.py").write_text(code)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "train_ddp.py"], cwd=tmp_path, env=block_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    import chg
    values = chg.Values.load(tmp_path / "values.npz")
    assert values.history.shape == (3, 1797)
    assert np.isfinite(values.history).all()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """``mkdocs build --strict`` of this checkout into a temporary directory; its output folder."""
    out_dir = tmp_path_factory.mktemp("site")
    env = {**block_env(), "NO_MKDOCS_2_WARNING": "1"}  # Material's notice about MkDocs 2.0, not a warning
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                          str(ROOT / "mkdocs.yml"), "--site-dir", str(out_dir)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"mkdocs build --strict failed:\n{out.stderr[-6000:]}"
    return out_dir


def test_mkdocs_build_strict(site):
    assert (site / "index.html").exists()
    loop = (site / "api" / "loop" / "index.html").read_text()
    assert 'id="chg.loop.value_data"' in loop  # the API reference was generated, not left empty
    value_data = loop.split('id="chg.loop.value_data"')[1].split('class="doc doc-object doc-')[0]
    for section in ("Parameters:", "Returns:", "Raises:"):  # parsed into sections, not left as a paragraph
        assert f'<span class="doc-section-title">{section}</span>' in value_data, section


def test_site_fetches_nothing_from_another_host(site):
    """No page loads a script, stylesheet, font or image from a URL (links a reader clicks are fine)."""
    loads = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*?(?:src|href)=[\"']?(?:https?:)?//", re.I)
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert not loads.search(text), f"{page.relative_to(site)} loads {loads.search(text).group(0)}"
    for css in site.rglob("*.css"):
        assert not re.search(r"@import\s+url\(\s*[\"']?(?:https?:)?//", css.read_text()), css


def test_api_reference_is_the_library():
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.M))
    assert documented == LIBRARY, (sorted(documented - LIBRARY), sorted(LIBRARY - documented))


def test_api_top_page_lists_all_of_chg():
    import chg
    page = (DOCS / "api" / "chg.md").read_text()
    for name in chg.__all__:
        assert f"[`{name}`][" in page, f"docs/api/chg.md does not list chg.{name}"


def _rst_roles():
    spec = importlib.util.spec_from_file_location("rst_roles", DOCS / "_ext" / "rst_roles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rst_roles_become_markdown():
    """The docs build's docstring rewrite on real chg objects: names resolve in the docstring's own scope."""
    import griffe
    ext = _rst_roles()
    pkg = griffe.load("chg", search_paths=[str(ROOT)], resolve_aliases=False)
    end_epoch = pkg["valuation.EpochValuer.end_epoch"]
    out = ext.convert(":meth:`values` and :func:`~chg.lastlayer.loss_and_error`; :math:`\\sum_{k}x_k`.\n"
                      "Args:\n    x: y.\nReturns:\n    z.\n", end_epoch)
    assert '<autoref identifier="chg.valuation.EpochValuer.values" optional>`values()`</autoref>' in out
    assert '<autoref identifier="chg.lastlayer.loss_and_error" optional>`loss_and_error()`</autoref>' in out
    assert "`\\sum_{k}x_k`" in out
    assert "\n\nReturns:\n" in out and "\n\nArgs:\n" in out  # griffe needs the blank line above a section
    block = ext.convert("Before:\n\n.. math::  a = b\n           + c\n\nAfter::\n\n    code\n", end_epoch)
    assert "```text\na = b\n+ c\n```" in block and "After:\n" in block and "After::" not in block
