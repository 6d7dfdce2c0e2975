"""The benchmark scripts start: each imports what it needs, as run by hand, from any folder.

Nothing here measures anything. The scripts run for minutes against servers, so the suite only
checks that each one gets as far as parsing its options (``--help``), which imports the
script, ``bench/_harness.py`` and everything the script imports at its top. A script that
imports a name moved elsewhere, or that relies on a ``sys.path`` edit, fails here.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(path for path in BENCH.glob("*.py") if not path.name.startswith("_"))


def test_there_are_scripts() -> None:
    assert len(SCRIPTS) >= 10, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_a_script_starts_from_another_folder(script: pathlib.Path, tmp_path: pathlib.Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout.lower(), done.stdout[-2000:]


@pytest.mark.parametrize("script", [BENCH / "_harness.py", *SCRIPTS], ids=lambda path: path.name)
def test_a_script_leaves_sys_path_alone(script: pathlib.Path) -> None:
    """Run as a script, a file's folder is on ``sys.path``: no script needs more, or less."""
    tree = ast.parse(script.read_text())
    edits = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    assert not edits, f"{script.name} uses sys.path at lines {edits}"
    # Its folder comes first on sys.path, so a script named after an installed module would
    # shadow it for every script (bench/azure.py did, azure; bench/requests.py, requests).
    assert importlib.util.find_spec(script.stem) is None, f"{script.name} shadows a module"
