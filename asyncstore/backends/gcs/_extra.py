"""Imported first by the package: without the 'gcs' extra, an ImportError that names it."""

from __future__ import annotations

from .._extras import require

require("gcs", "asyncstore.backends.gcs")
