"""README.md is a front page whose code runs: every ```python block runs as written, each in a fresh interpreter (a
new directory, data that ships with scikit-learn; the helper shared with tests/test_docs.py), the quick start comes
within the first screen, the README's `chg value` command runs on a CSV of the name it uses, and every file the
README links to exists."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from test_docs import block_env, python_blocks, run_block

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = python_blocks(README)


def _usage_section() -> str:
    start = README.index("## Using CHG Shapley on your own model")
    return README[start:README.index("\n## ", start + 1)]


def test_readme_has_the_snippets():
    assert len(BLOCKS) >= 1  # the test cannot pass by finding nothing
    usage = _usage_section()
    first_block = re.search(r"```(\w+)\n(.*?)```", usage, flags=re.S)
    assert first_block.group(1) == "bash" and first_block.group(2).lstrip().startswith("chg value ")


def test_quick_start_is_on_the_first_screen():
    """The first ``value_data`` call is within the first 60 lines, in a runnable block that goes from value_data to
    the Values and what to do with them: suspects, a plot, a file."""
    first = next(i for i, line in enumerate(README.splitlines(), 1) if "chg.value_data(" in line)
    assert first <= 60, f"the first value_data call is on line {first}"
    quick = next(b for b in BLOCKS if "chg.value_data(" in b)
    for call in (".suspects(", ".plot(", ".save("):
        assert call in quick, call


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_python_block_runs(code, tmp_path):
    run_block(code, tmp_path, "README block")


def test_readme_links_exist():
    """Every relative link of the README (to a docs page, a result file, a notebook) names a file of the repository."""
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", README) if not re.match(r"[a-z]+:|#", t)]
    assert len(links) >= 10
    for target in links:
        assert (ROOT / target.split("#")[0]).exists(), f"README links to {target}, which does not exist"


def test_chg_value_command_runs(tmp_path):
    """The first command of the usage section, verbatim, on breast cancer written under the file and column names
    the README uses."""
    from sklearn.datasets import load_breast_cancer
    usage = _usage_section()
    line = re.search(r"```bash\n(chg value [^\n#]*)", usage).group(1).strip()
    argv = shlex.split(line)
    data, label = argv[2], argv[argv.index("--label") + 1]
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": label})
    frame.to_csv(tmp_path / data, index=False)
    out = subprocess.run([sys.executable, "-m", "chg", *argv[1:], "--epochs", "2"], cwd=tmp_path, env=block_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    out_dir = tmp_path / argv[argv.index("--out") + 1]
    assert (out_dir / "values.csv").read_text().count("\n") == len(frame) + 1
    assert (out_dir / "report.png").exists()
