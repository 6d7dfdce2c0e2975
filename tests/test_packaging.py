"""What a user of the published package meets: metadata, the licence, the README's links
(which must work on PyPI, away from the repository) and ``python -m asyncstore``."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The installed distribution's metadata: what pip and PyPI see.
META = importlib.metadata.metadata("asyncstore")


def test_the_licence_file_is_the_mit_licence_the_metadata_names() -> None:
    assert META["License-Expression"] == "MIT"
    assert META.get_all("License-File") == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text


def test_the_metadata_has_authors_classifiers_and_urls() -> None:
    assert META["Author"] or META["Author-email"]
    classifiers = META.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers  # the package ships py.typed
    assert "Framework :: Trio" in classifiers
    assert "Framework :: AsyncIO" in classifiers
    urls = dict(entry.split(", ", 1) for entry in META.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())
    assert (ROOT / "asyncstore" / "py.typed").exists()


def test_every_readme_link_is_absolute() -> None:
    """PyPI shows the README away from the repository: a relative link there is dead."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme) + re.findall(
        r"^\[[^\]]+\]:\s*(\S+)", readme, re.MULTILINE
    )
    assert targets
    relative = [t for t in targets if not re.match(r"https?://", t)]
    assert relative == []


def test_python_dash_m_asyncstore_runs_the_command_line() -> None:
    help_run = subprocess.run(
        [sys.executable, "-m", "asyncstore", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert help_run.returncode == 0, help_run.stderr
    assert help_run.stdout.startswith("usage: asyncstore")
    version = subprocess.run(
        [sys.executable, "-m", "asyncstore", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert version.returncode == 0, version.stderr
    assert "0.1.0" in version.stdout


def test_the_store_reference_lists_every_public_store_member() -> None:
    """docs/api/store.md lists the members one by one (everyday calls first): none missing."""
    from asyncstore import Store

    page = (ROOT / "docs" / "api" / "store.md").read_text()
    listed = set(re.findall(r"^::: asyncstore\.Store\.(\w+)$", page, re.MULTILINE))
    public = {name for name in vars(Store) if not name.startswith("_")}
    assert public - listed == set()
    assert page.index("asyncstore.Store.put") < page.index("asyncstore.Store.create_upload")
