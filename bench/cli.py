"""``asyncstore sync`` against ``aws s3 sync`` and ``rclone sync`` on moto: first run, no-op re-run.

The tree (made once under ``bench/.work/cli-tree``, pseudo-random bytes): 5,000 files of
4-64 KiB in 50 folders, plus 10 files of 64 MiB (about 810 MiB in all). For each tool, a
fresh moto server (``asyncstore.testing.emulators``) and bucket; then the tool syncs the tree to
``s3://cli-bench/tree`` (everything is new), and syncs it again (nothing to do). Each run
is one process of the tool, as a user would start it, with its default settings:

* ``asyncstore -q sync TREE 's3://cli-bench/tree?endpoint=...'`` (16 files at once, each
  in one request up to 64 MiB, else with up to 8 parts in flight, the buffers of all of them
  within ``--memory``, 256 MiB; sha256 of every file recorded);
* ``aws --endpoint-url ... s3 sync TREE s3://cli-bench/tree --only-show-errors``: the
  AWS CLI v1 from PyPI (``awscli``), installed on first use into ``bench/.venv-awscli``
  because its botocore pin differs from aiobotocore's (10 requests at once);
* ``rclone sync TREE :s3:cli-bench/tree`` with the endpoint and keys as flags: Debian's
  ``rclone`` (``apt-get install rclone``; 4 transfers, 8 checkers);
* ``floor`` (first run only): ``bench/_cli_floor.py``, not a tool but the least work any
  client can ask of moto for this tree: one ListObjectsV2, then one PutObject per file, 16
  at once, with no signature, checksum or multipart upload. moto being the limit of the
  first run, its time is what no client can beat on this machine at that moment.

Reported per run: wall seconds (process start to exit), files/s and MB/s (files and bytes
the run had to send over wall time; a no-op run sends none, so its files/s counts files
checked), CPU seconds of the tool (user + sys, from ``wait4``), and moto's CPU seconds
(one Python process: at ~1 CPU-second per wall second the server is the limit). After the
first run the bucket is listed to check that every file arrived with its size.

With ``--count-requests``, moto runs with a wrapper (``bench/_moto_counting.py``) that
counts the requests of each run by kind (PutObject, UploadPart, ...), with the bytes they
carried and the CPU time moto's thread spent on each, and notes the headers that can make
moto work more (checksums, ``Content-MD5``, ``Expect``, ``aws-chunked``); a second table
shows them per tool, and the JSON keeps them.

    .venv/bin/python bench/cli.py                       # all three tools
    .venv/bin/python bench/cli.py --tools asyncstore --small-count 500 --big-count 2
    .venv/bin/python bench/cli.py --tools asyncstore,aws,floor --count-requests
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time
from typing import Any

from _harness import DEFAULT_WORK, REPO, RESULTS, machine_info, print_table, write_json

from asyncstore.testing.emulators import FAKE_AWS_ENV as FAKE_ENV
from asyncstore.testing.emulators import moto_server

MiB = 1024 * 1024
BUCKET = "cli-bench"
PREFIX = "tree"
TOOLS = ("asyncstore", "aws", "rclone", "floor")
#: Tools measured on the first run only.
FIRST_ONLY = ("floor",)
AWS_VENV = REPO / "bench" / ".venv-awscli"
TIMEOUT = 3600


# -- the tree ------------------------------------------------------------------------------------


def make_tree(work: pathlib.Path, small: int, big: int, big_mib: int) -> pathlib.Path:
    """The source tree (made once per shape, reused): ``small`` files + ``big`` big ones."""
    root = work / f"cli-tree-{small}x-{big}x{big_mib}m"
    complete = work / f"{root.name}.complete"
    if complete.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(20260101)
    print(f"making {root} ...", file=sys.stderr)
    for i in range(small):
        folder = root / "small" / f"d{i % 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.bin").write_bytes(os.urandom(rng.randint(4 * 1024, 64 * 1024)))
    (root / "big").mkdir(parents=True, exist_ok=True)
    for i in range(big):
        with open(root / "big" / f"blob-{i:02d}.bin", "wb") as file:
            for _ in range(big_mib):
                file.write(os.urandom(MiB))
    complete.write_text("")
    return root


def tree_size(root: pathlib.Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


# -- the tools -----------------------------------------------------------------------------------


def aws_cli() -> pathlib.Path:
    """The ``aws`` of ``bench/.venv-awscli``, made (venv + pip install awscli) on first use."""
    aws = AWS_VENV / "bin" / "aws"
    if not aws.exists():
        print(f"creating {AWS_VENV} (pip install awscli) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(AWS_VENV)], check=True)
        pip = [str(AWS_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "awscli"]
        subprocess.run(pip, check=True)
    return aws


def command(tool: str, src: pathlib.Path, endpoint: str) -> list[str]:
    if tool == "asyncstore":
        url = f"s3://{BUCKET}/{PREFIX}?endpoint={endpoint}"
        return [str(REPO / ".venv" / "bin" / "asyncstore"), "-q", "sync", str(src), url]
    if tool == "aws":
        target = f"s3://{BUCKET}/{PREFIX}"
        return [str(aws_cli()), "--endpoint-url", endpoint, "s3", "sync", str(src), target]
    if tool == "floor":
        floor = REPO / "bench" / "_cli_floor.py"
        return [sys.executable, str(floor), str(src), endpoint, BUCKET, PREFIX]
    rclone = shutil.which("rclone")
    if rclone is None:
        raise FileNotFoundError("rclone is not installed: apt-get install rclone")
    return [
        rclone,
        "sync",
        str(src),
        f":s3:{BUCKET}/{PREFIX}",
        "--s3-provider=Other",
        f"--s3-endpoint={endpoint}",
        f"--s3-access-key-id={FAKE_ENV['AWS_ACCESS_KEY_ID']}",
        f"--s3-secret-access-key={FAKE_ENV['AWS_SECRET_ACCESS_KEY']}",
        f"--s3-session-token={FAKE_ENV['AWS_SESSION_TOKEN']}",
        "--s3-region=us-east-1",
        "--s3-force-path-style=true",
        "--s3-no-check-bucket",
        "-q",
    ]


def run_tool(argv: list[str], server_pid: int) -> dict[str, Any]:
    """Run one sync; return wall seconds, the tool's CPU and moto's CPU over it."""
    import psutil

    server = psutil.Process(server_pid)
    before = server.cpu_times()
    env = {**os.environ, **FAKE_ENV}
    # The endpoint is plain http on loopback: a CA bundle of the environment is not needed,
    # and rclone refuses to start with one set for a custom endpoint.
    env.pop("AWS_CA_BUNDLE", None)
    if argv[1:3] == ["--endpoint-url", argv[2]]:
        argv = [*argv, "--only-show-errors"]
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    err = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    after = server.cpu_times()
    if process.returncode != 0:
        raise RuntimeError(f"exit status {process.returncode}: {err.strip()[-500:]}")
    return {
        "seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "server_cpu_seconds": (after.user + after.system) - (before.user + before.system),
    }


def bucket_contents(endpoint: str) -> tuple[int, int]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    count = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        for item in page.get("Contents", []):
            count += 1
            size += item["Size"]
    return count, size


def bench_tool(
    tool: str, src: pathlib.Path, files: int, size: int, *, count: bool = False
) -> list[dict[str, Any]]:
    """A fresh moto, the first sync and the no-op re-run of one tool.

    With ``count``, moto counts the requests of each run (``bench/_moto_counting.py``) and
    each row gets them: ``moto_requests`` (by kind: count, bytes_in, cpu_s, wall_s),
    ``moto_headers`` and ``moto_connections``.
    """
    import boto3
    from _moto_counting import counting_moto

    rows: list[dict[str, Any]] = []
    server_cm = counting_moto(FAKE_ENV) if count else moto_server()
    with server_cm as server:
        client = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        argv = command(tool, src, server.url)
        for run in ("first",) if tool in FIRST_ONLY else ("first", "no-op"):
            print(f"{tool}: {run} sync ...", file=sys.stderr)
            if count:
                server.take()  # the bucket's creation, the previous run's listing
            figures = run_tool(argv, server.pid)
            if count:
                counts = server.take()
                figures["moto_requests"] = counts["kinds"]
                figures["moto_headers"] = counts["headers"]
                figures["moto_connections"] = counts["connections"]
            sent_files, sent_bytes = (files, size) if run == "first" else (0, 0)
            wall = figures["seconds"]
            rows.append(
                {
                    "tool": tool,
                    "run": run,
                    "files_sent": sent_files,
                    "bytes_sent": sent_bytes,
                    "files_per_s": files / wall,
                    "mb_per_s": sent_bytes / wall / 1e6,
                    **figures,
                }
            )
            if run == "first":
                landed = bucket_contents(server.url)
                if landed != (files, size):
                    raise RuntimeError(f"{tool}: the bucket holds {landed}, not {(files, size)}")
    return rows


# -- the report ----------------------------------------------------------------------------------


def print_report(
    rows: list[dict[str, Any]], skipped: dict[str, str], files: int, size: int
) -> None:
    base = {row["run"]: row for row in rows if row["tool"] == "asyncstore"}
    lines = []
    for row in rows:
        mine = base.get(row["run"])
        ratio = row["seconds"] / mine["seconds"] if mine else None
        lines.append(
            (
                row["tool"],
                row["run"],
                f"{row['seconds']:.1f}",
                f"{row['files_per_s']:,.0f}",
                f"{row['mb_per_s']:,.1f}" if row["bytes_sent"] else "-",
                f"{row['cpu_seconds']:.1f}",
                f"{row['peak_rss_mib']:.0f}",
                f"{row['server_cpu_seconds']:.1f}",
                "-" if ratio is None else f"{ratio:.2f}",
            )
        )
    print_table(
        f"sync of {files:,} files ({size / MiB:,.0f} MiB) to moto: first run, then a no-op re-run",
        (
            "tool",
            "run",
            "wall s",
            "files/s",
            "MB/s",
            "CPU s",
            "RSS MiB",
            "moto CPU s",
            "time/asyncstore",
        ),
        lines,
        left=("tool", "run"),
        notes=[
            *(f"skipped {tool}: {reason}" for tool, reason in skipped.items()),
            "files/s: files of the tree (sent or checked) per wall second; "
            "MB/s: bytes sent per wall second",
            "time/asyncstore: this run's wall time / asyncstore's for the same run "
            "(> 1: asyncstore is faster)",
            "moto CPU s: the server's CPU over the run; moto is one Python process, "
            "so near 1 s per wall s it is the limit",
            *goal_notes(rows),
        ],
    )
    if any("moto_requests" in row for row in rows):
        print_requests(rows)


def goal_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 16's goal for the first run (2x aws's speed) beside the floor's time."""
    first = {row["tool"]: row for row in rows if row["run"] == "first"}
    notes = []
    if "aws" in first:
        notes.append(f"2x aws's speed on the first run: {first['aws']['seconds'] / 2:.1f} s")
    if "floor" in first:
        notes.append(
            "floor: the least any client can ask of moto (one list, one PutObject per file, "
            f"nothing computed): {first['floor']['seconds']:.1f} s, "
            f"moto busy {first['floor']['server_cpu_seconds']:.1f} CPU s"
        )
    return notes


def print_requests(rows: list[dict[str, Any]]) -> None:
    """The requests moto served in each run, by kind, with the CPU they cost it."""
    lines = []
    for row in rows:
        kinds = row.get("moto_requests") or {}
        for kind, seen in sorted(kinds.items(), key=lambda item: -item[1]["cpu_s"]):
            lines.append(
                (
                    row["tool"],
                    row["run"],
                    kind,
                    f"{seen['count']:,}",
                    f"{seen['bytes_in'] / MiB:,.1f}",
                    f"{seen['cpu_s']:.2f}",
                    f"{1e3 * seen['cpu_s'] / seen['count']:.2f}",
                )
            )
        counted = sum(seen["cpu_s"] for seen in kinds.values())
        lines.append(
            (
                row["tool"],
                row["run"],
                f"(outside requests; {row['moto_connections']:,} connections)",
                "",
                "",
                f"{row['server_cpu_seconds'] - counted:.2f}",
                "",
            )
        )
    print_table(
        "requests moto served, by kind, and the CPU its threads spent on them",
        ("tool", "run", "kind", "requests", "MiB in", "moto CPU s", "ms/request"),
        lines,
        left=("tool", "run", "kind"),
        notes=[
            "moto CPU s: thread CPU from reading the request line to flushing the answer; "
            "outside requests: the rest of the process's CPU (accepting connections, one "
            "thread started per connection)",
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset")
    parser.add_argument("--small-count", type=int, default=5000)
    parser.add_argument("--big-count", type=int, default=10)
    parser.add_argument("--big-mib", type=int, default=64)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "cli.json")
    parser.add_argument("--work", type=pathlib.Path, default=DEFAULT_WORK)
    parser.add_argument(
        "--count-requests",
        action="store_true",
        help="count moto's requests by kind, with their CPU (bench/_moto_counting.py)",
    )
    args = parser.parse_args()
    os.environ.update(FAKE_ENV)
    tools = [tool for tool in args.tools.split(",") if tool]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; known: {', '.join(TOOLS)}")
    src = make_tree(args.work.resolve(), args.small_count, args.big_count, args.big_mib)
    files, size = tree_size(src)
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    load_at_start = list(os.getloadavg())
    for tool in tools:
        try:
            rows += bench_tool(tool, src, files, size, count=args.count_requests)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
            if tool == "asyncstore":
                raise
            skipped[tool] = str(error).splitlines()[0][:200]
    print_report(rows, skipped, files, size)
    versions = {}
    for tool, argv in (
        ("aws", [str(AWS_VENV / "bin" / "aws"), "--version"]),
        ("rclone", ["rclone", "version"]),
    ):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, check=False)
            versions[tool] = (out.stdout or out.stderr).splitlines()[0].strip()
        except (OSError, IndexError):
            versions[tool] = None
    machine = machine_info(
        "asyncstore",
        "aiobotocore",
        "moto",
        **versions,
        load_average_1_5_15_at_start=load_at_start,
        load_average_1_5_15_at_end=list(os.getloadavg()),
    )
    write_json(
        args.out,
        {
            "tree": {
                "files": files,
                "bytes": size,
                "small": args.small_count,
                "big": args.big_count,
                "big_mib": args.big_mib,
            },
            "rows": rows,
            "skipped": skipped,
            "machine": machine,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
