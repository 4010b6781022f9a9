"""The charlstm command line: train, resume and generate (plus report's commands).

Commands parse options and render; the work happens in data, train, state
and checkpoint. Modules that load the C library are imported inside the
commands, so `--help` and `--version` work even when the library is missing.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import os
import secrets
import shlex
import shutil
import signal
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from . import __version__, paths, report
from .data import (
    build_vocab,
    bundled_corpus_path,
    check_corpus_size,
    default_sample_seed,
    format_characters,
    read_corpus,
    unknown_characters,
)
from .errors import UserError, path_error, save_elsewhere_hint
from .output import (
    StdoutError,
    TrainDisplay,
    guard_stdout,
    logger,
    print_error,
    print_json,
    print_line,
    print_summary,
    print_warning,
    setup_logging,
    stdout_pipe_closed,
    write_stdout,
)
from .state import MAX_LAYERS
from .usage import PlainErrorsGroup, parse_path

if TYPE_CHECKING:
    from .model import Model, Trainer
    from .state import RunState
    from .train import Outcome, Training

app = typer.Typer(
    cls=PlainErrorsGroup,
    name="charlstm",
    help="Train character-level LSTM language models on any text and sample from them.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEBUG_ENV = "CHARLSTM_DEBUG"
# Characters per sampler call. Short calls let text appear while it is
# generated, let Ctrl-C land between calls, and give the thread tuner one
# time measurement per call.
GENERATE_CHUNK = 64
FEED_CHUNK = 128


# Upper bounds of the integer options, shown in --help. Sizes stay far below
# the C engine's int32 fields, and seeds fill its uint64 RNG seed.
MAX_SIZE = 65536  # --hidden-size, --batch-size, --seq-len
MAX_SEED = 2**64 - 1
MAX_EPOCHS = 1_000_000  # also --lr-decay-every and --keep-epochs
MAX_STEPS = 10**12  # also --log-every
MAX_SAMPLE_LENGTH = 1_000_000  # --sample-length, generated in one C call
MAX_THREADS = 1024
MAX_TOP_K = 2**31 - 1  # an int32 in C; any value >= the vocabulary size disables it
# The largest finite float32. Float options go to the C engine as float32, and
# larger values become infinity there.
FLOAT32_MAX = 3.4028234663852886e38
# The smallest normal float32. A nonzero value below it loses its precision in
# float32, and one below about 1.4e-45 becomes 0.
FLOAT32_MIN_NORMAL = 1.1754943508222875e-38


# Metavar for flags: Typer's help shows <bool> beside a flag unless the
# metavar is set, and an empty one leaves that column blank. Typer's own
# --help and --install-completion still show <bool>.
FLAG = ""


class OptimizerName(str, enum.Enum):
    ADAM = "adam"
    SGD = "sgd"


class ScheduleName(str, enum.Enum):
    NONE = "none"
    STEP = "step"


# ----------------------------------------------------------------------------
# error reporting


def _describe_known_error(exc: BaseException) -> tuple[str, str | None, int] | None:
    """Return (message, hint, exit code) for errors reported without a traceback."""
    if isinstance(exc, UserError):
        return exc.message, exc.hint, exc.exit_code
    native = sys.modules.get("charlstm_cli._native")
    if native is not None and isinstance(exc, native.OutOfMemoryError):
        # The message drops the C function's name, which means nothing to a user.
        return (
            str(exc).removeprefix(f"{exc.function}: "),
            "lower --hidden-size (memory grows with its square), --layers, "
            "--batch-size or --seq-len",
            1,
        )
    if native is not None and isinstance(exc, native.CharLSTMError):
        return (
            str(exc),
            "check the sizes you passed; smaller models need less memory",
            1,
        )
    if (
        isinstance(exc, FileNotFoundError)
        and type(exc).__name__ == "LibraryNotFoundError"
    ):
        return str(exc), getattr(exc, "hint", None), 1
    error = path_error(exc)
    if error is not None:
        return error.message, error.hint, error.exit_code
    return None


# Set once a command's own code runs, which then reports Ctrl-C itself.
_command_started = False


def reports_errors(command):
    """Print known errors as 'Error: ...' and 'Hint: ...' lines and exit non-zero.

    Set CHARLSTM_DEBUG=1 to get the traceback instead. Ctrl-C outside the
    training loop exits with 130.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        global _command_started
        _command_started = True
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            print_line("Interrupted.", style="yellow")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            raise typer.Exit(_closed_stdout()) from None
        except StdoutError as exc:
            raise typer.Exit(_failed_stdout(exc)) from None
        except Exception as exc:
            known = _describe_known_error(exc)
            if known is None or os.environ.get(DEBUG_ENV):
                raise
            message, hint, code = known
            print_error(message, hint)
            raise typer.Exit(code) from None

    return wrapper


def _closed_stdout() -> int:
    """Stop quietly because the reader of stdout went away (`| head`).

    Returns 141 (128 + SIGPIPE), the status a shell reports for tools such
    as cat or yes in the same place, so `set -o pipefail` scripts treat
    charlstm like them. Python ignores SIGPIPE, so the process cannot die
    of the signal itself.
    """
    _silence_stdout()
    return 128 + signal.SIGPIPE


def _failed_stdout(exc: OSError) -> int:
    """Report a failed write to stdout, such as a full disk, and return exit code 1."""
    _silence_stdout()
    print_error(
        f"cannot write to standard output: {exc.strerror or exc}",
        hint="check the file or device that standard output goes to, or redirect it "
        "to another file",
    )
    return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again.

    This is the recipe from the Python documentation of the signal module
    (note on SIGPIPE).
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


# ----------------------------------------------------------------------------
# shared options


def _float_option(description: str, show_default: bool = True, **bounds: Any) -> Any:
    """Return a Typer option for a float within `bounds` (see _in_range).

    The help ends with the range in the notation Typer uses for integer
    options, such as [0<=x<=0.5], because Typer cannot show the range of an
    option that has its own parser.
    """
    return typer.Option(
        metavar="<float>",
        parser=_in_range(**bounds),
        help=f"{description} {_range_text(**bounds)}",
        show_default=show_default,
    )


def _range_text(
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> str:
    """Return a range as Typer writes one for integers, such as [0<x] or [0<=x<1]."""
    text = "x"
    if low is not None:
        text = f"{low:g}{'<' if low_open else '<='}{text}"
    if high is not None:
        text = f"{text}{'<' if high_open else '<='}{high:g}"
    return f"[{text}]"


def _in_range(
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
):
    """Return an option parser that reads a float and rejects out-of-range values.

    NaN, infinities and values beyond float32, the engine's number type, are
    rejected too, and so are nonzero values too small for a normal float32.
    Messages quote the value as typed, because 1e39 would otherwise print as
    1e+39.
    """
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    expected = "must be a finite number " + " and ".join(bounds)

    def parse(text: str | float) -> float:
        if isinstance(text, float):
            return text  # Click passes the default, a float, through the parser too
        try:
            value = float(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not a number") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            raise typer.BadParameter(f"{expected}, not {text}")
        if abs(value) > FLOAT32_MAX:
            raise typer.BadParameter(
                f"must be at most {FLOAT32_MAX:.8g} (the largest float32), not {text}"
            )
        if 0 < abs(value) < FLOAT32_MIN_NORMAL:
            raise typer.BadParameter(
                f"{text} is too small: the engine computes in float32, whose "
                f"smallest normal value is {FLOAT32_MIN_NORMAL:.8g}"
            )
        return value

    return parse


def _version_callback(value: bool) -> None:
    if not value:
        return
    try:
        write_stdout(f"charlstm {__version__}\n")
    except BrokenPipeError:
        raise typer.Exit(_closed_stdout()) from None
    raise typer.Exit()


Verbose = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        metavar=FLAG,
        show_default=False,
        help="Log more detail on stderr: -v info, -vv debug.",
    ),
]
RunDir = Annotated[
    Optional[Path],
    typer.Option(
        parser=parse_path,
        metavar="<path>",
        help="Home folder for runs (runs go to RUN_DIR/runs/NAME). "
        "Default: $CHARLSTM_HOME, else the user data folder.",
        show_default=False,
    ),
]
Threads = Annotated[
    int,
    typer.Option(
        min=0,
        max=MAX_THREADS,
        help="Kernel threads. 0 uses every core, and training drops to one core "
        "while that steps faster, as when another program keeps a core busy. "
        "N > 0 fixes the count, even when another program makes it slow.",
    ),
]
JsonSummary = Annotated[
    bool,
    typer.Option(
        "--json",
        metavar=FLAG,
        help="Print a JSON summary on stdout when training ends.",
    ),
]
Epochs = Annotated[
    int, typer.Option(min=1, max=MAX_EPOCHS, help="Passes over the training text.")
]
MaxSteps = Annotated[
    Optional[int],
    typer.Option(
        min=1,
        max=MAX_STEPS,
        help="Stop after this many updates in total, even mid-epoch.",
    ),
]
LearningRate = Annotated[
    float,
    _float_option(
        "Initial learning rate.",
        low=0.0,
        low_open=True,
    ),
]


@app.callback()
def app_options(
    verbose: Verbose = 0,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            metavar=FLAG,
            callback=_version_callback,
            is_eager=True,
            help="Print the version.",
        ),
    ] = False,
) -> None:
    """Train character-level LSTM language models on any text and sample from them."""
    setup_logging(verbose)


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _set_threads(threads: int) -> None:
    """Set the kernel thread count and warn about settings the engine cannot follow."""
    from .model import kernel_request_warning, set_num_threads

    cores = _usable_cores()
    if threads > cores:
        print_warning(
            f"--threads {threads} is more than the {cores} cores this process can "
            "use; the extra threads wait for each other and make every step slower "
            "(results are the same). Use --threads 0 for every core."
        )
    set_num_threads(threads)
    kernel_warning = kernel_request_warning()
    if kernel_warning is not None:
        print_warning(kernel_warning)
    from . import _native

    logger.info(
        "kernels: %s, %d threads",
        _native.lib.charlstm_kernel_name().decode(),
        _native.lib.charlstm_get_num_threads(),
    )


# ----------------------------------------------------------------------------
# train


@app.command()
@reports_errors
def train(
    corpus: Annotated[
        Optional[Path],
        typer.Option(
            parser=parse_path,
            metavar="<path>",
            help="UTF-8 text file to train on, or - for standard input. "
            "Default: the bundled Shakespeare plays.",
            show_default=False,
        ),
    ] = None,
    encoding: Annotated[
        str, typer.Option(help="Text encoding of the corpus, e.g. latin-1.")
    ] = "utf-8",
    hidden_size: Annotated[
        int, typer.Option(min=1, max=MAX_SIZE, help="LSTM hidden units per layer.")
    ] = 256,
    layers: Annotated[
        int, typer.Option(min=1, max=MAX_LAYERS, help="Stacked LSTM layers.")
    ] = 2,
    seq_len: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_SIZE,
            help="Characters per stream per step (backprop length).",
        ),
    ] = 64,
    batch_size: Annotated[
        int,
        typer.Option(min=1, max=MAX_SIZE, help="Parallel streams through the text."),
    ] = 32,
    epochs: Epochs = 10,
    max_steps: MaxSteps = None,
    lr: LearningRate = 2e-3,
    optimizer: Annotated[
        OptimizerName, typer.Option(help="Update rule.")
    ] = OptimizerName.ADAM,
    momentum: Annotated[
        float,
        _float_option(
            "SGD momentum.",
            low=0.0,
            high=1.0,
            high_open=True,
        ),
    ] = 0.9,
    weight_decay: Annotated[
        float,
        _float_option(
            "Weight decay (decoupled for Adam).",
            low=0.0,
        ),
    ] = 0.0,
    clip: Annotated[
        float,
        _float_option(
            "Clip the global gradient norm to this; 0 disables.",
            low=0.0,
        ),
    ] = 5.0,
    clip_value: Annotated[
        float,
        _float_option(
            "Clip each gradient element to ±this; 0 disables.",
            low=0.0,
        ),
    ] = 0.0,
    dropout: Annotated[
        float,
        _float_option(
            "Dropout probability on each layer's output.",
            low=0.0,
            high=1.0,
            high_open=True,
        ),
    ] = 0.0,
    lr_schedule: Annotated[
        ScheduleName,
        typer.Option(
            help="step multiplies the lr by --lr-decay-factor every --lr-decay-every epochs."
        ),
    ] = ScheduleName.NONE,
    lr_decay_every: Annotated[
        int,
        typer.Option(
            min=1, max=MAX_EPOCHS, help="Epochs between step-schedule decays."
        ),
    ] = 1,
    lr_decay_factor: Annotated[
        float,
        _float_option(
            "Factor applied at each step-schedule decay.",
            low=0.0,
            high=1.0,
            low_open=True,
        ),
    ] = 0.5,
    val_fraction: Annotated[
        float,
        _float_option(
            "Fraction at the end of the corpus held out for validation; 0 disables.",
            low=0.0,
            high=0.5,
        ),
    ] = 0.1,
    rng_seed: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_SEED,
            help="Seed for initialisation, dropout and epoch samples.",
        ),
    ] = 1,
    threads: Threads = 0,
    run_dir: RunDir = None,
    name: Annotated[
        Optional[str],
        typer.Option(
            help="Run folder name. Default: the start time.", show_default=False
        ),
    ] = None,
    keep_epochs: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_EPOCHS,
            help="How many epoch-NNNN.ckpt files to keep; 0 keeps none.",
        ),
    ] = 2,
    log_every: Annotated[
        int, typer.Option(min=1, max=MAX_STEPS, help="Steps between metrics lines.")
    ] = 50,
    sample_seed: Annotated[
        Optional[str],
        typer.Option(
            help="Text that primes the sample after each epoch. "
            "Default: a speaker name or the first line of the corpus.",
            show_default=False,
        ),
    ] = None,
    sample_length: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_SAMPLE_LENGTH,
            help="Characters sampled after each epoch; 0 skips it.",
        ),
    ] = 200,
    json_summary: JsonSummary = False,
    verbose: Verbose = 0,
) -> None:
    """Train a new model on a text file, saving checkpoints into a run folder."""
    setup_logging(verbose)
    options = dict(locals())
    options["optimizer"], options["lr_schedule"] = optimizer.value, lr_schedule.value
    home = paths.data_home(run_dir)
    if name is not None:
        paths.check_run_name(name)
    text_corpus = read_corpus(corpus or bundled_corpus_path(), encoding)
    run = _new_run_state(text_corpus, encoding, options)
    _set_threads(threads)
    model, trainer = _build_engine(run)
    folder = paths.create_run_folder(home, name)
    try:
        with paths.locked_run_folder(folder):
            _write_run_info(folder, "train", run, threads)
            _run_training(
                folder, model, trainer, run, text_corpus.text, json_summary, threads
            )
    except (UserError, KeyboardInterrupt):
        # A write failed, or Ctrl-C came before training set up its own handling.
        # A run folder without a checkpoint cannot be resumed.
        _remove_run_without_checkpoint(folder)
        raise


def _new_run_state(corpus, encoding: str, options: dict[str, Any]) -> RunState:
    """Validate the corpus against the options and return a fresh run state."""
    from . import state

    vocab = build_vocab(corpus.text)
    if len(vocab) < 2:
        raise UserError(
            f"corpus {corpus.path} uses only {len(vocab)} distinct character "
            f"({format_characters(vocab)}); a language model needs at least 2",
            hint="train on a text with at least two different characters",
        )
    check_corpus_size(
        corpus.n_chars,
        options["batch_size"],
        options["seq_len"],
        options["val_fraction"],
        str(corpus.path),
    )
    seed_text = options["sample_seed"]
    if seed_text is None:
        seed_text = default_sample_seed(corpus.text)
    else:
        _check_sample_seed(seed_text, vocab)
    model = state.ModelSettings(
        n_vocab=len(vocab),
        n_hidden=options["hidden_size"],
        n_layers=options["layers"],
        forget_bias=1.0,
        init_seed=options["rng_seed"],
    )
    training = state.TrainSettings(
        batch_size=options["batch_size"],
        seq_len=options["seq_len"],
        optimizer=options["optimizer"],
        lr=options["lr"],
        momentum=options["momentum"],
        weight_decay=options["weight_decay"],
        clip_norm=options["clip"],
        clip_value=options["clip_value"],
        dropout=options["dropout"],
        epochs=options["epochs"],
        max_steps=options["max_steps"],
        lr_schedule=options["lr_schedule"],
        lr_decay_every=options["lr_decay_every"],
        lr_decay_factor=options["lr_decay_factor"],
        val_fraction=options["val_fraction"],
        rng_seed=options["rng_seed"],
        log_every=options["log_every"],
        keep_epochs=options["keep_epochs"],
        sample_seed=seed_text,
        sample_length=options["sample_length"],
    )
    record = corpus.fingerprint() | {"encoding": encoding}
    return state.RunState(
        model, training, vocab, record, state.Progress(), run_id=state.new_run_id()
    )


def _check_sample_seed(seed_text: str, vocab: list[str]) -> None:
    if not seed_text:
        raise UserError(
            "--sample-seed is empty", hint="pass at least one character, e.g. a newline"
        )
    unknown = unknown_characters(seed_text, vocab)
    if unknown:
        raise UserError(
            f"--sample-seed contains characters that are not in the corpus: "
            f"{format_characters(unknown)}",
            hint="use only characters that occur in the training text",
        )


def _build_engine(run: RunState) -> tuple[Model, Trainer]:
    from . import state
    from .train import build_trainer

    model = state.build_model(run.model)
    trainer = build_trainer(model, run.training)
    run.progress.lr = trainer.lr
    logger.info("model: %d parameters", model.n_params)
    return model, trainer


def _write_run_info(folder: Path, command: str, run: RunState, threads: int) -> None:
    """Write run.json for a new run, or add this resume to an existing one."""
    target = folder / paths.RUN_INFO
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    entry = {"command": command, "argv": sys.argv[1:], "at": now, "threads": threads}
    info: dict[str, Any] = {}
    if command == "resume" and target.exists():
        try:
            info = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.warning("run.json in %s is unreadable; writing a new one", folder)
    if not info:
        info = {
            "charlstm_version": __version__,
            "run_id": run.run_id,
            "started_at": now,
            "corpus": run.corpus,
            "model": asdict(run.model),
        }
    info["training"] = asdict(run.training)
    info.setdefault("sessions", []).append(entry)
    text = json.dumps(info, indent=2) + "\n"
    paths.replace_file(target, lambda temp: temp.write_text(text, encoding="utf-8"))


# ----------------------------------------------------------------------------
# the loop with its display, shared by train and resume


def _run_training(
    folder: Path,
    model: Model,
    trainer: Trainer,
    run: RunState,
    text: str,
    json_summary: bool,
    threads: int,
    resumed_from: Path | None = None,
) -> None:
    from .threads import make_tuner
    from .train import StopSignals, Training

    training = Training(folder, model, trainer, run, text, make_tuner(threads))
    if resumed_from is not None:
        training.check_position(resumed_from)
        training.drop_last_step_record()
    training.rewrite_metrics()
    _announce(folder, training, len(set(text)))
    signals = StopSignals()
    display = TrainDisplay(
        training.total_steps,
        run.training.epochs,
        run.progress.step,
        training.chars_per_step,
    )
    # the handlers stay installed through the summary, so a second Ctrl-C
    # cannot cut off the resume command
    with signals.installed():
        with display:
            outcome = training.run_loop(display.on_step, display.on_epoch, signals)
        _finish(
            folder,
            run,
            outcome,
            signals.received,
            json_summary,
            new_run=resumed_from is None,
        )


def _plural(count: int, noun: str) -> str:
    """Return e.g. '1 epoch' or '2 epochs' (thousands separated)."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _announce(folder: Path, training: Training, n_distinct: int) -> None:
    """Print the run folder and one line of corpus, model and batch sizes.

    `n_distinct` counts the characters of the text being trained on. After
    resuming on a new corpus it can be lower than the model's vocabulary.
    """
    run = training.run
    print_line(f"Run folder: {folder}", style="bold")
    corpus = run.corpus
    settings = run.training
    distinct = f"{n_distinct} distinct"
    if n_distinct != run.model.n_vocab:
        distinct += f" (model vocabulary: {run.model.n_vocab})"
    print_line(
        f"corpus {corpus['name']}: {corpus['n_chars']:,} characters, {distinct}; "
        f"model {run.model.n_layers} x {run.model.n_hidden} LSTM, "
        f"{training.model.n_params:,} parameters; batch {settings.batch_size} x "
        f"{settings.seq_len}, {_plural(training.steps_per_epoch, 'step')} per epoch, "
        f"{_plural(training.total_steps, 'step')} in total"
    )


def _finish(
    folder: Path,
    run: RunState,
    outcome: Outcome,
    signal_number: int | None,
    json_summary: bool,
    new_run: bool,
) -> None:
    """Print the summary and exit with the code that matches how training stopped.

    When a `new_run` of train stops on a bad loss before saving a
    checkpoint, its folder is removed. A resumed run's folder is always
    kept, because it contains the checkpoint that resume started from (whose
    name need not end in .ckpt) and may contain the user's other files.
    """
    from .train import StopReason, exit_code_for_signal

    print_summary(folder, run, outcome)
    code = 0
    removed = False
    if outcome.reason is StopReason.INTERRUPTED:
        code = exit_code_for_signal(signal_number or 2)
        latest = outcome.checkpoints.get("latest", folder / paths.LATEST)
        print_line(f"Stopped; saved {latest}.", style="yellow")
        print_line(f"Continue with: charlstm resume {shlex.quote(str(latest))}")
    elif outcome.reason is not StopReason.COMPLETED:
        code = 1
        if new_run:
            removed = _remove_run_without_checkpoint(folder)
        print_error(outcome.message, hint="lower --lr, or clip gradients with --clip")
    if json_summary:
        data = _summary_data(folder, run, outcome, code)
        data["run_dir_removed"] = removed
        print_json(data)
    if code:
        raise typer.Exit(code)


def _remove_run_without_checkpoint(folder: Path) -> bool:
    """Delete a failed run's folder when it never saved a checkpoint.

    Such a folder cannot be resumed or sampled, and as the newest run it
    would make bare `generate` and `resume` fail. The summary above has
    already printed its metrics. Returns whether the folder was removed.
    """
    if any(folder.glob("*.ckpt")):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    print_line(f"Removed {folder}: the run saved no checkpoint.", style="yellow")
    return True


def _summary_data(folder: Path, run: RunState, outcome: Outcome, code: int) -> dict:
    progress = run.progress
    last_epoch = next((r for r in reversed(run.history) if r["kind"] == "epoch"), None)
    best = run.best_val_loss
    return {
        "run_dir": str(folder),
        "stopped": outcome.reason.value,
        "exit_code": code,
        "steps": progress.step,
        "steps_this_session": outcome.steps_run,
        "epochs_completed": progress.epoch,
        "seconds": outcome.seconds,
        "chars_per_sec": outcome.chars_per_sec,
        "last_epoch": last_epoch,
        "final_val": outcome.final_val,
        "best_val_loss": best,
        "best_val_bpc": best / math.log(2) if best is not None else None,
        "best_epoch": run.best_epoch,
        "checkpoints": {kind: str(path) for kind, path in outcome.checkpoints.items()},
    }


# ----------------------------------------------------------------------------
# generate

CheckpointArg = Annotated[
    Optional[Path],
    typer.Argument(
        parser=parse_path,
        help="Checkpoint file, or a run folder for its latest.ckpt. "
        "Default: latest.ckpt of the most recent run.",
        show_default=False,
    ),
]


@app.command()
@reports_errors
def generate(
    checkpoint: CheckpointArg = None,
    seed: Annotated[
        Optional[str],
        typer.Option(
            help="Text that primes the model; it is printed before the generated text. "
            "Default: the run's sample seed.",
            show_default=False,
        ),
    ] = None,
    length: Annotated[
        int,
        typer.Option(
            min=1,
            help="Characters to generate per sample. No maximum: text is "
            "generated and written in chunks.",
        ),
    ] = 500,
    temperature: Annotated[
        float,
        _float_option(
            "Softmax temperature; lower is more conservative, 0 always takes the "
            "most likely character.",
            low=0.0,
        ),
    ] = 0.8,
    top_k: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_TOP_K,
            help="Sample only from the k most likely characters; 0 disables.",
        ),
    ] = 0,
    top_p: Annotated[
        float,
        _float_option(
            "Sample from the smallest set of characters whose probability reaches p; "
            "1 disables.",
            low=0.0,
            high=1.0,
            low_open=True,
        ),
    ] = 1.0,
    rng_seed: Annotated[
        Optional[int],
        typer.Option(
            min=0,
            max=MAX_SEED,
            help="Seed for reproducible samples. Default: random.",
            show_default=False,
        ),
    ] = None,
    num_samples: Annotated[
        int,
        typer.Option(
            min=1, help="Independent samples, separated by a '---' line. No maximum."
        ),
    ] = 1,
    drop_unknown: Annotated[
        bool,
        typer.Option(
            "--drop-unknown",
            metavar=FLAG,
            help="Drop seed characters the model does not know instead of failing.",
        ),
    ] = False,
    threads: Annotated[
        int,
        typer.Option(
            min=0,
            max=MAX_THREADS,
            help="Kernel threads for sampling. 0 uses every core, and drops to one "
            "core while that generates faster; N > 0 fixes the count. The text is "
            "the same for any count.",
        ),
    ] = 0,
    run_dir: RunDir = None,
    verbose: Verbose = 0,
) -> None:
    """Generate text from a trained model, streaming it to stdout."""
    from . import state
    from .model import Sampler
    from .threads import make_tuner

    setup_logging(verbose)
    path = paths.chosen_checkpoint(checkpoint, run_dir)
    _set_threads(threads)
    model, run = state.open_model(path)
    prompt = _prompt_text(seed, run, drop_unknown)
    if rng_seed is None:
        rng_seed = secrets.randbits(63)
    logger.info("checkpoint %s, rng seed %d", path, rng_seed)
    tuner = make_tuner(threads)
    with model, Sampler(model, rng_seed) as sampler:
        for index in range(num_samples):
            if index:
                write_stdout("---\n")
            _stream_sample(
                sampler, tuner, run.vocab, prompt, length, (temperature, top_k, top_p)
            )


def _prompt_text(seed: str | None, run: RunState, drop_unknown: bool) -> str:
    """Return the priming text, checked against the vocabulary."""
    text = run.training.sample_seed if seed is None else seed
    unknown = unknown_characters(text, run.vocab)
    if unknown and not drop_unknown:
        raise UserError(
            f"the seed contains characters that are not in the model's vocabulary: "
            f"{format_characters(unknown)}",
            hint="pass --drop-unknown to leave them out, or use a seed written with the "
            "characters of the training text",
        )
    if unknown:
        text = "".join(char for char in text if char not in set(unknown))
        print_warning(
            f"dropped seed characters not in the vocabulary: {format_characters(unknown)}"
        )
    if not text:
        if "\n" not in run.vocab:
            raise UserError(
                "the seed is empty and the model's vocabulary has no newline to start from",
                hint="pass a --seed written with characters of the training text",
            )
        text = "\n"
    return text


def _stream_sample(
    sampler, tuner, vocab: list[str], prompt: str, length: int, options
) -> None:
    """Write prompt plus `length` generated characters to stdout as they come.

    The prompt is fed and the text generated in chunks, each timed by
    `tuner`. Chunking does not change the text: feeding in parts leaves the
    same state, and generating in parts draws the same random numbers.
    """
    from .data import decode, encode

    temperature, top_k, top_p = options
    sampler.reset()
    tokens = encode(prompt, vocab)
    for start in range(0, len(tokens), FEED_CHUNK):
        chunk = tokens[start : start + FEED_CHUNK]
        tuner.timed(len(chunk), functools.partial(sampler.feed, chunk))
    write_stdout(prompt)
    remaining = length
    while remaining > 0:
        count = min(GENERATE_CHUNK, remaining)
        draw = functools.partial(sampler.generate, count, temperature, top_k, top_p)
        write_stdout(decode(tuner.timed(count, draw), vocab))
        remaining -= count
    write_stdout("\n")


# ----------------------------------------------------------------------------
# resume


# no range: any value is rejected, with the checkpoint's value in the message
FixedInt = Annotated[
    Optional[int],
    typer.Option(help="Rejected: fixed by the checkpoint.", show_default=False),
]


@app.command()
@reports_errors
def resume(
    checkpoint: CheckpointArg = None,
    corpus: Annotated[
        Optional[Path],
        typer.Option(
            parser=parse_path,
            metavar="<path>",
            help="Corpus file, when it moved since training. Default: the recorded path.",
            show_default=False,
        ),
    ] = None,
    allow_new_corpus: Annotated[
        bool,
        typer.Option(
            "--allow-new-corpus",
            metavar=FLAG,
            help="Continue on a corpus whose size or SHA-256 changed.",
        ),
    ] = False,
    epochs: Annotated[
        Optional[int],
        typer.Option(
            min=1, max=MAX_EPOCHS, help="New total epoch limit.", show_default=False
        ),
    ] = None,
    max_steps: MaxSteps = None,
    lr: Annotated[
        Optional[float],
        _float_option(
            "New initial learning rate (the schedule applies on top).",
            low=0.0,
            low_open=True,
            show_default=False,
        ),
    ] = None,
    hidden_size: FixedInt = None,
    layers: FixedInt = None,
    batch_size: FixedInt = None,
    seq_len: FixedInt = None,
    threads: Annotated[
        Optional[int],
        typer.Option(
            min=0,
            max=MAX_THREADS,
            help="Kernel threads, as for train. Default: the value the run last used.",
            show_default=False,
        ),
    ] = None,
    discard_newer: Annotated[
        bool,
        typer.Option(
            "--discard-newer",
            metavar=FLAG,
            help="Resume from a checkpoint older than the run's latest.ckpt, deleting "
            "the later epoch checkpoints, best.ckpt if later, and their metrics.",
        ),
    ] = False,
    run_dir: RunDir = None,
    json_summary: JsonSummary = False,
    verbose: Verbose = 0,
) -> None:
    """Continue a run exactly where its checkpoint stopped.

    Training goes on in the checkpoint's folder, which must be the run's own
    folder or a new folder that the checkpoint was copied into.
    """
    from . import state
    from .ownership import check_resume_folder
    from .resuming import (
        SAVE_ELSEWHERE,
        apply_limits,
        discard_newer_files,
        has_newer_checkpoint,
        reject_fixed_options,
        restore_engine,
        resume_corpus,
    )

    setup_logging(verbose)
    fixed = {"hidden_size": hidden_size, "layers": layers}
    fixed |= {"batch_size": batch_size, "seq_len": seq_len}
    path = paths.chosen_checkpoint(checkpoint, run_dir)
    folder = path.resolve().parent
    # locked before reading, so no other process saves a later checkpoint meanwhile
    with paths.locked_run_folder(folder), save_elsewhere_hint(SAVE_ELSEWHERE):
        tensors, run = state.load(path)
        check_resume_folder(folder, path, run)
        reject_fixed_options(fixed, run)
        text = resume_corpus(run, corpus, allow_new_corpus)
        apply_limits(run, epochs, max_steps, lr)
        paths.check_writable(folder)
        newer = has_newer_checkpoint(folder, path, run, discard_newer)
        if threads is None:
            threads = _recorded_threads(folder)
        _set_threads(threads)
        model, trainer = restore_engine(path, tensors, run)
        if newer:
            discard_newer_files(folder, path, run)
        _write_run_info(folder, "resume", run, threads)
        _run_training(
            folder, model, trainer, run, text, json_summary, threads, resumed_from=path
        )


def _recorded_threads(folder: Path) -> int:
    """Return the --threads value of the run's last session in run.json, else 0."""
    target = folder / paths.RUN_INFO
    try:
        value = json.loads(target.read_text(encoding="utf-8"))["sessions"][-1][
            "threads"
        ]
    except (OSError, ValueError, LookupError, TypeError):
        return 0
    if type(value) is not int or not 0 <= value <= MAX_THREADS:
        return 0
    print_line(f"Using --threads {value}, recorded in {target}")
    return value


report.register(app, wrap_command=reports_errors)


def main() -> None:
    """Run the charlstm command line (the console script's entry point).

    Failed writes to stdout that escape the commands (help, --version) are
    reported here, and so are those of the final flush at exit.
    """
    global _command_started
    _command_started = False
    guard_stdout()
    code: int | str | None = 0
    try:
        app(prog_name="charlstm")
    except SystemExit as done:
        code = done.code
        if code == 1 and stdout_pipe_closed():
            # Click and Rich end help and other output to a closed pipe with exit 1
            code = _closed_stdout()
        if code == 130 and not _command_started:
            # Typer turns Ctrl-C while it parses the options into a silent exit 130
            print_line("Interrupted.", style="yellow")
    except StdoutError as exc:
        code = _failed_stdout(exc)
    except KeyboardInterrupt:
        # Ctrl-C before a command's own handler runs, such as while parsing options
        print_line("Interrupted.", style="yellow")
        code = 130
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = _closed_stdout()
    except StdoutError as exc:
        code = _failed_stdout(exc)
    sys.exit(code)
