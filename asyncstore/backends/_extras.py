"""The optional backends' vendor modules, and the error that names the missing extra.

``import asyncstore.backends.s3`` without the ``s3`` extra would fail on
whichever vendor module it imports first ("No module named 'aiohttp'"), which
tells a user neither what is missing nor how to get it. Each optional backend
package calls `require` before its own imports, so the error names the extra
and the ``pip install`` line, like the ``open_store`` one
(docs/errors.md), with the missing module kept as the cause.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRA_MODULES", "missing_extra_message", "require"]

#: The modules each extra provides that its backend imports unconditionally.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "s3": ("botocore", "aiobotocore", "aiohttp"),
    "gcs": ("gcloud.aio.storage", "google_crc32c", "httpx", "aiohttp"),
    "azure": ("azure.core", "azure.storage.blob", "httpx", "aiohttp", "awscrt"),
}


def missing_extra_message(subject: str, extra: str, *, verb: str = "need") -> str:
    """``<subject> <verb> the '<extra>' extra, which is not installed: pip install ...``."""
    return (
        f"{subject} {verb} the {extra!r} extra, which is not installed: "
        f"pip install 'asyncstore[{extra}]'"
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or a stub in sys.modules
        return False


def require(extra: str, package: str) -> None:
    """Raise ModuleNotFoundError naming ``extra`` if one of its modules is missing.

    Args:
        extra: The extra's name (a key of `EXTRA_MODULES`).
        package: The backend package being imported, for the message.
    """
    for module in EXTRA_MODULES[extra]:
        if not _installed(module):
            raise ModuleNotFoundError(
                missing_extra_message(package, extra, verb="needs")
                + f" (no module named {module!r})",
                name=module,
            )
