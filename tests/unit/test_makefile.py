"""The Makefile's install stamps: `make run` installs the runtime, `make test` the dev extra."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def dry_run(directory: Path, *goals: str) -> str:
    make = shutil.which("make")
    if make is None:
        if os.environ.get("CI") == "true":
            pytest.fail("make not found (CI=true: fails instead of skipping)")
        pytest.skip("make not found: apt-get install make")
    result = subprocess.run(
        [make, "-n", *goals], cwd=directory, capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / ".venv").mkdir()
    return tmp_path


def stamp(project: Path, name: str) -> None:
    # Newer than pyproject.toml, as after an install.
    path = project / ".venv" / name
    path.touch()
    later = time.time() + 10
    os.utime(path, (later, later))


def test_run_installs_the_runtime_without_the_test_tools(project: Path) -> None:
    commands = dry_run(project, "run")
    assert "pip install -e '.[embedded]'" in commands
    assert "[dev]" not in commands
    assert "adpulse dev --simulate" in commands


def test_test_after_run_still_installs_the_dev_extra(project: Path) -> None:
    stamp(project, ".runtime")
    assert "pip install" not in dry_run(project, "run")
    assert "pip install -e '.[dev]'" in dry_run(project, "test")


def test_run_after_test_installs_nothing_more(project: Path) -> None:
    stamp(project, ".installed")
    stamp(project, ".runtime")
    assert "pip install" not in dry_run(project, "run")
    assert "pip install" not in dry_run(project, "test")


def test_run_passes_args_to_adpulse_dev(project: Path) -> None:
    stamp(project, ".runtime")
    assert "adpulse dev --simulate --port 8081" in dry_run(project, "run", "ARGS=--port 8081")
