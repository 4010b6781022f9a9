"""Terminal output: one Rich console on stderr, logging, progress and summaries.

stdout carries only a command's product (generated text, or the --json
summary), so it can be piped. Everything for the person watching goes to
stderr through `console`.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from .state import RunState
    from .train import EpochEvent, Outcome, StepEvent



class _StderrConsole(Console):
    """A Rich console whose closed pipe reaches the caller as BrokenPipeError.

    Rich's own handling points stdout at /dev/null and exits with status 1,
    which would skip the save that training makes when its output goes away.
    Later output to the closed pipe is dropped.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


console = _StderrConsole(stderr=True, highlight=False)
logger = logging.getLogger("charlstm")

# Weight of the newest step in the progress bar's smoothed loss.
_LOSS_SMOOTHING = 0.1


def setup_logging(verbosity: int) -> None:
    """Send the charlstm logger to the shared console: -v info, -vv debug."""
    level = logging.WARNING
    if verbosity == 1:
        level = logging.INFO
    elif verbosity >= 2:
        level = logging.DEBUG
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        handler = RichHandler(
            console=console, show_time=False, show_path=False, markup=False
        )
        logger.addHandler(handler)
        logger.propagate = False
    if verbosity > 0 or logger.level == logging.NOTSET:
        logger.setLevel(level)


def print_line(text: str, style: str | None = None) -> None:
    """Print plain text (no markup) on stderr without wrapping it."""
    console.print(Text(text, style=style or ""), soft_wrap=True)


def print_error(message: str, hint: str | None = None) -> None:
    line = Text("Error: ", style="bold red")
    line.append(message)
    console.print(line, soft_wrap=True)
    if hint:
        hint_line = Text("Hint: ", style="yellow")
        hint_line.append(hint)
        console.print(hint_line, soft_wrap=True)


def print_warning(message: str) -> None:
    line = Text("Warning: ", style="yellow")
    line.append(message)
    console.print(line, soft_wrap=True)


class StdoutError(OSError):
    """A failed write to standard output, other than a closed pipe (EPIPE)."""


_stdout_pipe_closed = False


def stdout_pipe_closed() -> bool:
    """Return whether a write to standard output has failed with a closed pipe."""
    return _stdout_pipe_closed


class _StdoutFile(io.FileIO):
    """The raw standard output file, raising StdoutError when a write fails."""

    def write(self, data) -> int | None:
        global _stdout_pipe_closed
        try:
            return super().write(data)
        except BrokenPipeError:
            _stdout_pipe_closed = True
            raise
        except OSError as exc:
            raise StdoutError(exc.errno, exc.strerror) from exc


def guard_stdout() -> None:
    """Replace sys.stdout with a stream whose failed writes raise StdoutError.

    Every writer (typer.echo, Rich, print) then fails with that one type, so
    `main()` can tell a full disk behind stdout from a failure on any other
    file. Leaves sys.stdout alone when it has no file descriptor.
    """
    stream = sys.stdout
    try:
        descriptor = stream.fileno()
        stream.flush()
    except (AttributeError, OSError, ValueError):
        return
    raw = _StdoutFile(descriptor, "w", closefd=False)
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=stream.line_buffering,
    )


def write_stdout(text: str) -> None:
    """Write text to stdout and flush, so a reading pipe gets it at once."""
    sys.stdout.write(text)
    sys.stdout.flush()


def print_json(data: Any) -> None:
    write_stdout(json.dumps(data, indent=2, default=str) + "\n")


def _format_rate(chars_per_sec: float) -> str:
    if chars_per_sec >= 10_000:
        return f"{chars_per_sec / 1000:.0f}k"
    return f"{chars_per_sec:.0f}"


def _format_optional(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class TrainDisplay:
    """Renders training events: a live bar on a terminal, plain lines elsewhere."""

    def __init__(
        self, total_steps: int, epochs: int, start_step: int, chars_per_step: int
    ) -> None:
        self.total_steps = total_steps
        self.epochs = epochs
        self.chars_per_step = chars_per_step
        self.smoothed_loss: float | None = None
        self.last_val_loss: float | None = None
        self.live = console.is_terminal
        self.progress: Progress | None = None
        self.start_step = start_step

    def __enter__(self) -> TrainDisplay:
        if self.live:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("val {task.fields[val]}"),
                TextColumn("{task.fields[rate]} chars/s"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train",
                total=self.total_steps,
                completed=self.start_step,
                epoch="-",
                loss="-",
                val=_format_optional(self.last_val_loss, ".3f"),
                rate="-",
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            progress, self.progress = self.progress, None
            try:
                progress.stop()
            except OSError:
                # the terminal is gone, and the error that stopped training reports it
                if exc[0] is None:
                    raise

    def print(self, renderable: Any) -> None:
        console.print(renderable, soft_wrap=True)

    def on_step(self, event: StepEvent) -> None:
        if self.smoothed_loss is None:
            self.smoothed_loss = event.loss
        else:
            self.smoothed_loss += _LOSS_SMOOTHING * (event.loss - self.smoothed_loss)
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=event.step,
                epoch=f"{event.epoch + 1}/{self.epochs}",
                loss=f"{self.smoothed_loss:.3f}",
                val=_format_optional(self.last_val_loss, ".3f"),
                rate=_format_rate(event.chars_per_sec),
            )
        if event.record is not None:
            self.print(Text(self._step_line(event, event.record)))

    def _step_line(self, event: StepEvent, record: dict[str, Any]) -> str:
        rate = record["chars_per_sec"]
        ms_per_step = 1000 * self.chars_per_step / rate if rate > 0 else math.nan
        width = len(str(event.total_steps))
        return (
            f"step {event.step:>{width}}/{event.total_steps}  "
            f"epoch {record['epoch']:.2f}  loss {record['loss']:.4f}  "
            f"val {_format_optional(self.last_val_loss, '.4f')}  "
            f"lr {record['lr']:.2e}  grad {record['grad_norm']:.3f}  "
            f"{ms_per_step:.0f} ms/step  {_format_rate(rate)} chars/s"
        )

    def on_epoch(self, event: EpochEvent) -> None:
        record = event.record
        self.last_val_loss = record["val_loss"]
        line = Text(f"epoch {record['epoch']}/{self.epochs} done", style="bold")
        line.append(f"  train loss {record['train_loss']:.4f}")
        if record["val_loss"] is not None:
            line.append(
                f"  val loss {record['val_loss']:.4f}"
                f"  val bpc {record['val_bpc']:.3f}"
                f"  val accuracy {record['val_accuracy']:.1%}"
            )
        if event.is_best:
            line.append("  (best so far)", style="green")
        self.print(line)
        names = ", ".join(path.name for path in event.saved)
        self.print(Text(f"saved {names}", style="dim"))
        if event.sample:
            self.print(Text("sample:", style="dim"))
            self.print(Text(event.sample, style="cyan"))


def print_summary(run_dir: Path, run: RunState, outcome: Outcome) -> None:
    """Print the end-of-run table on stderr, then the run folder's path.

    The path goes on a line of its own after the table, where the terminal
    wraps it without breaking it, so it can be copied in one piece. Inside
    the table the checkpoints are named by file name.
    """
    progress = run.progress
    table = Table(title="Training summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("stopped", _reason_text(outcome))
    table.add_row(
        "steps", f"{outcome.steps_run} this session, {progress.step} in total"
    )
    table.add_row("epochs completed", str(progress.epoch))
    table.add_row("time", format_duration(outcome.seconds))
    table.add_row("speed", f"{outcome.chars_per_sec:,.0f} chars/s")
    if outcome.final_val is not None:
        table.add_row(
            "val loss at stop",
            f"{outcome.final_val['val_loss']:.4f} "
            f"({outcome.final_val['val_bpc']:.3f} bits per character)",
        )
    if run.best_val_loss is not None:
        table.add_row(
            "best val loss",
            f"{run.best_val_loss:.4f} ({run.best_val_loss / math.log(2):.3f} bits per "
            f"character, epoch {run.best_epoch})",
        )
    for kind, path in outcome.checkpoints.items():
        # checkpoints are saved in the run folder
        name = path.name if path.parent == run_dir else str(path)
        table.add_row(f"{kind} checkpoint", Text(name))
    console.print(table)
    print_line(f"Run folder: {run_dir}")


_REASON_TEXT = {
    "completed": "completed",
    "interrupted": "interrupted",
    "nonfinite": "non-finite loss",
    "diverged": "loss diverged",
}


def _reason_text(outcome: Outcome) -> str:
    return _REASON_TEXT[outcome.reason.value]
