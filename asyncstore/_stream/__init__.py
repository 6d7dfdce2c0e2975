"""The streaming-chunk core, shared by every backend.

- ``_source``: any source of bytes cut into parts (the chunker);
- ``_hashing``: incremental sha256 and per-part checksums, off the event loop;
- ``_upload``: parts through a sliding window with backpressure, aborted on failure;
- ``_download``: ranged reads pinned to one ETag, reassembled in order in a bounded window;
- ``_files``: atomic file writes (temp, pwrite, fsync, rename);
- ``_retry``: exponential backoff with jitter for TransportError;
- ``_tasks``: a task group that raises the first real error, not an ExceptionGroup.
"""
