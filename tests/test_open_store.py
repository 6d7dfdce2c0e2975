"""open_store, the scheme registry and its errors; the public names; key rules as properties."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from blockbuster import BlockingError
from hypothesis import given
from hypothesis import strategies as st

import asyncstore
from asyncstore import (
    ConfigurationError,
    InvalidKeyError,
    MemoryBackend,
    Store,
    _registry,
    open_store,
    open_store_async,
)
from asyncstore._keys import MAX_KEY_BYTES, validate_key, validate_prefix


def test_memory_urls_open_fresh_or_named_stores() -> None:
    assert isinstance(open_store("memory://").backend, MemoryBackend)
    assert open_store("memory://").backend is not open_store("memory://").backend
    assert open_store("memory://shared").backend is open_store("memory://shared").backend


def test_store_options_reach_the_store() -> None:
    store = open_store("memory://", chunk_size=1024, max_concurrency=3)
    assert (store.chunk_size, store.max_concurrency) == (1024, 3)


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        open_store("ftp://host/path")
    message = str(info.value)
    assert "'ftp'" in message
    assert "file" in message
    assert "memory" in message


@pytest.mark.parametrize("url", ["", "no-scheme", "/abs/path", 42])
def test_urls_without_a_scheme_are_rejected(url: Any) -> None:
    with pytest.raises(ConfigurationError, match="scheme://"):
        open_store(url)


@pytest.mark.parametrize(("scheme", "extra"), [("s3", "s3"), ("gs", "gcs"), ("az", "azure")])
def test_missing_extra_names_the_pip_install(
    monkeypatch: pytest.MonkeyPatch, scheme: str, extra: str
) -> None:
    monkeypatch.setattr(_registry, "_entry_points", dict)
    with pytest.raises(ConfigurationError) as info:
        open_store(f"{scheme}://bucket/prefix")
    assert f"pip install 'asyncstore[{extra}]'" in str(info.value)


def test_entry_point_whose_vendor_sdk_is_missing_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an import of either now fails, whether or not another test imported them already
    monkeypatch.setitem(sys.modules, "aiobotocore", None)
    monkeypatch.setitem(sys.modules, "aiobotocore.session", None)
    entry = importlib.metadata.EntryPoint(
        name="s3", value="aiobotocore.session:get_session", group="asyncstore.backends"
    )
    monkeypatch.setattr(_registry, "_entry_points", lambda: {"s3": entry})
    with pytest.raises(ConfigurationError, match=r"pip install 'asyncstore\[s3\]'"):
        open_store("s3://bucket")


_WITHOUT = """
import sys
for name in {hidden!r}:
    sys.modules[name] = None  # as if not installed: every import of it fails
import asyncstore
try:
    asyncstore.open_store({url!r})
except asyncstore.ConfigurationError as exc:
    print("open_store:", exc)
try:
    import asyncstore.backends.{package}
except ImportError as exc:
    print("import:", exc)
"""


@pytest.mark.parametrize(
    ("scheme", "package", "extra", "hidden"),
    [
        ("s3", "s3", "s3", ["aiohttp"]),
        ("s3", "s3", "s3", ["aiobotocore"]),
        ("gs", "gcs", "gcs", ["aiohttp"]),
        ("gs", "gcs", "gcs", ["gcloud", "gcloud.aio", "gcloud.aio.storage"]),
        ("az", "azure", "azure", ["aiohttp"]),
        ("az", "azure", "azure", ["azure.storage", "azure.storage.blob"]),
    ],
)
def test_a_missing_vendor_module_is_reported_as_the_missing_extra(
    scheme: str, package: str, extra: str, hidden: list[str]
) -> None:
    """With the extra's vendor modules missing, both ways in name the extra, not the module."""
    script = _WITHOUT.format(hidden=hidden, url=f"{scheme}://bucket/p", package=package)
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    lines = run.stdout.splitlines()
    assert lines[0] == (
        f"open_store: {scheme}:// stores need the '{extra}' extra, which is not installed: "
        f"pip install 'asyncstore[{extra}]'"
    )
    assert lines[1].startswith(
        f"import: asyncstore.backends.{package} needs the '{extra}' extra, which is not "
        f"installed: pip install 'asyncstore[{extra}]'"
    )
    assert "No module named" not in run.stdout


# -- opening without blocking the event loop ---------------------------------------------------

OPEN_URLS = {
    "s3": ("S3Backend", "s3://bucket/p?endpoint=http://127.0.0.1:9&region=us-east-1"),
    "gs": ("GCSBackend", "gs://bucket/p?api_root=http://127.0.0.1:9"),
    "az": (
        "AzureBackend",
        "az://cont/p?account_url=http://127.0.0.1:10000/devstoreaccount1&anonymous=true",
    ),
}


@pytest.mark.parametrize("library", ["asyncio", "trio"])
@pytest.mark.parametrize("scheme", list(OPEN_URLS))
def test_open_store_async_imports_the_backend_off_the_event_loop(scheme: str, library: str) -> None:
    """In a fresh interpreter (nothing imported, no entry points scanned) under
    blockbuster, the first open of a cloud scheme blocks nothing; the plain
    open_store does, which is what the test would catch."""
    backend, url = OPEN_URLS[scheme]
    script = str(Path(__file__).with_name("_open_under_blockbuster.py"))

    def run(mode: str) -> str:
        done = subprocess.run(
            [sys.executable, script, mode, library, url],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout.strip()

    assert run("async") == f"opened {backend}"
    assert run("sync").startswith("raised BlockingError")


@pytest.mark.anyio
async def test_open_store_async_scans_entry_points_in_a_worker_thread(tmp_path: Path) -> None:
    _registry._entry_points.cache_clear()  # as in a program's first open
    async with open_store_async(f"file://{tmp_path}/root") as store:
        await store.put("k", b"v")
        assert await store.get("k") == b"v"
    _registry._entry_points.cache_clear()
    store = await open_store_async("memory://", chunk_size=1024, max_concurrency=3)
    try:
        assert isinstance(store, Store)
        assert (store.chunk_size, store.max_concurrency) == (1024, 3)
    finally:
        await store.aclose()
    _registry._entry_points.cache_clear()
    try:
        with pytest.raises(BlockingError):  # what blockbuster says of the plain open_store
            open_store("memory://")
    finally:  # leave the scan cached, as found, for the tests that follow
        await anyio.to_thread.run_sync(_registry._entry_points)


@pytest.mark.anyio
async def test_open_store_async_errors_come_when_awaited_or_entered() -> None:
    opening = open_store_async("ftp://host/path")  # nothing happens yet
    with pytest.raises(ConfigurationError, match="'ftp'"):
        await opening
    with pytest.raises(ConfigurationError, match="scheme://"):
        async with open_store_async("no-scheme"):
            pass  # pragma: no cover
    with pytest.raises(ConfigurationError, match="colour"):
        await open_store_async("memory://", colour="red")


def test_register_backend_adds_a_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_registered", {})
    seen: list[Any] = []

    def factory(url: Any, **options: Any) -> MemoryBackend:
        seen.append((url.netloc, options))
        return MemoryBackend()

    asyncstore.register_backend("mine", factory)
    assert "mine" in asyncstore.known_schemes()
    store = open_store("mine://host", flavour="x")
    assert isinstance(store, Store)
    assert seen == [("host", {"flavour": "x"})]
    with pytest.raises(ConfigurationError, match="invalid URL scheme"):
        asyncstore.register_backend("bad scheme", factory)


def test_backend_options_are_checked_by_the_backend() -> None:
    with pytest.raises(ConfigurationError, match="colour"):
        open_store("memory://", colour="red")
    with pytest.raises(ConfigurationError, match="takes only a name"):
        open_store("memory://name/path?x=1")


def test_credentials_never_appear_in_url_errors() -> None:
    secret = "s3cr3t-Pa55"
    with pytest.raises(ConfigurationError) as info:
        open_store(f"ftp://user:{secret}@host/path?token={secret}")
    assert secret not in str(info.value)
    assert secret not in repr(info.value)
    assert secret not in str(info.value.key)
    assert _registry.redact_url(f"s3://a:{secret}@b/c?k={secret}") == "s3://***@b/c?k=***"


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(asyncstore).items()
        if not name.startswith("_") and not isinstance(value, type(sys)) and name != "annotations"
    }
    assert set(asyncstore.__all__) == public
    for name in asyncstore.__all__:
        value = getattr(asyncstore, name)
        if isinstance(value, type) or (callable(value) and hasattr(value, "__module__")):
            assert value.__module__.startswith("asyncstore"), name


def test_every_error_is_a_store_error_and_the_builtin_it_resembles() -> None:
    assert issubclass(asyncstore.NotFoundError, FileNotFoundError)
    assert issubclass(asyncstore.AlreadyExistsError, FileExistsError)
    assert issubclass(asyncstore.PermissionDeniedError, PermissionError)
    assert issubclass(asyncstore.TimeoutError, TimeoutError)
    assert issubclass(asyncstore.ConnectionError, ConnectionError)
    assert issubclass(asyncstore.InvalidKeyError, ValueError)
    assert issubclass(asyncstore.DigestMismatchError, asyncstore.IntegrityError)
    for name in asyncstore.__all__:
        value = getattr(asyncstore, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, asyncstore.StoreError)


def test_translating_raises_the_tables_error_from_the_original() -> None:
    from asyncstore._errors import translating

    def table(exc: BaseException, *, key: str) -> asyncstore.StoreError | None:
        if isinstance(exc, KeyError):
            return asyncstore.NotFoundError(f"no {key!r}", key=key)
        return None

    with pytest.raises(asyncstore.NotFoundError) as info, translating(table, key="k"):
        raise KeyError("boom")
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.key == "k"
    with pytest.raises(ZeroDivisionError), translating(table, key="k"):  # not in the table
        1 / 0  # noqa: B018
    ours = asyncstore.PreconditionFailedError("already ours")
    with pytest.raises(asyncstore.PreconditionFailedError) as same, translating(table, key="k"):
        raise ours
    assert same.value is ours


# -- key rules as properties ------------------------------------------------------------------


@given(st.text(max_size=300))
def test_validate_key_accepts_or_raises_invalid_key_only(key: str) -> None:
    try:
        validate_key(key)
    except InvalidKeyError as exc:
        assert exc.key == key or exc.key is None
    else:
        segments = key.split("/")
        assert key and "" not in segments
        assert "." not in segments and ".." not in segments
        assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in key)
        assert len(key.encode("utf-8")) <= MAX_KEY_BYTES


@given(st.text(alphabet="ab./ \x00\x1f\x7f~", max_size=12))
def test_validate_key_on_ascii_keys_follows_every_rule(key: str) -> None:
    """ASCII keys take a fast path of string methods: it accepts what the rules accept."""
    segments = key.split("/")
    valid = (
        bool(key)
        and "" not in segments
        and "." not in segments
        and ".." not in segments
        and all(ord(c) >= 0x20 and ord(c) != 0x7F for c in key)
    )
    if valid:
        assert validate_key(key) == key
    else:
        with pytest.raises(InvalidKeyError):
            validate_key(key)


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        (".hidden", True),
        ("a/.b", True),
        ("a/..b/c.", True),
        ("a" * MAX_KEY_BYTES, True),
        ("a" * (MAX_KEY_BYTES + 1), False),
        ("é" * (MAX_KEY_BYTES // 2), True),
        ("é" * (MAX_KEY_BYTES // 2 + 1), False),
        ("./a", False),
        ("a/./b", False),
        ("a/..", False),
        ("a\x7fb", False),
        ("a\tb", False),
        ("a//b", False),
    ],
)
def test_validate_key_at_the_edges_of_the_rules(key: str, valid: bool) -> None:
    if valid:
        assert validate_key(key) == key
    else:
        with pytest.raises(InvalidKeyError):
            validate_key(key)


@given(st.text(max_size=100))
def test_validate_prefix_accepts_or_raises_invalid_key_only(prefix: str) -> None:
    try:
        validate_prefix(prefix)
    except InvalidKeyError:
        pass
    else:
        assert ".." not in prefix.rstrip("/").split("/") or prefix == ""


@given(st.one_of(st.binary(), st.integers(), st.none(), st.lists(st.text())))
def test_non_str_keys_raise_invalid_key(key: Any) -> None:
    with pytest.raises(InvalidKeyError, match="must be a str"):
        validate_key(key)


def test_backend_defaults_apply_unless_the_store_is_told_otherwise() -> None:
    backend = MemoryBackend()
    backend.default_chunk_size = 16 * 1024 * 1024
    backend.default_max_concurrency = 3
    assert (Store(backend).chunk_size, Store(backend).max_concurrency) == (16 * 1024 * 1024, 3)
    assert Store(backend, chunk_size=1024, max_concurrency=2).chunk_size == 1024
    assert Store(MemoryBackend()).chunk_size == asyncstore.DEFAULT_CHUNK_SIZE
