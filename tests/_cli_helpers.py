"""Shared by the command-line tests: running ``main`` in-process, the ``--json`` schemas, trees."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import pytest

from asyncstore._cli import main

NoneType = type(None)
STR = (str,)
OPT_STR = (str, NoneType)
INT = (int,)
OPT_INT = (int, NoneType)
OPT_NUM = (int, float, NoneType)

#: The ``--json`` record of each ``type``: field -> allowed types (docs/cli.md shows them).
SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    "object": {
        "type": STR,
        "url": STR,
        "key": STR,
        "size": INT,
        "etag": STR,
        "last_modified": OPT_STR,
        "content_type": OPT_STR,
        "sha256": OPT_STR,
        "mtime": OPT_NUM,
        "mode": OPT_INT,
        "metadata": (dict,),
    },
    "prefix": {"type": STR, "url": STR, "key": STR},
    "transfer": {
        "type": STR,
        "action": STR,
        "src": STR,
        "dst": STR,
        "size": OPT_INT,
        "sha256": OPT_STR,
        "seconds": OPT_NUM,
        "parts": OPT_INT,
        "concurrency": OPT_INT,
        "status": STR,
        "reason": OPT_STR,
        "move": (bool,),
        "error": OPT_STR,
    },
    "delete": {"type": STR, "url": STR, "key": OPT_STR, "status": STR, "error": OPT_STR},
    "du": {
        "type": STR,
        "url": STR,
        "key": STR,
        "objects": INT,
        "bytes": INT,
        "total": (bool,),
    },
    "digest": {"type": STR, "url": STR, "sha256": STR, "recorded": OPT_STR},
    "verify": {
        "type": STR,
        "path": STR,
        "status": STR,
        "src_sha256": OPT_STR,
        "dst_sha256": OPT_STR,
        "error": OPT_STR,
    },
    "presign": {
        "type": STR,
        "url": STR,
        "key": STR,
        "method": STR,
        "expires": STR,
        "signed_url": STR,
    },
    "store": {"type": STR, "name": STR, "url": STR, "options": (list,)},
}
SUMMARY_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "cp": {"transferred": INT, "bytes": INT, "failed": INT, "seconds": OPT_NUM, "dry_run": (bool,)},
    "sync": {
        "transferred": INT,
        "bytes": INT,
        "failed": INT,
        "seconds": OPT_NUM,
        "skipped": INT,
        "deleted": INT,
        "dry_run": (bool,),
    },
    "rm": {"deleted": INT, "failed": INT, "dry_run": (bool,)},
    "verify": {"ok": INT, "differs": INT, "missing": INT, "extra": INT, "error": INT},
}
SUMMARY_FIELDS["mv"] = SUMMARY_FIELDS["cp"]
ENUMS = {
    ("transfer", "action"): {"upload", "download", "copy"},
    ("transfer", "status"): {"ok", "failed", "dry-run"},
    ("transfer", "reason"): {None, "new", "changed"},
    ("delete", "status"): {"ok", "failed", "dry-run"},
    ("verify", "status"): {"ok", "differs", "missing", "extra", "error"},
}


def check_record(record: dict[str, Any]) -> None:
    """Fail unless ``record`` has exactly the fields of its type's schema, with their types."""
    kind = record.get("type")
    if kind == "summary":
        schema = {"type": STR, "command": STR, **SUMMARY_FIELDS[record["command"]]}
    else:
        assert kind in SCHEMAS, record
        schema = SCHEMAS[kind]
    assert set(record) == set(schema), (kind, sorted(set(record) ^ set(schema)))
    for name, types in schema.items():
        assert isinstance(record[name], types), (kind, name, record[name])
        allowed = ENUMS.get((kind, name))
        assert allowed is None or record[name] in allowed, (kind, name, record[name])


def records(out: str) -> list[dict[str, Any]]:
    """The JSON records of ``--json`` output (each line one object), schema-checked."""
    parsed = [json.loads(line) for line in out.splitlines()]
    for record in parsed:
        assert isinstance(record, dict)
        check_record(record)
    return parsed


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> list[dict[str, Any]]:
        return records(self.out)


class CLI:
    """``cli("ls", "-r")``: run ``main`` with the store options first; capture its output."""

    def __init__(self, capsys: pytest.CaptureFixture[bytes], *prefix: str) -> None:
        self.capsys = capsys
        self.prefix = list(prefix)

    def __call__(self, *argv: str) -> Result:
        self.capsys.readouterr()
        code = main([*self.prefix, *argv])
        out, err = self.capsys.readouterr()
        return Result(code, out.decode("utf-8", "surrogateescape"), err.decode())


def make_tree(root: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def read_tree(root: pathlib.Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = pathlib.Path(folder) / name
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


TREE = {
    "a.txt": b"alpha\n",
    "b.bin": os.urandom(70_000),
    "docs/readme.md": b"# readme\n",
    "docs/deep/notes.txt": b"notes\n",
    "logs/2024-01/a.gz": b"gz1",
    "logs/2024-02/b.gz": b"gz2",
    "logs/top.gz": b"gz0",
    "tmp/scratch.tmp": b"scratch",
    "odd name/caf\u00e9 :smile: [x].txt": b"odd",
}
