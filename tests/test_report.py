"""The inspect, plot and runs commands, on run folders made from a real model."""

from __future__ import annotations

import errno
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from charlstm_cli import __version__, cli, report
from charlstm_cli.checkpoint import Tensor, load_checkpoint, save_checkpoint
from charlstm_cli.errors import UserError
from charlstm_cli.model import Model, Trainer
from charlstm_cli.state import Progress, TrainSettings

CORPUS = "to be, or not to be:\nthat is the question.\t" * 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# The commands on their own, wrapped with the main app's error handler.
app = typer.Typer()
report.register(app, wrap_command=cli.reports_errors)
runner = CliRunner()


def invoke(*args: str, main_app: bool = False) -> str:
    result = runner.invoke(cli.app if main_app else app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


def invoke_error(*args: str, main_app: bool = False) -> UserError:
    """Run a command that must fail; return its Error and Hint lines as a UserError."""
    result = runner.invoke(cli.app if main_app else app, list(args))
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("Error: "), (
        f"expected an Error line on stderr, got {result.stderr!r} and {result.exception!r}"
    )
    lines = result.stderr.splitlines()
    hints = [
        line.removeprefix("Hint: ") for line in lines[1:] if line.startswith("Hint: ")
    ]
    return UserError(lines[0].removeprefix("Error: "), hints[0] if hints else None)


def float_slices(block: memoryview, model: Model, prefix: str) -> dict[str, Tensor]:
    """Cut a parameter-shaped float32 block into named tensors by the model's table."""
    return {
        prefix + info.name: Tensor(
            "F32", info.shape, block[info.offset : info.offset + info.n_elements]
        )
        for info in model.tensors
    }


def train_and_save(run: Path, n_steps: int = 24, steps_per_epoch: int = 8) -> dict:
    """Train a tiny model on CORPUS, writing metrics.jsonl and latest.ckpt like `train` does.

    Returns the metadata that was saved, so tests can compare against it.
    """
    run.mkdir(parents=True)
    vocab = sorted(set(CORPUS))
    ids = [vocab.index(ch) for ch in CORPUS]
    batch, seq_len, n_hidden, n_layers = 2, 8, 16, 2
    model = Model(len(vocab), n_hidden, n_layers, seed=7)
    trainer = Trainer(model, batch, seq_len, lr=0.01, seed=7)
    history, position, elapsed = [], 0, 0.0
    best = None

    with open(run / "metrics.jsonl", "w") as metrics:
        for step in range(1, n_steps + 1):
            span = batch * seq_len
            if position + span + 1 > len(ids):
                position = 0
            inputs = ids[position : position + span]
            targets = ids[position + 1 : position + span + 1]
            position += span
            loss, grad_norm = trainer.step(inputs, targets)
            elapsed += 0.01
            record = {
                "kind": "step",
                "step": step,
                "epoch": (step - 1) // steps_per_epoch,
                "loss": loss,
                "grad_norm": grad_norm,
                "lr": trainer.lr,
                "chars_per_sec": 1000.0,
                "elapsed": elapsed,
            }
            history.append(record)
            metrics.write(json.dumps(record) + "\n")
            if step % steps_per_epoch == 0:
                trainer.reset_eval_state()
                loss_sum, correct = trainer.evaluate(ids[:span], ids[1 : span + 1])
                val_loss = loss_sum / span
                best = val_loss if best is None else min(best, val_loss)
                record = {
                    "kind": "epoch",
                    "epoch": step // steps_per_epoch - 1,
                    "step": step,
                    "train_loss": loss,
                    "val_loss": val_loss,
                    "val_bpc": val_loss / math.log(2),
                    "val_accuracy": correct / span,
                    "lr": trainer.lr,
                    "elapsed": elapsed,
                }
                history.append(record)
                metrics.write(json.dumps(record) + "\n")

    tensors = float_slices(model.params(), model, "model.")
    tensors |= float_slices(trainer.buffer("moment1"), model, "optim.moment1.")
    tensors |= float_slices(trainer.buffer("moment2"), model, "optim.moment2.")
    state_shape = (n_layers, batch, n_hidden)
    tensors["state.h"] = Tensor("F32", state_shape, trainer.buffer("state_h"))
    tensors["state.c"] = Tensor("F32", state_shape, trainer.buffer("state_c"))
    metadata = {
        "model": {
            "n_vocab": len(vocab),
            "n_hidden": n_hidden,
            "n_layers": n_layers,
            "forget_bias": 1.0,
            "init_seed": 7,
        },
        "training": asdict(
            TrainSettings(
                batch_size=batch,
                seq_len=seq_len,
                optimizer="adam",
                lr=0.01,
                momentum=0.9,
                weight_decay=0.0,
                clip_norm=5.0,
                clip_value=0.0,
                dropout=0.0,
                epochs=5,
                max_steps=None,
                lr_schedule="none",
                lr_decay_every=1,
                lr_decay_factor=1.0,
                val_fraction=0.1,
                rng_seed=7,
                log_every=4,
                keep_epochs=2,
                sample_seed="to be",
                sample_length=20,
            )
        ),
        "vocab": vocab,
        "corpus": {
            "path": "/data/hamlet.txt",
            "name": "hamlet.txt",
            "size_bytes": len(CORPUS),
            "sha256": "ab" * 32,
            "n_chars": len(CORPUS),
        },
        "progress": asdict(
            Progress(
                epoch=n_steps // steps_per_epoch,
                step=n_steps,
                chars_seen=n_steps * batch * seq_len,
                lr=trainer.lr,
                train_rng=[1, 2, 3, 4],
            )
        ),
        "history": history,
        "best_val_loss": best,
        "saved_at": "2024-05-01T12:00:00+00:00",
    }
    save_checkpoint(run / "latest.ckpt", tensors, metadata)
    metadata["n_params"] = model.n_params
    model.close()
    return metadata


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """A charlstm home with one trained run, alpha, and the metadata saved for it."""
    home = tmp_path_factory.mktemp("home")
    metadata = train_and_save(home / "runs" / "alpha")
    return home, metadata


@pytest.fixture(scope="module")
def home(trained) -> Path:
    return trained[0]


@pytest.fixture(scope="module")
def alpha_metadata(trained) -> dict:
    return trained[1]


# ---------------------------------------------------------------------------
# the commands inside the main app


def test_main_app_has_commands(home: Path):
    output = invoke("runs", "--json", "--run-dir", str(home), main_app=True)
    assert [row["name"] for row in json.loads(output)["runs"]] == ["alpha"]
    assert "--json" in invoke("inspect", "--help", main_app=True)


def test_main_app_reports_errors(tmp_path: Path):
    error = invoke_error("inspect", str(tmp_path / "nope.ckpt"), main_app=True)
    assert error.message == f"checkpoint not found: {tmp_path / 'nope.ckpt'}"
    assert "charlstm runs" in error.hint


# ---------------------------------------------------------------------------
# inspect


def test_inspect_json_fields(home: Path, alpha_metadata: dict):
    checkpoint = home / "runs" / "alpha" / "latest.ckpt"
    summary = json.loads(invoke("inspect", str(checkpoint), "--json"))
    model, training = summary["model"], summary["training"]
    assert summary["path"] == str(checkpoint)
    assert summary["file_size_bytes"] == checkpoint.stat().st_size
    assert summary["format"] == "charlstm-checkpoint"
    assert summary["format_version"] == 1
    assert summary["charlstm_version"] == __version__
    assert summary["saved_at"] == "2024-05-01T12:00:00+00:00"
    assert model["n_params"] == alpha_metadata["n_params"]
    assert model["n_layers"] == 2
    assert model["n_hidden"] == 16
    assert model["n_vocab"] == len(set(CORPUS))
    assert model["tensor_bytes"] == 4 * (
        3 * alpha_metadata["n_params"] + 2 * 2 * 2 * 16
    )
    assert training["step"] == 24
    assert training["epochs_completed"] == 3
    assert training["chars_seen"] == 24 * 2 * 8
    assert training["optimizer"] == "adam"
    assert training["lr"] == pytest.approx(0.01)


def test_inspect_json_validation(home: Path, alpha_metadata: dict):
    summary = json.loads(
        invoke("inspect", str(home / "runs" / "alpha" / "latest.ckpt"), "--json")
    )
    validation = summary["validation"]
    epochs = [r for r in alpha_metadata["history"] if r["kind"] == "epoch"]
    assert validation["best_loss"] == pytest.approx(min(r["val_loss"] for r in epochs))
    assert validation["best_bpc"] == pytest.approx(
        validation["best_loss"] / math.log(2)
    )
    assert validation["latest_loss"] == pytest.approx(epochs[-1]["val_loss"])
    assert validation["latest_accuracy"] == pytest.approx(epochs[-1]["val_accuracy"])
    assert 0 < validation["latest_loss"] < 10


def test_inspect_json_corpus_vocab(home: Path):
    summary = json.loads(invoke("inspect", str(home / "runs" / "alpha"), "--json"))
    assert summary["corpus"]["name"] == "hamlet.txt"
    assert summary["corpus"]["sha256"] == "ab" * 32
    assert summary["corpus"]["size_bytes"] == len(CORPUS)
    assert summary["vocab"]["size"] == len(set(CORPUS))
    preview = summary["vocab"]["preview"]
    assert preview.startswith("\\t\\n ,")
    assert "\n" not in preview
    assert len(summary["tensors"]) == 3 * 8 + 2


def test_inspect_table(home: Path, alpha_metadata: dict):
    output = invoke("inspect", str(home / "runs" / "alpha" / "latest.ckpt"))
    assert f"{alpha_metadata['n_params']:,}" in output
    assert "bits/char" in output
    assert "hamlet.txt" in output
    assert "\\t\\n" in output
    assert "adam" in output


@pytest.mark.parametrize(
    "ch, expected",
    [
        ("\n", "\\n"),
        ("\t", "\\t"),
        ("\r", "\\r"),
        ("\\", "\\\\"),
        ("\x00", "\\x00"),
        ("\x7f", "\\x7f"),
        ("\u2028", "\\u2028"),
        ("a", "a"),
        (" ", " "),
        ("é", "é"),
    ],
)
def test_escape_char(ch: str, expected: str):
    assert report.escape_char(ch) == expected


def test_inspect_json_usable(home: Path):
    summary = json.loads(invoke("inspect", str(home / "runs" / "alpha"), "--json"))
    assert summary["usable"] is True
    assert summary["problem"] is None


def test_inspect_edited_metadata(home: Path, tmp_path: Path):
    # the checksum covers the tensors only, so an edited field still loads
    run = home / "runs" / "alpha"
    tensors, metadata = load_checkpoint(run / "latest.ckpt")
    metadata["training"]["optimizer"] = "lion"
    edited = tmp_path / "edited.ckpt"
    save_checkpoint(edited, tensors, metadata)
    result = runner.invoke(app, ["inspect", str(edited), "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["usable"] is False
    assert "training.optimizer" in summary["problem"]
    assert result.stderr.startswith(f"Error: {summary['problem']}\n")
    assert "Hint: " in result.stderr


def test_inspect_edited_size(home: Path, tmp_path: Path):
    # the settings no longer fit the stored tensors
    tensors, metadata = load_checkpoint(home / "runs" / "alpha" / "latest.ckpt")
    metadata["model"]["n_hidden"] += 1
    edited = tmp_path / "edited.ckpt"
    save_checkpoint(edited, tensors, metadata)
    result = runner.invoke(app, ["inspect", str(edited), "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["usable"] is False
    assert "model parameters, but its settings" in summary["problem"]


def test_inspect_table_edited_metadata(home: Path, tmp_path: Path):
    tensors, metadata = load_checkpoint(home / "runs" / "alpha" / "latest.ckpt")
    del metadata["vocab"]
    edited = tmp_path / "edited.ckpt"
    save_checkpoint(edited, tensors, metadata)
    result = runner.invoke(app, ["inspect", str(edited)])
    assert result.exit_code == 1
    assert "invalid metadata" in result.stdout
    assert "'vocab'" in result.stderr


def test_inspect_missing_file(tmp_path: Path):
    error = invoke_error("inspect", str(tmp_path / "nope.ckpt"))
    assert "not found" in error.message


def test_inspect_text_file(tmp_path: Path):
    path = tmp_path / "input.txt"
    path.write_text(CORPUS)
    error = invoke_error("inspect", str(path))
    assert "plain text file" in error.message


def test_inspect_corrupted(home: Path, tmp_path: Path):
    damaged = tmp_path / "damaged.ckpt"
    raw = bytearray((home / "runs" / "alpha" / "latest.ckpt").read_bytes())
    raw[-5] ^= 0x10
    damaged.write_bytes(bytes(raw))
    error = invoke_error("inspect", str(damaged))
    assert "checksum" in error.message


def test_inspect_folder_without_checkpoint(tmp_path: Path):
    run = tmp_path / "runs" / "fresh"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    error = invoke_error("inspect", str(run))
    assert error.message == f"run folder {run} has no latest.ckpt yet"
    assert "first epoch" in error.hint


def test_inspect_plain_folder_is_not_called_a_run(tmp_path: Path):
    error = invoke_error("inspect", str(tmp_path))
    assert error.message == (
        f"{tmp_path} is a folder, not a checkpoint file or a run folder"
    )


def test_inspect_newest_run_by_default(tmp_path: Path, monkeypatch):
    train_and_save(tmp_path / "runs" / "old", n_steps=4, steps_per_epoch=4)
    train_and_save(tmp_path / "runs" / "new", n_steps=4, steps_per_epoch=4)
    past = time.time() - 3600
    for path in [tmp_path / "runs" / "old", *(tmp_path / "runs" / "old").iterdir()]:
        os.utime(path, (past, past))
    newest = tmp_path / "runs" / "new" / "latest.ckpt"
    monkeypatch.setenv("CHARLSTM_HOME", str(tmp_path))
    result = runner.invoke(app, ["inspect", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(newest)
    assert result.stderr == f"Using {newest} (newest run)\n"
    monkeypatch.setenv("CHARLSTM_HOME", str(tmp_path / "elsewhere"))
    summary = json.loads(invoke("inspect", "--run-dir", str(tmp_path), "--json"))
    assert summary["path"] == str(newest)


def test_inspect_no_runs(tmp_path: Path):
    error = invoke_error("inspect", "--run-dir", str(tmp_path))
    assert error.message == f"no training runs found in {tmp_path / 'runs'}"
    assert "charlstm train" in error.hint


def test_inspect_help():
    output = invoke("inspect", "--help")
    assert "--json" in output


# ---------------------------------------------------------------------------
# plot


def assert_png(path: Path, width: int = 1000, height: int = 900) -> None:
    from matplotlib import image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = image.imread(path)
    assert pixels.shape[:2] == (height, width)
    # A blank canvas would have one colour only.
    assert pixels.reshape(-1, pixels.shape[-1]).std(axis=0).max() > 0.05


def test_plot_run_folder(home: Path):
    run = home / "runs" / "alpha"
    output = invoke("plot", str(run))
    assert output.strip() == str(run / "loss.png")
    assert_png(run / "loss.png")


def test_plot_checkpoint_and_out(home: Path, tmp_path: Path):
    checkpoint = home / "runs" / "alpha" / "latest.ckpt"
    out = tmp_path / "custom.png"
    assert invoke("plot", str(checkpoint), "--out", str(out)).strip() == str(out)
    assert_png(out)


def test_plot_checkpoint_default_output(tmp_path: Path):
    run = tmp_path / "runs" / "beta"
    train_and_save(run, n_steps=8, steps_per_epoch=4)
    (run / "metrics.jsonl").unlink()
    assert invoke("plot", str(run)).strip() == str(run / "loss.png")
    assert invoke("plot", str(run / "latest.ckpt")).strip() == str(
        run / "latest-loss.png"
    )
    assert_png(run / "latest-loss.png")


def test_plot_newest_run_by_default(tmp_path: Path, monkeypatch):
    train_and_save(tmp_path / "runs" / "old", n_steps=4, steps_per_epoch=4)
    train_and_save(tmp_path / "runs" / "new", n_steps=4, steps_per_epoch=4)
    past = time.time() - 3600
    for path in [tmp_path / "runs" / "old", *(tmp_path / "runs" / "old").iterdir()]:
        os.utime(path, (past, past))
    monkeypatch.setenv("CHARLSTM_HOME", str(tmp_path))
    assert invoke("plot").strip() == str(tmp_path / "runs" / "new" / "loss.png")
    assert invoke("plot", "--run-dir", str(tmp_path)).strip().endswith("new/loss.png")


def test_plot_while_training(home: Path, tmp_path: Path, capsys):
    run = tmp_path / "growing"
    run.mkdir()
    lines = (home / "runs" / "alpha" / "metrics.jsonl").read_text().splitlines()
    partial = lines[12][: len(lines[12]) // 2]
    (run / "metrics.jsonl").write_text("\n".join(lines[:12]) + "\n" + partial)
    records = report.read_metrics(run / "metrics.jsonl")
    assert len(records) == 12
    assert capsys.readouterr().err == ""
    assert invoke("plot", str(run)).strip() == str(run / "loss.png")
    assert_png(run / "loss.png")


def test_read_metrics_skips_bad_middle_line(tmp_path: Path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"kind": "step", "step": 1, "loss": 2.0}\n{"kind": "st\n[1, 2]\n'
        '{"kind": "step", "step": 2, "loss": 1.9}\n'
    )
    records = report.read_metrics(path)
    assert [r["step"] for r in records] == [1, 2]
    assert "skipped 2 unreadable lines" in capsys.readouterr().err


def test_deduplicate_keeps_resumed_records():
    records = [
        {"kind": "step", "step": 1, "loss": 3.0},
        {"kind": "step", "step": 2, "loss": 2.5},
        {"kind": "step", "step": 3, "loss": 2.4},
        {"kind": "epoch", "epoch": 0, "step": 2, "val_loss": 2.6},
        {"kind": "step", "step": 3, "loss": 2.2},
        {"kind": "step", "step": "bad", "loss": 1.0},
        {"kind": "other", "step": 4},
    ]
    deduplicated = report.deduplicate_records(records)
    assert [(r["kind"], r["step"]) for r in deduplicated] == [
        ("step", 1),
        ("step", 2),
        ("epoch", 2),
        ("step", 3),
    ]
    assert deduplicated[-1]["loss"] == 2.2


def test_smooth_ema():
    assert report.smooth_ema([2.0, 2.0, 2.0], span=10) == pytest.approx([2.0, 2.0, 2.0])
    smoothed = report.smooth_ema([4.0, 0.0], span=3)
    assert smoothed[0] == pytest.approx(4.0)
    assert smoothed[1] == pytest.approx((0.5 * 0.5 * 4.0) / (1 - 0.25))


def test_plot_folder_without_metrics(tmp_path: Path):
    error = invoke_error("plot", str(tmp_path))
    assert "contains no metrics.jsonl or latest.ckpt" in error.message


def test_plot_empty_metrics(tmp_path: Path):
    (tmp_path / "metrics.jsonl").write_text("")
    error = invoke_error("plot", str(tmp_path))
    assert "no training metrics yet" in error.message


def test_plot_missing_path(tmp_path: Path):
    error = invoke_error("plot", str(tmp_path / "nothing"))
    assert error.message == f"not found: {tmp_path / 'nothing'}"


def test_plot_no_runs(tmp_path: Path):
    error = invoke_error("plot", "--run-dir", str(tmp_path))
    assert "no training runs found" in error.message


def test_plot_unwritable_output(home: Path, tmp_path: Path):
    error = invoke_error(
        "plot", str(home / "runs" / "alpha"), "--out", str(tmp_path / "no" / "x.png")
    )
    assert "cannot write plot" in error.message


@pytest.mark.parametrize("name", ["corpus.txt", "plot.jpg", "noextension"])
def test_plot_rejects_non_png_output(home: Path, tmp_path: Path, name: str):
    target = tmp_path / name
    target.write_text("precious text\n")
    error = invoke_error("plot", str(home / "runs" / "alpha"), "--out", str(target))
    assert "does not end in .png" in error.message
    assert target.read_text() == "precious text\n"


def test_plot_rejects_folder_output(home: Path, tmp_path: Path):
    error = invoke_error("plot", str(home / "runs" / "alpha"), "--out", str(tmp_path))
    assert error.message == f"plot output {tmp_path} is a folder"


def test_plot_keeps_non_png_file_named_png(home: Path, tmp_path: Path):
    target = tmp_path / "notes.png"
    target.write_text("not an image\n")
    error = invoke_error("plot", str(home / "runs" / "alpha"), "--out", str(target))
    assert "is not a PNG image" in error.message
    assert target.read_text() == "not an image\n"


def test_plot_read_only_folder(home: Path, tmp_path: Path, monkeypatch):
    from matplotlib.figure import Figure

    target = tmp_path / "loss.png"
    target.write_bytes(PNG_SIGNATURE + b"old")

    def fail_read_only(path: Path, *args, **kwargs) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    # on a read-only mount, unlink fails with EROFS even for a missing file
    monkeypatch.setattr(
        Figure, "savefig", lambda self, path, **kw: fail_read_only(path)
    )
    monkeypatch.setattr(Path, "unlink", fail_read_only)
    error = invoke_error("plot", str(home / "runs" / "alpha"), "--out", str(target))
    assert error.message == f"cannot write plot {target}: Read-only file system"
    assert error.hint == "pass --out with a path in a writable folder"
    assert target.read_bytes() == PNG_SIGNATURE + b"old"


def test_plot_replaces_existing_png(home: Path, tmp_path: Path):
    target = tmp_path / "old.png"
    invoke("plot", str(home / "runs" / "alpha"), "--out", str(target))
    target.write_bytes(PNG_SIGNATURE + b"stale")
    invoke("plot", str(home / "runs" / "alpha"), "--out", str(target))
    assert_png(target)
    assert not list(tmp_path.glob(".old.png.tmp-*"))


def test_plot_rejects_named_pipe_output(home: Path, tmp_path: Path):
    target = tmp_path / "pipe.png"
    os.mkfifo(target)
    error = invoke_error("plot", str(home / "runs" / "alpha"), "--out", str(target))
    assert error.message == (
        f"plot output {target} exists and is not a regular file, so it was left unchanged"
    )


def test_plot_through_symlink_keeps_link(home: Path, tmp_path: Path):
    target = tmp_path / "plots" / "loss.png"
    target.parent.mkdir()
    target.write_bytes(PNG_SIGNATURE + b"stale")
    link = tmp_path / "latest.png"
    link.symlink_to(target)
    invoke("plot", str(home / "runs" / "alpha"), "--out", str(link))
    assert link.is_symlink()
    assert_png(target)
    assert not list(target.parent.glob(".loss.png.tmp-*"))


# ---------------------------------------------------------------------------
# runs


@pytest.fixture
def three_runs(tmp_path: Path) -> Path:
    """A home with runs first, second (unreadable checkpoint) and third, oldest first."""
    runs = tmp_path / "runs"
    train_and_save(runs / "first", n_steps=8, steps_per_epoch=4)
    train_and_save(runs / "second", n_steps=4, steps_per_epoch=4)
    (runs / "second" / "latest.ckpt").write_bytes(b"\x00" * 5)
    train_and_save(runs / "third", n_steps=12, steps_per_epoch=4)
    with open(runs / "third" / "metrics.jsonl", "a") as metrics:
        metrics.write(json.dumps({"kind": "step", "step": 13, "loss": 1.0}) + "\n")
    now = time.time()
    for age, name in ((300, "first"), (200, "second"), (100, "third")):
        for path in [runs / name, *(runs / name).iterdir()]:
            os.utime(path, (now - age, now - age))
    return tmp_path


def test_runs_json_newest_first(three_runs: Path):
    listing = json.loads(invoke("runs", "--json", "--run-dir", str(three_runs)))
    rows = listing["runs"]
    assert listing["runs_folder"] == str(three_runs / "runs")
    assert [row["name"] for row in rows] == ["third", "second", "first"]
    third = rows[0]
    assert third["corpus"] == "hamlet.txt"
    assert (third["n_layers"], third["n_hidden"]) == (2, 16)
    assert third["steps"] == 13
    assert 0 < third["best_val_loss"] < 10
    assert third["error"] is None
    assert rows[2]["steps"] == 8


def test_runs_unreadable_checkpoint(three_runs: Path):
    rows = json.loads(invoke("runs", "--json", "--run-dir", str(three_runs)))["runs"]
    second = rows[1]
    assert "too short" in second["error"]
    assert second["steps"] == 4
    assert second["corpus"] is None


def test_runs_table(three_runs: Path, monkeypatch):
    monkeypatch.setenv("CHARLSTM_HOME", str(three_runs))
    output = invoke("runs")
    assert output.index("third") < output.index("second") < output.index("first")
    assert "2×16" in output
    assert "unreadable" in output


def test_runs_first_epoch_uses_run_json(tmp_path: Path):
    run = tmp_path / "runs" / "fresh"
    run.mkdir(parents=True)
    info = {"corpus": {"name": "tiny.txt"}, "model": {"n_layers": 3, "n_hidden": 64}}
    (run / "run.json").write_text(json.dumps(info))
    (run / "metrics.jsonl").write_text(
        '{"kind": "step", "step": 5, "loss": 3.1}\n{"kind": "st'
    )
    row = json.loads(invoke("runs", "--json", "--run-dir", str(tmp_path)))["runs"][0]
    assert row["corpus"] == "tiny.txt"
    assert (row["n_layers"], row["n_hidden"]) == (3, 64)
    assert row["steps"] == 5
    assert row["best_val_loss"] is None


def test_runs_empty(tmp_path: Path):
    assert "No runs in" in invoke("runs", "--run-dir", str(tmp_path))
    listing = json.loads(invoke("runs", "--json", "--run-dir", str(tmp_path)))
    assert listing["runs"] == []
