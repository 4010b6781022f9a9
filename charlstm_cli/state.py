"""Training state: settings, progress, and their mapping to checkpoint files.

A checkpoint contains these tensors (all float32, little-endian):
  model.<name>            every parameter tensor of the model's table
  optim.moment1.<name>    SGD velocity or Adam first moment, same shapes
  optim.moment2.<name>    Adam second moment, same shapes
  state.h, state.c        the carried training state, (L, B, H)
and these metadata keys: model, training, vocab, corpus, progress, history,
best_val_loss, best_epoch, run_id, saved_at. Together they let `resume`
continue a run bit for bit where it stopped.
"""

from __future__ import annotations

import math
import sys
import uuid
from array import array
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import CheckpointError, Tensor, load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    # the model module loads the native library, which reading metadata does not need
    from .model import Model, Trainer

_LITTLE_ENDIAN = sys.byteorder == "little"

# CHARLSTM_MAX_LAYERS of native/include/charlstm.h, the engine's limit
MAX_LAYERS = 8


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
    # Random id that train gives a run, stored in its run.json and checkpoints,
    # so resume can tell runs apart. Copies keep it. None for runs started
    # before charlstm stored run ids.
    run_id: str | None = None

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
            "run_id": self.run_id,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def new_run_id() -> str:
    """Return a random run id: 32 lowercase hex digits (a UUID4)."""
    return uuid.uuid4().hex


# ----------------------------------------------------------------------------
# metadata to settings


def _section(path: Path, metadata: dict[str, Any], key: str, kind: type) -> Any:
    value = metadata.get(key)
    if not isinstance(value, kind):
        raise CheckpointError(
            path,
            f"checkpoint {path} has no valid {key!r} metadata, so it was not "
            "written by 'charlstm train'",
            "pass a checkpoint from a charlstm run folder",
        )
    return value


def _build(path: Path, cls: type, values: dict[str, Any], key: str) -> Any:
    names = {f.name for f in fields(cls)}
    missing = sorted(names - values.keys())
    if missing:
        raise CheckpointError(
            path,
            f"checkpoint {path} lacks {key} settings {', '.join(missing)}",
            "it may come from an older charlstm; start a new run with 'charlstm train'",
        )
    return cls(**{name: values[name] for name in names})


_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1

# Integer fields that resume and generate rely on, with their (min, max).
_INT_FIELDS = {
    "model": {
        "n_vocab": (2, _INT32_MAX),
        "n_hidden": (1, _INT32_MAX),
        "n_layers": (1, MAX_LAYERS),
        "init_seed": (0, _UINT64_MAX),
    },
    "training": {
        "batch_size": (1, _INT32_MAX),
        "seq_len": (1, _INT32_MAX),
        "epochs": (1, _INT64_MAX),
        "lr_decay_every": (1, _INT64_MAX),
        "rng_seed": (0, _UINT64_MAX),
        "log_every": (1, _INT64_MAX),
        "keep_epochs": (0, _INT64_MAX),
        "sample_length": (0, _INT64_MAX),
    },
    "progress": {
        "epoch": (0, _INT64_MAX),
        "step": (0, _INT64_MAX),
        "epoch_step": (0, _INT64_MAX),
        "chars_seen": (0, _INT64_MAX),
        "optimizer_step": (0, _INT64_MAX),
        "epoch_loss_steps": (0, _INT64_MAX),
        "log_steps": (0, _INT64_MAX),
    },
}
# Float fields, each finite (None allowed where marked).
_FLOAT_FIELDS = {
    "model": {"forget_bias": False},
    "training": {
        "lr": False,
        "momentum": False,
        "weight_decay": False,
        "clip_norm": False,
        "clip_value": False,
        "dropout": False,
        "lr_decay_factor": False,
        "val_fraction": False,
    },
    "progress": {
        "lr": False,
        "elapsed": False,
        "first_loss": True,
        "epoch_loss_sum": False,
        "log_loss_sum": False,
    },
}


def _invalid(path: Path, field_name: str, value: Any, expected: str) -> CheckpointError:
    return CheckpointError(
        path,
        f"checkpoint {path} has an invalid {field_name}: {value!r} "
        f"(expected {expected})",
        "the file was edited or damaged; use another checkpoint from the run folder",
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fields(path: Path, section: str, values: dict[str, Any]) -> None:
    """Raise CheckpointError for a field of `section` with a wrong type or range."""
    for name, (low, high) in _INT_FIELDS[section].items():
        value = values[name]
        if not _is_int(value) or not low <= value <= high:
            expected = f"an integer from {low} to {high}"
            raise _invalid(path, f"{section}.{name}", value, expected)
    for name, optional in _FLOAT_FIELDS[section].items():
        value = values[name]
        if optional and value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _invalid(path, f"{section}.{name}", value, "a number")
        if not math.isfinite(value):
            raise _invalid(path, f"{section}.{name}", value, "a finite number")


def _check_training_extras(path: Path, training: TrainSettings) -> None:
    if training.max_steps is not None and not (
        _is_int(training.max_steps) and 1 <= training.max_steps <= _INT64_MAX
    ):
        expected = f"null or an integer from 1 to {_INT64_MAX}"
        raise _invalid(path, "training.max_steps", training.max_steps, expected)
    if training.optimizer not in ("adam", "sgd"):
        raise _invalid(
            path, "training.optimizer", training.optimizer, "'adam' or 'sgd'"
        )
    if training.lr_schedule not in ("none", "step"):
        expected = "'none' or 'step'"
        raise _invalid(path, "training.lr_schedule", training.lr_schedule, expected)
    if not isinstance(training.sample_seed, str) or not training.sample_seed:
        raise _invalid(path, "training.sample_seed", training.sample_seed, "a text")
    # the ranges the engine accepts, so a bad value is blamed on the file
    if not training.lr > 0:
        raise _invalid(path, "training.lr", training.lr, "a number > 0")
    for name in ("momentum", "dropout"):
        value = getattr(training, name)
        if not 0 <= value < 1:
            raise _invalid(path, f"training.{name}", value, "a number in [0, 1)")
    if not 0 < training.lr_decay_factor <= 1:
        expected = "a number in (0, 1]"
        raise _invalid(
            path, "training.lr_decay_factor", training.lr_decay_factor, expected
        )
    for name in ("weight_decay", "clip_norm", "clip_value"):
        value = getattr(training, name)
        if value < 0:
            raise _invalid(path, f"training.{name}", value, "a number >= 0")


def _check_progress_extras(path: Path, progress: Progress, batch_size: int) -> None:
    positions = progress.stream_positions
    if not isinstance(positions, list) or (
        positions
        and (
            len(positions) != batch_size
            or not all(_is_int(p) and 0 <= p <= _INT64_MAX for p in positions)
        )
    ):
        expected = f"an empty list or {batch_size} integers >= 0"
        raise _invalid(path, "progress.stream_positions", positions, expected)
    rng = progress.train_rng
    if not isinstance(rng, list) or not (
        len(rng) == 4 and all(_is_int(w) and 0 <= w <= _UINT64_MAX for w in rng)
    ):
        expected = "4 integers from 0 to 2**64 - 1"
        raise _invalid(path, "progress.train_rng", rng, expected)
    if not isinstance(progress.finished, bool):
        raise _invalid(path, "progress.finished", progress.finished, "true or false")


def _check_vocab(path: Path, vocab: list[Any], n_vocab: int) -> None:
    if len(vocab) != n_vocab:
        # either field may be the edited one, so the message names both
        raise CheckpointError(
            path,
            f"checkpoint {path} lists {len(vocab)} vocab entries, but its "
            f"model.n_vocab is {n_vocab}",
            "the file was edited or damaged; use another checkpoint from the run folder",
        )
    for index, char in enumerate(vocab):
        if not isinstance(char, str) or len(char) != 1:
            raise _invalid(path, f"vocab[{index}]", char, "one character")
    if len(set(vocab)) != len(vocab):
        duplicates = sorted({char for char in vocab if vocab.count(char) > 1})
        raise _invalid(path, "vocab", duplicates, "each character listed once")


def _check_best(path: Path, metadata: dict[str, Any]) -> None:
    best_epoch = metadata.get("best_epoch")
    if best_epoch is not None and not (_is_int(best_epoch) and best_epoch >= 0):
        raise _invalid(path, "best_epoch", best_epoch, "null or an integer >= 0")
    best = metadata.get("best_val_loss")
    if best is not None and not (
        isinstance(best, (int, float))
        and not isinstance(best, bool)
        and math.isfinite(best)
    ):
        raise _invalid(path, "best_val_loss", best, "null or a finite number")


def _check_run_id(path: Path, run_id: Any) -> None:
    if run_id is not None and not (isinstance(run_id, str) and run_id):
        raise _invalid(path, "run_id", run_id, "null or a non-empty string")


def read_run_state(path: Path, metadata: dict[str, Any]) -> RunState:
    """Parse checkpoint metadata and check every field that resume and generate use.

    Raises CheckpointError naming the file and the field when a key is
    missing or a value has the wrong type or range (a hand-edited file).
    """
    model = _build(
        path, ModelSettings, _section(path, metadata, "model", dict), "model"
    )
    training = _build(
        path, TrainSettings, _section(path, metadata, "training", dict), "training"
    )
    _check_fields(path, "model", asdict(model))
    _check_fields(path, "training", asdict(training))
    _check_training_extras(path, training)
    vocab = _section(path, metadata, "vocab", list)
    _check_vocab(path, vocab, model.n_vocab)
    progress = _build(
        path, Progress, _section(path, metadata, "progress", dict), "progress"
    )
    _check_fields(path, "progress", asdict(progress))
    _check_progress_extras(path, progress, training.batch_size)
    _check_best(path, metadata)
    run_id = metadata.get("run_id")
    _check_run_id(path, run_id)
    return RunState(
        model=model,
        training=training,
        vocab=vocab,
        corpus=_section(path, metadata, "corpus", dict),
        progress=progress,
        history=list(metadata.get("history") or []),
        best_val_loss=metadata.get("best_val_loss"),
        best_epoch=metadata.get("best_epoch"),
        run_id=run_id,
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
            "it may be damaged or come from another program; use another checkpoint",
        )
    if tensor.dtype != "F32" or tuple(tensor.shape) != tuple(shape):
        raise CheckpointError(
            path,
            f"checkpoint {path}: tensor {name!r} is {tensor.dtype} {list(tensor.shape)}, "
            f"but its model settings need F32 {list(shape)}",
            "the file is inconsistent; use another checkpoint from the run folder",
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
    from .model import Model

    return Model(
        settings.n_vocab,
        settings.n_hidden,
        settings.n_layers,
        seed=settings.init_seed,
        forget_bias=settings.forget_bias,
    )


def parameter_count(settings: ModelSettings) -> int:
    """Return the number of model parameters, as the engine lays them out.

    Each layer has w_ih (inputs x 4H), w_hh (H x 4H) and the bias (4H). The
    inputs of layer 0 are the vocabulary, those of the others the H units
    below. The output layer adds out_w (H x V) and out_b (V).
    """
    H, V = settings.n_hidden, settings.n_vocab
    total = H * V + V
    for layer in range(settings.n_layers):
        inputs = V if layer == 0 else H
        total += inputs * 4 * H + H * 4 * H + 4 * H
    return total


def check_parameter_count(
    path: Path, shapes: dict[str, tuple[int, ...]], model: ModelSettings
) -> None:
    """Raise CheckpointError when the model tensors do not fit the model settings.

    `shapes` maps each tensor's name to its shape. This runs before the
    engine allocates a model, so an edited size fails here instead of as an
    allocation that may not fit in memory.
    """
    stored = sum(
        math.prod(shape) for name, shape in shapes.items() if name.startswith("model.")
    )
    needed = parameter_count(model)
    if stored != needed:
        raise CheckpointError(
            path,
            f"checkpoint {path} has {stored:,} model parameters, but its settings "
            f"({model.n_layers} x {model.n_hidden} LSTM, vocabulary {model.n_vocab}) "
            f"need {needed:,}",
            "the file was edited or damaged; use another checkpoint",
        )


def load(path: Path) -> tuple[dict[str, Tensor], RunState]:
    """Read a checkpoint and parse its metadata; raise CheckpointError on any fault."""
    tensors, metadata = load_checkpoint(path)
    run = read_run_state(path, metadata)
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    check_parameter_count(path, shapes, run.model)
    return tensors, run


def open_model(path: Path) -> tuple[Model, RunState]:
    """Return the model stored in checkpoint `path`, ready for sampling."""
    tensors, run = load(path)
    model = build_model(run.model)
    load_parameters(path, tensors, model)
    return model, run
