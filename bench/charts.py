"""SVG charts of the benchmark results, for the documentation.

Usage::

    python bench/charts.py [--results bench/results] [--out docs/assets/bench] [NAME ...]

Reads the JSON that the benchmark scripts write (``bench/results/<name>.json``;
by default every one it knows how to draw, or the NAMEs given: ``local``,
``s3``, ``gcs``, ``azure``, ``requests``) and writes one SVG per workload:
``<out>/<name>-<workload>.svg`` (``local.svg`` for ``bench/local.py``, whose
cases are one workload). Each chart has four panels, one bar per client or
case: the rate (MB/s, or requests/s for the small GETs), the client's CPU
time per GiB (or per 1,000 requests), its peak RSS and the event loop's worst
lag. asyncstore's bars are drawn in one colour and every peer's in another,
so the comparison reads at a glance; the run's machine, size and date are in
the chart's caption. A case without a figure (a peer that was skipped or
failed) has no bar.

The SVGs are plain files (text as text, no timestamp, a fixed hash salt), so
that running the script again on the same JSON gives the same bytes and a
regenerated chart shows up in a diff only when its figures changed. Needs
matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Iterable
from typing import Any

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
OUT = ROOT / "docs" / "assets" / "bench"
NAMES = ("local", "s3", "gcs", "azure", "requests")

ASYNCSTORE_COLOUR = "#3f6fb5"
PEER_COLOUR = "#b0b0b0"
LIMIT_COLOUR = "#7a9a5a"

#: (title, the row's field for bytes, the field for requests, its unit for bytes, for requests)
PANELS = (
    ("Rate (higher is better)", "mb_per_s", "requests_per_s", "MB/s", "requests/s"),
    (
        "Client CPU (lower is better)",
        "cpu_s_per_gib",
        "cpu_s_per_1000_requests",
        "s / GiB",
        "s / 1,000 requests",
    ),
    ("Peak RSS (lower is better)", "peak_rss_mib", "peak_rss_mib", "MiB", "MiB"),
    ("Worst event-loop lag (lower is better)", "loop_lag_max_ms", "loop_lag_max_ms", "ms", "ms"),
)
WORKLOAD_TITLES = {
    "upload": "upload of one large file",
    "download": "download of one large file",
    "get-small": "concurrent GETs of small objects",
    "local": "local files: upload_file and download_file against cp and sha256",
    **{
        f"{service}-{op}": f"{name}: {what}, 64 in flight"
        for service, name in (("s3", "S3"), ("gcs", "GCS"), ("azure", "Azure Blob"))
        for op, what in (
            ("get", "small GETs"),
            ("head", "HEADs"),
            ("put", "small PUTs"),
            ("gather", "2,000 small GETs gathered at once, first burst after start-up"),
            ("gather-steady", "2,000 small GETs gathered at once, after gc.collect()"),
            ("gather-frozen", "2,000 small GETs gathered at once, after gc.freeze()"),
        )
    },
}


def rows_of(document: Any) -> list[dict[str, Any]]:
    """The result rows of a benchmark JSON, whichever script wrote it."""
    if isinstance(document, list):
        return [row for row in document if isinstance(row, dict)]
    if isinstance(document, dict):
        for field in ("results", "cases", "rows"):
            rows = document.get(field)
            if isinstance(rows, list):
                return [row for row in rows if isinstance(row, dict)]
    return []


def machine_of(document: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(document, dict) and isinstance(document.get("machine"), dict):
        return dict(document["machine"])
    return dict(rows[0]) if rows else {}  # local.py repeats the machine in every row


def workloads(name: str, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rows by workload (``bench/local.py``'s rows are all one, named ``local``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        workload = str(row.get("workload") or "local")
        groups.setdefault(workload, []).append(row)
    return groups


def _figure(value: float) -> str:
    """A bar's label: three significant digits below 10 (0.149 s), else one decimal."""
    return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"


def label_of(row: dict[str, Any]) -> str:
    return str(row.get("client") or row.get("case") or "?")


def colour_of(row: dict[str, Any]) -> str:
    label = label_of(row)
    if label in ("cp", "sha256"):
        return LIMIT_COLOUR
    kind = "asyncstore" if label.startswith(("asyncstore", "upload-", "download-")) else "peer"
    return ASYNCSTORE_COLOUR if kind == "asyncstore" else PEER_COLOUR


def caption(
    name: str, workload: str, document: Any, machine: dict[str, Any], rows: list[dict[str, Any]]
) -> str:
    parts = [f"bench/{name}.py"]
    settings = document.get("settings", {}) if isinstance(document, dict) else {}
    count, small = settings.get("small_count"), settings.get("small_bytes")
    size = settings.get("large_bytes") or next(
        (row["bytes"] for row in rows if isinstance(row.get("bytes"), (int, float))), None
    )
    if workload == "get-small":
        if count and small:
            parts.append(f"{count:,} GETs of {small / 1024:,.0f} KiB")
    elif size:
        parts.append(f"{size / 2**20:,.0f} MiB")
    if machine.get("cpu_count"):
        parts.append(f"{machine['cpu_count']} CPUs")
    if machine.get("python"):
        parts.append(f"Python {machine['python']}")
    date = machine.get("date") or machine.get("timestamp")
    if date:
        parts.append(str(date)[:10])
    load = machine.get("load_average_1_5_15_at_end") or machine.get("load_average")
    if isinstance(load, list) and load:
        parts.append(f"load average {load[0]:.1f}")
    return ", ".join(parts)


def draw(
    name: str,
    workload: str,
    rows: list[dict[str, Any]],
    document: Any,
    path: pathlib.Path,
) -> None:
    """One chart: four panels of horizontal bars, one bar per row."""
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    machine = machine_of(document, rows)
    plt.rcParams.update({"svg.hashsalt": "asyncstore", "svg.fonttype": "none", "font.size": 9})
    requests = any("requests_per_s" in row for row in rows)
    labels = [label_of(row) for row in rows]
    colours = [colour_of(row) for row in rows]
    height = 1.2 + 0.28 * len(rows)
    figure, axes = plt.subplots(1, len(PANELS), figsize=(13, height), sharey=True)
    positions = list(range(len(rows)))
    for axis, (title, byte_field, request_field, byte_unit, request_unit) in zip(
        axes, PANELS, strict=True
    ):
        field, unit = (request_field, request_unit) if requests else (byte_field, byte_unit)
        values = [row.get(field) for row in rows]
        drawn = [float(v) if isinstance(v, (int, float)) else 0.0 for v in values]
        axis.barh(positions, drawn, color=colours, height=0.7)
        top = max(drawn, default=0.0) or 1.0
        for position, value in zip(positions, values, strict=True):
            text = _figure(value) if isinstance(value, (int, float)) else "n/a"
            shown = float(value) if isinstance(value, (int, float)) else 0.0
            axis.text(shown + top * 0.02, position, text, va="center", fontsize=7)
        axis.set_title(f"{title}\n{unit}", fontsize=9)
        axis.set_xlim(0, top * 1.3)
        axis.tick_params(axis="x", labelsize=7)
        for side in ("top", "right"):
            axis.spines[side].set_visible(False)
    axes[0].set_yticks(positions, labels)
    axes[0].invert_yaxis()
    figure.suptitle(
        f"{WORKLOAD_TITLES.get(workload, workload)} "
        f"({caption(name, workload, document, machine, rows)})",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="svg", metadata={"Date": None, "Creator": "bench/charts.py"})
    plt.close(figure)


def charts(names: Iterable[str], results: pathlib.Path, out: pathlib.Path) -> list[pathlib.Path]:
    """Draw every chart of the named results that exist; return the files written."""
    written: list[pathlib.Path] = []
    for name in names:
        source = results / f"{name}.json"
        if not source.exists():
            print(f"{source}: not there (run bench/{name}.py first); skipped", file=sys.stderr)
            continue
        document = json.loads(source.read_text())
        rows = rows_of(document)
        if not rows:
            print(f"{source}: no result rows; skipped", file=sys.stderr)
            continue
        for workload, group in workloads(name, rows).items():
            filename = f"{name}.svg" if workload == "local" else f"{name}-{workload}.svg"
            draw(name, workload, group, document, out / filename)
            written.append(out / filename)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list(NAMES), help="results to draw")
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS)
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        parser.error(f"unknown results {unknown}; known: {', '.join(NAMES)}")
    for path in charts(args.names, args.results, args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
