"""Errors that the command line reports as one plain line instead of a traceback."""

from __future__ import annotations

import errno
from pathlib import Path


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
        return (
            "free disk space or raise the file size limit (ulimit -f), or pass "
            "--run-dir to save runs on another disk"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"make {folder} writable, or pass --run-dir to save runs elsewhere"
    if exc.errno == errno.ENOENT:
        return f"check that the folder {folder} exists"
    return f"check the folder {folder} and the disk it is on"
