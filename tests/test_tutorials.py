"""Tutorials: each jupytext script runs top to bottom, and its notebook twin has the same code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
SCRIPTS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))


def test_tutorials_exist():
    assert SCRIPTS, f"no tutorials found in {TUTORIALS}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_notebook_pair_has_same_code(script):
    import jupytext

    nb_path = script.with_suffix(".ipynb")
    assert nb_path.exists(), f"{nb_path.name} missing: run `jupytext --sync {script.name}`"
    nb = jupytext.read(nb_path)
    py = jupytext.read(script)

    def code(notebook):
        return [c.source.strip() for c in notebook.cells if c.cell_type == "code"]

    assert code(nb) == code(py), f"{nb_path.name} and {script.name} differ: `jupytext --sync`"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"


@pytest.mark.tutorial
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_tutorial_runs(script, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "SCDROPOUT_TUTORIAL_FAST": "1"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{script.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
