"""The notebooks' stored outputs: what nbval compares (tests/run.sh runs them with --nbval) must be there and sound.

nbval itself executes the notebooks; these checks catch, without running anything, the mistakes that would make its
comparison silently weaker: outputs stripped, an error stored, a marker nbval does not recognise (it matches the
whole comment, so ``# NBVAL_IGNORE_OUTPUT (why)`` is no marker and the cell's output would be compared). The code
snippets of the text cells, which nbval does not run, are run here on a stand-in model and data."""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
MARKERS = {"NBVAL_IGNORE_OUTPUT", "NBVAL_CHECK_OUTPUT", "NBVAL_RAISES_EXCEPTION", "NBVAL_SKIP"}


def _code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_stored_and_clean(path):
    cells = _code_cells(path)
    assert any(c["outputs"] for c in cells), f"{path.name}: no stored outputs (were they stripped?)"
    for i, c in enumerate(cells):
        for o in c["outputs"]:
            assert o["output_type"] != "error", f"{path.name} code cell {i}: a stored error ({o.get('ename')})"
            if o["output_type"] == "stream" and o["name"] == "stderr":
                pytest.fail(f"{path.name} code cell {i}: stored stderr (a warning?): {''.join(o['text'])[:200]}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_nbval_markers_are_recognised(path):
    for i, c in enumerate(_code_cells(path)):
        for line in "".join(c["source"]).splitlines():
            comment = line.strip().lstrip("#").strip()
            if line.strip().startswith("#") and comment.startswith("NBVAL"):
                assert comment in MARKERS, f"{path.name} code cell {i}: {line.strip()!r} is not an nbval marker " \
                                           f"(the comment must be exactly one of {sorted(MARKERS)})"


def _markdown_snippets():
    """The complete Python snippets in the notebooks' text cells (those that start with ``import chg``)."""
    out = []
    for path in NOTEBOOKS:
        for c in json.loads(path.read_text())["cells"]:
            text = "".join(c["source"])
            if c["cell_type"] == "markdown":
                out += [(path.name, b) for b in re.findall(r"```python\n(.*?)```", text, re.S)
                        if b.startswith("import chg")]
    return out


SNIPPETS = _markdown_snippets()


def test_there_are_snippets():
    assert SNIPPETS, "no `import chg` snippet in the notebooks' text cells"


@pytest.mark.parametrize("name,code", SNIPPETS, ids=[s[0] for s in SNIPPETS])
def test_text_snippets_run_on_a_stand_in_model_and_data(name, code):
    """A snippet of a text cell ("With your own data") runs as written, given a ``model`` and data ``(x, y)``."""
    import torch
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(150, 5, generator=g), torch.randint(0, 3, (150,), generator=g)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    exec(compile(code, name, "exec"), {"model": model, "x": x, "y": y})
