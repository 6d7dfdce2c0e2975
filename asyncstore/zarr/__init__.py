"""asyncstore as a zarr v3 store: `ZarrStore`.

    import zarr
    from asyncstore.zarr import ZarrStore

    store = ZarrStore("s3://bucket/arrays", endpoint="http://127.0.0.1:9000")
    z = zarr.create_array(store, shape=(10_000, 10_000), chunks=(1000, 1000), dtype="f4")

Every whole-chunk read is verified against the sha256 recorded when the chunk
was written; ``set_if_not_exists`` is an atomic create (not check-then-set);
partial reads run concurrently. Needs the ``zarr`` extra (zarr >= 3, Python
>= 3.11): ``pip install 'asyncstore[zarr]'``.
"""

from __future__ import annotations

try:
    import zarr as _zarr  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "asyncstore.zarr needs zarr >= 3, which is not installed: pip install 'asyncstore[zarr]'"
    ) from exc

from ._store import ZarrStore

__all__ = ["ZarrStore"]
