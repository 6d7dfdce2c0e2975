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

import dataclasses
import mimetypes
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, BinaryIO, Literal

import anyio
import anyio.to_thread

from .. import ObjectInfo, StoreError, TransferInfo
from .._stream._tasks import task_group
from ._locations import Local, Remote, Stdio, Stores
from ._progress import FileProgress, TransferView
from ._ui import UI, human_bytes, transfer_line

__all__ = ["Engine", "Job", "Outcome", "TransferOptions", "describe_error", "stdin_chunks"]

#: Bytes read from stdin per worker-thread call (at most).
STDIN_BLOCK = 1024 * 1024

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
    """

    jobs: int = 16
    chunk_size: int | None = None
    max_concurrency: int | None = None
    content_type: str | None = None
    metadata: Mapping[str, str] | None = None
    verify: bool = True
    dry_run: bool = False


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

    # -- one transfer --------------------------------------------------------------------------

    async def _upload(self, job: Job, src: Local, dst: Remote, progress: FileProgress) -> Any:
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
            chunk_size=_small_file_chunk(job.size, store.chunk_size, self.options.chunk_size),
            max_concurrency=self.options.max_concurrency,
            progress=progress.callback(),
        )

    async def _download(self, src: Remote, dst: Local, progress: FileProgress) -> Any:
        store = await self.stores.open(src.ref, write=False)
        parent = os.path.dirname(dst.path)
        if parent not in self._folders:  # one worker-thread hop per folder, not per file
            await anyio.to_thread.run_sync(_makedirs_for, dst.path)
            self._folders.add(parent)
        return await store.download_file(
            src.key,
            dst.path,
            chunk_size=self.options.chunk_size,
            max_concurrency=self.options.max_concurrency,
            progress=progress.callback(),
            verify=self.options.verify,
        )

    async def _copy(self, job: Job, src: Remote, dst: Remote, progress: FileProgress) -> Any:
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
            max_concurrency=self.options.max_concurrency,
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
                max_concurrency=self.options.max_concurrency,
                progress=report,
            )
        return result.size, result.sha256

    async def _from_stdin(self, dst: Remote, progress: FileProgress) -> Any:
        store = await self.stores.open(dst.ref, write=True)
        result = await store.put(
            dst.key,
            stdin_chunks(),
            content_type=self.options.content_type,
            metadata=self.options.metadata,
            chunk_size=self.options.chunk_size,
            max_concurrency=self.options.max_concurrency,
            progress=progress.callback(),
        )
        return result.size, result.sha256

    async def _to_stdout(self, src: Remote, progress: FileProgress) -> Any:
        store = await self.stores.open(src.ref, write=False)
        out = _stdout_binary()
        await self.ui.flush()
        await anyio.to_thread.run_sync(sys.stdout.flush)
        track = progress.callback()
        done = 0
        async with store.stream(
            src.key,
            chunk_size=self.options.chunk_size,
            max_concurrency=self.options.max_concurrency,
            verify=self.options.verify,
        ) as body:
            async for chunk in body:
                await anyio.to_thread.run_sync(out.write, chunk)
                done += len(chunk)
                track(done, None)
            await anyio.to_thread.run_sync(out.flush)
            sha = body.sha256
        return done, sha

    async def transfer(self, job: Job, progress: FileProgress) -> tuple[int, str | None, Any]:
        """Run one job; return ``(bytes, sha256 or None, TransferInfo or None)``."""
        src, dst = job.src, job.dst
        if isinstance(src, Local) and isinstance(dst, Remote):
            info: TransferInfo = await self._upload(job, src, dst, progress)
            return info.bytes_transferred, info.sha256, info
        if isinstance(src, Remote) and isinstance(dst, Local):
            info = await self._download(src, dst, progress)
            return info.bytes_transferred, info.sha256, info
        if isinstance(src, Remote) and isinstance(dst, Remote):
            size, sha = await self._copy(job, src, dst, progress)
            return size, sha, None
        if isinstance(src, Stdio) and isinstance(dst, Remote):
            size, sha = await self._from_stdin(dst, progress)
            return size, sha, None
        if isinstance(src, Remote) and isinstance(dst, Stdio):
            size, sha = await self._to_stdout(src, progress)
            return size, sha, None
        raise AssertionError(f"no transfer from {src!r} to {dst!r}")  # pragma: no cover

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
            size, sha, info = await self.transfer(job, progress)
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
