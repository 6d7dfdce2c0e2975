"""Imported first by the package: without the 'azure' extra, an ImportError that names it."""

from __future__ import annotations

from .._extras import require

require("azure", "asyncstore.backends.azure")
