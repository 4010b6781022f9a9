"""The console script's entry point: the command line, with Ctrl-C at start-up handled.

Importing the command line (Typer, Rich) takes a noticeable moment. Ctrl-C
during it would otherwise end with a traceback, before any handler of the
command line exists.
"""

import sys


def main() -> None:
    """Import and run the charlstm command line; Ctrl-C while importing exits with 130."""
    try:
        from .cli import main as run_command_line
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    run_command_line()
