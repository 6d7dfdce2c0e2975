"""Imported first by the package: without the 's3' extra, an ImportError that names it."""

from __future__ import annotations

from .._extras import require

require("s3", "asyncstore.backends.s3")
