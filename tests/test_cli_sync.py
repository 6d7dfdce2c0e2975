"""``asyncstore sync``: every direction, idempotence, --delete, --dry-run, filters, --checksum,
and a sync interrupted by SIGINT, then run again, that converges."""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Any

import pytest
from _cli_helpers import CLI, TREE, make_tree, read_tree
from _servers import BUCKET, S3Server


@pytest.fixture(params=["memory", "file"])
def store_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    if request.param == "memory":
        return f"memory://sync-{uuid.uuid4().hex}"
    return (tmp_path / "store").as_uri()  # sync creates it


@pytest.fixture
def cli(capsysbinary: pytest.CaptureFixture[bytes], store_url: str) -> CLI:
    return CLI(capsysbinary, "-s", store_url)


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> pathlib.Path:
    return make_tree(tmp_path / "tree", TREE)


def summary(result: Any) -> dict[str, Any]:
    assert result.code == 0, result.err
    last: dict[str, Any] = result.json[-1]
    assert last["type"] == "summary"
    return last


def transfers(result: Any) -> dict[str, str]:
    """``{source: reason}`` of the transfers of a ``--json`` sync."""
    return {r["src"]: r["reason"] for r in result.json if r["type"] == "transfer"}


# -- directions and idempotence ----------------------------------------------------------------


def test_sync_up_then_again_transfers_nothing(cli: CLI, tree: pathlib.Path) -> None:
    first = summary(cli("--json", "sync", str(tree), ":t"))
    assert (first["transferred"], first["skipped"]) == (len(TREE), 0)
    assert first["bytes"] == sum(len(v) for v in TREE.values())
    again = cli("--json", "sync", str(tree), ":t")
    assert summary(again)["transferred"] == 0
    assert summary(again)["skipped"] == len(TREE)


def test_sync_up_sends_a_file_changed_since(cli: CLI, tree: pathlib.Path) -> None:
    summary(cli("--json", "sync", str(tree), ":t"))
    changed = tree / "a.txt"
    changed.write_bytes(b"ALPHA\n")  # same size
    later = time.time() + 10
    os.utime(changed, (later, later))
    (tree / "docs" / "added.txt").write_bytes(b"added")
    result = cli("--json", "sync", str(tree), ":t")
    assert transfers(result) == {str(changed): "changed", str(tree / "docs" / "added.txt"): "new"}
    assert cli("cat", ":t/a.txt").out == "ALPHA\n"


def test_sync_down_then_again_transfers_nothing(
    cli: CLI, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    summary(cli("--json", "sync", str(tree), ":t/"))
    back = tmp_path / "back"
    first = summary(cli("--json", "sync", ":t/", str(back)))
    assert first["transferred"] == len(TREE)
    assert read_tree(back) == TREE
    assert (back / "a.txt").stat().st_mtime == pytest.approx((tree / "a.txt").stat().st_mtime)
    again = summary(cli("--json", "sync", ":t/", str(back)))
    assert (again["transferred"], again["skipped"]) == (0, len(TREE))


def test_sync_down_fetches_an_object_replaced_since(
    cli: CLI, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    summary(cli("--json", "sync", str(tree), ":t/"))
    back = tmp_path / "back"
    summary(cli("--json", "sync", ":t/", str(back)))
    replacement = tmp_path / "a.txt"
    replacement.write_bytes(b"alpha2")  # same size as "alpha\n"
    assert cli("cp", str(replacement), ":t/a.txt").code == 0
    result = cli("--json", "sync", ":t/", str(back))
    assert transfers(result) == {":t/a.txt": "changed"}
    assert (back / "a.txt").read_bytes() == b"alpha2"


def test_sync_across_two_stores_then_again(
    cli: CLI, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    summary(cli("--json", "sync", str(tree), ":t/"))
    other = (tmp_path / "other").as_uri()
    first = summary(cli("--json", "sync", ":t/", f"{other}"))
    assert first["transferred"] == len(TREE)
    again = summary(cli("--json", "sync", ":t/", f"{other}"))
    assert again["transferred"] == 0
    back = tmp_path / "back"
    assert CLI(cli.capsys, "-s", other)("cp", "-r", ":", str(back)).code == 0
    assert read_tree(back) == TREE


def test_sync_within_one_store_copies_server_side(cli: CLI, tree: pathlib.Path) -> None:
    summary(cli("--json", "sync", str(tree), ":a/"))
    first = summary(cli("--json", "sync", ":a/", ":b/"))
    assert first["transferred"] == len(TREE)
    assert summary(cli("--json", "sync", ":a/", ":b/"))["transferred"] == 0
    assert cli("verify", ":a/", ":b/").code == 0


# -- --delete, --dry-run, filters, --checksum --------------------------------------------------


def test_sync_delete_removes_what_the_source_lacks_but_not_what_is_excluded(
    cli: CLI, tree: pathlib.Path
) -> None:
    summary(cli("--json", "sync", str(tree), ":t/"))
    (tree / "b.bin").unlink()
    (tree / "tmp" / "scratch.tmp").unlink()
    kept = summary(cli("--json", "sync", str(tree), ":t/"))
    assert kept["deleted"] == 0
    assert "t/b.bin" in cli("ls", "-r").out.splitlines()
    result = cli("--json", "sync", str(tree), ":t/", "--delete", "--exclude", "*.tmp")
    assert summary(result)["deleted"] == 1
    deletes = [r for r in result.json if r["type"] == "delete"]
    assert [(r["key"], r["status"]) for r in deletes] == [("t/b.bin", "ok")]
    keys = cli("ls", "-r").out.splitlines()
    assert "t/b.bin" not in keys
    assert "t/tmp/scratch.tmp" in keys  # excluded: neither sent nor deleted


def test_sync_delete_down_removes_local_files_and_empty_folders(
    cli: CLI, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    summary(cli("--json", "sync", str(tree), ":t/"))
    back = tmp_path / "back"
    summary(cli("--json", "sync", ":t/", str(back)))
    assert cli("rm", "-r", ":t/docs/").code == 0
    result = summary(cli("--json", "sync", ":t/", str(back), "--delete"))
    assert result["deleted"] == 2
    assert not (back / "docs").exists()
    assert read_tree(back) == {k: v for k, v in TREE.items() if not k.startswith("docs/")}


def test_sync_dry_run_changes_nothing(
    cli: CLI, tree: pathlib.Path, tmp_path: pathlib.Path, store_url: str
) -> None:
    result = cli("--json", "sync", str(tree), ":t/", "--dry-run")
    assert summary(result)["dry_run"] is True
    planned = [r for r in result.json if r["type"] == "transfer"]
    assert len(planned) == len(TREE)
    assert {r["status"] for r in planned} == {"dry-run"}
    if store_url.startswith("file:"):
        assert not (tmp_path / "store").exists()  # not even the root was made
    summary(cli("--json", "sync", str(tree), ":t/"))
    (tree / "a.txt").unlink()
    text = cli("sync", str(tree), ":t/", "--delete", "-n")
    assert text.out.splitlines() == ["(dry run) delete :t/a.txt"]
    assert "t/a.txt" in cli("ls", "-r").out.splitlines()


def test_sync_include_and_exclude_follow_rsync(cli: CLI, tree: pathlib.Path) -> None:
    rules = ["--include", "*/", "--include", "*.gz", "--exclude", "*"]
    summary(cli("--json", "sync", str(tree), ":t/", *rules))
    assert cli("ls", "-r").out.splitlines() == [
        "t/logs/2024-01/a.gz",
        "t/logs/2024-02/b.gz",
        "t/logs/top.gz",
    ]
    top_only = ["--include", "*.txt", "--exclude", "*"]
    summary(cli("--json", "sync", str(tree), ":u/", *top_only))
    assert cli("ls", "-r", ":u/").out.splitlines() == ["u/a.txt"]


def test_sync_checksum_finds_a_change_that_size_and_mtime_hide(
    cli: CLI, tree: pathlib.Path
) -> None:
    summary(cli("--json", "sync", str(tree), ":t/"))
    sneaky = tree / "a.txt"
    st = sneaky.stat()
    sneaky.write_bytes(b"alphX\n")
    os.utime(sneaky, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert summary(cli("--json", "sync", str(tree), ":t/"))["transferred"] == 0
    result = cli("--json", "sync", str(tree), ":t/", "--checksum")
    assert transfers(result) == {str(sneaky): "changed"}
    assert summary(result)["skipped"] == len(TREE) - 1
    assert cli("cat", ":t/a.txt").out == "alphX\n"


def test_sync_sends_a_file_of_one_round_of_parts_in_one_request(
    cli: CLI, tmp_path: pathlib.Path
) -> None:
    """With other files in flight, a file above the part size (8 MiB) but within one round
    of parts (8 x 8 MiB) goes in one request; alone, or with --part-size, in parts."""
    tree = tmp_path / "tree"
    tree.mkdir()
    big = os.urandom(9 * 1024 * 1024)
    (tree / "big.bin").write_bytes(big)
    (tree / "small.txt").write_bytes(b"small")
    parts = {
        pathlib.Path(r["src"]).name: r["parts"]
        for r in cli("--json", "sync", str(tree), ":t").json
        if r["type"] == "transfer"
    }
    assert parts == {"big.bin": 1, "small.txt": 1}
    digest = cli("--json", "digest", ":t/big.bin").json[0]  # read back whole
    assert digest["sha256"] == digest["recorded"] == "sha256:" + hashlib.sha256(big).hexdigest()
    alone = cli("--json", "cp", str(tree / "big.bin"), ":alone.bin").json[0]
    assert alone["parts"] == 2
    sized = cli("--json", "sync", str(tree), ":sized", "--part-size", "8M").json
    assert {pathlib.Path(r["src"]).name: r["parts"] for r in sized if r["type"] == "transfer"} == {
        "big.bin": 2,
        "small.txt": 1,
    }


def test_sync_of_a_file_is_a_usage_error(cli: CLI, tree: pathlib.Path) -> None:
    assert cli("sync", str(tree / "a.txt"), ":t/").code == 2
    assert cli("sync", str(tree), str(tree / "x")).code == 2


def test_sync_of_a_missing_folder_exits_1_naming_it(cli: CLI, tmp_path: pathlib.Path) -> None:
    result = cli("sync", str(tmp_path / "nope"), ":t/")
    assert result.code == 1
    assert str(tmp_path / "nope") in result.err


def test_sync_text_output_and_summary(cli: CLI, tree: pathlib.Path) -> None:
    result = cli("sync", str(tree), ":t/")
    assert result.code == 0
    assert result.out.count("uploaded ") == len(TREE)
    assert f"sync: {len(TREE)} transferred" in result.err
    quiet = cli("-q", "sync", str(tree), ":t/")
    assert (quiet.out, quiet.err) == ("", "")


# -- SIGINT ------------------------------------------------------------------------------------

#: Runs the CLI with one transfer made to stall half-way (after its first part or range),
#: so that SIGINT lands while files are done, one is in flight and others wait.
HOOK = textwrap.dedent(
    """
    import sys
    import anyio
    from asyncstore import Store

    STALL = sys.argv.pop(1)

    def stalling(progress):
        async def report(done, total):
            if progress is not None:
                progress(done, total)
            if done > 0:
                sys.stderr.write("STALLED\\n")
                sys.stderr.flush()
                await anyio.sleep_forever()
        return report

    upload_file, download_file = Store.upload_file, Store.download_file

    async def stalled_upload(self, path, key, **options):
        if key.endswith(STALL):
            options["progress"] = stalling(options.get("progress"))
        return await upload_file(self, path, key, **options)

    async def stalled_download(self, key, path, **options):
        if key.endswith(STALL):
            options["progress"] = stalling(options.get("progress"))
        return await download_file(self, key, path, **options)

    Store.upload_file, Store.download_file = stalled_upload, stalled_download
    from asyncstore._cli import main
    sys.exit(main(sys.argv[1:]))
    """
)

BIG = 12 * 1024 * 1024


def interrupted_sync(tmp_path: pathlib.Path, stall: str, argv: list[str]) -> tuple[int, str]:
    """Run a sync that stalls on ``stall``; SIGINT it once stalled; return (status, stderr)."""
    script = tmp_path / "stalling_cli.py"
    script.write_text(HOOK)
    process = subprocess.Popen(
        [sys.executable, str(script), stall, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        for line in process.stderr:  # blocks until the stall (or the end: then fail)
            lines.append(line)
            if line.strip() == "STALLED":
                break
        else:
            pytest.fail(f"the sync ended without stalling: {''.join(lines)}")
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, "".join(lines) + rest


def make_big_tree(root: pathlib.Path) -> dict[str, bytes]:
    files = {f"small/{i:03d}.bin": os.urandom(1000 + i) for i in range(40)}
    files["big.bin"] = os.urandom(BIG)
    make_tree(root, files)
    return files


def no_temp_files(root: pathlib.Path) -> list[str]:
    return [p.name for p in root.rglob("*") if ".asyncstore-" in p.name]


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_an_interrupted_sync_up_to_a_file_store_leaves_no_partial_object_and_converges(
    tmp_path: pathlib.Path, capsysbinary: pytest.CaptureFixture[bytes], loop: str
) -> None:
    files = make_big_tree(tmp_path / "src")
    root = tmp_path / "store"
    argv = ["-s", root.as_uri(), "--async-backend", loop, "sync", str(tmp_path / "src"), ":t/"]
    argv += ["--part-size", "1M"]
    status, err = interrupted_sync(tmp_path, "big.bin", [*argv, "--concurrency", "1"])
    assert status == 130, err
    assert err.rstrip().endswith("asyncstore: error: interrupted")
    assert "Traceback" not in err
    assert no_temp_files(root) == []
    landed = read_tree(root / "t") if (root / "t").exists() else {}
    assert "big.bin" not in landed
    assert all(files[rel] == data for rel, data in landed.items())
    cli = CLI(capsysbinary, "-s", root.as_uri())
    rerun = cli("--json", "sync", str(tmp_path / "src"), ":t/")
    assert summary(rerun)["transferred"] == len(files) - len(landed)
    assert read_tree(root / "t") == files
    assert summary(cli("--json", "sync", str(tmp_path / "src"), ":t/"))["transferred"] == 0


def test_an_interrupted_sync_up_to_s3_leaves_no_upload_behind_and_converges(
    tmp_path: pathlib.Path, s3: S3Server, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    files = make_big_tree(tmp_path / "src")
    prefix = f"cli-sigint-{uuid.uuid4().hex[:8]}/"
    url = f"s3://{BUCKET}/{prefix}?endpoint={s3.endpoint}"
    argv = ["sync", str(tmp_path / "src"), url, "--part-size", "5M", "--concurrency", "1"]
    try:
        status, err = interrupted_sync(tmp_path, "big.bin", argv)
        assert status == 130, err
        assert s3.uploads(prefix) == []  # the multipart upload in flight was aborted
        landed = [key[len(prefix) :] for key in s3.keys(prefix)]
        assert "big.bin" not in landed
        cli = CLI(capsysbinary)
        rerun = cli("--json", "sync", str(tmp_path / "src"), url)
        assert summary(rerun)["transferred"] == len(files) - len(landed)
        assert cli("verify", str(tmp_path / "src"), url).code == 0
        assert summary(cli("--json", "sync", str(tmp_path / "src"), url))["transferred"] == 0
    finally:
        s3.clean(prefix)


def test_an_interrupted_sync_down_leaves_no_partial_file_and_converges(
    tmp_path: pathlib.Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    files = make_big_tree(tmp_path / "src")
    root = tmp_path / "store"
    cli = CLI(capsysbinary, "-s", root.as_uri())
    summary(cli("--json", "sync", str(tmp_path / "src"), ":t/"))
    back = tmp_path / "back"
    argv = ["-s", root.as_uri(), "sync", ":t/", str(back), "--part-size", "1M"]
    status, err = interrupted_sync(tmp_path, "big.bin", [*argv, "--concurrency", "1"])
    assert status == 130, err
    assert no_temp_files(back) == []
    landed = read_tree(back) if back.exists() else {}
    assert "big.bin" not in landed
    assert all(files[rel] == data for rel, data in landed.items())
    rerun = cli("--json", "sync", ":t/", str(back))
    assert summary(rerun)["transferred"] == len(files) - len(landed)
    assert read_tree(back) == files
    assert summary(cli("--json", "sync", ":t/", str(back)))["transferred"] == 0
