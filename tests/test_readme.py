"""The README's examples run as shown: its Python blocks, its `python -c` one-liners and its captured CLI output.

Blocks fenced as ```python must run as they stand; blocks fenced as ```py need data or a network (LJSpeech) and are
shown, not run.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wavenet_dilated.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PY_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
ONE_LINERS = [line for block in re.findall(r"```bash\n(.*?)```", README, re.S)
              for line in block.splitlines() if line.startswith("python -c ")]
CAPTURED = re.findall(r"```\n\$ wavenet-dilated (.*?)\n(.*?)```", README, re.S)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_readme_has_examples():
    assert PY_BLOCKS and ONE_LINERS and CAPTURED


@pytest.mark.parametrize("block", PY_BLOCKS, ids=lambda b: b.splitlines()[0][:40])
def test_python_blocks_run(block, tmp_path):
    r = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("line", ONE_LINERS, ids=lambda s: s[:40])
def test_one_liners_run(line, tmp_path):
    r = subprocess.run(line, shell=True, cwd=tmp_path, env={**ENV, "PATH": f"{Path(sys.executable).parent}:"
                       f"{os.environ['PATH']}"}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("args,expected", CAPTURED, ids=[c[0] for c in CAPTURED])
def test_captured_cli_output_is_current(args, expected, capsys):
    assert cli(args.split()) == 0
    assert capsys.readouterr().out == expected
