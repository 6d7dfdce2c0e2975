"""The command line's parts: globs, rsync-like filters, sizes, locations, named stores."""

from __future__ import annotations

import argparse
import os
import pathlib

import pytest

from asyncstore import ConfigurationError, InvalidKeyError
from asyncstore._cli._config import load_stores
from asyncstore._cli._globs import Filter, Glob, Rule
from asyncstore._cli._locations import Local, Remote, Resolver, Stdio, StoreRef
from asyncstore._cli._parser import UsageError, parse_size
from asyncstore._cli._sync import differs
from asyncstore._cli._tree import Item, local_path

# -- globs over keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("logs/*.gz", "logs/a.gz", True),
        ("logs/*.gz", "logs/x/a.gz", False),  # '*' stops at '/'
        ("logs/**.gz", "logs/x/a.gz", True),  # '**' does not
        ("logs/**/a.gz", "logs/a.gz", True),  # '**/' may match no folder at all
        ("logs/**/a.gz", "logs/x/y/a.gz", True),
        ("logs/?.gz", "logs/a.gz", True),
        ("logs/?.gz", "logs/ab.gz", False),
        ("logs/[ab].gz", "logs/b.gz", True),
        ("logs/[!ab].gz", "logs/b.gz", False),
        ("logs/[!ab].gz", "logs/c.gz", True),
        ("a+b(1).txt", "a+b(1).txt", True),  # regex characters are literal
        ("[bold", "[bold", True),  # an unclosed '[' is literal
    ],
)
def test_glob_matching(pattern: str, key: str, matches: bool) -> None:
    assert Glob(pattern).matches(key) is matches


def test_a_glob_covers_what_lies_below_the_folders_it_matches() -> None:
    glob = Glob("logs/2024-*")
    assert glob.prefix == "logs/2024-"
    assert glob.base == "logs/"
    assert glob.matched_dir("logs/2024-01/a.gz") == "logs/2024-01/"
    assert glob.covers("logs/2024-01/deep/b.gz")
    assert not glob.covers("logs/2023-12/a.gz")
    assert not glob.covers("other/2024-01/a.gz")


# -- rsync-like filters ------------------------------------------------------------------------

TREE = [
    "a.txt",
    "a.tmp",
    "build/out.o",
    "src/build/keep.c",
    "src/main.c",
    "src/notes.txt",
    "cache/x.bin",
    "src/cache/y.bin",
    "cache",  # a file named like the folder elsewhere
    "logs/a.gz",
    "x/logs/b.gz",
    "logs/deep/c.gz",
]


def kept(*rules: tuple[str, str]) -> list[str]:
    filter = Filter(Rule(kind == "include", pattern) for kind, pattern in rules)
    return sorted(path for path in TREE if not filter.excluded(path))


def test_no_rule_keeps_everything() -> None:
    assert kept() == sorted(TREE)


def test_a_pattern_without_a_slash_matches_the_name_at_any_depth() -> None:
    assert kept(("exclude", "*.tmp")) == sorted(p for p in TREE if p != "a.tmp")
    assert "src/notes.txt" not in kept(("exclude", "*.txt"))


def test_a_leading_slash_anchors_at_the_top() -> None:
    result = kept(("exclude", "/build"))
    assert "build/out.o" not in result
    assert "src/build/keep.c" in result


def test_a_trailing_slash_matches_folders_only() -> None:
    result = kept(("exclude", "cache/"))
    assert "cache/x.bin" not in result
    assert "src/cache/y.bin" not in result
    assert "cache" in result  # the file of that name stays


def test_a_pattern_with_a_slash_matches_the_end_of_the_path() -> None:
    result = kept(("exclude", "logs/*.gz"))
    assert "logs/a.gz" not in result
    assert "x/logs/b.gz" not in result
    assert "logs/deep/c.gz" in result  # '*' does not cross '/'
    assert "logs/deep/c.gz" not in kept(("exclude", "logs/**"))


def test_the_first_matching_rule_wins() -> None:
    assert "a.txt" in kept(("include", "a.txt"), ("exclude", "*.txt"))
    assert "a.txt" not in kept(("exclude", "*.txt"), ("include", "a.txt"))


def test_include_then_exclude_star_keeps_only_the_top_level_as_rsync_does() -> None:
    # rsync's well-known rule: '*' excludes every folder, so nothing below is seen.
    assert kept(("include", "*.txt"), ("exclude", "*")) == ["a.txt"]


def test_including_every_folder_first_reaches_files_at_any_depth() -> None:
    result = kept(("include", "*/"), ("include", "*.txt"), ("exclude", "*"))
    assert result == ["a.txt", "src/notes.txt"]


def test_an_excluded_folder_cannot_be_reopened_by_a_later_include() -> None:
    assert "src/main.c" not in kept(("exclude", "src/"), ("include", "*.c"))


# -- sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1", 1),
        ("65536", 65536),
        ("8M", 8 << 20),
        ("8MiB", 8 << 20),
        ("8mb", 8 << 20),
        ("2G", 2 << 30),
        ("16k", 16 << 10),
    ],
)
def test_sizes_parse_with_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "8X", "1.5M", "M"])
def test_bad_sizes_are_refused_naming_them(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


# -- locations ---------------------------------------------------------------------------------


def test_a_url_in_place_splits_into_store_and_key() -> None:
    where = Resolver(None, {}).resolve("s3://bucket/a/b.bin?region=eu-west-1")
    assert where == Remote(StoreRef("s3://bucket?region=eu-west-1", (), "s3://bucket/"), "a/b.bin")
    assert where.show() == "s3://bucket/a/b.bin"


def test_a_url_shows_no_user_info_or_query() -> None:
    where = Resolver(None, {}).resolve("s3://user:secret@bucket/k?token=abc")
    assert isinstance(where, Remote)
    assert where.show() == "s3://bucket/k"
    assert "secret" not in where.show()


def test_a_key_in_a_url_keeps_hash_and_percent_signs() -> None:
    where = Resolver(None, {}).resolve("gs://b/x#1%20y")
    assert isinstance(where, Remote) and where.key == "x#1%20y"


def test_colon_keys_need_a_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCSTORE_URL", raising=False)
    with pytest.raises(UsageError, match="ASYNCSTORE_URL"):
        Resolver(None, {}).resolve(":k")
    assert Resolver("memory://m", {}).resolve(":k") == Remote(StoreRef("memory://m"), "k")


def test_dash_local_paths_and_file_urls() -> None:
    resolver = Resolver("memory://m", {})
    assert resolver.resolve("-") == Stdio()
    assert resolver.resolve("./a:b") == Local("./a:b")
    assert resolver.resolve("a/b") == Local("a/b")
    assert resolver.resolve("a/b", bare_is_key=True) == Remote(StoreRef("memory://m"), "a/b")
    root = resolver.resolve("file:///srv/store")
    assert isinstance(root, Remote) and root.key == "" and root.ref.url == "file:///srv/store"


# -- named stores ------------------------------------------------------------------------------


def write_config(home: pathlib.Path, text: str) -> pathlib.Path:
    path = home / "asyncstore" / "stores.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_named_stores_come_from_xdg_config_home(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    write_config(tmp_path, '[photos]\nurl = "s3://pics/originals"\nregion = "eu-west-1"\n')
    resolver = Resolver(None)
    where = resolver.resolve("photos:2024/a.jpg")
    assert isinstance(where, Remote)
    assert where.key == "2024/a.jpg"
    assert where.ref.url == "s3://pics/originals"
    assert dict(where.ref.options) == {"region": "eu-west-1"}
    assert where.show() == "photos:2024/a.jpg"
    # an unknown name is a local path; so is an existing file with a colon
    assert resolver.resolve("nothere:x") == Local("nothere:x")
    assert Resolver("photos").default_store().url == "s3://pics/originals"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[a\nurl = 1\n", "not valid TOML"),
        ("[a]\npath = '/x'\n", "needs url"),
        ("a = 'x'\n", "must be a table"),
        ('["bad name"]\nurl = "memory://"\n', "may hold only"),
    ],
)
def test_a_bad_config_file_is_an_error_naming_it(
    tmp_path: pathlib.Path, text: str, message: str
) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_stores(str(path))
    assert str(path) in str(caught.value)


def test_a_missing_config_file_means_no_named_stores(tmp_path: pathlib.Path) -> None:
    assert load_stores(str(tmp_path / "none.toml")) == {}


# -- sync decisions ----------------------------------------------------------------------------


def item(
    size: int = 10,
    mtime: float | None = None,
    modified: float | None = None,
    sha: str | None = None,
) -> Item:
    return Item("r", "w", size, mtime, modified, sha)


def test_a_different_size_always_transfers() -> None:
    assert differs(item(10, 5.0, 5.0), item(11, 5.0, 5.0), "up") is True


def test_sha256_on_both_sides_decides_over_times() -> None:
    assert (
        differs(item(sha="sha256:a", mtime=1.0), item(sha="sha256:a", mtime=9.0), "across") is False
    )
    assert differs(item(sha="sha256:a"), item(sha="sha256:b"), "across") is True


def test_recorded_mtimes_must_agree_within_a_millisecond() -> None:
    assert differs(item(mtime=100.0), item(mtime=100.0004), "up") is False
    assert differs(item(mtime=100.0), item(mtime=99.0), "up") is True  # older too: rsync-like


def test_up_without_a_recorded_mtime_uses_the_objects_last_modified() -> None:
    assert differs(item(mtime=100.0, modified=100.0), item(modified=150.0), "up") is False
    assert differs(item(mtime=200.0, modified=200.0), item(modified=150.0), "up") is True


def test_down_without_a_recorded_mtime_asks_for_it_when_the_file_is_older() -> None:
    assert differs(item(modified=150.0), item(mtime=200.0, modified=200.0), "down") is False
    assert differs(item(modified=150.0), item(mtime=100.0, modified=100.0), "down") is None


def test_a_whole_second_last_modified_cannot_order_a_write_in_the_same_second() -> None:
    # S3 listings carry whole seconds: an object listed at 150 was written in [150, 151).
    assert differs(item(mtime=150.4, modified=150.4), item(modified=150.0), "up") is None
    assert differs(item(mtime=151.2, modified=151.2), item(modified=150.0), "up") is True
    assert differs(item(mtime=150.4, modified=150.4), item(modified=150.25), "up") is True
    # Store → local: a file changed at 150.5 may predate an object listed at 150.
    assert differs(item(modified=150.0), item(mtime=150.5, modified=150.5), "down") is None
    assert differs(item(modified=150.0), item(mtime=151.0, modified=151.0), "down") is False


def test_across_stores_a_newer_destination_is_up_to_date() -> None:
    assert differs(item(modified=100.0), item(modified=150.0), "across") is False
    assert differs(item(modified=200.0), item(modified=150.0), "across") is True


# -- local names of keys -----------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "a//b", "/abs", "a/./b", "nul\0"])
def test_a_key_that_would_leave_the_folder_is_refused(tmp_path: pathlib.Path, rel: str) -> None:
    with pytest.raises(InvalidKeyError, match="cannot be written"):
        local_path(str(tmp_path), rel, rel)


def test_a_key_becomes_a_path_below_the_folder(tmp_path: pathlib.Path) -> None:
    assert local_path(str(tmp_path), "a/b c/d.txt", "k") == os.path.join(
        tmp_path, "a", "b c", "d.txt"
    )


def test_urls_are_shown_without_secrets() -> None:
    from asyncstore._cli._locations import shown_url

    assert shown_url("s3://u:pw@bucket/p?token=abc&region=x#f") == (
        "s3://bucket/p?token=***&region=***#***"
    )
    assert shown_url("file:///srv/store") == "file:///srv/store"


def test_a_small_file_is_uploaded_with_a_part_size_near_its_own() -> None:
    from asyncstore._cli._transfer import SMALL_FILE_CHUNK, _small_file_chunk

    eight = 8 * 1024 * 1024
    assert _small_file_chunk(4096, eight, None) == SMALL_FILE_CHUNK
    assert _small_file_chunk(1024 * 1024, eight, None) == 2 * 1024 * 1024
    assert _small_file_chunk(5 * 1024 * 1024, eight, None) is None  # the store's default
    assert _small_file_chunk(4096, eight, 1024 * 1024) == 1024 * 1024  # --part-size wins
    assert _small_file_chunk(None, eight, None) is None


def test_a_file_of_one_round_of_parts_goes_in_one_request_only_among_many() -> None:
    from asyncstore._cli._transfer import _one_request_chunk

    mib = 1024 * 1024
    eight, memory, limit = 8 * mib, 256 * mib, 5 * 1024 * mib

    def chunk(size: int | None, *, many: bool = True, concurrency: int = 8) -> int | None:
        return _one_request_chunk(size, eight, concurrency, memory, limit, many=many)

    assert chunk(9 * mib) == 9 * mib
    assert chunk(64 * mib) == 64 * mib  # one round of 8 parts of 8 MiB
    assert chunk(64 * mib + 1) is None  # more than one round: parts
    assert chunk(32 * mib, concurrency=2) is None  # more than 2 parts of 8 MiB
    assert chunk(9 * mib, many=False) is None  # a lone file keeps its parts in parallel
    assert chunk(eight) is None  # one part already
    assert chunk(None) is None  # size unknown
    assert _one_request_chunk(40 * mib, eight, 8, 64 * mib, limit, many=True) is None  # > half
    assert _one_request_chunk(40 * mib, eight, 8, memory, 32 * mib, many=True) is None  # > put
