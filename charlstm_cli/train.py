"""The training loop: batches, steps, validation, samples, metrics and checkpoints.

The loop reports through callbacks and never prints, so the command line can
render it with Rich and tests can drive it directly.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _native, paths, state
from . import checkpoint as ckpt
from .data import StreamBatcher, decode, encode, split_validation
from .errors import file_write_error
from .model import Model, Sampler, Trainer, get_num_threads
from .state import RunState
from .threads import ThreadTuner

SAMPLE_TEMPERATURE = 0.8
# A loss above this multiple of the first step's loss ends the run as diverged.
DIVERGENCE_FACTOR = 3.0
LN2 = math.log(2)


class StopReason(enum.Enum):
    COMPLETED = "completed"  # the epoch or step limit was reached
    INTERRUPTED = "interrupted"  # SIGINT or SIGTERM
    NONFINITE = "nonfinite"  # the loss or gradient norm became NaN or infinite
    DIVERGED = "diverged"  # the loss rose above DIVERGENCE_FACTOR x the first loss


@dataclass
class StepEvent:
    """One applied update; `record` is set when a metrics line was written."""

    step: int
    total_steps: int
    epoch: int  # 0-based epoch in progress
    epoch_step: int
    steps_per_epoch: int
    loss: float
    grad_norm: float
    lr: float
    chars_per_sec: float
    record: dict[str, Any] | None


@dataclass
class EpochEvent:
    """The end of one epoch: its metrics record, a sample and the checkpoints saved."""

    record: dict[str, Any]
    sample: str
    is_best: bool
    saved: list[Path]


@dataclass
class Outcome:
    """Outcome of a call to Training.run_loop, with the values the summary shows."""

    reason: StopReason
    message: str = ""
    signal_number: int | None = None
    steps_run: int = 0
    chars_run: int = 0
    seconds: float = 0.0
    final_val: dict[str, float] | None = None
    checkpoints: dict[str, Path] = field(default_factory=dict)

    @property
    def chars_per_sec(self) -> float:
        return self.chars_run / self.seconds if self.seconds > 0 else 0.0


def build_trainer(model: Model, settings: state.TrainSettings) -> Trainer:
    return Trainer(
        model,
        settings.batch_size,
        settings.seq_len,
        optimizer=settings.optimizer,
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        clip_norm=settings.clip_norm,
        clip_value=settings.clip_value,
        dropout=settings.dropout,
        # the dropout stream differs from the initialisation stream of the same seed
        seed=settings.rng_seed ^ 0x5EED,
    )


def sample_text(
    model: Model, vocab: list[str], seed_text: str, length: int, rng: int
) -> str:
    """Return `length` characters drawn after priming the model with seed_text."""
    with Sampler(model, rng) as sampler:
        sampler.feed(encode(seed_text, vocab))
        return decode(sampler.generate(length, SAMPLE_TEMPERATURE), vocab)


# SIGHUP arrives when the terminal closes, such as a dropped ssh session
_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class StopSignals:
    """Records SIGINT, SIGTERM and SIGHUP instead of raising, so a step and a save finish.

    Every signal after the first is ignored, so a second Ctrl-C cannot cut the
    final save short. Once a signal has arrived, leaving `installed()` sets
    the signals to SIG_IGN instead of restoring the old handlers, because the
    process is about to exit and a late Ctrl-C would only kill it mid-output.
    A signal that was already ignored when training started stays ignored, as
    a shell arranges for a job it starts in the background.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum

    def __call__(self) -> bool:
        return self.received is not None

    @contextmanager
    def installed(self):
        watched = [
            signum
            for signum in _STOP_SIGNALS
            if signal.getsignal(signum) is not signal.SIG_IGN
        ]
        previous = {signum: signal.signal(signum, self._handle) for signum in watched}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                if self.received is not None:
                    handler = signal.SIG_IGN
                signal.signal(signum, handler)


def _report(callback: Callable[[Any], None] | None, event: Callable[[], Any]) -> OSError | None:
    """Call `callback` with event(), and return the OSError raised if its output failed."""
    if callback is None:
        return None
    try:
        callback(event())
    except OSError as exc:
        return exc
    return None


def exit_code_for_signal(signum: int) -> int:
    """Return the shell's exit status for a process stopped by `signum` (128 + n)."""
    return 128 + signum


class Training:
    """One run's loop over its training text, writing into its run folder."""

    def __init__(
        self,
        run_dir: Path,
        model: Model,
        trainer: Trainer,
        run: RunState,
        text: str,
        tuner: ThreadTuner | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.tuner = tuner or ThreadTuner(get_num_threads(), adaptive=False)
        self.model = model
        self.trainer = trainer
        self.run = run
        settings = run.training
        train_tokens, val_tokens = split_validation(
            encode(text, run.vocab), settings.val_fraction
        )
        self.train_batches = StreamBatcher(
            train_tokens, settings.batch_size, settings.seq_len
        )
        self.val_batches = None
        if val_tokens:
            self.val_batches = StreamBatcher(
                val_tokens, settings.batch_size, settings.seq_len
            )
        self.chars_per_step = settings.batch_size * settings.seq_len

    def check_position(self, path: Path) -> None:
        """Raise CheckpointError unless the stored stream offsets fit this text."""
        progress = self.run.progress
        if not 0 <= progress.epoch_step < self.steps_per_epoch or (
            progress.stream_positions
            and progress.stream_positions
            != self.train_batches.positions(progress.epoch_step)
        ):
            raise ckpt.CheckpointError(
                path,
                f"checkpoint {path} stores stream offsets that do not fit its corpus "
                f"(epoch step {progress.epoch_step} of {self.steps_per_epoch})",
                "Pass --allow-new-corpus to restart the epoch on this text.",
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.train_batches.n_batches

    @property
    def total_steps(self) -> int:
        return self.run.training.total_steps(self.steps_per_epoch)

    def limit_reached(self) -> bool:
        settings, progress = self.run.training, self.run.progress
        if progress.epoch >= settings.epochs:
            return True
        return settings.max_steps is not None and progress.step >= settings.max_steps

    # ------------------------------------------------------------------------
    # files

    def checkpoint_path(self, kind: str) -> Path:
        return self.run_dir / {"latest": paths.LATEST, "best": paths.BEST}[kind]

    def save(self, target: Path) -> None:
        state.save(target, self.model, self.trainer, self.run)

    def rewrite_metrics(self) -> None:
        """Replace metrics.jsonl with the history the checkpoint carries."""
        text = "".join(json.dumps(record) + "\n" for record in self.run.history)
        paths.replace_file(
            self.run_dir / paths.METRICS, lambda temp: temp.write_text(text, encoding="utf-8")
        )

    def append_record(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl.

        A failed write raises UserError and leaves the file unchanged.
        """
        target = self.run_dir / paths.METRICS
        line = (json.dumps(record) + "\n").encode("utf-8")
        try:
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise file_write_error(target, exc) from None
        try:
            size = os.fstat(fd).st_size
            try:
                ckpt.write_all(fd, line)
            except OSError as exc:
                # A full disk can take part of the line, so cut it off again. If
                # that fails too, the write error is still the one to report.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise file_write_error(target, exc) from None
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.run.history.append(record)

    # ------------------------------------------------------------------------
    # evaluation

    def evaluate(self) -> dict[str, float] | None:
        """Return val loss, bits per character and accuracy over the validation split."""
        if self.val_batches is None:
            return None
        self.trainer.reset_eval_state()
        loss_sum, n_correct, n_positions = 0.0, 0, 0
        for _, inputs, targets in self.val_batches.batches():
            batch_loss, batch_correct = self.trainer.evaluate(inputs, targets)
            loss_sum += batch_loss
            n_correct += batch_correct
            n_positions += len(targets)
        val_loss = loss_sum / n_positions
        return {
            "val_loss": val_loss,
            "val_bpc": val_loss / LN2,
            "val_accuracy": n_correct / n_positions,
        }

    # ------------------------------------------------------------------------
    # the loop

    def run_loop(
        self,
        on_step: Callable[[StepEvent], None] | None = None,
        on_epoch: Callable[[EpochEvent], None] | None = None,
        stop_requested: Callable[[], bool] = lambda: False,
    ) -> Outcome:
        """Train until a limit, a signal, a non-finite loss or divergence stops it.

        When a callback cannot write its output (OSError, such as a closed
        pipe on stderr), training stops as for a signal, saves latest.ckpt,
        and then raises that error.
        """
        progress = self.run.progress
        self._session_start = time.perf_counter()
        self._elapsed_before = progress.elapsed
        self._window_start = (self._session_start, progress.step)
        outcome = Outcome(StopReason.COMPLETED)
        first_step = progress.step
        output_error: OSError | None = None

        while not self.limit_reached():
            inputs, targets = self.train_batches.batch(progress.epoch_step)
            self.tuner.before_step()
            started = time.perf_counter()
            try:
                loss, grad_norm = self.trainer.step(inputs, targets)
            except _native.NonFiniteError:
                outcome = self._stop_bad_loss(StopReason.NONFINITE, math.nan)
                break
            self.tuner.after_step(time.perf_counter() - started)
            self._count_step(loss)
            if loss > DIVERGENCE_FACTOR * progress.first_loss:
                outcome = self._stop_bad_loss(StopReason.DIVERGED, loss)
                break
            record = self._maybe_log(loss, grad_norm)
            output_error = _report(on_step, lambda: self._step_event(loss, grad_norm, record))
            if progress.epoch_step == self.steps_per_epoch:
                event = self._finish_epoch()
                output_error = _report(on_epoch, lambda: event) or output_error
            if stop_requested() or output_error is not None:
                outcome = Outcome(StopReason.INTERRUPTED)
                break

        self._sync_elapsed()
        if outcome.reason in (StopReason.COMPLETED, StopReason.INTERRUPTED):
            progress.finished = outcome.reason is StopReason.COMPLETED
            if progress.epoch_step > 0:
                # an epoch end has just saved latest.ckpt, so save only mid-epoch
                self.save(self.checkpoint_path("latest"))
            if outcome.reason is StopReason.COMPLETED and progress.epoch_step > 0:
                outcome.final_val = self.evaluate()
        outcome.steps_run = progress.step - first_step
        outcome.chars_run = outcome.steps_run * self.chars_per_step
        outcome.seconds = time.perf_counter() - self._session_start
        outcome.checkpoints = self._existing_checkpoints()
        if output_error is not None:
            # the checkpoint is saved; the caller decides how to exit
            raise output_error
        return outcome

    def _count_step(self, loss: float) -> None:
        progress = self.run.progress
        progress.step += 1
        progress.epoch_step += 1
        progress.chars_seen += self.chars_per_step
        progress.stream_positions = self.train_batches.positions(progress.epoch_step)
        if progress.first_loss is None:
            progress.first_loss = loss
        progress.epoch_loss_sum += loss
        progress.epoch_loss_steps += 1
        progress.log_loss_sum += loss
        progress.log_steps += 1

    def _elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._session_start

    def _sync_elapsed(self) -> None:
        self.run.progress.elapsed = self._elapsed()

    def _window_rate(self) -> float:
        """Return characters per second since the last step record (or session start)."""
        started, start_step = self._window_start
        seconds = time.perf_counter() - started
        steps = self.run.progress.step - start_step
        return steps * self.chars_per_step / seconds if seconds > 0 else 0.0

    def _maybe_log(self, loss: float, grad_norm: float) -> dict[str, Any] | None:
        """Write a step record every log_every steps and at the run's last step.

        The record at the last step leaves the averaging window open, so a
        resumed run logs the same interval records as one that never stopped.
        """
        progress, settings = self.run.progress, self.run.training
        on_interval = progress.step % settings.log_every == 0
        if not on_interval and progress.step < self.total_steps:
            return None
        record = {
            "kind": "step",
            "step": progress.step,
            "epoch": progress.epoch + progress.epoch_step / self.steps_per_epoch,
            "loss": progress.log_loss_sum / progress.log_steps,
            "grad_norm": grad_norm,
            "lr": self.trainer.lr,
            "chars_per_sec": self._window_rate(),
            "elapsed": self._elapsed(),
        }
        if on_interval:
            progress.log_loss_sum, progress.log_steps = 0.0, 0
            self._window_start = (time.perf_counter(), progress.step)
        self.append_record(record)
        return record

    def drop_last_step_record(self) -> None:
        """Remove the record of a finished run's last step before training on.

        Only that record falls between log_every intervals, and the next
        interval record covers its steps again.
        """
        history = self.run.history
        log_every = self.run.training.log_every
        last_step = next((r for r in reversed(history) if r["kind"] == "step"), None)
        if last_step is not None and last_step["step"] % log_every != 0:
            history.remove(last_step)

    def _step_event(
        self, loss: float, grad_norm: float, record: dict | None
    ) -> StepEvent:
        progress = self.run.progress
        return StepEvent(
            step=progress.step,
            total_steps=self.total_steps,
            epoch=progress.epoch,
            epoch_step=progress.epoch_step,
            steps_per_epoch=self.steps_per_epoch,
            loss=loss,
            grad_norm=grad_norm,
            lr=self.trainer.lr,
            chars_per_sec=record["chars_per_sec"] if record else self._window_rate(),
            record=record,
        )

    def _finish_epoch(self) -> EpochEvent:
        """Validate, sample, advance to the next epoch and save its checkpoints."""
        run, progress, settings = self.run, self.run.progress, self.run.training
        finished_epoch = progress.epoch + 1
        metrics = self.evaluate() or {
            "val_loss": None,
            "val_bpc": None,
            "val_accuracy": None,
        }
        record = {
            "kind": "epoch",
            "epoch": finished_epoch,
            "step": progress.step,
            "train_loss": progress.epoch_loss_sum / progress.epoch_loss_steps,
            **metrics,
            "lr": self.trainer.lr,
            "elapsed": self._elapsed(),
        }
        self.append_record(record)
        sample = ""
        if settings.sample_length > 0:
            sample = settings.sample_seed + sample_text(
                self.model,
                run.vocab,
                settings.sample_seed,
                settings.sample_length,
                # wraps like the C uint64, so the largest --rng-seed still works
                rng=(settings.rng_seed + finished_epoch) % 2**64,
            )

        # the next epoch restarts every stream at its beginning with zero state
        progress.epoch = finished_epoch
        progress.epoch_step = 0
        progress.epoch_loss_sum, progress.epoch_loss_steps = 0.0, 0
        progress.stream_positions = self.train_batches.positions(0)
        progress.finished = self.limit_reached()
        self.trainer.reset_state()
        self.trainer.lr = settings.lr_for_epoch(progress.epoch)

        val_loss = metrics["val_loss"]
        is_best = val_loss is not None and (
            run.best_val_loss is None or val_loss < run.best_val_loss
        )
        if is_best:
            run.best_val_loss, run.best_epoch = val_loss, finished_epoch
        self._sync_elapsed()
        saved = [self.checkpoint_path("latest")]
        if settings.keep_epochs > 0:
            saved.append(ckpt.epoch_checkpoint_path(self.run_dir, finished_epoch))
        if is_best:
            saved.append(self.checkpoint_path("best"))
        for target in saved:
            self.save(target)
        ckpt.prune_epoch_checkpoints(
            self.run_dir,
            settings.keep_epochs,
            belongs=lambda path: ckpt.is_checkpoint_of_run(path, run.run_id),
        )
        return EpochEvent(record=record, sample=sample, is_best=is_best, saved=saved)

    def _stop_bad_loss(self, reason: StopReason, loss: float) -> Outcome:
        progress = self.run.progress
        latest = self.checkpoint_path("latest")
        kept = (
            f"the last good checkpoint is {latest}"
            if latest.exists()
            else "no checkpoint was saved, because no epoch had finished"
        )
        if reason is StopReason.NONFINITE:
            what = "the loss or gradient norm became NaN or infinite"
            message = f"training stopped at step {progress.step + 1}: {what}; {kept}"
        else:
            message = (
                f"training stopped at step {progress.step}: the loss {loss:.4g} is more "
                f"than {DIVERGENCE_FACTOR:g} times the first step's loss "
                f"{progress.first_loss:.4g}; {kept}"
            )
        return Outcome(reason, message=message)

    def _existing_checkpoints(self) -> dict[str, Path]:
        found = {}
        for kind in ("latest", "best"):
            target = self.checkpoint_path(kind)
            if target.exists():
                found[kind] = target
        return found
