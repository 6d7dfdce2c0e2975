"""OSErrors, translated into asyncstore's error tree with the key they concern."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from ..._errors import InvalidKeyError, NotFoundError, PermissionDeniedError, StoreError

__all__ = ["os_errors"]


@contextlib.contextmanager
def os_errors(
    key: str,
    action: str,
    *,
    missing: type[StoreError] = NotFoundError,
    missing_message: str | None = None,
    not_a_directory: type[StoreError] = InvalidKeyError,
) -> Iterator[None]:
    """Translate OSErrors raised while working on ``key`` into the asyncstore tree."""
    try:
        yield
    except StoreError:
        raise
    except FileNotFoundError as exc:
        raise missing(missing_message or f"no object at key {key!r}", key=key) from exc
    except PermissionError as exc:
        raise PermissionDeniedError(
            f"permission denied to {action} key {key!r}: {exc.strerror}", key=key
        ) from exc
    except (IsADirectoryError, NotADirectoryError) as exc:
        if not_a_directory is InvalidKeyError:
            message = f"key {key!r} collides with a directory or an object ({exc.strerror})"
        else:
            message = missing_message or f"no object at key {key!r}"
        raise not_a_directory(message, key=key) from exc
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise InvalidKeyError(
                f"key {key!r} is too long for the local file system", key=key
            ) from exc
        raise StoreError(f"cannot {action} key {key!r}: {exc}", key=key) from exc
