"""Every ```python block of README.md runs as written, each in a fresh interpreter (a new directory, data that ships
with scikit-learn), and the README's `chg value` command runs on a CSV of the name it uses."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)


def _env():
    return {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _usage_section() -> str:
    start = README.index("## Using CHG Shapley on your own model")
    return README[start:README.index("\n## ", start + 1)]


def test_readme_has_the_snippets():
    assert len(BLOCKS) >= 3  # the test cannot pass by finding nothing
    usage = _usage_section()
    first_block = re.search(r"```(\w+)\n(.*?)```", usage, flags=re.S)
    assert first_block.group(1) == "bash" and first_block.group(2).lstrip().startswith("chg value ")


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_python_block_runs(code, tmp_path):
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, f"README block failed:\n{code}\n--- stderr ---\n{out.stderr[-4000:]}"


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
    out = subprocess.run([sys.executable, "-m", "chg", *argv[1:], "--epochs", "2"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    out_dir = tmp_path / argv[argv.index("--out") + 1]
    assert (out_dir / "values.csv").read_text().count("\n") == len(frame) + 1
    assert (out_dir / "report.png").exists()
