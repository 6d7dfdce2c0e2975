"""The ``asyncstore`` command line, run in-process through ``main([...])``."""

from __future__ import annotations

import filecmp
import gc
import hashlib
import os
import pathlib
import subprocess
import sys
import uuid

import pytest

from asyncstore._cli import main


@pytest.fixture
def file_store(tmp_path: pathlib.Path) -> str:
    (tmp_path / "store").mkdir()
    return (tmp_path / "store").as_uri()


@pytest.fixture
def memory_store() -> str:
    return f"memory://cli-{uuid.uuid4().hex}"


@pytest.fixture
def sample(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "sample.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    return path


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- cp ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_cp_up_and_down_round_trips_the_bytes(
    file_store: str, sample: pathlib.Path, tmp_path: pathlib.Path, loop: str
) -> None:
    restored = tmp_path / "restored.bin"
    assert main(["-s", file_store, "--async-backend", loop, "cp", str(sample), ":a/b.bin"]) == 0
    assert main(["-s", file_store, "--async-backend", loop, "cp", ":a/b.bin", str(restored)]) == 0
    assert restored.read_bytes() == sample.read_bytes()


def test_cp_round_trips_through_a_memory_store(
    memory_store: str, sample: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    restored = tmp_path / "restored.bin"
    assert main(["-s", memory_store, "cp", str(sample), ":k"]) == 0
    assert main(["-s", memory_store, "cp", ":k", str(restored)]) == 0
    assert restored.read_bytes() == sample.read_bytes()


def test_cp_prints_a_transfer_line_with_the_sha256(
    memory_store: str, sample: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-s", memory_store, "cp", str(sample), ":k"]) == 0
    out = capsys.readouterr().out
    assert "uploaded" in out
    assert f"{sample.stat().st_size} bytes" in out
    assert sha256_of(sample.read_bytes()) in out


def test_cp_to_a_key_ending_in_a_slash_appends_the_file_name(
    memory_store: str, sample: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-s", memory_store, "cp", str(sample), ":dir/"]) == 0
    capsys.readouterr()
    assert main(["-s", memory_store, "ls", "-r"]) == 0
    assert "dir/sample.bin" in capsys.readouterr().out


def test_cp_to_a_local_folder_writes_the_key_base_name_into_it(
    memory_store: str, sample: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    folder = tmp_path / "into"
    folder.mkdir()
    assert main(["-s", memory_store, "cp", str(sample), ":x/y.bin"]) == 0
    assert main(["-s", memory_store, "cp", ":x/y.bin", str(folder)]) == 0
    assert (folder / "y.bin").read_bytes() == sample.read_bytes()


def test_cp_between_two_keys_copies_in_the_store(
    memory_store: str, sample: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    restored = tmp_path / "copy.bin"
    assert main(["-s", memory_store, "cp", str(sample), ":a"]) == 0
    assert main(["-s", memory_store, "cp", ":a", ":b"]) == 0
    assert main(["-s", memory_store, "cp", ":b", str(restored)]) == 0
    assert restored.read_bytes() == sample.read_bytes()


def test_cp_without_a_key_on_either_side_is_a_usage_error(
    memory_store: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-s", memory_store, "cp", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "asyncstore: error:" in capsys.readouterr().err


def test_cp_of_a_missing_local_file_exits_1_naming_it(
    memory_store: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.txt"
    assert main(["-s", memory_store, "cp", str(missing), ":k"]) == 1
    err = capsys.readouterr().err
    assert "asyncstore: error:" in err
    assert str(missing) in err
    assert "Traceback" not in err


# -- ls, stat, cat, rm --------------------------------------------------------------------------


def put_files(store: str, sample: pathlib.Path, *keys: str) -> None:
    for key in keys:
        assert main(["-s", store, "cp", str(sample), f":{key}"]) == 0


def test_ls_lists_keys_and_rolls_up_folders(
    memory_store: str, sample: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put_files(memory_store, sample, "top.bin", "logs/a.txt", "logs/deep/b.txt")
    capsys.readouterr()
    assert main(["-s", memory_store, "ls"]) == 0
    assert capsys.readouterr().out.splitlines() == ["logs/", "top.bin"]
    assert main(["-s", memory_store, "ls", "-l"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in lines] == ["logs/", "top.bin"]
    assert lines[0].split()[0] == "PRE"
    assert lines[1].split()[0] == str(sample.stat().st_size)


def test_ls_recursive_lists_every_key_under_the_prefix(
    memory_store: str, sample: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put_files(memory_store, sample, "top.bin", "logs/a.txt", "logs/deep/b.txt")
    capsys.readouterr()
    assert main(["-s", memory_store, "ls", "-r", ":logs/"]) == 0
    keys = [line.split()[-1] for line in capsys.readouterr().out.splitlines()]
    assert keys == ["logs/a.txt", "logs/deep/b.txt"]


def test_ls_of_a_file_store_lists_keys(
    file_store: str, sample: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put_files(file_store, sample, "one.bin", "two/three.bin")
    capsys.readouterr()
    assert main(["-s", file_store, "ls", "-r"]) == 0
    out = capsys.readouterr().out
    assert "one.bin" in out
    assert "two/three.bin" in out


def test_stat_shows_size_and_sha256(
    file_store: str, sample: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put_files(file_store, sample, "k.bin")
    capsys.readouterr()
    assert main(["-s", file_store, "stat", ":k.bin"]) == 0
    fields = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert fields["key"] == "k.bin"
    assert fields["size"] == str(sample.stat().st_size)
    assert fields["sha256"] == sha256_of(sample.read_bytes())
    assert "etag" in fields


def test_stat_shows_the_content_type_guessed_from_the_file_name(
    memory_store: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "index.html"
    page.write_text("<p>hi</p>")
    assert main(["-s", memory_store, "cp", str(page), ":index.html"]) == 0
    capsys.readouterr()
    assert main(["-s", memory_store, "stat", "index.html"]) == 0
    assert "text/html" in capsys.readouterr().out


def test_cat_writes_the_object_bytes_to_stdout(
    file_store: str, sample: pathlib.Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    put_files(file_store, sample, "k.bin")
    capsysbinary.readouterr()
    assert main(["-s", file_store, "cat", ":k.bin"]) == 0
    assert capsysbinary.readouterr().out == sample.read_bytes()


def test_rm_deletes_every_key_given(
    memory_store: str, sample: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put_files(memory_store, sample, "a", "b", "c")
    assert main(["-s", memory_store, "rm", ":a", ":b"]) == 0
    capsys.readouterr()
    assert main(["-s", memory_store, "ls", "-r"]) == 0
    assert [line.split()[-1] for line in capsys.readouterr().out.splitlines()] == ["c"]
    assert main(["-s", memory_store, "stat", ":a"]) == 1


def test_rm_deletes_from_a_file_store(file_store: str, sample: pathlib.Path) -> None:
    put_files(file_store, sample, "gone.bin")
    assert main(["-s", file_store, "rm", ":gone.bin"]) == 0
    assert main(["-s", file_store, "stat", ":gone.bin"]) == 1


# -- digest ------------------------------------------------------------------------------------


def test_digest_of_a_file_equals_hashlib(
    sample: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["digest", str(sample)]) == 0
    digest, name = capsys.readouterr().out.split()
    assert digest == sha256_of(sample.read_bytes())
    assert name == str(sample)


def test_digest_of_an_object_equals_hashlib_of_its_bytes(
    file_store: str, sample: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put_files(file_store, sample, "k.bin")
    capsys.readouterr()
    assert main(["-s", file_store, "digest", ":k.bin"]) == 0
    digest, name = capsys.readouterr().out.split()
    assert digest == sha256_of(sample.read_bytes())
    assert name == ":k.bin"


def corrupt(store_root: pathlib.Path, key: str) -> None:
    """Flip one byte of a file-store object in place, keeping its inode, size and mtime."""
    path = store_root / key
    st = path.stat()
    with open(path, "r+b") as file:
        first = file.read(1)
        file.seek(0)
        file.write(bytes([first[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("command", ["digest", "cat", "cp"])
def test_a_corrupt_object_exits_1_with_a_digest_mismatch(
    tmp_path: pathlib.Path,
    file_store: str,
    sample: pathlib.Path,
    capsysbinary: pytest.CaptureFixture[bytes],
    command: str,
) -> None:
    put_files(file_store, sample, "k.bin")
    corrupt(tmp_path / "store", "k.bin")
    capsysbinary.readouterr()
    args = [":k.bin", str(tmp_path / "out.bin")] if command == "cp" else [":k.bin"]
    assert main(["-s", file_store, command, *args]) == 1
    err = capsysbinary.readouterr().err.decode()
    assert "asyncstore: error:" in err
    assert "'k.bin'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out.bin").exists()


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["stat", ":no/such-key"],
        ["cat", ":no/such-key"],
        ["digest", ":no/such-key"],
        ["cp", ":no/such-key", "{tmp}/out.bin"],
    ],
)
def test_a_missing_key_exits_1_naming_the_key(
    file_store: str,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert main(["-s", file_store, *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("asyncstore: error:")
    assert "no/such-key" in err
    assert "Traceback" not in err


def test_an_unknown_scheme_exits_1_naming_the_known_schemes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["-s", "nosuch://bucket", "ls"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("asyncstore: error:")
    assert "'nosuch'" in err
    assert "file" in err
    assert "memory" in err


def test_an_invalid_key_exits_1(memory_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-s", memory_store, "stat", ":a//b"]) == 1
    assert "asyncstore: error:" in capsys.readouterr().err


def test_no_store_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ASYNCSTORE_URL", raising=False)
    assert main(["ls"]) == 2
    assert "ASYNCSTORE_URL" in capsys.readouterr().err


def test_the_store_url_defaults_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    memory_store: str,
    sample: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ASYNCSTORE_URL", memory_store)
    assert main(["cp", str(sample), ":from-env"]) == 0
    capsys.readouterr()
    assert main(["ls"]) == 0
    assert "from-env" in capsys.readouterr().out


def test_global_options_may_follow_the_command(
    memory_store: str, sample: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put_files(memory_store, sample, "k")
    capsys.readouterr()
    assert main(["ls", "-s", memory_store, "--async-backend", "trio"]) == 0
    assert "k" in capsys.readouterr().out.split()


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["cp", ":only-one"], ["--async-backend", "curio", "ls"], ["rm"]],
)
def test_argument_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert ":key" in out
    assert "s3://bucket/key" in out


def test_without_rich_the_cli_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)
    assert main(["ls"]) == 2
    assert "pip install 'asyncstore[cli]'" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli(
    tmp_path: pathlib.Path, sample: pathlib.Path, file_store: str
) -> None:
    run = [sys.executable, "-m", "asyncstore._cli", "-s", file_store]
    up = subprocess.run([*run, "cp", str(sample), ":k.bin"], capture_output=True, check=False)
    assert up.returncode == 0, up.stderr
    down = subprocess.run([*run, "cat", ":k.bin"], capture_output=True, check=False)
    assert down.returncode == 0, down.stderr
    assert down.stdout == sample.read_bytes()
    missing = subprocess.run([*run, "stat", ":nope"], capture_output=True, text=True, check=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith("asyncstore: error:")


# -- demo --------------------------------------------------------------------------------------


def same_tree(left: pathlib.Path, right: pathlib.Path) -> bool:
    def files(root: pathlib.Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    names = files(left)
    if names != files(right):
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, names, shallow=False)
    return not mismatch and not errors


def test_demo_restores_every_file_byte_identical(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--dir", str(tmp_path), "--big-mib", "3"]) == 0
    source, restored = tmp_path / "source", tmp_path / "restored"
    assert len(list(source.rglob("*.bin"))) >= 5
    assert (source / "big" / "blob-3m.bin").stat().st_size >= 3 * 1024 * 1024
    assert same_tree(source, restored)
    out = capsys.readouterr().out
    assert "demo/big/blob-3m.bin" in out
    assert "byte-identical" in out


def test_demo_runs_again_in_the_same_folder(tmp_path: pathlib.Path) -> None:
    assert main(["demo", "--dir", str(tmp_path), "--big-mib", "2"]) == 0
    (tmp_path / "restored" / "stale.txt").write_text("left over")
    assert main(["demo", "--dir", str(tmp_path), "--big-mib", "2"]) == 0
    assert same_tree(tmp_path / "source", tmp_path / "restored")


def test_demo_runs_under_trio(tmp_path: pathlib.Path) -> None:
    assert main(["--async-backend", "trio", "demo", "--dir", str(tmp_path), "--big-mib", "1"]) == 0
    assert same_tree(tmp_path / "source", tmp_path / "restored")


def test_demo_exits_1_when_a_restored_file_differs(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from asyncstore._cli._digest import sha256_file

    async def tampered(path: str | os.PathLike[str]) -> str:
        digest = await sha256_file(path)
        restored = pathlib.Path(path).is_relative_to(tmp_path / "restored")
        return "sha256:" + "0" * 64 if restored and str(path).endswith("notes.md") else digest

    monkeypatch.setattr("asyncstore._cli._demo.sha256_file", tampered)
    assert main(["demo", "--dir", str(tmp_path), "--big-mib", "1"]) == 1
    err = capsys.readouterr().err
    assert "asyncstore: error: demo: demo/docs/notes.md: restored file has sha256:000" in err
    assert "1 of 12 files did not round-trip intact" in err


# -- defects of issue 13 (each of these failed before its fix) ---------------------------------

ODD_KEYS = ["a", "x:smile:y", ":thumbs_up:/[bold]b[/bold]", "café/\\n/ok:+1:", "🙂 wide/名前"]


def test_keys_print_byte_exact_in_cp_ls_and_stat(
    memory_store: str, tmp_path: pathlib.Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """Defect 6: rich turned ``:name:`` into emoji and ate ``[markup]`` in keys."""
    small = tmp_path / "small.txt"
    small.write_bytes(b"small")
    for key in ODD_KEYS:
        assert main(["-s", memory_store, "cp", str(small), f":{key}"]) == 0
        out = capsysbinary.readouterr().out
        assert f":{key}".encode() in out, out
    assert main(["-s", memory_store, "ls", "-r", "-l"]) == 0
    listed = capsysbinary.readouterr().out.decode("utf-8").splitlines()
    assert sorted(line.split(None, 3)[-1] for line in listed) == sorted(ODD_KEYS)
    for key in ODD_KEYS:
        assert main(["-s", memory_store, "stat", f":{key}"]) == 0
        fields = dict(
            line.split(None, 1) for line in capsysbinary.readouterr().out.decode().splitlines()
        )
        assert fields["key"] == key


def test_keys_print_byte_exact_on_a_terminal_too(
    memory_store: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    """Defect 6, with rich believing stdout is a terminal (colour and all)."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    small = tmp_path / "small.txt"
    small.write_bytes(b"small")
    assert main(["-s", memory_store, "cp", str(small), ":x:smile:y"]) == 0
    capsysbinary.readouterr()
    assert main(["-s", memory_store, "ls"]) == 0
    assert capsysbinary.readouterr().out.decode().split()[-1] == "x:smile:y"


def test_cp_to_dash_writes_the_object_to_stdout(
    memory_store: str,
    sample: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    """Defect 8: ``cp :key -`` wrote a file named '-'."""
    monkeypatch.chdir(tmp_path)
    put_files(memory_store, sample, "k.bin")
    capsysbinary.readouterr()
    assert main(["-s", memory_store, "cp", ":k.bin", "-"]) == 0
    assert capsysbinary.readouterr().out == sample.read_bytes()
    assert not (tmp_path / "-").exists()


def test_cp_from_dash_uploads_stdin(
    file_store: str, tmp_path: pathlib.Path, sample: pathlib.Path
) -> None:
    """Defect 8, upload side, through a real pipe: ``cp - :key`` reads stdin."""
    run = [sys.executable, "-m", "asyncstore._cli", "-s", file_store]
    with open(sample, "rb") as stdin:
        up = subprocess.run(
            [*run, "cp", "-", ":from-stdin"], stdin=stdin, capture_output=True, cwd=tmp_path
        )
    assert up.returncode == 0, up.stderr
    assert not (tmp_path / "-").exists()
    down = subprocess.run([*run, "cp", ":from-stdin", "-"], capture_output=True, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert down.stdout == sample.read_bytes()
    assert not (tmp_path / "-").exists()


def test_demo_uses_the_store_given_with_dash_s(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defect 9: ``asyncstore -s URL demo`` ignored URL and used DIR/store."""
    elsewhere = tmp_path / "elsewhere"
    url = elsewhere.as_uri()
    assert main(["-s", url, "demo", "--dir", str(tmp_path / "d"), "--big-mib", "1"]) == 0
    assert (elsewhere / "demo" / "big" / "blob-1m.bin").is_file()
    assert not (tmp_path / "d" / "store").exists()
    assert same_tree(tmp_path / "d" / "source", tmp_path / "d" / "restored")


@pytest.mark.parametrize(
    "argv",
    [
        ["ls"],
        ["ls", "-r", ":p/"],
        ["stat", ":k"],
        ["cat", ":k"],
        ["cp", ":k", "{tmp}/out.bin"],
        ["cp", ":k", "-"],
        ["digest", ":k"],
        ["digest", "-r", ":p/"],
        ["du"],
        ["verify", ":p/", "{tmp}"],
        ["sync", ":p/", "{tmp}/copy"],
        ["rm", "-r", ":p/"],
    ],
)
def test_read_commands_do_not_create_a_missing_file_store_root(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Defect 7: ``-s file://.../never-made ls`` exited 0 and made the directory."""
    root = tmp_path / "never-made"
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert main(["-s", root.as_uri(), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("asyncstore: error:")
    assert len(err.strip().splitlines()) == 1
    assert str(root) in err
    assert "does not exist" in err
    assert not root.exists()


def test_a_write_command_creates_a_missing_file_store_root(
    tmp_path: pathlib.Path, sample: pathlib.Path
) -> None:
    root = tmp_path / "made" / "on" / "write"
    assert main(["-s", root.as_uri(), "cp", str(sample), ":k"]) == 0
    assert (root / "k").read_bytes() == sample.read_bytes()


def test_a_reader_that_goes_away_ends_ls_quietly_with_141(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "store"
    for i in range(600):  # plain files are objects of a file store; ~200 KB of JSON lines
        (root / f"d{i % 10}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 10}" / f"key-{i:04d}.bin").write_bytes(b"x")
    command = [sys.executable, "-m", "asyncstore._cli", "--json", "-s", root.as_uri(), "ls", "-r"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # like `| head -1`
    status = process.wait(timeout=60)
    err = process.stderr.read()
    process.stderr.close()
    assert b'"type":"object"' in first
    assert status == 141
    assert err == b""


def test_cp_to_stdout_into_a_reader_that_goes_away_ends_quietly_with_141(
    tmp_path: pathlib.Path, file_store: str
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(4 * 1024 * 1024))
    assert main(["-s", file_store, "-q", "cp", str(big), ":big"]) == 0
    command = [sys.executable, "-m", "asyncstore._cli", "-s", file_store, "cp", ":big", "-"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert len(process.stdout.read(1000)) == 1000
    process.stdout.close()  # like `| head -c 1000`
    status = process.wait(timeout=60)
    err = process.stderr.read()
    process.stderr.close()
    assert (status, err) == (141, b"")


# -- the process -------------------------------------------------------------------------------


def test_a_command_runs_with_few_young_collections_then_restores_the_threshold(
    memory_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncstore import _cli
    from asyncstore._cli import _main

    seen: list[tuple[int, ...]] = []
    run = _main.run

    def spy(argv: list[str] | None = None) -> int:
        seen.append(gc.get_threshold())
        return run(argv)

    monkeypatch.setattr(_main, "run", spy)
    before = gc.get_threshold()
    assert main(["-s", memory_store, "ls"]) == 0
    assert seen == [(_cli.GC_THRESHOLD, *before[1:])]
    assert gc.get_threshold() == before


def test_the_program_flushes_its_output_then_skips_pythons_teardown(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    for i in range(300):
        (root / f"key-{i:04d}.bin").write_bytes(b"x")
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('python teardown', file=sys.stderr))\n"
        "from asyncstore._cli import program\n"
        f"sys.argv = ['asyncstore', '--json', '-s', {root.as_uri()!r}, 'ls', '-r']\n"
        "program()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 300  # every line written, though stdout is a pipe
    assert b"python teardown" not in done.stderr


def test_the_program_exits_with_the_commands_status(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    run = [sys.executable, "-m", "asyncstore", "-s", root.as_uri()]
    missing = subprocess.run([*run, "stat", ":nope"], capture_output=True, text=True, check=False)
    assert missing.returncode == 1
    assert missing.stderr.startswith("asyncstore: error:")
    usage = subprocess.run([*run, "cp"], capture_output=True, text=True, check=False)
    assert usage.returncode == 2


def test_the_program_limits_malloc_arenas_before_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ctypes

    from asyncstore import _cli

    calls: list[tuple[int, int]] = []

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    assert _cli.limit_malloc_arenas() is True
    assert calls == [(_cli.M_ARENA_MAX, 2)]
    exits: list[int] = []
    monkeypatch.setattr(_cli, "main", lambda: calls.append((0, 0)) or 0)
    monkeypatch.setattr(os, "_exit", exits.append)
    _cli.program()
    assert calls[1:] == [(_cli.M_ARENA_MAX, 2), (0, 0)]  # arenas first, then the command
    assert exits == [0]


def test_malloc_arenas_are_left_alone_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncstore import _cli

    monkeypatch.setattr(sys, "platform", "darwin")
    assert _cli.limit_malloc_arenas() is False


def test_malloc_arenas_are_limited_on_this_glibc() -> None:
    import platform

    from asyncstore import _cli

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert _cli.limit_malloc_arenas() is True
