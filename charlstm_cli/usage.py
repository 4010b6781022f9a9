"""Usage errors (a bad option value, an unknown option) as 'Error:' and 'Hint:' lines.

Typer prints a usage error as the usage line, a help pointer and a framed box.
charlstm reports every other error as one 'Error:' line and one 'Hint:' line,
so the command group below does the same for usage errors. Click's exception
classes are found through typer.BadParameter, because Typer releases differ in
where they import Click from.

parse_path is the parser of every path option and argument, so an empty path
is a usage error too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from .output import print_error

_CLICK_ERROR = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"
)
_USAGE_ERROR = next(
    cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError"
)


class BadParameterWithHint(typer.BadParameter):
    """A bad option or argument value whose hint replaces the pointer to --help."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


def parse_path(value: str | Path) -> Path:
    """Convert a path option or argument to a Path, rejecting an empty value.

    Path("") is Path("."), so an empty value, such as an unset shell variable
    in quotes, would otherwise name the current folder without any message.
    """
    if isinstance(value, Path):
        return value  # a Path default also passes through the parser
    if not value:
        raise BadParameterWithHint(
            "the path is empty",
            hint="pass a path ('.' for the current folder), or leave out the "
            "option or argument to use its default",
        )
    return Path(value)


class PlainErrorsGroup(TyperGroup):
    """Typer's command group, reporting usage errors as Error and Hint lines."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(
                argv, prog_name, complete_var, standalone_mode=False, **extra
            )
        except _CLICK_ERROR as exc:
            result = report_click_error(exc, argv, set(self.commands))
        except typer.Abort:
            print_error("aborted")
            result = 1
        # A command that finishes returns None, and typer.Exit returns its code.
        code = result if isinstance(result, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def report_click_error(exc: Exception, argv: list[str], commands: set[str]) -> int:
    """Print a Click error as Error and Hint lines, and return its exit code.

    `commands` are the group's command names, used to find the command that
    a parse error belongs to when the exception has no context.
    """
    if type(exc).__name__ == "NoArgsIsHelpError":
        # the message is the help text, already printed when Rich formats help
        text = exc.format_message()
        if text:
            sys.stderr.write(text + "\n")
        return exc.exit_code
    # Typer words some choice errors as "Value error, 'x' is not one of ..."
    message = exc.format_message().rstrip(".").replace(": Value error, ", ": ")
    if not isinstance(exc, _USAGE_ERROR):
        print_error(message)
        return exc.exit_code
    typed = _typed_value(getattr(exc, "param", None), argv)
    if typed is not None and typed not in message:
        message = f"{message}, not {typed}"
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "charlstm"
    is_group = ctx is None or hasattr(getattr(ctx, "command", None), "commands")
    named = next((token for token in argv if token in commands), None)
    listing = "commands" if is_group else _options_listing(ctx.command)
    if is_group and named is not None:
        # an error while parsing a command's options can come without its context
        command, listing = f"{command.split()[0]} {named}", "options and their ranges"
    hint = getattr(exc, "hint", None) or f"run '{command} --help' to see the {listing}"
    print_error(message, hint)
    return exc.exit_code


def _options_listing(command: Any) -> str:
    """Return what a command's --help lists: its options, and their ranges if any have one.

    Typer keeps an integer option's range as `min` and `max` on the option. A
    float option with a range has its own parser and the metavar <float>.
    """
    params = getattr(command, "params", [])
    ranged = any(
        getattr(param, "min", None) is not None
        or getattr(param, "max", None) is not None
        or getattr(param, "metavar", None) == "<float>"
        for param in params
    )
    return "options and their ranges" if ranged else "options"


def _typed_value(param: Any, argv: list[str]) -> str | None:
    """Return the text given on the command line for option `param`, if found.

    A repeated option takes its last value, so the search runs from the end.
    """
    names = getattr(param, "opts", None) or []
    if getattr(param, "param_type_name", "") != "option":
        return None
    for i in range(len(argv) - 1, -1, -1):
        token = argv[i]
        if token in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if name.startswith("--") and token.startswith(name + "="):
                return token[len(name) + 1 :]
    return None
