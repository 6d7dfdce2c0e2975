"""The local-filesystem backend: objects are plain files under a root directory.

Layout under the root (``file:///srv/data`` or ``LocalBackend("/srv/data")``):

    <root>/<key>                                  the object's bytes, as a plain file
    <root>/<dir>/.asyncstore-<32 hex>.part        a write (or multipart upload) in progress
    <root>/.asyncstore/meta/<dir>.d/<name>.json   the object's sidecar (metadata)

* **Data files** live at ``<root>/<key>``, so a user can look at them; the
  ``/`` of a key is a directory separator. A key may therefore not be both an
  object and a "directory" (``a`` and ``a/b``): such a write raises
  `InvalidKeyError`. Path segments starting with
  ``.asyncstore`` are reserved, and no key may resolve outside the root, not
  even through a symbolic link. The ``.asyncstore`` tree is the backend's own:
  a sidecar reached through a symbolic link planted there is neither written
  nor deleted (`InvalidKeyError`) nor believed.
* **Temp files** are created *beside* their target (same directory, so the
  final rename is atomic) and are named ``.asyncstore-<uuid hex>.part``. A
  multipart upload is such a temp file, written with ``pwrite`` at each part's
  offset; its name is the upload id, so any process on the same root can
  resume it. Temp files never appear in listings.
* **Sidecars** hold what a file cannot: the content type, the metadata
  (asyncstore's reserved ``asyncstore-*`` entries included), the size, the
  commit time, a version counter, and the data file's inode number, size and
  mtime. They live in a mirror tree under ``<root>/.asyncstore/meta``, whose
  directories carry a ``.d`` suffix and whose files a ``.json`` suffix (so the
  sidecar of key ``x`` can never collide with the directory of key
  ``x.json/y``). A sidecar is written atomically (temp file, fsync, rename).

Commit order of a write: the bytes go to a temp file (write, fsync); then,
under a per-key lock of the backend instance, the sidecar is written and the
temp file is renamed over the target (``os.replace``), and the directory is
fsynced. A create-if-absent write commits with ``os.link`` instead (atomic
and race-free even between processes), and writes its sidecar only once the
link has won, so a losing writer never touches the winner's sidecar.

The inode check: a sidecar is only believed when the inode it records is that
of the data file (for a read, of the file actually opened). When it differs
(another writer is between its two renames, a crash happened there, or another
program replaced the file with a new one) the backend retries briefly and then
reports the object without metadata rather than with someone else's. A file
changed in place (same inode, new bytes, mtime or size) keeps its sidecar and
its recorded sha256, so a whole read of it raises DigestMismatchError.

The ETag is ``<inode>-<mtime ns>-<size>`` in hex, from the data file's stat:
a replaced file is a new inode, so the ETag changes with every write. Every
file-system call runs in a worker thread (``anyio.to_thread.run_sync``); the
event loop never blocks on the disk.
"""

from __future__ import annotations

import os
from urllib.parse import SplitResult, unquote

from ..._errors import ConfigurationError, redact_url
from .._url import boolean, merge_options
from ._backend import LocalBackend

__all__ = ["LocalBackend", "from_url"]


def from_url(url: SplitResult, **options: object) -> LocalBackend:
    """Open ``file:///absolute/path`` or ``file://~/path`` (below the user's home).

    ``localhost`` is accepted as the host. The only option is ``create``
    (``?create=false`` in the URL, or ``create=False`` as a keyword; default
    true): whether writes create the directory when it does not exist (see
    `LocalBackend`; reads never create it).

    Raises:
        ConfigurationError: The URL has a fragment, another host, or a path that
            is empty, relative or the file-system root; or an option is unknown,
            given twice or not true/false.
    """
    text = redact_url(url.geturl())
    given = merge_options(text, url.query, options, ("create",), "local")
    create = boolean("create", given.get("create", True), f"the local store {text!r}")
    if url.fragment:
        raise ConfigurationError(f"local store URL {text!r} takes no fragment", key=text)
    path = unquote(url.path)
    if url.netloc == "~":
        if not path.startswith("/"):
            raise ConfigurationError(
                f"local store URL {text!r} needs a path below the home directory: file://~/dir",
                key=text,
            )
        path = os.path.expanduser("~") + path
    elif url.netloc not in ("", "localhost"):
        raise ConfigurationError(
            f"local store URL {text!r} names the host {url.netloc.rpartition('@')[2]!r}; "
            "use file:///abs/path or file://~/path",
            key=text,
        )
    if not path or not os.path.isabs(path):
        raise ConfigurationError(
            f"local store URL {text!r} needs an absolute directory: file:///abs/path",
            key=text,
        )
    path = os.path.normpath(path)
    if os.path.dirname(path) == path:
        raise ConfigurationError(
            f"local store URL {text!r} names the file-system root; give a directory below it",
            key=text,
        )
    return LocalBackend(path, create=create)
