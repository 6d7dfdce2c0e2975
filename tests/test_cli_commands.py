"""Every command and its flags, against a memory store and a file store (in-process).

The cloud backends run the same commands in test_cli_backends.py.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import sys
import types
import uuid

import pytest
from _cli_helpers import CLI, TREE, make_tree, read_tree

from asyncstore._cli import main


@pytest.fixture(params=["memory", "file"])
def store_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    if request.param == "memory":
        return f"memory://cli-{uuid.uuid4().hex}"
    root = tmp_path / "store"
    root.mkdir()
    return root.as_uri()


@pytest.fixture
def cli(capsysbinary: pytest.CaptureFixture[bytes], store_url: str) -> CLI:
    return CLI(capsysbinary, "-s", store_url)


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> pathlib.Path:
    return make_tree(tmp_path / "tree", TREE)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- cp ----------------------------------------------------------------------------------------


def test_cp_r_copies_a_tree_up_and_back(
    cli: CLI, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    up = cli("cp", "-r", str(tree), ":t/")
    assert up.code == 0, up.err
    assert up.out.count("uploaded ") == len(TREE)
    listed = cli("ls", "-r", ":t/")
    assert sorted(listed.out.splitlines()) == sorted("t/" + rel for rel in TREE)
    down = cli("cp", "-r", ":t", str(tmp_path / "back"))  # no trailing '/': still the prefix t/
    assert down.code == 0, down.err
    assert read_tree(tmp_path / "back") == TREE


def test_cp_r_with_filters_copies_only_what_they_keep(cli: CLI, tree: pathlib.Path) -> None:
    assert cli("cp", "-r", str(tree), ":t/", "--exclude", "*.tmp", "--exclude", "logs/").code == 0
    keys = cli("ls", "-r", ":t/").out.splitlines()
    assert "t/tmp/scratch.tmp" not in keys
    assert not [k for k in keys if k.startswith("t/logs/")]
    assert "t/docs/deep/notes.txt" in keys


def test_cp_several_files_into_a_prefix(cli: CLI, tree: pathlib.Path) -> None:
    result = cli("cp", str(tree / "a.txt"), str(tree / "b.bin"), ":many/")
    assert result.code == 0, result.err
    assert cli("ls", ":many/").out.splitlines() == ["many/a.txt", "many/b.bin"]


def test_cp_several_sources_need_a_folder_or_prefix(
    cli: CLI, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    assert cli("cp", "-r", str(tree), ":t/").code == 0
    out = tmp_path / "out"
    result = cli("cp", ":t/a.txt", ":t/b.bin", str(out))
    assert result.code == 0, result.err
    assert sorted(os.listdir(out)) == ["a.txt", "b.bin"]


def test_cp_a_glob_copies_what_it_matches(
    cli: CLI, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    assert cli("cp", "-r", str(tree), ":t/").code == 0
    flat = cli("cp", ":t/logs/*.gz", str(tmp_path / "flat"))
    assert flat.code == 0, flat.err
    assert read_tree(tmp_path / "flat") == {"top.gz": b"gz0"}
    deep = cli("cp", "-r", ":t/logs/2024-*", str(tmp_path / "deep"))
    assert deep.code == 0, deep.err
    assert read_tree(tmp_path / "deep") == {"2024-01/a.gz": b"gz1", "2024-02/b.gz": b"gz2"}
    nothing = cli("cp", ":t/logs/*.zip", str(tmp_path / "none"))
    assert nothing.code == 1
    assert "nothing matches" in nothing.err


def test_cp_between_keys_keeps_content_type_and_metadata(cli: CLI, tree: pathlib.Path) -> None:
    up = cli(
        "cp", str(tree / "a.txt"), ":a", "--content-type", "text/x-test", "--metadata", "team=blue"
    )
    assert up.code == 0, up.err
    assert cli("cp", ":a", ":b").code == 0
    stat = cli("--json", "stat", ":b").json[0]
    assert stat["content_type"] == "text/x-test"
    assert stat["metadata"] == {"team": "blue"}
    assert stat["sha256"] == sha(TREE["a.txt"])


def test_cp_between_two_stores_streams_and_records_the_sha256(
    cli: CLI, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    assert cli("cp", str(tree / "b.bin"), ":b.bin", "--content-type", "application/x-b").code == 0
    across = cli("--json", "cp", ":b.bin", f"{other.as_uri()}", "--part-size", "16K")
    assert across.code == 0, across.err
    (transfer, summary) = across.json
    assert transfer["action"] == "copy"
    assert transfer["sha256"] == sha(TREE["b.bin"])
    assert summary["transferred"] == 1
    assert (other / "b.bin").read_bytes() == TREE["b.bin"]
    there = CLI(cli.capsys, "-s", other.as_uri())("--json", "stat", ":b.bin").json[0]
    assert there["sha256"] == sha(TREE["b.bin"])
    assert there["content_type"] == "application/x-b"


def test_cp_json_records_parts_and_concurrency(cli: CLI, tmp_path: pathlib.Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    result = cli("--json", "cp", str(big), ":big", "--part-size", "1M", "--concurrency", "2")
    assert result.code == 0, result.err
    transfer = result.json[0]
    assert transfer["parts"] == 4
    assert 1 <= transfer["concurrency"] <= 2
    assert transfer["size"] == big.stat().st_size
    down = cli("--json", "cp", ":big", str(tmp_path / "back.bin"), "--part-size", "1M")
    assert down.json[0]["parts"] == 4


def test_cp_quiet_prints_nothing_on_success(cli: CLI, tree: pathlib.Path) -> None:
    result = cli("-q", "cp", "-r", str(tree), ":t/")
    assert (result.code, result.out, result.err) == (0, "", "")
    assert len(cli("-q", "ls", "-r").out.splitlines()) == len(TREE)  # data is still printed


def test_cp_dry_run_transfers_nothing(cli: CLI, tree: pathlib.Path) -> None:
    result = cli("cp", "-r", "-n", str(tree), ":t/")
    assert result.code == 0
    assert result.out.count("(dry run) upload ") == len(TREE)
    assert cli("ls", "-r").out == ""


def test_cp_a_folder_without_r_is_a_usage_error(cli: CLI, tree: pathlib.Path) -> None:
    result = cli("cp", str(tree), ":x")
    assert result.code == 2
    assert "use -r" in result.err


def test_cp_a_prefix_without_r_is_a_usage_error(
    cli: CLI, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    result = cli("cp", ":t/", str(tmp_path))
    assert result.code == 2
    assert "use -r" in result.err


def test_cp_stdin_to_a_prefix_is_a_usage_error(cli: CLI) -> None:
    result = cli("cp", "-", ":dir/")
    assert result.code == 2
    assert "stdin has no name" in result.err


def test_a_failed_file_does_not_stop_the_others(
    cli: CLI, tree: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    missing = tmp_path / "missing.txt"
    result = cli("cp", str(tree / "a.txt"), str(missing), str(tree / "b.bin"), ":x/")
    assert result.code == 1
    assert result.out.count("uploaded ") == 2
    errors = result.err.splitlines()
    assert any(str(missing) in line for line in errors)
    assert errors[-1] == "asyncstore: error: cp: 1 of 3 files failed"


# -- mv ----------------------------------------------------------------------------------------


def test_mv_uploads_then_removes_the_local_tree(cli: CLI, tree: pathlib.Path) -> None:
    result = cli("mv", "-r", str(tree), ":moved/")
    assert result.code == 0, result.err
    assert result.out.count("moved ") == len(TREE)
    assert len(cli("ls", "-r", ":moved/").out.splitlines()) == len(TREE)
    assert not tree.exists() or list(tree.rglob("*")) == []


def test_mv_between_keys_leaves_only_the_destination(cli: CLI, tree: pathlib.Path) -> None:
    assert cli("cp", str(tree / "a.txt"), ":a").code == 0
    assert cli("mv", ":a", ":b").code == 0
    assert cli("ls").out.splitlines() == ["b"]


def test_mv_down_removes_the_objects(cli: CLI, tree: pathlib.Path, tmp_path: pathlib.Path) -> None:
    assert cli("cp", "-r", str(tree), ":t/").code == 0
    assert cli("mv", "-r", ":t/docs/", str(tmp_path / "docs")).code == 0
    assert read_tree(tmp_path / "docs") == {
        "readme.md": b"# readme\n",
        "deep/notes.txt": b"notes\n",
    }
    assert not [k for k in cli("ls", "-r").out.splitlines() if k.startswith("t/docs/")]


# -- rm ----------------------------------------------------------------------------------------


def test_rm_r_dry_run_deletes_nothing_and_rm_r_deletes_the_prefix(
    cli: CLI, tree: pathlib.Path
) -> None:
    assert cli("cp", "-r", str(tree), ":t/").code == 0
    dry = cli("--json", "rm", "-r", "--dry-run", ":t/logs/")
    assert dry.code == 0
    deletes = [r for r in dry.json if r["type"] == "delete"]
    assert sorted(r["key"] for r in deletes) == [
        "t/logs/2024-01/a.gz",
        "t/logs/2024-02/b.gz",
        "t/logs/top.gz",
    ]
    assert {r["status"] for r in deletes} == {"dry-run"}
    assert len(cli("ls", "-r").out.splitlines()) == len(TREE)
    assert cli("rm", "-r", ":t/logs/").code == 0
    assert len(cli("ls", "-r").out.splitlines()) == len(TREE) - 3


def test_rm_a_glob_and_rm_with_filters(cli: CLI, tree: pathlib.Path) -> None:
    assert cli("cp", "-r", str(tree), ":t/").code == 0
    assert cli("rm", ":t/logs/*.gz").code == 0  # only the top level
    assert "t/logs/top.gz" not in cli("ls", "-r").out.splitlines()
    assert (
        cli("rm", "-r", ":t/", "--include", "*.gz", "--include", "*/", "--exclude", "*").code == 0
    )
    left = cli("ls", "-r").out.splitlines()
    assert not [k for k in left if k.endswith(".gz")]
    assert "t/a.txt" in left


def test_rm_of_a_prefix_without_r_is_a_usage_error(cli: CLI) -> None:
    assert cli("rm", ":t/").code == 2


def test_rm_of_a_missing_key_is_not_an_error(cli: CLI, tree: pathlib.Path) -> None:
    assert cli("cp", str(tree / "a.txt"), ":a").code == 0
    assert cli("rm", ":nope").code == 0


# -- ls, du, stat, cat -------------------------------------------------------------------------


def test_ls_long_human_and_json(cli: CLI, tree: pathlib.Path) -> None:
    assert cli("cp", "-r", str(tree), ":t/").code == 0
    long = cli("ls", "-l", "-h", ":t/")
    lines = {line.split()[-1]: line for line in long.out.splitlines()}
    assert lines["t/docs/"].split()[0] == "PRE"
    assert "68.4 KiB" in lines["t/b.bin"]
    listing = cli("--json", "ls", ":t/").json
    assert {r["type"] for r in listing} == {"object", "prefix"}
    by_key = {r["key"]: r for r in listing}
    assert by_key["t/b.bin"]["size"] == len(TREE["b.bin"])
    assert by_key["t/docs/"]["type"] == "prefix"


def test_ls_with_globs(cli: CLI, tree: pathlib.Path) -> None:
    assert cli("cp", "-r", str(tree), ":t/").code == 0
    assert cli("ls", ":t/logs/*").out.splitlines() == [
        "t/logs/2024-01/",
        "t/logs/2024-02/",
        "t/logs/top.gz",
    ]
    assert cli("ls", "-r", ":t/logs/2024-*").out.splitlines() == [
        "t/logs/2024-01/a.gz",
        "t/logs/2024-02/b.gz",
    ]
    assert cli("ls", ":t/**.gz").out.splitlines() == [
        "t/logs/2024-01/a.gz",
        "t/logs/2024-02/b.gz",
        "t/logs/top.gz",
    ]
    assert cli("ls", ":t/*.txt").out.splitlines() == ["t/a.txt"]
    # a key holding glob characters lists as it is when the glob matches nothing
    odd = "t/odd name/caf\u00e9 :smile: [x].txt"
    assert cli("ls", f":{odd}").out.splitlines() == [odd]


def test_du_counts_per_folder_and_in_total(cli: CLI, tree: pathlib.Path) -> None:
    assert cli("cp", "-r", str(tree), ":t/").code == 0
    rows = cli("--json", "du", ":t/").json
    by_key = {r["key"]: r for r in rows}
    assert by_key["t/logs/"]["objects"] == 3
    assert by_key["t/logs/"]["bytes"] == 9
    total = rows[-1]
    assert total["total"] is True
    assert total["objects"] == len(TREE)
    assert total["bytes"] == sum(len(v) for v in TREE.values())
    summary = cli("--json", "du", "--summarize", ":t/").json
    assert len(summary) == 1 and summary[0]["bytes"] == total["bytes"]
    human = cli("du", "-h", "--summarize", ":t/").out.split()
    assert human[:2] == ["68.4", "KiB"]


def test_stat_of_several_keys_and_json(cli: CLI, tree: pathlib.Path) -> None:
    assert cli("cp", str(tree / "a.txt"), ":a").code == 0
    assert cli("cp", str(tree / "b.bin"), ":b").code == 0
    text = cli("stat", ":a", ":b")
    assert text.out.count("sha256          sha256:") == 2
    both = cli("--json", "stat", ":a", "b").json
    assert [r["key"] for r in both] == ["a", "b"]
    assert both[0]["sha256"] == sha(TREE["a.txt"])
    assert both[0]["mtime"] == pytest.approx((tree / "a.txt").stat().st_mtime)
    assert both[0]["url"] == ":a"


def test_cat_of_several_keys_concatenates(cli: CLI, tree: pathlib.Path) -> None:
    assert cli("cp", str(tree / "a.txt"), ":a").code == 0
    assert cli("cp", str(tree / "docs/readme.md"), ":r").code == 0
    assert cli("cat", ":a", ":r").out == "alpha\n# readme\n"


# -- digest and verify -------------------------------------------------------------------------


def test_digest_r_of_a_tree_and_its_copy_agree(cli: CLI, tree: pathlib.Path) -> None:
    assert cli("cp", "-r", str(tree), ":t/").code == 0
    local = cli("--json", "digest", "-r", str(tree)).json
    remote = cli("--json", "digest", "-r", ":t/").json
    assert [r["sha256"] for r in local] == [r["sha256"] for r in remote]
    assert all(r["recorded"] == r["sha256"] for r in remote)
    assert {r["sha256"] for r in local} == {sha(v) for v in TREE.values()}


def test_verify_a_tree_against_its_copy(cli: CLI, tree: pathlib.Path) -> None:
    assert cli("cp", "-r", str(tree), ":t/").code == 0
    same = cli("verify", str(tree), ":t/")
    assert same.code == 0, same.err
    assert same.out.count("OK ") == len(TREE)
    (tree / "a.txt").write_bytes(b"alphA\n")  # same size, other bytes
    (tree / "new.txt").write_bytes(b"new")
    assert cli("rm", ":t/docs/readme.md").code == 0
    differ = cli("--json", "verify", str(tree), ":t/")
    assert differ.code == 1
    status = {r["path"]: r["status"] for r in differ.json if r["type"] == "verify"}
    assert status["a.txt"] == "differs"
    assert status["new.txt"] == "missing"
    assert status["docs/readme.md"] == "missing"
    assert status["b.bin"] == "ok"
    summary = differ.json[-1]
    assert (summary["differs"], summary["missing"], summary["extra"]) == (1, 2, 0)
    recorded = cli("-q", "verify", "--recorded", ":t/", str(tree))
    assert recorded.code == 1
    assert "EXTRA" in recorded.out and "OK " not in recorded.out


# -- stdin and stdout --------------------------------------------------------------------------


def test_cp_from_stdin_with_a_content_type(
    cli: CLI, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    data = os.urandom(2 * 1024 * 1024 + 3)
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    with open(source, "rb") as stdin:
        monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=stdin))
        result = cli(
            "--json", "cp", "-", ":piped", "--content-type", "application/x-p", "--part-size", "1M"
        )
    assert result.code == 0, result.err
    assert result.json[0]["sha256"] == sha(data)
    stat = cli("--json", "stat", ":piped").json[0]
    assert stat["content_type"] == "application/x-p"
    assert cli("cp", ":piped", "-").out.encode("utf-8", "surrogateescape") == data


# -- named stores ------------------------------------------------------------------------------


def test_named_stores_in_place_and_with_dash_s(
    store_url: str,
    tree: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    config = tmp_path / "config"
    (config / "asyncstore").mkdir(parents=True)
    (config / "asyncstore" / "stores.toml").write_text(
        f'[mydata]\nurl = "{store_url}"\ntimeout = 60\n'
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.delenv("ASYNCSTORE_URL", raising=False)
    cli = CLI(capsysbinary)
    up = cli("cp", "-r", str(tree / "docs"), "mydata:docs/")
    assert up.code == 0, up.err
    assert "-> mydata:docs/readme.md" in up.out
    assert cli("ls", "mydata:docs/").out.splitlines() == [
        "mydata:docs/deep/",
        "mydata:docs/readme.md",
    ]
    assert cli("-s", "mydata", "ls", "-r").out.splitlines() == [
        "docs/deep/notes.txt",
        "docs/readme.md",
    ]
    listed = cli("--json", "stores").json
    assert listed == [{"type": "store", "name": "mydata", "url": store_url, "options": ["timeout"]}]
    assert cli("-s", "nosuch", "ls").code == 2


# -- presign, registry -------------------------------------------------------------------------


def test_presign_on_a_store_that_cannot_sign_says_so(cli: CLI, tree: pathlib.Path) -> None:
    assert cli("cp", str(tree / "a.txt"), ":a").code == 0
    result = cli("presign", ":a")
    assert result.code == 1
    assert "cannot sign URLs" in result.err
    assert len(result.err.splitlines()) == 1


def test_registry_serve_without_the_extra_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "asyncstore.registry._cli", None)  # import fails
    assert main(["registry", "serve", "--port", "5000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pip install 'asyncstore[registry]'" in err


def test_registry_serve_hands_its_arguments_to_the_registry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, object] = {}
    fake = types.ModuleType("asyncstore.registry._cli")

    def add_arguments(parser: object) -> None:
        parser.add_argument("--port", type=int, default=5000)  # type: ignore[attr-defined]

    def run(args: object) -> int:
        seen.update(vars(args))
        return 7

    fake.add_arguments = add_arguments  # type: ignore[attr-defined]
    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "asyncstore.registry._cli", fake)
    assert main(["-s", "memory://reg", "registry", "serve", "--port", "5001"]) == 7
    assert seen["port"] == 5001
    assert seen["store"] == "memory://reg"
    assert main(["registry", "serve", "--port", "x"]) == 2
    assert "invalid int value" in capsys.readouterr().err
    assert main(["registry", "serve", "--help"]) == 0
    assert "--port" in capsys.readouterr().out


def test_registry_without_an_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry"]) == 2


# -- the progress view -------------------------------------------------------------------------


def test_the_progress_view_shows_totals_on_a_terminal_and_results_stay_on_stdout(
    cli: CLI, tree: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich draws on stderr as on a terminal
    monkeypatch.setenv("COLUMNS", "160")
    missing = tmp_path / "missing.bin"
    result = cli("cp", "-r", str(tree), str(missing), ":t/")
    assert result.code == 1
    assert f"{len(TREE)}/{len(TREE)} files" in result.err
    assert "1 failed" in result.err
    assert "\x1b[" in result.err  # drawn with terminal codes
    assert "\x1b[" not in result.out  # results are plain, one per line
    assert result.out.count("uploaded ") == len(TREE)
    quiet = cli("-q", "cp", "-r", str(tree), ":u/")
    assert (quiet.code, quiet.out, quiet.err) == (0, "", "")
