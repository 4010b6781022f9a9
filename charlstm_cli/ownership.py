"""Check that resume writes only into the run folder of the checkpoint it continues.

Resume writes latest.ckpt, metrics.jsonl and run.json into the checkpoint's
folder, and may replace best.ckpt and delete epoch-NNNN.ckpt files there. The
folder qualifies when its run.json records the checkpoint's run, or when it
has neither run.json nor metrics.jsonl, such as a new folder that a
checkpoint was copied into. Either way, everything there that resume may
replace or delete must be a readable checkpoint of the same run.

Runs are identified by the run_id that train stores in run.json and in every
checkpoint, so a copy of a run folder or of a checkpoint keeps its run. Runs
started before charlstm stored run ids have none on either side, and their
files are matched by model settings instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from . import paths
from .checkpoint import (
    EPOCH_CHECKPOINT_PATTERN,
    CheckpointError,
    read_checkpoint_summary,
)
from .errors import UserError
from .state import ModelSettings, RunState

_MODEL_FIELDS = [item.name for item in fields(ModelSettings)]


def check_resume_folder(folder: Path, checkpoint: Path, run: RunState) -> None:
    """Raise UserError unless resuming `checkpoint` may write into `folder`.

    `run` is the state loaded from `checkpoint`. The check only reads, so a
    rejected folder stays as it was.
    """
    reason = _folder_conflict(folder, checkpoint, run)
    if reason is not None:
        hint = f"copy {checkpoint} into a new, empty folder and resume the copy there"
        if "not a readable checkpoint" in reason:
            hint = (
                "move that file out of the folder (or delete it if it is a damaged "
                f"checkpoint of this run), or {hint}"
            )
        elif "is not a file" in reason:
            hint = f"move that entry out of the folder, or {hint}"
        raise UserError(
            f"cannot resume {checkpoint} in folder {folder}: {reason}", hint=hint
        )


def _folder_conflict(folder: Path, checkpoint: Path, run: RunState) -> str | None:
    """Return why resume must not write into `folder`, or None when it may."""
    info_path = folder / paths.RUN_INFO
    if info_path.exists():
        reason = _run_info_conflict(info_path, run)
        if reason is not None:
            return reason
        return _checkpoint_conflict(folder, checkpoint, run)
    if (folder / paths.METRICS).exists():
        return (
            f"the folder's {paths.METRICS} belongs to no run, because the folder "
            f"has no {paths.RUN_INFO}, and resuming would overwrite it"
        )
    return _checkpoint_conflict(folder, checkpoint, run)


def _run_info_conflict(info_path: Path, run: RunState) -> str | None:
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return (
            f"the folder's {paths.RUN_INFO} is unreadable, so it may belong to "
            "another run"
        )
    if not isinstance(info, dict):
        info = {}
    reason = _identity_conflict(info, run)
    if reason is None:
        return None
    return f"the folder's {paths.RUN_INFO} {reason}, and resuming would change it"


def _checkpoint_conflict(
    folder: Path, checkpoint: Path, run: RunState
) -> str | None:
    """Return why resume must not replace or delete a checkpoint in `folder`."""
    for target in _replaceable_checkpoints(folder):
        if _same_file(target, checkpoint):
            continue
        if target.name == paths.LATEST:
            action = "resuming would replace it"
        else:
            action = "resuming could replace or delete it"
        if not target.is_file():
            return f"the folder's {target.name} is not a file, and {action}"
        try:
            metadata = read_checkpoint_summary(target, verify=False)["metadata"]
        except CheckpointError:
            # Saves are atomic, so even in the run's own folder an unreadable
            # file of that name may be the user's. It is left alone.
            return (
                f"the folder's {target.name} is not a readable checkpoint, so it "
                f"may not be this run's, and {action}"
            )
        reason = _identity_conflict(metadata, run)
        if reason is not None:
            return f"the folder's {target.name} {reason}, and {action}"
    return None


def _identity_conflict(record: dict[str, Any], run: RunState) -> str | None:
    """Return why `record` (run.json or checkpoint metadata) is not from `run`'s run.

    Train gives a run its run_id when it starts and resume never adds one, so
    a run_id on one side only means two different runs.
    """
    run_id = record.get("run_id")
    model = record.get("model")
    if run_id is None and not isinstance(model, dict):
        return "is not from a charlstm run"
    if run_id != run.run_id:
        return "belongs to another run"
    if run.run_id is not None:
        return None
    # NOTE: runs without run ids are distinguished only by their model settings,
    # so two such runs of the same size and --rng-seed count as one.
    recorded = {name: model.get(name) for name in _MODEL_FIELDS}
    if recorded != asdict(run.model):
        return "belongs to another run (its model settings differ)"
    return None


def _replaceable_checkpoints(folder: Path) -> list[Path]:
    """List what is named latest.ckpt, best.ckpt or epoch-NNNN.ckpt in `folder`."""
    found = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        is_epoch = EPOCH_CHECKPOINT_PATTERN.match(name) is not None
        if name in (paths.LATEST, paths.BEST) or is_epoch:
            found.append(entry)
    return found


def _same_file(left: Path, right: Path) -> bool:
    try:
        return left.samefile(right)
    except OSError:
        return False
