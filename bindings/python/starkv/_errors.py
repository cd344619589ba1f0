"""Exceptions of the starkv binding: one class per ``starkv_status``.

Every failed C call raises ``make_error(status, starkv_last_error())``; catch
``StarkvError`` for all of them or a subclass for one status. Subclasses also
derive from the closest built-in exception where one fits (``ValueError``,
``OSError``, ``MemoryError``), so generic handlers keep working.
"""
from __future__ import annotations

import enum
from typing import Dict, Type


class Status(enum.IntEnum):
    """Mirror of ``starkv_status`` (values are the C ABI's)."""

    OK = 0
    INVALID_ARGUMENT = 1
    IO = 2
    CORRUPT = 3
    UNSUPPORTED = 4
    OUT_OF_MEMORY = 5
    CONTEXT_FULL = 6
    CANCELLED = 7
    BUFFER_TOO_SMALL = 8
    KV_POOL_FULL = 9
    INTERNAL = 10
    NO_DEVICE = 11


class StarkvError(Exception):
    """A starkv call failed. ``status`` is the C status, ``message`` the
    library's one-line explanation (``starkv_last_error()``)."""

    status: Status
    message: str

    def __init__(self, status: int, message: str = "") -> None:
        try:
            st = Status(status)
        except ValueError:
            st = Status.INTERNAL
        self.status = st
        self.message = message
        Exception.__init__(self, f"{message} [STARKV_ERR_{st.name}]" if message else f"STARKV_ERR_{st.name}")

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self):  # picklable across processes
        return (type(self), (int(self.status), self.message))


class InvalidArgumentError(StarkvError, ValueError):
    """``STARKV_ERR_INVALID_ARGUMENT``: a null handle, an out-of-range value."""


class StarkvIOError(StarkvError, OSError):
    """``STARKV_ERR_IO``: a missing file or an unreadable path."""

    def __init__(self, status: int, message: str = "") -> None:
        StarkvError.__init__(self, status, message)


class CorruptError(StarkvError):
    """``STARKV_ERR_CORRUPT``: wrong magic, truncated or inconsistent file."""


class UnsupportedError(StarkvError):
    """``STARKV_ERR_UNSUPPORTED``: a valid file of a model or feature starkv does not run."""


class OutOfMemoryError(StarkvError, MemoryError):
    """``STARKV_ERR_OUT_OF_MEMORY``."""


class ContextFullError(StarkvError):
    """``STARKV_ERR_CONTEXT_FULL``: the tokens do not fit in the context."""


class CancelledError(StarkvError):
    """``STARKV_ERR_CANCELLED``: a callback asked to stop."""


class BufferTooSmallError(StarkvError):
    """``STARKV_ERR_BUFFER_TOO_SMALL`` (the binding sizes buffers itself; not expected)."""


class KVPoolFullError(StarkvError):
    """``STARKV_ERR_KV_POOL_FULL``: no free KV pages left."""


class InternalError(StarkvError):
    """``STARKV_ERR_INTERNAL``: a bug in starkv."""


_BY_STATUS: Dict[Status, Type[StarkvError]] = {
    Status.INVALID_ARGUMENT: InvalidArgumentError,
    Status.IO: StarkvIOError,
    Status.CORRUPT: CorruptError,
    Status.UNSUPPORTED: UnsupportedError,
    Status.OUT_OF_MEMORY: OutOfMemoryError,
    Status.CONTEXT_FULL: ContextFullError,
    Status.CANCELLED: CancelledError,
    Status.BUFFER_TOO_SMALL: BufferTooSmallError,
    Status.KV_POOL_FULL: KVPoolFullError,
    Status.INTERNAL: InternalError,
}


def make_error(status: int, message: str) -> StarkvError:
    """The exception for a failed status (called by the SWIG layer)."""
    try:
        cls = _BY_STATUS.get(Status(status), StarkvError)
    except ValueError:
        cls = StarkvError
    return cls(status, message)
