"""The core's stage contract (pyproject's [tool.importlinter]) holds, and it can fail.

Stages import only the stages before them (load → observe → intervene → select → tune),
and no core module imports a web framework. The second test plants a backwards import in
a copy of the core and checks that the same contract rejects it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([str(LINT), "--config", str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_core_keeps_its_stage_contract() -> None:
    result = _lint(REPO, REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("where", "line", "contract"),
    [
        ("load/planted.py", "from outlier_core.tune import jobs\n", "Stages import only the stages before them"),
        ("observe/planted.py", "import fastapi\n", "The core imports no web framework"),
    ],
)
def test_a_planted_import_breaks_the_contract(tmp_path: Path, where: str, line: str, contract: str) -> None:
    shutil.copytree(REPO / "outlier_core", tmp_path / "outlier_core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "outlier_core" / where).write_text(line)
    result = _lint(tmp_path, tmp_path)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout
    assert "planted" in result.stdout
