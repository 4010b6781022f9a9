"""Errors that the command line reports as one plain line instead of a traceback."""

from __future__ import annotations

import contextvars
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The part of a failed write's hint that names another place to save. train
# takes another --run-dir, but resume writes into its checkpoint's own folder,
# so it sets another text with save_elsewhere_hint.
_SAVE_ELSEWHERE = contextvars.ContextVar(
    "save_elsewhere", default="pass --run-dir to save runs elsewhere"
)


@contextmanager
def save_elsewhere_hint(text: str) -> Iterator[None]:
    """Use `text` as the 'save elsewhere' part of write hints inside the block."""
    token = _SAVE_ELSEWHERE.set(text)
    try:
        yield
    finally:
        _SAVE_ELSEWHERE.reset(token)


def save_elsewhere() -> str:
    """Return the 'save elsewhere' part of write hints, such as 'pass --run-dir ...'."""
    return _SAVE_ELSEWHERE.get()


class UserError(Exception):
    """A problem with the user's input or files, with an optional hint.

    ``main()`` prints ``Error: <message>`` and ``Hint: <hint>`` on stderr and
    exits with ``exit_code`` (1 unless set).
    """

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


def file_write_error(target: Path, exc: OSError, action: str = "write") -> UserError:
    """Return the UserError for a failed `action` (write, delete) on file `target`."""
    return UserError(
        f"cannot {action} {target}: {exc.strerror or exc}",
        hint=file_write_hint(target.parent, exc),
    )


def file_write_hint(folder: Path, exc: OSError) -> str:
    """Return the hint for a failed write of a file in `folder`, chosen by errno."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        limit = "free disk space or raise the file size limit (ulimit -f)"
        return f"{limit}, or {save_elsewhere()}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"make {folder} writable, or {save_elsewhere()}"
    if exc.errno == errno.ENOENT:
        return f"check that the folder {folder} exists"
    return f"check the folder {folder} and the disk it is on"


# Hints for OSErrors that the path itself causes, whatever the command does with it.
_PATH_ERROR_HINTS = {
    errno.ENAMETOOLONG: "shorten the path, because most file systems allow at most "
    "255 bytes per file or folder name",
    errno.ELOOP: "fix the symbolic links in the path, which point to each other in "
    "a loop or form a chain too long to follow",
    errno.ENOTDIR: "check the path, because a part of it that must be a folder is "
    "a file",
    errno.EACCES: "check the permissions of the path and of the folders above it",
    errno.EPERM: "check the permissions of the path and of the folders above it",
}


def path_error(exc: BaseException) -> UserError | None:
    """Return the UserError for an OSError that its path causes, else None.

    These errors (name too long, symbolic link loop, a file used as a folder,
    permission denied) can come from any call that takes a path, so the
    command line maps them here instead of at each call.
    """
    if type(exc) is RuntimeError and isinstance(exc.__context__, OSError):
        # Path.resolve() in Python 3.12 and older raises RuntimeError("Symlink
        # loop from ...") while it handles the OSError ELOOP from the file system.
        exc = exc.__context__
    if not isinstance(exc, OSError) or exc.filename is None:
        return None
    hint = path_error_hint(exc)
    if hint is None:
        return None
    path = os.fsdecode(exc.filename)
    return UserError(f"cannot access {path}: {exc.strerror or exc}", hint=hint)


def path_error_hint(exc: OSError) -> str | None:
    """Return the hint for an OSError that its path causes, else None."""
    return _PATH_ERROR_HINTS.get(exc.errno)
