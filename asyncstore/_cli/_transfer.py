"""Running many transfers: ``--jobs`` at once, one progress view, errors counted, not fatal.

A `Job` moves one file or object: local → store (``upload_file``), store →
local (``download_file``), store → same store (server-side ``copy``), store →
another store (``stream`` into ``put``, never through a temporary file),
stdin → store (``put``) or store → stdout (``stream``). Each transfer is
atomic where it lands: an upload that fails or is cancelled is aborted (no
partial object), a download writes a temp file that is renamed into place
only when complete and verified. A failed job prints one error line and the
others go on; `Engine.run` says how many failed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import mimetypes
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, BinaryIO, Literal

import anyio
import anyio.to_thread

from .. import ObjectInfo, Store, StoreError, TransferInfo
from .._stream._tasks import task_group
from ._locations import Local, Remote, Stdio, Stores
from ._progress import FileProgress, TransferView
from ._ui import UI, human_bytes, transfer_line

__all__ = [
    "DEFAULT_MEMORY",
    "Engine",
    "Job",
    "MemoryBudget",
    "Outcome",
    "TransferOptions",
    "describe_error",
    "stdin_chunks",
]

#: Bytes read from stdin per worker-thread call (at most).
STDIN_BLOCK = 1024 * 1024

#: Default bound on the part buffers of all the transfers of one command (``--memory``).
DEFAULT_MEMORY = 256 * 1024 * 1024

Action = Literal["upload", "download", "copy"]


def describe_error(exc: BaseException) -> str:
    """One line for an error: the store's message, or an OSError's text and file name."""
    if (
        isinstance(exc, OSError)
        and not isinstance(exc, StoreError)
        and exc.filename is not None
        and exc.strerror
    ):
        return f"{exc.strerror}: {exc.filename!r}"
    return str(exc) or type(exc).__name__


@dataclasses.dataclass(frozen=True)
class TransferOptions:
    """The options every transfer command takes.

    Attributes:
        jobs: Files transferred at once.
        chunk_size: Part / range size (None: the store's).
        max_concurrency: Parts / ranges in flight per transfer (None: the store's).
        content_type: The content type of uploads (None: guessed from the name,
            or the source object's).
        metadata: User metadata of uploads (None: none, or the source object's).
        verify: Check sha256 digests on reads.
        dry_run: Print what would be done, do nothing.
        memory: Bytes of part buffers held at once by all transfers together
            (see `MemoryBudget`).
    """

    jobs: int = 16
    chunk_size: int | None = None
    max_concurrency: int | None = None
    content_type: str | None = None
    metadata: Mapping[str, str] | None = None
    verify: bool = True
    dry_run: bool = False
    memory: int = DEFAULT_MEMORY


class MemoryBudget:
    """Bytes of part buffers that the transfers of one command may hold at once.

    A transfer with parts of ``P`` bytes and ``C`` parts in flight holds up to
    ``P * (C + 1)`` bytes (``C`` parts being sent or received, one more being
    filled); a store-to-store copy that streams through this process holds that
    twice. Before it starts, each transfer reserves what it will hold, and waits
    (first come, first served) until that much is free; it gives it back when it
    ends. A transfer that would hold more than the whole budget runs with fewer
    parts in flight (at least one), alone if need be. So the buffers of all the
    files in flight never exceed the budget, or two parts when one part alone
    is more than half of it.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        #: The most bytes reserved at once so far.
        self.peak = 0
        self._waiting: collections.deque[tuple[int, anyio.Event]] = collections.deque()

    @contextlib.asynccontextmanager
    async def reserve(self, amount: int) -> AsyncIterator[None]:
        """Hold ``amount`` bytes (at most the whole budget) for the body of the block."""
        amount = min(amount, self.total)
        if amount and (self._waiting or amount > self.free):  # nothing to hold: no wait
            entry = (amount, anyio.Event())
            self._waiting.append(entry)
            try:
                await entry[1].wait()
            except BaseException:
                if entry in self._waiting:
                    self._waiting.remove(entry)
                    self._grant()  # the ones behind it may fit now
                else:  # granted as it was cancelled
                    self._release(amount)
                raise
        else:
            self.free -= amount
        self.peak = max(self.peak, self.total - self.free)
        try:
            yield
        finally:
            self._release(amount)

    def _release(self, amount: int) -> None:
        self.free += amount
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self._waiting[0][0] <= self.free:
            amount, event = self._waiting.popleft()
            self.free -= amount
            event.set()


def _parts_plan(
    size: int | None, part: int, concurrency: int, budget: int, *, streams: int = 1
) -> tuple[int, int]:
    """``(bytes to reserve, parts in flight)`` of a transfer of ``size`` bytes in parts of
    ``part`` bytes, ``concurrency`` at once, within ``budget`` (``streams``: 2 for a
    copy that reads and writes parts)."""
    parts = -(-size // part) if size is not None else concurrency + 1
    parts = max(parts, 1)
    if parts > 1 and part * (concurrency + 1) * streams > budget:
        concurrency = max(1, budget // (part * streams) - 1)
    held = (
        min(size, part) if size is not None and parts == 1 else part * min(parts, concurrency + 1)
    )
    return held * streams, concurrency


@dataclasses.dataclass(slots=True)
class Job:
    """One transfer: ``src`` to ``dst`` (each a file, an object or stdin/stdout).

    Attributes:
        size: The source's size when known (for the progress view).
        reason: Why ``sync`` transfers it (``"new"`` or ``"changed"``); None for ``cp``.
        move: Delete the source once the transfer has succeeded (``mv``).
        label: Its row in the progress view (default: the source as written).
    """

    src: Local | Remote | Stdio
    dst: Local | Remote | Stdio
    size: int | None = None
    reason: str | None = None
    move: bool = False
    label: str | None = None

    @property
    def action(self) -> Action:
        """``upload`` (to a store), ``download`` (from one) or ``copy`` (store to store)."""
        if isinstance(self.src, Remote) and isinstance(self.dst, Remote):
            return "copy"
        return "download" if isinstance(self.src, Remote) else "upload"


@dataclasses.dataclass(slots=True)
class Outcome:
    """What `Engine.run` did."""

    done: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    succeeded: list[Job] = dataclasses.field(default_factory=list)


def _guess_type(path: str) -> str | None:
    content_type, _ = mimetypes.guess_type(path)
    return content_type


_mime_tables_read = False


async def _init_mimetypes() -> None:
    """Read the system's MIME tables once, in a worker thread.

    After that ``mimetypes.guess_type`` only looks up a dict, so it can run on
    the event loop: one worker-thread hop less per uploaded file. (The first
    ``guess_type`` reads the tables; ``mimetypes.inited`` is no guide, since
    making a ``MimeTypes()`` sets it without reading them for the module.)
    """
    global _mime_tables_read
    if not _mime_tables_read:
        await anyio.to_thread.run_sync(_guess_type, "x.txt")
        _mime_tables_read = True


#: The smallest part size the CLI asks for a small file (the backend may raise it).
SMALL_FILE_CHUNK = 64 * 1024


def _small_file_chunk(size: int | None, default: int, requested: int | None) -> int | None:
    """The part size for uploading a file of ``size`` bytes.

    The Store reads a file in buffers of the part size, so a 4 KiB file sent
    with the default 8 MiB parts costs an 8 MiB zero-filled buffer. A file much
    smaller than a part is still sent in one request with a part size of twice
    its size (headroom should it grow meanwhile); ``--part-size`` is kept as given.
    """
    if requested is not None or size is None or size * 2 >= default:
        return requested
    return max(size * 2, SMALL_FILE_CHUNK)


def _one_request_chunk(
    size: int | None,
    default: int,
    concurrency: int,
    memory: int,
    max_single_put: int,
    *,
    many: bool,
) -> int | None:
    """The part size that sends a file of ``size`` bytes in one request, or None (parts).

    In a transfer of many files (``sync``, ``cp -r``), a file larger than a part but no
    larger than one round of parts in flight (``default * concurrency``, 64 MiB with the
    defaults) goes in one PutObject rather than a multipart upload: the other files in
    flight keep the connections busy, so the file's own parallel parts add no speed, while
    the multipart upload costs 10 more requests (create, 8 parts, complete; on S3 one more
    to tag the sha256, which one PutObject carries in its metadata) and makes the service
    assemble the parts. The buffer it holds is no larger than the parts' window
    (``default * (concurrency + 1)``), and at most half of ``--memory``. A lone file keeps
    its parts in parallel.
    """
    if not many or size is None or size <= default or size > default * concurrency:
        return None
    if size * 2 > memory or size > max_single_put:
        return None
    return size


def _part_size(store: Store, part: int, size: int | None) -> int:
    """The part size the store will use for ``size`` bytes asked in parts of ``part``."""
    limits = store.capabilities
    if size is not None and size > part:
        part = max(part, limits.min_part_size, -(-size // limits.max_parts))
    return part


def _stdin_binary() -> BinaryIO:
    buffer: BinaryIO = sys.stdin.buffer
    return buffer


def _read_stdin(stdin: BinaryIO, n: int) -> bytes:
    read1: Callable[[int], bytes] | None = getattr(stdin, "read1", None)
    return read1(n) if read1 is not None else stdin.read(n)


async def stdin_chunks() -> AsyncIterator[bytes]:
    """The bytes of stdin as they arrive, read in worker threads."""
    stdin = _stdin_binary()
    while chunk := await anyio.to_thread.run_sync(_read_stdin, stdin, STDIN_BLOCK):
        yield chunk


def _stdout_binary() -> BinaryIO:
    buffer: BinaryIO = sys.stdout.buffer
    return buffer


def _makedirs_for(path: str) -> None:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)


async def _delete_source(job: Job, stores: Stores) -> None:
    if isinstance(job.src, Local):
        await anyio.to_thread.run_sync(os.remove, job.src.path)
    elif isinstance(job.src, Remote):
        store = await stores.open(job.src.ref, write=True)
        await store.delete(job.src.key)


class Engine:
    """Runs jobs under one bound, with one progress view, and reports each one.

    Args:
        ui: Output.
        stores: The command's open stores.
        options: The transfer options.
        command: The command running the jobs (``cp``, ``mv``, ``sync``).
    """

    def __init__(
        self, ui: UI, stores: Stores, options: TransferOptions, *, command: str = "cp"
    ) -> None:
        self.ui = ui
        self.stores = stores
        self.options = options
        self.command = command
        self._folders: set[str] = set()
        #: The part buffers of all the transfers, bounded by ``options.memory``.
        self.budget = MemoryBudget(options.memory)
        #: Whether the jobs being run are more than one (see `_one_request_chunk`).
        self.many = False

    # -- one transfer --------------------------------------------------------------------------

    async def _upload(
        self, job: Job, src: Local, dst: Remote, progress: FileProgress, concurrency: int | None
    ) -> Any:
        store = await self.stores.open(dst.ref, write=True)
        content_type = self.options.content_type
        if content_type is None:
            await _init_mimetypes()
            content_type = _guess_type(src.path)
        return await store.upload_file(
            src.path,
            dst.key,
            content_type=content_type,
            metadata=self.options.metadata,
            chunk_size=self._upload_chunk(job, store),
            max_concurrency=concurrency,
            progress=progress.callback(),
        )

    def _upload_chunk(self, job: Job, store: Store) -> int | None:
        """The part size of ``job``'s upload (None: the store's): ``--part-size`` if given,
        else near a small file's size, else the whole file in one request for a file of a
        transfer of many (`_one_request_chunk`)."""
        options = self.options
        chunk = _small_file_chunk(job.size, store.chunk_size, options.chunk_size)
        if chunk is None:  # (with --part-size it is not)
            chunk = _one_request_chunk(
                job.size,
                store.chunk_size,
                options.max_concurrency or store.max_concurrency,
                options.memory,
                store.capabilities.max_single_put,
                many=self.many,
            )
        return chunk

    async def _download(
        self, src: Remote, dst: Local, progress: FileProgress, concurrency: int | None
    ) -> Any:
        store = await self.stores.open(src.ref, write=False)
        parent = os.path.dirname(dst.path)
        if parent not in self._folders:  # one worker-thread hop per folder, not per file
            await anyio.to_thread.run_sync(_makedirs_for, dst.path)
            self._folders.add(parent)
        return await store.download_file(
            src.key,
            dst.path,
            chunk_size=self.options.chunk_size,
            max_concurrency=concurrency,
            progress=progress.callback(),
            verify=self.options.verify,
        )

    async def _copy(
        self, job: Job, src: Remote, dst: Remote, progress: FileProgress, concurrency: int | None
    ) -> Any:
        source = await self.stores.open(src.ref, write=False)
        target = await self.stores.open(dst.ref, write=True)
        same = self.stores.same_store(src.ref, dst.ref)
        if same and self.options.content_type is None and self.options.metadata is None:
            await target.copy(src.key, dst.key)  # server-side where the service can
            copied = job.size or 0
            progress.callback()(copied, copied)
            return copied, None
        async with source.stream(
            src.key,
            chunk_size=self.options.chunk_size,
            max_concurrency=concurrency,
            verify=self.options.verify,
        ) as body:
            info: ObjectInfo | None = body.info
            known = info.size if info is not None else job.size
            track = progress.callback()

            def report(done: int, total: int | None) -> None:
                track(done, total if total is not None else known)

            result = await target.put(
                dst.key,
                body,
                content_type=self.options.content_type
                or (info.content_type if info is not None else None),
                metadata=self.options.metadata
                if self.options.metadata is not None
                else (dict(info.metadata) if info is not None else None),
                chunk_size=self.options.chunk_size,
                max_concurrency=concurrency,
                progress=report,
            )
        return result.size, result.sha256

    async def _from_stdin(
        self, dst: Remote, progress: FileProgress, concurrency: int | None
    ) -> Any:
        store = await self.stores.open(dst.ref, write=True)
        result = await store.put(
            dst.key,
            stdin_chunks(),
            content_type=self.options.content_type,
            metadata=self.options.metadata,
            chunk_size=self.options.chunk_size,
            max_concurrency=concurrency,
            progress=progress.callback(),
        )
        return result.size, result.sha256

    async def _to_stdout(self, src: Remote, progress: FileProgress, concurrency: int | None) -> Any:
        store = await self.stores.open(src.ref, write=False)
        out = _stdout_binary()
        await self.ui.flush()
        await anyio.to_thread.run_sync(sys.stdout.flush)
        track = progress.callback()
        done = 0
        async with store.stream(
            src.key,
            chunk_size=self.options.chunk_size,
            max_concurrency=concurrency,
            verify=self.options.verify,
        ) as body:
            async for chunk in body:
                await anyio.to_thread.run_sync(out.write, chunk)
                done += len(chunk)
                track(done, None)
            await anyio.to_thread.run_sync(out.flush)
            sha = body.sha256
        return done, sha

    async def transfer(
        self, job: Job, progress: FileProgress, concurrency: int | None = None
    ) -> tuple[int, str | None, Any]:
        """Run one job; return ``(bytes, sha256 or None, TransferInfo or None)``.

        ``concurrency``: parts in flight (default: ``--concurrency``, else the store's).
        """
        src, dst = job.src, job.dst
        if concurrency is None:
            concurrency = self.options.max_concurrency
        if isinstance(src, Local) and isinstance(dst, Remote):
            info: TransferInfo = await self._upload(job, src, dst, progress, concurrency)
            return info.bytes_transferred, info.sha256, info
        if isinstance(src, Remote) and isinstance(dst, Local):
            info = await self._download(src, dst, progress, concurrency)
            return info.bytes_transferred, info.sha256, info
        if isinstance(src, Remote) and isinstance(dst, Remote):
            size, sha = await self._copy(job, src, dst, progress, concurrency)
            return size, sha, None
        if isinstance(src, Stdio) and isinstance(dst, Remote):
            size, sha = await self._from_stdin(dst, progress, concurrency)
            return size, sha, None
        if isinstance(src, Remote) and isinstance(dst, Stdio):
            size, sha = await self._to_stdout(src, progress, concurrency)
            return size, sha, None
        raise AssertionError(f"no transfer from {src!r} to {dst!r}")  # pragma: no cover

    async def plan(self, job: Job) -> tuple[int, int]:
        """``(bytes of part buffers, parts in flight)`` of ``job`` within the memory budget."""
        options, stores = self.options, self.stores
        src, dst = job.src, job.dst
        streams = 1
        if isinstance(src, Remote) and isinstance(dst, Remote):
            if (
                stores.same_store(src.ref, dst.ref)
                and options.content_type is None
                and options.metadata is None
            ):
                return 0, 1  # a server-side copy holds no parts here
            streams = 2
        remote = dst if isinstance(dst, Remote) else src
        assert isinstance(remote, Remote)
        store = await stores.open(remote.ref, write=remote is dst)
        part = options.chunk_size or store.chunk_size
        concurrency = options.max_concurrency or store.max_concurrency
        if isinstance(src, Local):
            chunk = self._upload_chunk(job, store)
            size = job.size
            if options.chunk_size is None and size is not None and chunk == size > part:
                # One request for the whole file (`_one_request_chunk`): its one buffer.
                return size, concurrency
            part = chunk or part
        part = _part_size(store, part, job.size)
        return _parts_plan(job.size, part, concurrency, options.memory, streams=streams)

    # -- reporting -----------------------------------------------------------------------------

    def _verb(self, job: Job) -> str:
        if job.move:
            return "moved"
        return {"upload": "uploaded", "download": "downloaded", "copy": "copied"}[job.action]

    def record(
        self,
        job: Job,
        status: str,
        *,
        size: int | None = None,
        sha256: str | None = None,
        seconds: float | None = None,
        error: str | None = None,
        info: TransferInfo | None = None,
    ) -> dict[str, Any]:
        """The ``--json`` record of a transfer (schema: docs/cli.md)."""
        return {
            "type": "transfer",
            "action": job.action,
            "src": job.src.show(),
            "dst": job.dst.show(),
            "size": size if size is not None else job.size,
            "sha256": sha256,
            "seconds": None if seconds is None else round(seconds, 6),
            "parts": info.part_count if info is not None else None,
            "concurrency": info.concurrency if info is not None else None,
            "status": status,
            "reason": job.reason,
            "move": job.move,
            "error": error,
        }

    async def _report_done(
        self, job: Job, size: int, sha: str | None, info: Any, seconds: float
    ) -> None:
        if self.ui.quiet or isinstance(job.dst, Stdio):
            return
        verb = self._verb(job)
        if isinstance(info, TransferInfo):
            text = transfer_line(verb, job.src.show(), job.dst.show(), info)
        else:
            rate = size / max(seconds, 1e-9) / 1e6
            text = (
                f"{verb} {job.src.show()} -> {job.dst.show()}: {size} bytes "
                f"({human_bytes(size)}) in {seconds:.3f} s, {rate:.1f} MB/s"
                + (f", {sha}" if sha else "")
            )
        transfer = info if isinstance(info, TransferInfo) else None
        record = self.record(job, "ok", size=size, sha256=sha, seconds=seconds, info=transfer)
        await self.ui.result(text, record)

    async def report_planned(self, job: Job) -> None:
        """``--dry-run``: say what would be transferred."""
        if self.ui.quiet:
            return
        verb = {"upload": "upload", "download": "download", "copy": "copy"}[job.action]
        if job.move:
            verb = "move"
        why = f" ({job.reason})" if job.reason else ""
        await self.ui.result(
            f"(dry run) {verb} {job.src.show()} -> {job.dst.show()}{why}",
            self.record(job, "dry-run"),
        )

    # -- many transfers ------------------------------------------------------------------------

    async def run(
        self, jobs: Iterable[Job], *, view: TransferView | None = None, label: str = "cp"
    ) -> Outcome:
        """Run ``jobs``, at most ``options.jobs`` at once, largest first.

        Every job that fails is reported (one line on stderr, and a record
        with ``--json``) and counted; the others go on. Cancellation (Ctrl-C)
        stops them all; each cleans up after itself.
        """
        todo = sorted(jobs, key=lambda job: -(job.size or 0))
        outcome = Outcome()
        started = time.perf_counter()
        if self.options.dry_run:
            for job in sorted(todo, key=lambda job: job.src.show()):
                await self.report_planned(job)
            return outcome
        if view is None:
            async with TransferView(self.ui, label) as own:
                await self._run_all(todo, own, outcome)
        else:
            await self._run_all(todo, view, outcome)
        outcome.seconds = time.perf_counter() - started
        return outcome

    async def _run_all(self, todo: list[Job], view: TransferView, outcome: Outcome) -> None:
        self.many = len(todo) > 1
        view.plan(len(todo), sum(job.size or 0 for job in todo))
        slots = anyio.Semaphore(self.options.jobs)

        async def run_one(job: Job) -> None:
            try:
                await self._run_one(job, view, outcome)
            finally:
                slots.release()

        async with task_group() as tg:
            for job in todo:
                await slots.acquire()
                tg.start_soon(run_one, job)

    async def _run_one(self, job: Job, view: TransferView, outcome: Outcome) -> None:
        progress = view.start(job.label or job.src.show(), job.size)
        started = time.perf_counter()
        try:
            held, concurrency = await self.plan(job)
            async with self.budget.reserve(held):
                size, sha, info = await self.transfer(job, progress, concurrency)
            if job.move:
                await _delete_source(job, self.stores)
        except BrokenPipeError:
            if isinstance(job.dst, Stdio):
                raise  # the reader of stdout went away: the command ends (status 141)
            view.finish(progress, ok=False)
            outcome.failed += 1
            await self.ui.error(f"{job.src.show()}: broken pipe")
            return
        except (StoreError, OSError) as exc:
            view.finish(progress, ok=False)
            outcome.failed += 1
            message = describe_error(exc)
            await self.ui.error(message)
            if self.ui.json and not isinstance(job.dst, Stdio):
                await self.ui.record(self.record(job, "failed", error=message))
            return
        view.finish(progress, ok=True)
        seconds = time.perf_counter() - started
        outcome.done += 1
        outcome.bytes += size
        outcome.succeeded.append(job)
        await self._report_done(job, size, sha, info, seconds)
