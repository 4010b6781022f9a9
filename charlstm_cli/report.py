"""Commands that report on saved runs: inspect, plot and runs.

Each command parses options, calls one function that builds plain data (a dict
or a matplotlib Figure) and renders it, so scripts and tests can use the
functions without the CLI. Losses are mean cross-entropy in nats per character,
so bits per character (bpc) = loss / ln 2.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from . import paths
from .checkpoint import DTYPE_SIZES, CheckpointError, read_checkpoint_summary
from .errors import UserError
from .usage import parse_path

_VOCAB_PREVIEW_CHARS = 120
_VOCAB_LINE_CHARS = 40
_CHAR_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}
# Bytes read from the end of metrics.jsonl to find a run's last step.
_METRICS_TAIL_BYTES = 64 * 1024

RunDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--run-dir",
        parser=parse_path,
        metavar="<path>",
        help="Home folder for runs (runs are in RUN_DIR/runs/NAME). "
        "Default: $CHARLSTM_HOME, else the user data folder.",
        show_default=False,
    ),
]


def register(app: typer.Typer, wrap_command: Callable | None = None) -> None:
    """Add the inspect, plot and runs commands to `app`.

    `wrap_command`, when given, decorates each command, for example with the
    main app's handler that prints a UserError as "Error: ..." and exits 1.
    It must keep the signature (functools.wraps) because Typer reads the
    options from it.
    """
    commands = {"inspect": inspect_command, "plot": plot_command, "runs": runs_command}
    for name, command in commands.items():
        app.command(name)(wrap_command(command) if wrap_command else command)


def bits_per_char(loss: float | None) -> float | None:
    return None if loss is None else loss / math.log(2)


# ---------------------------------------------------------------------------
# inspect


def inspect_command(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(
            parser=parse_path,
            help="Checkpoint file (.ckpt), or a run folder to inspect its latest.ckpt. "
            "Default: latest.ckpt of the most recent run.",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json", metavar="", help="Print one JSON object instead of a table."
        ),
    ] = False,
    run_dir: RunDirOption = None,
) -> None:
    """Show what a checkpoint contains: model, training state, validation loss, corpus.

    Exits 1 after the summary when generate and resume would reject the
    checkpoint's metadata, such as a hand-edited field.
    """
    path = paths.chosen_checkpoint(checkpoint, run_dir)
    summary, problem = _summary_and_problem(path)
    if json_output:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        Console().print(render_summary(summary))
    if problem is not None:
        raise problem


def summarize_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint's header, verify its checksum and return a summary dict.

    The keys are stable for scripts: usable, problem, path, file_size_bytes,
    format, format_version, charlstm_version, checksum_sha256, saved_at,
    model, training, validation, corpus, vocab and tensors. `usable` is false
    when generate and resume would reject the metadata, and `problem` then
    gives the reason. Values missing from the checkpoint are None.
    """
    return _summary_and_problem(path)[0]


def _summary_and_problem(path: Path) -> tuple[dict[str, Any], CheckpointError | None]:
    """Return summarize_checkpoint's dict and the metadata error behind `usable`."""
    path = paths.checkpoint_for(Path(path))
    raw = read_checkpoint_summary(path, verify=True)
    metadata = raw["metadata"]
    history = _list_of_dicts(metadata.get("history"))
    problem = _check_metadata(path, metadata, raw["tensors"])
    summary = {
        "usable": problem is None,
        "problem": None if problem is None else problem.message,
        "path": str(path),
        "file_size_bytes": raw["file_size_bytes"],
        "format": metadata.get("format"),
        "format_version": int(metadata["format_version"]),
        "charlstm_version": metadata.get("charlstm_version"),
        "checksum_sha256": metadata.get("checksum"),
        "saved_at": metadata.get("saved_at"),
        "model": _model_summary(metadata, raw["tensors"]),
        "training": _training_summary(metadata, history),
        "validation": _validation_summary(metadata, history),
        "corpus": _corpus_summary(metadata),
        "vocab": _vocab_summary(metadata),
        "tensors": [
            {"name": name, "dtype": info["dtype"], "shape": info["shape"]}
            for name, info in raw["tensors"].items()
        ],
    }
    return summary, problem


def _check_metadata(
    path: Path, metadata: dict[str, Any], tensors: dict[str, Any]
) -> CheckpointError | None:
    """Return the error that generate and resume would raise for this metadata, or None.

    `tensors` is the tensor table of read_checkpoint_summary, with each shape.
    """
    from .state import check_parameter_count, read_run_state

    try:
        run = read_run_state(path, metadata)
        shapes = {name: tuple(info["shape"]) for name, info in tensors.items()}
        check_parameter_count(path, shapes, run.model)
    except CheckpointError as exc:
        return exc
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list_of_dicts(value: Any) -> list[dict[str, Any]]:
    return (
        [item for item in value if isinstance(item, dict)]
        if isinstance(value, list)
        else []
    )


def _model_summary(metadata: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
    model = _dict(metadata.get("model"))
    vocab = metadata.get("vocab")
    model_shapes = [
        info["shape"] for name, info in tensors.items() if name.startswith("model.")
    ]
    n_params = sum(math.prod(shape) for shape in model_shapes) if model_shapes else None
    n_bytes = sum(
        math.prod(info["shape"]) * DTYPE_SIZES[info["dtype"]]
        for info in tensors.values()
    )
    return {
        "n_layers": model.get("n_layers"),
        "n_hidden": model.get("n_hidden"),
        "n_vocab": model.get(
            "n_vocab", len(vocab) if isinstance(vocab, list) else None
        ),
        "n_params": n_params,
        "forget_bias": model.get("forget_bias"),
        "init_seed": model.get("init_seed"),
        "tensor_bytes": n_bytes,
    }


def _training_summary(
    metadata: dict[str, Any], history: list[dict[str, Any]]
) -> dict[str, Any]:
    training = _dict(metadata.get("training"))
    progress = _dict(metadata.get("progress"))
    epochs_completed = len(
        {record.get("epoch") for record in history if record.get("kind") == "epoch"}
    )
    return {
        "epoch": progress.get("epoch"),
        "epochs_completed": epochs_completed,
        "epochs": training.get("epochs"),
        "step": progress.get("step"),
        "max_steps": training.get("max_steps"),
        "chars_seen": progress.get("chars_seen"),
        "lr": progress.get("lr"),
        "optimizer": training.get("optimizer"),
        "batch_size": training.get("batch_size"),
        "seq_len": training.get("seq_len"),
        "finished": progress.get("finished"),
    }


def _validation_summary(
    metadata: dict[str, Any], history: list[dict[str, Any]]
) -> dict[str, Any]:
    best = metadata.get("best_val_loss")
    best = best if isinstance(best, (int, float)) else None
    validated = [
        r
        for r in history
        if r.get("kind") == "epoch" and isinstance(r.get("val_loss"), (int, float))
    ]
    latest = validated[-1] if validated else {}
    return {
        "best_loss": best,
        "best_bpc": bits_per_char(best),
        "latest_loss": latest.get("val_loss"),
        "latest_bpc": bits_per_char(latest.get("val_loss")),
        "latest_accuracy": latest.get("val_accuracy"),
        "latest_epoch": latest.get("epoch"),
    }


def _corpus_summary(metadata: dict[str, Any]) -> dict[str, Any]:
    corpus = _dict(metadata.get("corpus"))
    keys = ("name", "path", "size_bytes", "n_chars", "sha256")
    return {key: corpus.get(key) for key in keys}


def _vocab_summary(metadata: dict[str, Any]) -> dict[str, Any]:
    vocab = metadata.get("vocab")
    if not isinstance(vocab, list):
        return {"size": None, "preview": None}
    escaped = "".join(escape_char(str(ch)) for ch in vocab)
    preview = escaped[:_VOCAB_PREVIEW_CHARS]
    if len(escaped) > len(preview):
        preview += "…"
    return {"size": len(vocab), "preview": preview}


def escape_char(ch: str) -> str:
    """Return `ch` as printable text, with control characters escaped like \\n."""
    if ch in _CHAR_ESCAPES:
        return _CHAR_ESCAPES[ch]
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def render_summary(summary: dict[str, Any]) -> Table:
    """Build the Rich table that `charlstm inspect` prints."""
    table = Table(
        title=escape(summary["path"]), show_header=False, title_justify="left"
    )
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    sections = (
        _file_rows(summary),
        _model_rows(summary["model"]),
        _training_rows(summary["training"]),
        _validation_rows(summary["validation"]),
        _corpus_rows(summary["corpus"], summary["vocab"]),
    )
    for rows in sections:
        for field, value in rows:
            table.add_row(field, value if isinstance(value, Text) else Text(value))
        table.add_section()
    return table


def _vocab_lines(preview: str, width: int = _VOCAB_LINE_CHARS) -> Text:
    """Break an escaped vocabulary preview into lines without splitting an escape.

    Rich would otherwise wrap at the space character, which reads as a break
    between characters rather than as the space in the vocabulary.
    """
    units = re.findall(
        r"\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|.)|.", preview, re.DOTALL
    )
    lines, line = [], ""
    for unit in units:
        if len(line) + len(unit) > width:
            lines.append(line)
            line = ""
        line += unit
    lines.append(line)
    return Text("\n".join(lines), no_wrap=True, overflow="ellipsis")


def _text(value: Any, fmt: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, fmt)


def _file_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    size = summary["file_size_bytes"]
    return [
        (
            "file size",
            format_bytes(size)
            if size < 1000
            else f"{format_bytes(size)} ({size:,} bytes)",
        ),
        ("format", f"{summary['format']} version {summary['format_version']}"),
        ("written by", f"charlstm {_text(summary['charlstm_version'])}"),
        ("saved at", _text(summary["saved_at"])),
        (
            "checksum",
            f"SHA-256 {summary['checksum_sha256'][:16]}… of the tensors, verified",
        ),
        ("usable", "yes" if summary["usable"] else "no: invalid metadata (below)"),
    ]


def _model_rows(model: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("layers", _text(model["n_layers"])),
        ("hidden size", _text(model["n_hidden"])),
        ("vocabulary size", _text(model["n_vocab"])),
        ("parameters", _text(model["n_params"], ",")),
        ("tensor data", format_bytes(model["tensor_bytes"])),
    ]


def _training_rows(training: dict[str, Any]) -> list[tuple[str, str]]:
    epochs = _text(training["epochs_completed"])
    if training["epochs"] is not None:
        epochs += f" of {training['epochs']}"
    step = _text(training["step"], ",")
    if training["max_steps"] is not None:
        step += f" of {training['max_steps']:,}"
    return [
        ("epochs completed", epochs),
        ("step", step),
        ("characters seen", _text(training["chars_seen"], ",")),
        ("learning rate", _text(training["lr"], ".3g")),
        ("optimizer", _text(training["optimizer"])),
        (
            "batch × sequence",
            f"{_text(training['batch_size'])} × {_text(training['seq_len'])}",
        ),
        ("finished", _text(training["finished"])),
    ]


def _loss_text(loss: float | None, bpc: float | None) -> str:
    if loss is None:
        return "-"
    return f"{loss:.4f} ({bpc:.3f} bits/char)"


def _validation_rows(validation: dict[str, Any]) -> list[tuple[str, str]]:
    accuracy = validation["latest_accuracy"]
    return [
        (
            "best validation loss",
            _loss_text(validation["best_loss"], validation["best_bpc"]),
        ),
        (
            "latest validation loss",
            _loss_text(validation["latest_loss"], validation["latest_bpc"]),
        ),
        ("latest accuracy", "-" if accuracy is None else f"{accuracy:.1%}"),
    ]


def _corpus_rows(
    corpus: dict[str, Any], vocab: dict[str, Any]
) -> list[tuple[str, str | Text]]:
    size = corpus["size_bytes"]
    sha256 = corpus["sha256"]
    return [
        ("corpus", _text(corpus["name"])),
        (
            "corpus size",
            "-"
            if size is None
            else f"{format_bytes(size)}, {_text(corpus['n_chars'], ',')} characters",
        ),
        ("corpus SHA-256", "-" if sha256 is None else sha256[:16] + "…"),
        ("vocabulary", _vocab_lines(vocab["preview"]) if vocab["preview"] else "-"),
    ]


def format_bytes(size: int) -> str:
    """Return a size such as 1.5 MB, in decimal units."""
    if size < 1000:
        return f"{size} bytes"
    value = size / 1000
    for unit in ("kB", "MB", "GB"):
        if value < 1000:
            break
        value /= 1000
    return f"{value:.1f} {unit}"


# ---------------------------------------------------------------------------
# plot


def plot_command(
    source: Annotated[
        Path | None,
        typer.Argument(
            parser=parse_path,
            help="Run folder, checkpoint (.ckpt) or metrics.jsonl. Default: the newest run.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            parser=parse_path,
            metavar="<path>",
            help="PNG file to write. Default: loss.png in the run folder, or "
            "<checkpoint name>-loss.png beside a checkpoint.",
            show_default=False,
        ),
    ] = None,
    run_dir: RunDirOption = None,
) -> None:
    """Plot training and validation loss, accuracy and learning rate to a PNG file."""
    history = load_plot_history(source, run_dir)
    target = out if out is not None else history.default_output
    figure = draw_history(history.records, history.title)
    save_figure(figure, target)
    typer.echo(str(target))


@dataclass
class PlotHistory:
    """Metric records to plot, the plot title and the default PNG path."""

    records: list[dict[str, Any]]
    title: str
    default_output: Path


def load_plot_history(source: Path | None, run_dir: Path | None = None) -> PlotHistory:
    """Read the metric records for a run folder, checkpoint or metrics.jsonl file.

    A run folder is read from metrics.jsonl when present, else from the history
    stored in its latest.ckpt. Raises UserError when nothing can be plotted.
    """
    if source is None:
        source = _newest_run(run_dir)
    source = Path(source)
    try:
        # stat() instead of exists(), which returns False for a symbolic link loop
        source.stat()
    except FileNotFoundError:
        raise UserError(
            f"not found: {source}",
            hint="pass a run folder, a checkpoint or metrics.jsonl",
        ) from None
    if source.is_dir():
        run = source
        if (run / paths.METRICS).is_file():
            records = read_metrics(run / paths.METRICS)
        elif (run / paths.LATEST).is_file():
            records = _checkpoint_history(run / paths.LATEST)
        else:
            raise UserError(
                f"{run} contains no {paths.METRICS} or {paths.LATEST}",
                hint="pass a run folder written by 'charlstm train' (see 'charlstm runs')",
            )
        output = run / "loss.png"
        title = run.name
    elif source.suffix == ".jsonl":
        records = read_metrics(source)
        output = source.parent / "loss.png"
        title = source.parent.name
    else:
        records = _checkpoint_history(source)
        output = source.parent / f"{source.stem}-loss.png"
        title = f"{source.parent.name}/{source.name}"
    records = deduplicate_records(records)
    if not records:
        raise UserError(
            f"{source} has no training metrics yet",
            hint="metrics appear after the first logged training step",
        )
    return PlotHistory(records, title, output)


def _newest_run(run_dir: Path | None) -> Path:
    home = paths.data_home(run_dir)
    run = paths.latest_run(home)
    if run is None:
        raise UserError(
            f"no training runs found in {paths.runs_folder(home)}",
            hint="train a model with 'charlstm train', or pass --run-dir or a path",
        )
    return run


def _checkpoint_history(path: Path) -> list[dict[str, Any]]:
    # The history lives in the header, so the data checksum need not be read.
    summary = read_checkpoint_summary(path, verify=False)
    return _list_of_dicts(summary["metadata"].get("history"))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read metric records from a metrics.jsonl file that may still be growing.

    A final line without its newline is a record still being written and is
    skipped. Other lines that are not JSON objects are skipped with a warning on
    stderr.
    """
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = text.split("\n")
    # After the last newline sits either "" or a partly written record.
    complete, _partial = lines[:-1], lines[-1]
    records, skipped = [], 0
    for line in complete:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    if skipped:
        Console(stderr=True).print(
            f"Warning: skipped {skipped} unreadable lines in {escape(str(path))}"
        )
    return records


def deduplicate_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the last step record per step and epoch record per epoch, sorted by step.

    A run resumed from a checkpoint logs the steps after that checkpoint again,
    and only the later records belong to the history that the run continued.
    """
    latest: dict[tuple[str, Any], dict[str, Any]] = {}
    for record in records:
        kind = record.get("kind")
        if kind == "step" and _is_number(record.get("step")):
            latest[("step", record["step"])] = record
        elif kind == "epoch" and record.get("epoch") is not None:
            latest[("epoch", record["epoch"])] = record
    return sorted(
        latest.values(),
        key=lambda r: (_number(r.get("step")), r.get("kind") == "epoch"),
    )


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _number(value: Any) -> float:
    return float(value) if _is_number(value) else math.nan


def _series(
    records: list[dict[str, Any]], kind: str, key: str
) -> tuple[list[float], list[float]]:
    """Return (steps, values) of `key` over records of `kind`, skipping missing values."""
    steps, values = [], []
    for record in records:
        if (
            record.get("kind") == kind
            and _is_number(record.get("step"))
            and _is_number(record.get(key))
        ):
            steps.append(float(record["step"]))
            values.append(float(record[key]))
    return steps, values


def smooth_ema(values: list[float], span: int) -> list[float]:
    """Return the bias-corrected exponential moving average with alpha = 2 / (span + 1)."""
    beta = 1 - 2 / (span + 1)
    smoothed, average = [], 0.0
    for index, value in enumerate(values, start=1):
        average = beta * average + (1 - beta) * value
        smoothed.append(average / (1 - beta**index))
    return smoothed


def draw_history(records: list[dict[str, Any]], title: str):
    """Draw loss, validation accuracy and learning rate against step on a Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 9), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, accuracy_axes, lr_axes = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1, 1]}
    )
    epoch_steps, _ = _series(records, "epoch", "step")
    for axes in (loss_axes, accuracy_axes, lr_axes):
        _mark_epochs(axes, epoch_steps)
        axes.grid(alpha=0.3)
    _draw_losses(loss_axes, records)
    _draw_accuracy(accuracy_axes, records)
    _draw_learning_rate(lr_axes, records)
    lr_axes.set_xlabel("step")
    figure.suptitle(_plot_title(title, records))
    return figure


def _plot_title(title: str, records: list[dict[str, Any]]) -> str:
    _, val_losses = _series(records, "epoch", "val_loss")
    if not val_losses:
        return f"{title}: no validation loss yet"
    best = min(val_losses)
    return f"{title}: best validation loss {best:.4f} ({bits_per_char(best):.3f} bits/char)"


def _draw_losses(axes, records: list[dict[str, Any]]) -> None:
    steps, losses = _series(records, "step", "loss")
    # Smooth over about 5% of the records, so short runs are drawn raw.
    span = min(100, len(losses) // 20)
    if steps and span < 2:
        axes.plot(steps, losses, color="tab:blue", linewidth=1.8, label="train loss")
    elif steps:
        axes.plot(
            steps,
            losses,
            color="tab:blue",
            alpha=0.3,
            linewidth=0.8,
            label="train loss",
        )
        axes.plot(
            steps,
            smooth_ema(losses, span),
            color="tab:blue",
            linewidth=1.8,
            label=f"train loss (EMA, span {span})",
        )
    else:
        epoch_steps, epoch_losses = _series(records, "epoch", "train_loss")
        axes.plot(
            epoch_steps,
            epoch_losses,
            "o-",
            color="tab:blue",
            label="train loss (epoch mean)",
        )
    val_steps, val_losses = _series(records, "epoch", "val_loss")
    if val_steps:
        axes.plot(
            val_steps,
            val_losses,
            "o-",
            color="tab:orange",
            linewidth=1.8,
            label="validation loss",
        )
    axes.set_ylabel("loss (nats/char)")
    axes.secondary_yaxis(
        "right", functions=(lambda x: x / math.log(2), lambda x: x * math.log(2))
    ).set_ylabel("bits per character")
    axes.legend(loc="upper right")


def _draw_accuracy(axes, records: list[dict[str, Any]]) -> None:
    from matplotlib.ticker import PercentFormatter

    steps, accuracy = _series(records, "epoch", "val_accuracy")
    axes.set_ylabel("validation\naccuracy")
    axes.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    if steps:
        axes.plot(steps, accuracy, "o-", color="tab:green")
    else:
        axes.text(
            0.5,
            0.5,
            "no validation yet",
            transform=axes.transAxes,
            ha="center",
            va="center",
            color="gray",
        )


def _draw_learning_rate(axes, records: list[dict[str, Any]]) -> None:
    # Epoch records carry the rate at the end of each epoch, after the last step record.
    points = [
        *zip(*_series(records, "step", "lr")),
        *zip(*_series(records, "epoch", "lr")),
    ]
    points.sort()
    steps = [step for step, _ in points]
    rates = [rate for _, rate in points]
    axes.set_ylabel("learning rate")
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    if steps:
        axes.plot(steps, rates, color="tab:purple", drawstyle="steps-post")


def _mark_epochs(axes, epoch_steps: list[float]) -> None:
    """Draw a dashed line at the last step of each epoch, labelled once for the legend."""
    for index, step in enumerate(epoch_steps):
        label = "epoch end" if index == 0 else None
        axes.axvline(
            step, color="gray", linestyle="--", linewidth=0.8, alpha=0.6, label=label
        )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_plot_target(target: Path) -> None:
    """Reject an output path that is not a .png file, or that would replace another kind of file."""
    if target.is_dir():
        raise UserError(
            f"plot output {target} is a folder", hint="pass --out with a .png file name"
        )
    if target.suffix.lower() != ".png":
        raise UserError(
            f"plot output {target} does not end in .png; plots are PNG images",
            hint="pass --out with a .png file name",
        )
    if target.exists() and not target.is_file():
        # opening a named pipe would wait for a writer
        raise UserError(
            f"plot output {target} exists and is not a regular file, so it was left "
            "unchanged",
            hint="pass --out with a new file name",
        )
    if target.exists():
        with open(target, "rb") as existing:
            if existing.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                raise UserError(
                    f"plot output {target} exists and is not a PNG image, "
                    "so it was left unchanged",
                    hint="pass --out with a new file name",
                )


def save_figure(figure, target: Path) -> None:
    """Write `figure` to `target` as PNG through a temporary file and a rename.

    Raises UserError when the path is not a .png file, would replace a file
    that is not a PNG, or cannot be written. The previous file stays intact.
    A symbolic link stays a link: the file it points to is replaced.
    """
    check_plot_target(target)
    if target.is_symlink():
        # replace the file the link points to and keep the link, as cp would
        target = Path(os.path.realpath(target))
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        figure.savefig(temporary, format="png", dpi=100)
        os.replace(temporary, target)
    except OSError as exc:
        raise UserError(
            f"cannot write plot {target}: {exc.strerror or exc}",
            hint="pass --out with a path in a writable folder",
        ) from None
    finally:
        paths.remove_temporary_file(temporary)


# ---------------------------------------------------------------------------
# runs


def runs_command(
    json_output: Annotated[
        bool,
        typer.Option(
            "--json", metavar="", help="Print one JSON object instead of a table."
        ),
    ] = False,
    run_dir: RunDirOption = None,
) -> None:
    """List the training runs in the data folder, most recently active first."""
    home = paths.data_home(run_dir)
    rows = [summarize_run(run) for run in paths.list_runs(home)]
    folder = paths.runs_folder(home)
    if json_output:
        typer.echo(
            json.dumps(
                {"runs_folder": str(folder), "runs": rows}, indent=2, ensure_ascii=False
            )
        )
    elif not rows:
        Console().print(
            f"No runs in {escape(str(folder))}. Start one with `charlstm train`."
        )
    else:
        Console().print(render_runs(rows, folder))


def summarize_run(run: Path) -> dict[str, Any]:
    """Summarize one run folder from latest.ckpt, run.json and metrics.jsonl.

    latest.ckpt is written at the end of each epoch, so during the first epoch
    the corpus and model size come from run.json and the step count from the
    tail of metrics.jsonl. An unreadable checkpoint does not stop the listing:
    its message goes into the "error" key and the other fields are None where
    unknown.
    """
    row: dict[str, Any] = {
        "name": run.name,
        "path": str(run),
        "corpus": None,
        "n_layers": None,
        "n_hidden": None,
        "steps": None,
        "best_val_loss": None,
        "last_modified": _last_modified(run).isoformat(timespec="seconds"),
        "error": None,
    }
    latest = run / paths.LATEST
    if latest.is_file():
        try:
            metadata = read_checkpoint_summary(latest, verify=False)["metadata"]
        except CheckpointError as exc:
            row["error"] = exc.message
        else:
            model = _dict(metadata.get("model"))
            row["corpus"] = _dict(metadata.get("corpus")).get("name")
            row["n_layers"] = model.get("n_layers")
            row["n_hidden"] = model.get("n_hidden")
            row["steps"] = _dict(metadata.get("progress")).get("step")
            best = metadata.get("best_val_loss")
            row["best_val_loss"] = best if _is_number(best) else None
    if row["corpus"] is None and row["n_layers"] is None:
        info = _read_run_info(run / paths.RUN_INFO)
        row["corpus"] = _dict(info.get("corpus")).get("name")
        row["n_layers"] = _dict(info.get("model")).get("n_layers")
        row["n_hidden"] = _dict(info.get("model")).get("n_hidden")
    # A run still training logs steps after its last checkpoint.
    last_logged = _last_logged_step(run / paths.METRICS)
    if last_logged is not None and (row["steps"] is None or last_logged > row["steps"]):
        row["steps"] = last_logged
    return row


def _read_run_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return _dict(info)


def _last_modified(run: Path) -> datetime:
    times = [run.stat().st_mtime]
    for entry in run.iterdir():
        try:
            times.append(entry.stat().st_mtime)
        except OSError:
            pass
    return datetime.fromtimestamp(max(times)).astimezone()


def _last_logged_step(metrics: Path) -> int | None:
    try:
        with open(metrics, "rb") as file:
            size = file.seek(0, 2)
            file.seek(max(0, size - _METRICS_TAIL_BYTES))
            tail = file.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.split("\n")[:-1]):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            return record["step"]
    return None


def render_runs(rows: list[dict[str, Any]], folder: Path) -> Table:
    table = Table(
        title=f"Runs in {escape(str(folder))}",
        title_justify="left",
        box=None,
        pad_edge=False,
        header_style="bold",
    )
    table.add_column("run", no_wrap=True)
    table.add_column("corpus", overflow="ellipsis", max_width=24)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("steps", justify="right", no_wrap=True)
    table.add_column("best val loss", justify="right", no_wrap=True)
    table.add_column("modified", no_wrap=True)
    for row in rows:
        size = "-"
        if row["n_layers"] is not None and row["n_hidden"] is not None:
            size = f"{row['n_layers']}×{row['n_hidden']}"
        best = row["best_val_loss"]
        best_text = "-" if best is None else f"{best:.4f}"
        corpus = escape(_text(row["corpus"]))
        if row["error"] is not None:
            corpus = "[red]unreadable[/red]"
        table.add_row(
            escape(row["name"]),
            corpus,
            size,
            _text(row["steps"], ","),
            best_text,
            row["last_modified"][:16].replace("T", " "),
        )
    return table
