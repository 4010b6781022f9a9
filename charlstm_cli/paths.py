"""Run storage: the data home, run folders and their default checkpoints.

Layout: ``<home>/runs/<name>/`` contains ``latest.ckpt``, ``best.ckpt``,
``epoch-NNNN.ckpt``, ``metrics.jsonl`` and ``run.json``. The home is the
``--run-dir`` option, else ``$CHARLSTM_HOME``, else the platform's user data
folder (``platformdirs.user_data_path("charlstm")``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from .errors import UserError, file_write_error, save_elsewhere
from .output import logger, print_line

HOME_ENV = "CHARLSTM_HOME"
LATEST = "latest.ckpt"
BEST = "best.ckpt"
METRICS = "metrics.jsonl"
RUN_INFO = "run.json"

# Files that training writes, so their newest modification time dates a run's
# latest training activity. The folder's own time is left out, because other
# commands add files to it (plot writes loss.png).
_ACTIVITY_FILES = (LATEST, METRICS, RUN_INFO)
_VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def data_home(override: Path | None = None) -> Path:
    """Return the charlstm home: `override`, else $CHARLSTM_HOME, else the user data dir.

    Raises UserError when the chosen home or the runs/ entry inside it exists
    but is not a folder.
    """
    if override is not None:
        home, source = Path(override).expanduser().resolve(), "--run-dir"
    elif os.environ.get(HOME_ENV):
        home, source = Path(os.environ[HOME_ENV]).expanduser().resolve(), HOME_ENV
    else:
        home, source = platformdirs.user_data_path("charlstm"), "the user data folder"
    if home.exists() and not home.is_dir():
        raise UserError(
            f"{source} {home} is a file, not a folder",
            hint="pass the folder that holds (or will hold) the runs/ folder",
        )
    _check_runs_folder(home)
    return home


def runs_folder(home: Path) -> Path:
    return home / "runs"


def _check_runs_folder(home: Path) -> None:
    """Raise UserError when the home's runs/ entry exists but is not a folder.

    Without the check, runs, generate, resume, inspect and plot would report
    that there are no runs, and train would fail to create its run folder.
    """
    folder = runs_folder(home)
    if folder.exists() and not folder.is_dir():
        raise UserError(
            f"{folder} is a file, not a folder",
            hint="rename or delete that file, because runs are kept in a folder of "
            "that name, or choose another home with --run-dir or CHARLSTM_HOME",
        )


def _last_activity(run: Path) -> float:
    """Return the newest modification time of the run's training files.

    A folder without any of them (training failed before writing run.json)
    falls back to the folder's own time.
    """
    times = []
    for name in _ACTIVITY_FILES:
        try:
            times.append((run / name).stat().st_mtime)
        except OSError:
            pass
    return max(times) if times else run.stat().st_mtime


def list_runs(home: Path) -> list[Path]:
    """List run folders under `home`, most recently active first.

    A run's activity time is the newest modification time of its
    latest.ckpt, metrics.jsonl and run.json, so a resumed run counts as new
    and a plot written into an old run does not.
    """
    folder = runs_folder(home)
    if not folder.is_dir():
        return []
    runs = [entry for entry in folder.iterdir() if entry.is_dir()]
    runs.sort(key=lambda run: (_last_activity(run), run.name), reverse=True)
    return runs


def latest_run(home: Path) -> Path | None:
    runs = list_runs(home)
    return runs[0] if runs else None


def default_checkpoint(home: Path) -> Path:
    """Return latest.ckpt of the most recently active run.

    Raises UserError when there is no run, or when the newest run has not
    saved a checkpoint yet. An older run is never used in its place, because
    resuming or sampling a run other than the newest one must be requested
    by passing its path.
    """
    runs = list_runs(home)
    if not runs:
        raise UserError(
            f"no training runs found in {runs_folder(home)}",
            hint="train a model with 'charlstm train', or pass a checkpoint path "
            "(use --run-dir or CHARLSTM_HOME if your runs are elsewhere)",
        )
    newest = runs[0]
    latest = _latest_checkpoint(newest)
    if latest is not None:
        return latest
    older = next((run / LATEST for run in runs if (run / LATEST).is_file()), None)
    hint = "training saves latest.ckpt at the end of each epoch and when it stops."
    if older is not None:
        hint += f" To use an older run, pass its checkpoint, such as {older}"
    raise UserError(f"the newest run {newest} has no checkpoint yet", hint=hint)


def chosen_checkpoint(checkpoint: Path | None, run_dir: Path | None) -> Path:
    """Return `checkpoint`, else the newest run's latest.ckpt, named on stderr.

    A run folder given as `checkpoint` means its latest.ckpt. `run_dir` is
    the --run-dir option that data_home reads.
    """
    if checkpoint is not None:
        path = checkpoint_for(checkpoint)
        if path != checkpoint:
            print_line(f"Using {path}")
        return path
    path = default_checkpoint(data_home(run_dir))
    print_line(f"Using {path} (newest run)")
    return path


# Maximum run name length: a folder name may have 255 bytes, and temporary files
# inside the folder add their own prefixes and suffixes to names.
MAX_RUN_NAME = 200


def check_run_name(name: str) -> None:
    """Raise UserError (a usage error, exit 2) unless `name` is a valid folder name."""
    too_long = len(name) > MAX_RUN_NAME
    if not _VALID_NAME.match(name) or name in (".", "..") or too_long:
        raise UserError(
            f"invalid run name {name!r}",
            hint=f"use up to {MAX_RUN_NAME} letters, digits, '.', '_' and '-', "
            "starting with a letter or digit",
            exit_code=2,
        )


def new_run_name(home: Path) -> str:
    """Return an unused timestamp name such as 20240131-142501 (or ...-2)."""
    base = time.strftime("%Y%m%d-%H%M%S")
    folder = runs_folder(home)
    name, suffix = base, 2
    while (folder / name).exists():
        name = f"{base}-{suffix}"
        suffix += 1
    return name


def create_run_folder(home: Path, name: str | None) -> Path:
    """Create and return a new, empty run folder under `home`.

    Raises UserError when `name` is invalid or already taken, or when the
    folder cannot be created.
    """
    if name is None:
        # Another train started in the same second may take the name between
        # the check and mkdir, so the loop then tries the next free name.
        for _ in range(100):
            run = runs_folder(home) / new_run_name(home)
            if _make_run_folder(run):
                return run
        raise UserError(
            f"no free run name left in {runs_folder(home)}",
            hint="pass a name with --name",
        )
    check_run_name(name)
    run = runs_folder(home) / name
    if not _make_run_folder(run):
        raise UserError(
            f"run folder {run} already exists",
            hint=f"choose another --name, or continue it with 'charlstm resume {run / LATEST}'",
        )
    return run


def _make_run_folder(run: Path) -> bool:
    """Create `run`, and return False if it exists already."""
    try:
        run.mkdir(parents=True)
    except FileExistsError:
        return False
    except OSError as exc:
        raise UserError(
            f"cannot create run folder {run}: {exc.strerror or exc}",
            hint="choose a writable location with --run-dir or CHARLSTM_HOME",
        ) from None
    return True


def check_writable(folder: Path) -> None:
    """Raise UserError unless files can be created in `folder`."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(
            f"run folder {folder} is not writable",
            hint=f"fix its permissions, or {save_elsewhere()}",
        )


@contextmanager
def locked_run_folder(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` so one process at a time trains in it.

    The lock is flock(2) on the folder itself, so no lock file is left behind,
    and the kernel releases it when the process ends, even on SIGKILL. Raises
    UserError when another process holds the lock. A folder that cannot be
    opened is not locked.
    """
    if fcntl is None:
        # NOTE: without fcntl (Windows) two processes can train in one folder.
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        # nothing to lock, and the caller's next access to the folder reports why
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"run folder {folder} is in use by another charlstm process",
                hint="wait until that training run stops, or stop it with Ctrl-C",
            ) from None
        yield
    finally:
        os.close(fd)


def replace_file(target: Path, write: Callable[[Path], object]) -> None:
    """Replace `target` by a file that `write` fills at the temporary path it gets.

    The temporary file is renamed over `target` only once it is complete, so a
    failed write raises UserError, removes the temporary file and leaves
    `target` as it was.
    """
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        write(temp)
        os.replace(temp, target)
    except OSError as exc:
        remove_temporary_file(temp)
        raise file_write_error(target, exc) from None


def remove_temporary_file(temp: Path) -> None:
    """Delete the temporary file `temp` if it exists, and only log a failure.

    Callers run it while they handle a write error, which must stay the
    reported error. On a read-only file system, unlinking even a missing file
    fails with EROFS, not ENOENT.
    """
    try:
        temp.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.debug(
            "failed to delete temporary file %s: %s", temp, exc.strerror or exc
        )


def checkpoint_for(path: Path) -> Path:
    """Return `path`, or the latest.ckpt of `path` when it is a run folder.

    Raises UserError for a folder that is not a run folder, a run folder
    that has no latest.ckpt yet, or a latest.ckpt that is not a file.
    """
    if not path.is_dir():
        return path
    latest = _latest_checkpoint(path)
    if latest is not None:
        return latest
    if not (path / RUN_INFO).is_file():
        raise UserError(
            f"{path} is a folder, not a checkpoint file or a run folder",
            hint="pass a .ckpt file, or a run folder listed by 'charlstm runs'",
        )
    raise UserError(
        f"run folder {path} has no {LATEST} yet",
        hint="a run saves it at the end of its first epoch, when --max-steps "
        "stops it, or on Ctrl-C; pass another .ckpt file, or wait",
    )


def _latest_checkpoint(run: Path) -> Path | None:
    """Return the latest.ckpt of folder `run`, or None when it has none.

    Raises UserError when an entry of that name exists but is not a file,
    such as a folder, so that it is not mistaken for a checkpoint not saved yet.
    """
    latest = run / LATEST
    if latest.is_file():
        return latest
    if not latest.exists():
        return None
    raise UserError(
        f"{latest} is not a file",
        hint=f"move it out of the folder {run}, or pass another .ckpt file",
    )
