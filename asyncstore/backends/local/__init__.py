"""The local-filesystem backend: objects are plain files under a root directory.

(Moved from ``asyncstore/backends/local.py``; the next commit splits it into modules.)
"""

from ._backend import LocalBackend, from_url

__all__ = ["LocalBackend", "from_url"]
