"""Training state: settings, progress, and their mapping to checkpoint files.

A checkpoint contains these tensors (all float32, little-endian):
  model.<name>            every parameter tensor of the model's table
  optim.moment1.<name>    SGD velocity or Adam first moment, same shapes
  optim.moment2.<name>    Adam second moment, same shapes
  state.h, state.c        the carried training state, (L, B, H)
and these metadata keys: model, training, vocab, corpus, progress, history,
best_val_loss, best_epoch, saved_at. Together they let `resume` continue a
run bit for bit where it stopped.
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError, Tensor, load_checkpoint, save_checkpoint
from .model import Model, Trainer

_LITTLE_ENDIAN = sys.byteorder == "little"


@dataclass
class ModelSettings:
    """Architecture and initialisation, fixed for the life of a run."""

    n_vocab: int
    n_hidden: int
    n_layers: int
    forget_bias: float
    init_seed: int


@dataclass
class TrainSettings:
    """Optimizer and loop hyper-parameters. `resume` may change only the limits and lr."""

    batch_size: int
    seq_len: int
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    clip_norm: float
    clip_value: float
    dropout: float
    epochs: int
    max_steps: int | None
    lr_schedule: str
    lr_decay_every: int
    lr_decay_factor: float
    val_fraction: float
    rng_seed: int
    log_every: int
    keep_epochs: int
    sample_seed: str
    sample_length: int

    def lr_for_epoch(self, epoch: int) -> float:
        """Return the scheduled learning rate for 0-based `epoch`."""
        if self.lr_schedule == "step":
            return self.lr * self.lr_decay_factor ** (epoch // self.lr_decay_every)
        return self.lr

    def total_steps(self, steps_per_epoch: int) -> int:
        total = self.epochs * steps_per_epoch
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        return total


@dataclass
class Progress:
    """The loop's position, with the running sums that its next metrics records need."""

    epoch: int = 0  # 0-based epoch in progress
    step: int = 0  # updates applied over the whole run
    epoch_step: int = 0  # batches done in the current epoch
    chars_seen: int = 0
    stream_positions: list[int] = field(default_factory=list)
    lr: float = 0.0  # learning rate of the next update
    optimizer_step: int = 0
    train_rng: list[int] = field(default_factory=list)
    finished: bool = False
    elapsed: float = 0.0  # training seconds summed over all sessions
    first_loss: float | None = None  # loss of step 1, for the divergence check
    epoch_loss_sum: float = 0.0
    epoch_loss_steps: int = 0
    log_loss_sum: float = 0.0  # since the last step record
    log_steps: int = 0


@dataclass
class RunState:
    """Everything a checkpoint stores besides the tensors."""

    model: ModelSettings
    training: TrainSettings
    vocab: list[str]
    corpus: dict[str, Any]
    progress: Progress
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float | None = None
    best_epoch: int | None = None

    def to_metadata(self) -> dict[str, Any]:
        return {
            "model": asdict(self.model),
            "training": asdict(self.training),
            "vocab": self.vocab,
            "corpus": self.corpus,
            "progress": asdict(self.progress),
            "history": self.history,
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


# ----------------------------------------------------------------------------
# metadata to settings


def _section(path: Path, metadata: dict[str, Any], key: str, kind: type) -> Any:
    value = metadata.get(key)
    if not isinstance(value, kind):
        raise CheckpointError(
            path,
            f"checkpoint {path} has no valid {key!r} metadata, so it was not "
            "written by 'charlstm train'",
            "Pass a checkpoint from a charlstm run folder.",
        )
    return value


def _build(path: Path, cls: type, values: dict[str, Any], key: str) -> Any:
    names = {f.name for f in fields(cls)}
    missing = sorted(names - values.keys())
    if missing:
        raise CheckpointError(
            path,
            f"checkpoint {path} lacks {key} settings {', '.join(missing)}",
            "It may come from an older charlstm; start a new run with 'charlstm train'.",
        )
    return cls(**{name: values[name] for name in names})


def read_run_state(path: Path, metadata: dict[str, Any]) -> RunState:
    """Parse checkpoint metadata; raise CheckpointError when a key is missing."""
    model = _build(
        path, ModelSettings, _section(path, metadata, "model", dict), "model"
    )
    training = _build(
        path, TrainSettings, _section(path, metadata, "training", dict), "training"
    )
    vocab = _section(path, metadata, "vocab", list)
    if len(vocab) != model.n_vocab or not all(
        isinstance(char, str) and len(char) == 1 for char in vocab
    ):
        raise CheckpointError(
            path,
            f"checkpoint {path} is damaged: its vocabulary does not list "
            f"{model.n_vocab} single characters",
        )
    progress = _build(
        path, Progress, _section(path, metadata, "progress", dict), "progress"
    )
    return RunState(
        model=model,
        training=training,
        vocab=vocab,
        corpus=_section(path, metadata, "corpus", dict),
        progress=progress,
        history=list(metadata.get("history") or []),
        best_val_loss=metadata.get("best_val_loss"),
        best_epoch=metadata.get("best_epoch"),
    )


# ----------------------------------------------------------------------------
# tensors


def _float_tensor(view: memoryview, shape: tuple[int, ...]) -> Tensor:
    if _LITTLE_ENDIAN:
        return Tensor("F32", shape, view)
    swapped = array("f", view)
    swapped.byteswap()
    return Tensor("F32", shape, swapped.tobytes())


def _slices(model: Model, block: memoryview, prefix: str) -> dict[str, Tensor]:
    return {
        prefix + info.name: _float_tensor(
            block[info.offset : info.offset + info.n_elements], info.shape
        )
        for info in model.tensors
    }


def capture_tensors(model: Model, trainer: Trainer) -> dict[str, Tensor]:
    """Return views of the parameters, optimizer moments and carried state.

    The views share memory with the C buffers, so save them before the next step.
    """
    tensors = _slices(model, model.params(), "model.")
    tensors.update(_slices(model, trainer.buffer("moment1"), "optim.moment1."))
    tensors.update(_slices(model, trainer.buffer("moment2"), "optim.moment2."))
    state_shape = (model.n_layers, trainer.batch_size, model.n_hidden)
    tensors["state.h"] = _float_tensor(trainer.buffer("state_h"), state_shape)
    tensors["state.c"] = _float_tensor(trainer.buffer("state_c"), state_shape)
    return tensors


def _copy_into(
    path: Path,
    tensors: dict[str, Tensor],
    name: str,
    shape: tuple[int, ...],
    target: memoryview,
) -> None:
    """Copy float32 tensor `name` into `target`, checking its dtype and shape."""
    tensor = tensors.get(name)
    if tensor is None:
        raise CheckpointError(
            path,
            f"checkpoint {path} lacks tensor {name!r}",
            "It may be damaged or come from another program; use another checkpoint.",
        )
    if tensor.dtype != "F32" or tuple(tensor.shape) != tuple(shape):
        raise CheckpointError(
            path,
            f"checkpoint {path}: tensor {name!r} is {tensor.dtype} {list(tensor.shape)}, "
            f"but its model settings need F32 {list(shape)}",
            "The file is inconsistent; use another checkpoint from the run folder.",
        )
    values = memoryview(tensor.data).cast("B")
    if not _LITTLE_ENDIAN:
        swapped = array("f", values.tobytes())
        swapped.byteswap()
        values = memoryview(swapped).cast("B")
    target.cast("B")[:] = values


def load_parameters(path: Path, tensors: dict[str, Tensor], model: Model) -> None:
    block = model.params()
    for info in model.tensors:
        target = block[info.offset : info.offset + info.n_elements]
        _copy_into(path, tensors, "model." + info.name, info.shape, target)


def load_trainer_state(
    path: Path, tensors: dict[str, Tensor], trainer: Trainer, progress: Progress
) -> None:
    """Restore moments, carried state, step count, learning rate and RNG."""
    model = trainer.model
    for which in ("moment1", "moment2"):
        block = trainer.buffer(which)
        for info in model.tensors:
            target = block[info.offset : info.offset + info.n_elements]
            _copy_into(path, tensors, f"optim.{which}.{info.name}", info.shape, target)
    state_shape = (model.n_layers, trainer.batch_size, model.n_hidden)
    _copy_into(path, tensors, "state.h", state_shape, trainer.buffer("state_h"))
    _copy_into(path, tensors, "state.c", state_shape, trainer.buffer("state_c"))
    trainer.step_count = progress.optimizer_step
    trainer.lr = progress.lr
    if len(progress.train_rng) != 4:
        raise CheckpointError(
            path, f"checkpoint {path} has no valid training RNG state"
        )
    trainer.rng_state = progress.train_rng


# ----------------------------------------------------------------------------
# whole checkpoints


def save(path: Path, model: Model, trainer: Trainer, run: RunState) -> None:
    """Record the trainer's counters in run.progress and write a checkpoint atomically."""
    run.progress.optimizer_step = trainer.step_count
    run.progress.train_rng = trainer.rng_state
    run.progress.lr = trainer.lr
    save_checkpoint(path, capture_tensors(model, trainer), run.to_metadata())


def build_model(settings: ModelSettings) -> Model:
    return Model(
        settings.n_vocab,
        settings.n_hidden,
        settings.n_layers,
        seed=settings.init_seed,
        forget_bias=settings.forget_bias,
    )


def load(path: Path) -> tuple[dict[str, Tensor], RunState]:
    """Read a checkpoint and parse its metadata; raise CheckpointError on any fault."""
    tensors, metadata = load_checkpoint(path)
    return tensors, read_run_state(path, metadata)


def open_model(path: Path) -> tuple[Model, RunState]:
    """Return the model stored in checkpoint `path`, ready for sampling."""
    tensors, run = load(path)
    model = build_model(run.model)
    load_parameters(path, tensors, model)
    return model, run
