"""Every example in README.md runs as written."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)

_RUN_TESTS = """
for _name, _fn in list(globals().items()):
    if _name.startswith("test_") and callable(_fn):
        _fn()
        print("ran", _name)
"""


def test_readme_has_examples() -> None:
    assert len(PYTHON_BLOCKS) >= 4
    assert any("durable run examples/remind_user.py" in b for b in BASH_BLOCKS)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_block_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(PYTHON_BLOCKS[index] + _RUN_TESTS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"README block {index} failed:\n{proc.stderr}"
    if "def test_" in PYTHON_BLOCKS[index]:
        assert "ran test_" in proc.stdout


def test_first_setup_command_runs_the_example(tmp_path: Path) -> None:
    setup = next(b for b in BASH_BLOCKS if "durable run examples/remind_user.py" in b)
    command = setup.split("&&")[-1].strip()
    argv = shlex.split(command)
    assert argv[0] == ".venv/bin/durable"
    argv[0] = str(Path(sys.executable).parent / "durable")
    argv = [a if not a.startswith("examples/") else str(ROOT / a) for a in argv]
    proc = subprocess.run(
        [*argv, "--db", str(tmp_path / "db.sqlite")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"times_reminded": 2' in proc.stdout
