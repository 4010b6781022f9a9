"""Resume's steps before training: checks, rewinding a run folder, restoring the engine.

The resume command itself, with its options, is in cli.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import paths
from .data import (
    STDIN_PATH,
    bundled_corpus_path,
    format_characters,
    read_corpus,
    unknown_characters,
)
from .errors import UserError
from .output import print_line, print_warning

if TYPE_CHECKING:
    from .model import Model, Trainer
    from .state import RunState

# resume's options that the checkpoint fixes, with the setting each names
ARCHITECTURE_OPTIONS = {
    "hidden_size": ("--hidden-size", "n_hidden"),
    "layers": ("--layers", "n_layers"),
    "batch_size": ("--batch-size", "batch_size"),
    "seq_len": ("--seq-len", "seq_len"),
}

# resume always writes into its checkpoint's folder, so --run-dir cannot move it
SAVE_ELSEWHERE = (
    "copy the checkpoint into a new folder on another disk and resume the copy"
)


def _checkpoint_step(path: Path) -> int | None:
    """Return the training step stored in checkpoint `path`, or None if unreadable."""
    from .checkpoint import CheckpointError, read_checkpoint_summary

    try:
        metadata = read_checkpoint_summary(path, verify=False)["metadata"]
        step = metadata["progress"]["step"]
    except (CheckpointError, LookupError, TypeError):
        return None
    return step if type(step) is int else None


def has_newer_checkpoint(
    folder: Path, path: Path, run: RunState, discard: bool
) -> bool:
    """Return whether the run folder's latest.ckpt is later than checkpoint `path`.

    Resuming replaces latest.ckpt and metrics.jsonl with the state of `path`,
    so the later steps would be lost while best.ckpt and later epoch
    checkpoints kept them. Unless `discard` allows deleting those later files
    (with discard_newer_files), a later latest.ckpt raises UserError.
    """
    latest = folder / paths.LATEST
    if not latest.is_file() or latest.samefile(path):
        return False
    step = run.progress.step
    latest_step = _checkpoint_step(latest)
    if latest_step is None:
        print_warning(f"{latest} is unreadable; resuming replaces it")
        return False
    if latest_step <= step:
        return False
    if not discard:
        raise UserError(
            f"checkpoint {path} is at step {step}, but the run's {latest} is at "
            f"step {latest_step}; resuming from it would discard steps "
            f"{step + 1} to {latest_step}",
            hint=f"resume from {latest}, or pass --discard-newer to delete the "
            f"checkpoints and metrics after step {step}",
        )
    return True


def discard_newer_files(folder: Path, path: Path, run: RunState) -> None:
    """Make `path` the run's latest.ckpt and delete checkpoints saved after it.

    All or nothing: the files to delete or replace are first renamed to hidden
    names, and if a rename or a write fails, they are renamed back and the
    folder is as it was. Only then are the hidden copies deleted. metrics.jsonl
    and run.json, which resume rewrites afterwards, are renamed and renamed
    back first, to check that they can be replaced.
    """
    from .checkpoint import EPOCH_CHECKPOINT_PATTERN, epoch_checkpoint_path

    progress = run.progress
    to_delete = [
        entry
        for entry in sorted(folder.iterdir())
        if (match := EPOCH_CHECKPOINT_PATTERN.match(entry.name))
        and int(match.group(1)) > progress.epoch
    ]
    best = folder / paths.BEST
    best_step = _checkpoint_step(best) if best.is_file() else None
    best_source = None
    if best_step is not None and best_step > progress.step:
        to_delete.append(best)
        # best.ckpt is the same state as the epoch checkpoint of the best epoch
        if run.best_epoch is not None:
            candidate = epoch_checkpoint_path(folder, run.best_epoch)
            if candidate.is_file() and candidate not in to_delete:
                best_source = candidate
    # resume rewrites these next, so one that cannot be replaced must stop it
    # before anything is deleted
    _check_replaceable([folder / paths.METRICS, folder / paths.RUN_INFO])
    staged = _stage_for_deletion(to_delete)
    try:
        if best_source is not None:
            paths.replace_file(best, lambda temp: shutil.copyfile(best_source, temp))
        paths.replace_file(
            folder / paths.LATEST, lambda temp: shutil.copyfile(path, temp)
        )
    except BaseException:
        if best_source is not None:
            best.unlink(missing_ok=True)
        _unstage(staged)
        raise
    print_line(f"Replaced {folder / paths.LATEST} with {path}", style="yellow")
    if best_source is not None:
        print_line(f"Replaced {best} with {best_source}", style="yellow")
    for original, hidden in staged:
        if original != best or best_source is None:
            print_line(f"Deleted {original}", style="yellow")
        try:
            hidden.unlink()
        except OSError as exc:
            print_warning(f"cannot delete {hidden}: {exc.strerror or exc}")


def _stage_for_deletion(targets: list[Path]) -> list[tuple[Path, Path]]:
    """Rename each target to a hidden name; return (original, hidden) pairs.

    If one cannot be renamed, the others are renamed back and UserError is
    raised, so that no file was touched.
    """
    staged: list[tuple[Path, Path]] = []
    for target in targets:
        hidden = target.with_name(f".{target.name}.discard-{os.getpid()}")
        try:
            target.rename(hidden)
        except OSError as exc:
            _unstage(staged)
            # the folder passed check_writable, so the file itself is the problem
            raise UserError(
                f"cannot delete or replace {target}: {exc.strerror or exc}",
                hint=f"nothing in {target.parent} was changed; check why the file "
                "cannot be renamed ('lsattr' shows an 'i' on an immutable file)",
            ) from None
        staged.append((target, hidden))
    return staged


def _check_replaceable(targets: list[Path]) -> None:
    """Raise UserError, as _stage_for_deletion does, if an existing target cannot be renamed.

    Each target is renamed to its hidden name and straight back.
    """
    _unstage(_stage_for_deletion([target for target in targets if target.exists()]))


def _unstage(staged: list[tuple[Path, Path]]) -> None:
    """Rename staged files back to their original names, last first."""
    for original, hidden in reversed(staged):
        hidden.rename(original)


def reject_fixed_options(given: dict[str, int | None], run: RunState) -> None:
    for key, value in given.items():
        if value is None:
            continue
        option, field_name = ARCHITECTURE_OPTIONS[key]
        stored = getattr(run.model, field_name, None)
        if stored is None:
            stored = getattr(run.training, field_name)
        if value == stored:
            continue
        raise UserError(
            f"{option} cannot change when resuming: the checkpoint's model and optimizer "
            f"state were built for {option} {stored}",
            hint=f"drop {option}, or start a new run with 'charlstm train {option} {value}'",
            exit_code=2,
        )


def resume_corpus(run: RunState, override: Path | None, allow_new: bool) -> str:
    """Read the run's corpus and check it against the stored fingerprint."""
    from .data import check_corpus_size

    record = run.corpus
    path = override or _recorded_corpus_path(record)
    encoding = record.get("encoding", "utf-8")
    try:
        corpus = read_corpus(path, encoding)
    except UserError as exc:
        if "--encoding" not in (exc.hint or ""):
            raise
        # resume has no --encoding: the run decodes its corpus as it did when training
        expected_file = "the file it trained on"
        if allow_new:
            expected_file = "a text file in that encoding"
        raise UserError(
            exc.message,
            hint=f"this run decodes its corpus as {encoding}; "
            f"pass {expected_file} with --corpus",
        ) from None
    changes = []
    if corpus.size_bytes != record["size_bytes"]:
        changes.append(f"size {record['size_bytes']:,} -> {corpus.size_bytes:,} bytes")
    if corpus.sha256 != record["sha256"]:
        changes.append("SHA-256 differs")
    if changes and not allow_new:
        raise UserError(
            f"corpus {corpus.path} differs from the one this run trained on "
            f"({'; '.join(changes)})",
            hint="pass the original file with --corpus, or --allow-new-corpus to "
            "continue on this text",
        )
    if changes:
        unknown = unknown_characters(corpus.text, run.vocab)
        if unknown:
            raise UserError(
                f"corpus {corpus.path} contains characters outside the model's "
                f"vocabulary: {format_characters(unknown)}",
                hint="remove them from the text, or train a new model on it",
            )
        print_warning(f"continuing on a changed corpus ({'; '.join(changes)})")
        _restart_epoch(run)
        run.corpus = corpus.fingerprint() | {
            "encoding": record.get("encoding", "utf-8")
        }
    elif str(corpus.path) != record["path"]:
        run.corpus = record | {"path": str(corpus.path)}
    settings = run.training
    check_corpus_size(
        corpus.n_chars,
        settings.batch_size,
        settings.seq_len,
        settings.val_fraction,
        str(corpus.path),
        hint="pass a longer text with --corpus and --allow-new-corpus, or start a "
        "new run with 'charlstm train' and a smaller --batch-size or --seq-len",
    )
    return corpus.text


def _recorded_corpus_path(record: dict[str, Any]) -> Path:
    """Return the recorded corpus path, or the bundled copy when that one moved.

    A run that read standard input ('-') reads it again.
    """
    recorded = Path(record["path"])
    if recorded.exists() or record["path"] == STDIN_PATH:
        return recorded
    bundled = bundled_corpus_path()
    if (
        bundled.name == record.get("name")
        and bundled.stat().st_size == record["size_bytes"]
    ):
        return bundled
    raise UserError(
        f"corpus file not found: {recorded} (recorded in the checkpoint)",
        hint="pass its new location with --corpus",
    )


def _restart_epoch(run: RunState) -> None:
    """Start the current epoch over, because stream offsets index the old text."""
    progress = run.progress
    progress.epoch_step = 0
    progress.epoch_loss_sum, progress.epoch_loss_steps = 0.0, 0
    progress.stream_positions = []


def apply_limits(
    run: RunState, epochs: int | None, max_steps: int | None, lr: float | None
) -> None:
    settings, progress = run.training, run.progress
    changes = []
    for option, attribute, value in (
        ("--epochs", "epochs", epochs),
        ("--max-steps", "max_steps", max_steps),
        ("--lr", "lr", lr),
    ):
        old = getattr(settings, attribute)
        if value is not None and value != old:
            shown = "no limit" if old is None else old
            changes.append(f"{option}: {shown} -> {value}")
            setattr(settings, attribute, value)
    if lr is not None:
        progress.lr = settings.lr_for_epoch(progress.epoch)
    _check_limits_ahead(settings, progress)
    for change in changes:
        print_line(change, style="yellow")
    progress.finished = False


def _check_limits_ahead(settings: Any, progress: Any) -> None:
    """Raise UserError naming each limit that leaves no step to train."""
    reached, fixes = [], []
    if progress.epoch >= settings.epochs:
        reached.append(f"has completed --epochs {settings.epochs}")
        fixes.append(f"--epochs above {progress.epoch}")
    if settings.max_steps is not None and progress.step >= settings.max_steps:
        reached.append(f"is at or past --max-steps {settings.max_steps}")
        fixes.append(f"--max-steps above {progress.step}")
    if reached:
        raise UserError(
            f"this run {' and '.join(reached)} "
            f"(epoch {progress.epoch}, step {progress.step})",
            hint=f"pass {' and '.join(fixes)} to train further",
        )


def restore_engine(path: Path, tensors, run: RunState) -> tuple[Model, Trainer]:
    from . import state
    from .train import build_trainer

    model = state.build_model(run.model)
    state.load_parameters(path, tensors, model)
    trainer = build_trainer(model, run.training)
    state.load_trainer_state(path, tensors, trainer, run.progress)
    if not run.progress.stream_positions:
        # a changed corpus: the carried state belongs to the old text
        trainer.reset_state()
    print_line(
        f"Resuming {path} at epoch {run.progress.epoch + 1}, step {run.progress.step}",
        style="bold",
    )
    return model, trainer
