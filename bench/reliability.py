"""The reliability table: every fault, load and bad-input case, per backend.

Runs the test modules that prove the issue-7 promises (faults through the
loopback proxy, the soak test, bad input, secrets) with a JUnit XML report,
then prints one row per case with its result under asyncio and trio, and
writes the rows as JSON. The soak benchmark's memory bound is a separate
script (``bench/soak.py``); ``make reliability`` runs both.

    python bench/reliability.py [--out bench/results/reliability.json] [--markdown]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "results" / "reliability.json"
MODULES = {
    "tests/test_faults_s3.py": "S3 (moto)",
    "tests/test_faults_gcs.py": "GCS (emulator)",
    "tests/test_faults_azure.py": "Azure (Azurite)",
    "tests/test_soak.py": "soak",
    "tests/test_bad_input.py": "bad input",
    "tests/test_secrets.py": "secrets",
}
#: Groups whose parametrised cases are many variants of one property: one row each.
COLLAPSED = {"bad input", "secrets"}
_PARAMS = re.compile(r"^(?P<name>[^\[]+)(?:\[(?P<params>.*)\])?$")


def _outcome(case: ET.Element) -> str:
    for child in case:
        if child.tag == "skipped":
            return "xfail" if "xfail" in (child.get("type") or "") else "skip"
        if child.tag in {"failure", "error"}:
            return "FAIL"
    return "pass"


def _where(classname: str) -> tuple[str, str | None]:
    """(module, test class or None) of a JUnit classname such as ``tests.test_x.TestY``."""
    parts = classname.split(".")
    found = [i for i, part in enumerate(parts) if part.startswith("test_")]
    if not found:
        return parts[-1], None
    i = found[-1]
    return parts[i], parts[i + 1] if i + 1 < len(parts) else None


def _words(cls: str) -> str:
    """``TestCompositeUploads`` -> ``composite uploads``."""
    return " ".join(re.findall(r"[A-Z][a-z0-9]*", cls.removeprefix("Test"))).lower()


def collect(junit: Path) -> list[dict[str, Any]]:
    """Rows of (group, case) with the outcome per event loop, from a JUnit XML file.

    A module with several test classes (GCS's upload methods) has a group per class;
    cases skipped everywhere (run by another class) have no row.
    """
    cases = list(ET.parse(junit).iter("testcase"))
    classes: dict[str, set[str | None]] = collections.defaultdict(set)
    for case in cases:
        module, cls = _where(case.get("classname") or "")
        classes[module].add(cls)
    table: dict[tuple[str, str], dict[str, Any]] = collections.OrderedDict()
    for case in cases:
        module, cls = _where(case.get("classname") or "")
        group = next(
            (label for path, label in MODULES.items() if Path(path).stem == module), module
        )
        if cls is not None and len(classes[module]) > 1:
            group = f"{group}, {_words(cls)}"
        match = _PARAMS.match(case.get("name") or "")
        assert match is not None
        params = [p for p in (match["params"] or "").split("-") if p]
        loop = next((p for p in params if p in {"asyncio", "trio"}), "sync")
        rest = "-".join(p for p in (match["params"] or "").split("-") if p not in {loop})
        name = match["name"].removeprefix("test_").replace("_", " ")
        label = f"{name} [{rest}]" if rest and group not in COLLAPSED else name
        row = table.setdefault(
            (group, label),
            {"group": group, "case": label, "seconds": 0.0, "variants": 0, "results": {}},
        )
        outcome = _outcome(case)
        previous = row["results"].get(loop)
        # A collapsed row shows its worst variant: FAIL over skip/xfail over pass.
        rank = {"pass": 0, "skip": 1, "xfail": 1, "FAIL": 2}
        if previous is None or rank[outcome] > rank[previous]:
            row["results"][loop] = outcome
        row["variants"] += loop != "trio"
        row["seconds"] += float(case.get("time") or 0)
    return [row for row in table.values() if set(row["results"].values()) != {"skip"}]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| where | case | asyncio | trio | s |", "|---|---|---|---|---|"]
    for row in rows:
        results = row["results"]
        sync = results.get("sync")
        case = row["case"] + (f" ({row['variants']} variants)" if row["variants"] > 1 else "")
        lines.append(
            f"| {row['group']} | {case} | {results.get('asyncio', sync or '-')} | "
            f"{results.get('trio', sync or '-')} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    modules = [m for m in MODULES if (REPO / m).exists()]
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            f"--junitxml={junit}",
            "-o",
            "junit_family=xunit1",
            *modules,
        ]
        print("$", " ".join(command), flush=True)
        status = subprocess.run(command, cwd=REPO, check=False).returncode
        rows = collect(junit)
    if args.markdown:
        print(markdown(rows))
    else:
        width = max(len(r["case"]) for r in rows)
        for row in rows:
            results = row["results"]
            shown = "  ".join(f"{loop}={outcome}" for loop, outcome in results.items())
            print(f"{row['group']:<16} {row['case']:<{width}}  {shown}")
    failed = sum(1 for r in rows for o in r["results"].values() if o == "FAIL")
    total = sum(len(r["results"]) for r in rows)
    print(f"\n{total} results, {failed} failed (pytest exit status {status})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "pytest_status": status}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
