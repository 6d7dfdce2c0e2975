"""The command line against every backend: memory, file, moto (S3), the GCS emulator, Azurite.

Each test runs ``main`` in-process against one backend, with keys written the
three ways: URLs in place (``s3://bucket/key?endpoint=...``), ``-s URL :key``
and a named store (``t:key``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import pathlib
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator

import httpx
import pytest
from _cli_helpers import CLI, TREE, Result, make_tree, read_tree
from _servers import BUCKET, Azurite, Emulator, S3Server
from azure.core.exceptions import AzureError

BACKENDS = ["memory", "file", "s3", "gcs", "azure"]

pytestmark = [
    # aiobotocore warns once that it prefers httpx2 over the legacy httpx package (trio).
    pytest.mark.filterwarnings("ignore:aiobotocore's httpx backend:DeprecationWarning"),
]


@dataclasses.dataclass
class Remote:
    """A place in one backend for one test: its store URL, and keys written in place."""

    kind: str
    url: str  # the store, for -s and the config file
    base: str | None  # "scheme://bucket/prefix/" for keys in place (None: file://)
    query: str = ""

    def at(self, key: str) -> str:
        """``key`` written in place when the backend allows it, else as ``t:key``."""
        if self.base is None:
            return f"t:{key}"
        return f"{self.base}{key}{self.query}"


@pytest.fixture(params=BACKENDS)
def remote(
    request: pytest.FixtureRequest,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Remote]:
    kind = request.param
    prefix = f"cli-{uuid.uuid4().hex[:10]}"
    if kind == "memory":
        yield Remote(kind, f"memory://{prefix}", f"memory://{prefix}/")
    elif kind == "file":
        (tmp_path / "store").mkdir()
        yield Remote(kind, (tmp_path / "store").as_uri(), None)
    elif kind == "s3":
        s3: S3Server = request.getfixturevalue("s3")
        query = f"?endpoint={s3.endpoint}"
        try:
            yield Remote(kind, f"s3://{BUCKET}/{prefix}{query}", f"s3://{BUCKET}/{prefix}/", query)
        finally:
            s3.clean(prefix + "/")
    elif kind == "gcs":
        emulator: Emulator = request.getfixturevalue("emulator")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        bucket = emulator.create_bucket()
        try:
            yield Remote(kind, f"gs://{bucket}/{prefix}", f"gs://{bucket}/{prefix}/")
        finally:
            emulator.empty(bucket)
    else:
        azurite: Azurite = request.getfixturevalue("azurite")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
        container = f"t{uuid.uuid4().hex[:24]}"
        service = azurite.service()
        service.create_container(container)
        try:
            yield Remote(kind, f"az://{container}/{prefix}", f"az://{container}/{prefix}/")
        finally:
            with contextlib.suppress(AzureError):
                service.delete_container(container)
            service.close()


@pytest.fixture
def cli(
    remote: Remote,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> CLI:
    """The CLI with the backend as the named store ``t`` and as ``-s``."""
    config = tmp_path / "config"
    (config / "asyncstore").mkdir(parents=True)
    (config / "asyncstore" / "stores.toml").write_text(f'[t]\nurl = "{remote.url}"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv("ASYNCSTORE_URL", remote.url)
    return CLI(capsysbinary)


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> pathlib.Path:
    return make_tree(tmp_path / "tree", TREE)


def ok(result: Result) -> Result:
    assert result.code == 0, result.err
    return result


def test_cp_ls_stat_cat_du_rm(
    cli: CLI, remote: Remote, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    ok(cli("cp", str(tree / "a.txt"), remote.at("one/a.txt"), "--metadata", "k=v"))
    assert cli("ls", "-l", remote.at("one/")).out.split()[0] == str(len(TREE["a.txt"]))
    stat = cli("--json", "stat", ":one/a.txt").json[0]
    assert stat["size"] == len(TREE["a.txt"])
    assert stat["metadata"] == {"k": "v"}
    assert stat["content_type"] == "text/plain"
    assert cli("cat", remote.at("one/a.txt")).out == "alpha\n"
    ok(cli("cp", ":one/a.txt", str(tmp_path / "a.copy")))
    assert (tmp_path / "a.copy").read_bytes() == TREE["a.txt"]
    ok(cli("cp", "-r", str(tree), remote.at("t/")))
    listed = ok(cli("--json", "ls", "-r", "t:t/logs/2024-*")).json
    assert sorted(r["key"] for r in listed) == ["t/logs/2024-01/a.gz", "t/logs/2024-02/b.gz"]
    assert all(r["url"].startswith("t:t/logs/") for r in listed)
    du = cli("--json", "du", "--summarize", ":t/").json[0]
    assert (du["objects"], du["bytes"]) == (len(TREE), sum(len(v) for v in TREE.values()))
    dry = ok(cli("rm", "-r", "-n", remote.at("t/")))
    assert dry.out.count("(dry run) delete ") == len(TREE)
    ok(cli("rm", "-r", remote.at("t/")))
    assert cli("ls", "-r", ":t/").out == ""
    ok(cli("rm", ":one/a.txt"))
    assert cli("stat", ":one/a.txt").code == 1


def test_jobs_that_first_use_a_store_at_once_open_it_once_and_leave_no_session_open(
    cli: CLI, remote: Remote, tree: pathlib.Path
) -> None:
    """Every job of ``cp -r --jobs 8`` asks for the store at once; the command opens it once
    and closes it. (Each job once opened its own Store, and all but one were never closed:
    their aiobotocore aiohttp sessions were reported at the end of the test run as
    "Unclosed client session" and "Unclosed connector <..._ProxySSLTCPConnector>".)"""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok(cli("cp", "-r", "--jobs", "8", str(tree), remote.at("jobs/")))
        ok(cli("rm", "-r", remote.at("jobs/")))
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []


def test_sync_both_ways_is_idempotent_and_deletes(
    cli: CLI, remote: Remote, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    dst = remote.at("s/")
    first = ok(cli("--json", "sync", str(tree), dst)).json[-1]
    assert first["transferred"] == len(TREE)
    assert ok(cli("--json", "sync", str(tree), dst)).json[-1]["transferred"] == 0
    (tree / "b.bin").unlink()
    deleted = ok(cli("--json", "sync", str(tree), dst, "--delete")).json[-1]
    assert deleted["deleted"] == 1
    back = tmp_path / "back"
    down = ok(cli("--json", "sync", ":s/", str(back))).json[-1]
    assert down["transferred"] == len(TREE) - 1
    assert ok(cli("--json", "sync", ":s/", str(back))).json[-1]["transferred"] == 0
    assert read_tree(back) == {k: v for k, v in TREE.items() if k != "b.bin"}
    ok(cli("verify", str(back), dst))


def test_mv_and_copies_inside_the_store(cli: CLI, remote: Remote, tree: pathlib.Path) -> None:
    ok(cli("cp", str(tree / "b.bin"), ":x/b.bin"))
    ok(cli("cp", remote.at("x/b.bin"), remote.at("y/")))
    ok(cli("mv", ":y/b.bin", ":z/b.bin"))
    assert cli("ls", "-r", ":").out.splitlines() == ["x/b.bin", "z/b.bin"]
    ok(cli("verify", ":x/", ":z/"))


def test_transfer_options(cli: CLI, remote: Remote, tmp_path: pathlib.Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * 1024 * 1024 + 1))
    up = ok(
        cli(
            "--json",
            "cp",
            str(big),
            ":big.bin",
            "--part-size",
            "5M",
            "--concurrency",
            "2",
            "--content-type",
            "application/x-big",
        )
    ).json[0]
    assert up["parts"] == 3
    assert up["concurrency"] <= 2
    stat = cli("--json", "stat", ":big.bin").json[0]
    assert stat["content_type"] == "application/x-big"
    assert stat["sha256"] == up["sha256"]
    down = ok(cli("--json", "cp", ":big.bin", str(tmp_path / "back"), "--part-size", "4M")).json[0]
    assert down["parts"] == 3
    assert (tmp_path / "back").read_bytes() == big.read_bytes()
    unverified = ok(cli("--json", "cp", ":big.bin", str(tmp_path / "nv"), "--no-verify")).json[0]
    assert unverified["sha256"] == up["sha256"]
    digest = cli("--json", "digest", ":big.bin").json[0]
    assert digest["sha256"] == digest["recorded"] == up["sha256"]


def test_stdin_and_stdout(cli: CLI, remote: Remote, tmp_path: pathlib.Path) -> None:
    data = os.urandom(300_000)
    env = dict(os.environ)
    run = [sys.executable, "-m", "asyncstore._cli"]
    up = subprocess.run(
        [*run, "cp", "-", remote.at("piped")], input=data, capture_output=True, env=env
    )
    if remote.kind == "memory":  # a memory store lives in one process: nothing to read back
        assert up.returncode == 0, up.stderr
        return
    assert up.returncode == 0, up.stderr
    down = subprocess.run([*run, "cp", remote.at("piped"), "-"], capture_output=True, env=env)
    assert down.returncode == 0, down.stderr
    assert down.stdout == data
    assert not (tmp_path / "-").exists()


def test_store_to_store_across_backends(
    cli: CLI, remote: Remote, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    other = f"memory://other-{uuid.uuid4().hex}"
    ok(cli("cp", "-r", str(tree), f"{other}/src/"))
    result = ok(cli("--json", "sync", f"{other}/src/", remote.at("copied/")))
    transfers = [r for r in result.json if r["type"] == "transfer"]
    assert {r["action"] for r in transfers} == {"copy"}
    assert len(transfers) == len(TREE)
    ok(cli("verify", f"{other}/src/", remote.at("copied/")))
    back = ok(cli("--json", "cp", "-r", remote.at("copied/"), f"{other}/back/"))
    assert back.json[-1]["transferred"] == len(TREE)
    ok(cli("verify", str(tree), f"{other}/back/"))


def test_presign(cli: CLI, remote: Remote, tree: pathlib.Path) -> None:
    ok(cli("cp", str(tree / "a.txt"), ":a.txt"))
    result = cli("--json", "presign", ":a.txt", "--expires", "600")
    if remote.kind != "s3":
        assert result.code == 1
        assert "cannot sign URLs" in result.err
        return
    assert result.code == 0, result.err
    signed = result.json[0]
    assert signed["method"] == "GET"
    assert httpx.get(signed["signed_url"]).content == TREE["a.txt"]
    put = ok(cli("presign", ":put.txt", "--method", "PUT"))
    answer = httpx.put(put.out.strip(), content=b"via a presigned PUT")
    assert answer.status_code == 200
    assert cli("cat", ":put.txt").out == "via a presigned PUT"


def test_a_missing_key_is_one_line_naming_it(cli: CLI, remote: Remote) -> None:
    for argv in (["stat", ":no/such"], ["cat", remote.at("no/such")], ["cp", ":no/such", "-"]):
        result = cli(*argv)
        assert result.code == 1, argv
        assert result.err.count("\n") == 1, result.err
        assert "no/such" in result.err


def test_sync_flags_and_quiet_output(
    cli: CLI, remote: Remote, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    dst = remote.at("f/")
    dry = ok(cli("--json", "sync", str(tree), dst, "--dry-run", "--exclude", "*.tmp"))
    assert dry.json[-1]["dry_run"] is True
    assert cli("ls", "-r", ":f/").out == ""
    quiet = ok(cli("-q", "sync", str(tree), dst, "--exclude", "*.tmp", "--exclude", "logs/"))
    assert (quiet.out, quiet.err) == ("", "")
    keys = cli("ls", "-r", ":f/").out.splitlines()
    assert len(keys) == len(TREE) - 4
    assert not [k for k in keys if k.endswith(".tmp") or "/logs/" in k]
    sneaky = tree / "a.txt"
    st = sneaky.stat()
    sneaky.write_bytes(b"alphZ\n")
    os.utime(sneaky, ns=(st.st_atime_ns, st.st_mtime_ns))
    checked = ok(cli("--json", "sync", str(tree), dst, "--checksum", "--exclude", "*.tmp"))
    sent = [r["src"] for r in checked.json if r["type"] == "transfer"]
    assert str(sneaky) in sent
    assert cli("cat", ":f/a.txt").out == "alphZ\n"
    human = ok(cli("du", "-h", "--summarize", dst)).out
    assert "KiB" in human
    assert "KiB" in ok(cli("ls", "-lh", remote.at("f/b.bin"))).out


def test_cp_r_and_sync_under_trio(cli: CLI, remote: Remote, tree: pathlib.Path) -> None:
    ok(cli("--async-backend", "trio", "cp", "-r", str(tree), remote.at("trio/")))
    again = ok(cli("--async-backend", "trio", "--json", "sync", str(tree), remote.at("trio/")))
    assert again.json[-1]["transferred"] == 0
    ok(cli("--async-backend", "trio", "verify", str(tree), remote.at("trio/")))
