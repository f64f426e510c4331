"""Every ```python block of docs/*.md runs as written, each in a fresh interpreter in a new directory (a block that
imports an integration's framework is skipped when that framework is not installed)."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
BLOCKS = [(page, code) for page in PAGES
          for code in re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)]
NEEDS = {"transformers": ("transformers", "accelerate"), "lightning": ("lightning",), "timm": ("timm",)}


def test_the_pages_have_blocks():
    assert any(p.name == "trainers.md" for p in PAGES)
    assert sum(p.name == "trainers.md" for p, _ in BLOCKS) >= 2  # the test cannot pass by finding nothing


@pytest.mark.parametrize("page,code", BLOCKS, ids=[f"{p.stem}-block{i}" for i, (p, _) in enumerate(BLOCKS)])
def test_python_block_runs(page, code, tmp_path):
    for word, deps in NEEDS.items():
        if re.search(rf"^\s*(from|import) {word}\b", code, flags=re.M):
            for dep in deps:
                if importlib.util.find_spec(dep) is None:
                    pytest.skip(f"{dep} is not installed")
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, f"{page.name} block failed:\n{code}\n--- stderr ---\n{out.stderr[-4000:]}"
