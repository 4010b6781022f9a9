"""Errors that the command line reports as one plain line instead of a traceback."""

from __future__ import annotations


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
