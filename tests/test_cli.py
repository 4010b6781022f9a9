"""End-to-end command-line tests: real training of a tiny model, then sampling.

Every test trains through the real C library on a corpus it writes itself;
CHARLSTM_HOME points into tmp_path (see conftest.py).
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from charlstm_cli import model as model_module
from charlstm_cli.checkpoint import load_checkpoint
from charlstm_cli.errors import path_error
from charlstm_cli.model import KERNEL_NAMES


def read_metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]


def hint_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Hint: ")]


@pytest.fixture
def trained(invoke, corpus, tiny, run_folders):
    """Train the tiny model for 2 epochs; return (result, run folder)."""
    result = invoke("train", "--corpus", corpus, *tiny, "--epochs", "2", "--name", "t")
    assert result.exit_code == 0, result.output
    (run,) = run_folders()
    return result, run


# ----------------------------------------------------------------------------
# help and version


@pytest.mark.parametrize("command", [[], ["train"], ["generate"], ["resume"]])
def test_help_renders(invoke, command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


@pytest.mark.parametrize(
    "command, flag",
    [
        ([], "--version"),
        ([], "--verbose"),
        (["train"], "--json"),
        (["generate"], "--drop-unknown"),
        (["inspect"], "--json"),
        (["runs"], "--json"),
    ],
)
def test_help_hides_flag_metavar(invoke, command, flag):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stdout.splitlines() if f" {flag} " in line]
    assert "<bool>" not in line
    assert "<int>" not in line


def test_version_prints_package_version(invoke):
    from charlstm_cli import __version__

    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"charlstm {__version__}"


# ----------------------------------------------------------------------------
# train


def test_train_writes_run_folder(trained):
    result, run = trained
    assert result.stdout == ""
    assert f"Run folder: {run}" in result.stderr
    assert "Training summary" in result.stderr
    names = sorted(path.name for path in run.iterdir())
    expected = [
        "best.ckpt", "epoch-0001.ckpt", "epoch-0002.ckpt",
        "latest.ckpt", "metrics.jsonl", "run.json",
    ]  # fmt: skip
    assert names == expected


def test_train_loss_goes_down(trained):
    _, run = trained
    records = read_metrics(run)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 2
    assert steps[-1]["loss"] < steps[0]["loss"] - 0.5
    assert epochs[1]["val_loss"] < epochs[0]["val_loss"]
    assert epochs[1]["val_bpc"] == pytest.approx(
        epochs[1]["val_loss"] / 0.6931471805599453
    )
    assert 0.0 < epochs[1]["val_accuracy"] < 1.0


def test_train_logs_every_interval(trained):
    _, run = trained
    steps = [r for r in read_metrics(run) if r["kind"] == "step"]
    # every 5 steps, and the last step 84 too
    assert [r["step"] for r in steps] == [*range(5, 85, 5), 84]
    assert set(steps[0]) == {
        "kind", "step", "epoch", "loss", "grad_norm", "lr", "chars_per_sec", "elapsed",
    }  # fmt: skip


def test_train_checkpoint_metadata(trained, corpus):
    _, run = trained
    tensors, metadata = load_checkpoint(run / "latest.ckpt")
    assert metadata["model"]["n_hidden"] == 16
    assert metadata["vocab"] == sorted(set(corpus.read_text()))
    assert metadata["corpus"]["path"] == str(corpus.resolve())
    assert metadata["progress"]["epoch"] == 2
    assert metadata["progress"]["step"] == 84
    assert metadata["progress"]["finished"] is True
    assert metadata["history"] == read_metrics(run)
    assert tensors["state.h"].shape == (1, 4, 16)
    assert tensors["model.lstm.0.w_hh"].shape == (16, 64)
    assert "optim.moment2.out.bias" in tensors


def test_train_prints_epoch_sample_with_seed(trained):
    result, run = trained
    _, metadata = load_checkpoint(run / "latest.ckpt")
    seed = metadata["training"]["sample_seed"]
    # the corpus's most frequent speaker line primes the sample
    assert seed in ("KING.\n", "QUEEN.\n", "LORD.\n")
    assert "epoch 2/2 done" in result.stderr
    assert f"sample:\n{seed}" in result.stderr


def test_train_json_summary_on_stdout(invoke, corpus, tiny):
    result = invoke("train", "--corpus", corpus, *tiny, "--epochs", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stopped"] == "completed"
    (stopped_row,) = [
        line for line in result.stderr.splitlines() if " stopped " in line
    ]
    assert "completed" in stopped_row
    assert summary["last_epoch"]["lr"] == 0.002
    assert '"lr": 0.002,' in result.stdout
    assert summary["steps"] == 42
    assert summary["best_epoch"] == 1
    assert Path(summary["checkpoints"]["latest"]).is_file()
    assert summary["run_dir_removed"] is False


def test_train_header_counts_in_singular(invoke, corpus, tiny):
    result = invoke("train", "--corpus", corpus, *tiny, "--max-steps", "1")
    assert result.exit_code == 0, result.output
    assert "42 steps per epoch, 1 step in total" in result.stderr


def test_shortest_float32_round_trips():
    import struct

    from charlstm_cli.model import shortest_float32

    for value in (0.002, 1e-3 * 0.5**7, 3.0e-4, 1 / 3, 5.0, 3.4028234663852886e38):
        as_float32 = struct.unpack("<f", struct.pack("<f", value))[0]
        short = shortest_float32(as_float32)
        assert struct.pack("<f", short) == struct.pack("<f", as_float32), value
        assert len(repr(short)) <= len(repr(as_float32)), value
    assert shortest_float32(0.0020000000949949026) == 0.002


def test_train_max_steps_stops_mid_epoch(invoke, corpus, tiny, run_folders):
    result = invoke("train", "--corpus", corpus, *tiny, "--max-steps", "12", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 12
    assert summary["epochs_completed"] == 0
    assert summary["final_val"]["val_loss"] > 0
    (run,) = run_folders()
    _, metadata = load_checkpoint(run / "latest.ckpt")
    assert metadata["progress"]["epoch_step"] == 12
    assert not (run / "best.ckpt").exists()


def test_train_logs_last_step(invoke, corpus, tiny, run_folders):
    result = invoke("train", "--corpus", corpus, *tiny, "--max-steps", "3")
    assert result.exit_code == 0, result.output
    (run,) = run_folders()
    steps = [r for r in read_metrics(run) if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [3]
    _, metadata = load_checkpoint(run / "latest.ckpt")
    assert metadata["history"] == read_metrics(run)


def test_train_keep_epochs_prunes_old_files(invoke, corpus, tiny, run_folders):
    result = invoke(
        "train", "--corpus", corpus, *tiny, "--epochs", "3", "--keep-epochs", "1"
    )
    assert result.exit_code == 0, result.output
    (run,) = run_folders()
    assert sorted(p.name for p in run.glob("epoch-*.ckpt")) == ["epoch-0003.ckpt"]


def test_train_step_schedule_halves_lr(invoke, corpus, tiny, run_folders):
    args = [
        "--epochs",
        "2",
        "--lr",
        "0.01",
        "--lr-schedule",
        "step",
        "--lr-decay-every",
        "1",
    ]
    result = invoke("train", "--corpus", corpus, *tiny, *args)
    assert result.exit_code == 0, result.output
    (run,) = run_folders()
    epochs = [r for r in read_metrics(run) if r["kind"] == "epoch"]
    assert epochs[0]["lr"] == pytest.approx(0.01)
    assert epochs[1]["lr"] == pytest.approx(0.005)


def test_train_without_validation(invoke, corpus, tiny, run_folders):
    args = ["--epochs", "1", "--val-fraction", "0", "--json"]
    result = invoke("train", "--corpus", corpus, *tiny, *args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["last_epoch"]["val_loss"] is None
    assert summary["best_val_loss"] is None
    # all 3,000 characters train: (750 - 1) // 16 = 46 steps
    assert summary["steps"] == 46
    (run,) = run_folders()
    assert not (run / "best.ckpt").exists()
    assert (run / "latest.ckpt").exists()


def test_train_non_finite_loss_stops(invoke, corpus, tiny, run_folders):
    result = invoke("train", "--corpus", corpus, *tiny, "--lr", "1e38", "--clip", "0")
    assert result.exit_code == 1, result.output
    errors = error_lines(result.stderr)
    assert len(errors) == 1
    assert "NaN or infinite" in errors[0]
    # with no checkpoint the run cannot be resumed, so its folder goes
    assert run_folders() == []
    assert "the run saved no checkpoint" in result.stderr


def test_failed_run_does_not_block_bare_generate(invoke, trained, corpus, tiny):
    _, run = trained
    result = invoke("train", "--corpus", corpus, *tiny, "--lr", "1e38", "--clip", "0")
    assert result.exit_code == 1, result.output
    result = invoke("generate", "--length", "5")
    assert result.exit_code == 0, result.output
    assert f"Using {run / 'latest.ckpt'}" in result.stderr


def test_train_divergence_stops(invoke, corpus, tiny):
    args = ["--optimizer", "sgd", "--momentum", "0", "--lr", "100", "--clip", "0"]
    result = invoke("train", "--corpus", corpus, *tiny, *args)
    assert result.exit_code == 1, result.output
    assert "3 times the first step's loss" in result.stderr
    assert "Hint: lower --lr" in result.stderr


def test_train_json_says_removed_run(invoke, corpus, tiny):
    args = ["--optimizer", "sgd", "--momentum", "0", "--lr", "100", "--clip", "0"]
    result = invoke("train", "--corpus", corpus, *tiny, *args, "--json")
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["run_dir_removed"] is True
    assert not Path(summary["run_dir"]).exists()


def test_nonfinite_resume_keeps_checkpoint(trained, invoke):
    _, run = trained
    before = (run / "latest.ckpt").read_bytes()
    result = invoke("resume", "--epochs", "3", "--lr", "1e38", "--clip", "0")
    # --clip is not a resume option: usage error, nothing changes
    assert result.exit_code == 2
    result = invoke("resume", "--epochs", "3", "--lr", "1e38")
    assert result.exit_code == 1, result.output
    assert f"the last good checkpoint is {run / 'latest.ckpt'}" in result.stderr
    assert (run / "latest.ckpt").read_bytes() == before


# ----------------------------------------------------------------------------
# generate


def test_generate_streams_text_to_stdout(trained, invoke):
    result = invoke(
        "generate", "--seed", "KING.\n", "--length", "150", "--rng-seed", "4"
    )
    assert result.exit_code == 0, result.output
    _, run = trained
    assert result.stderr == f"Using {run / 'latest.ckpt'} (newest run)\n"
    assert result.stdout.startswith("KING.\n")
    assert len(result.stdout) == len("KING.\n") + 150 + 1


def test_generate_same_rng_seed_same_text(trained, invoke):
    first = invoke("generate", "--length", "80", "--rng-seed", "9")
    second = invoke("generate", "--length", "80", "--rng-seed", "9")
    other = invoke("generate", "--length", "80", "--rng-seed", "10")
    assert first.stdout == second.stdout
    assert first.stdout != other.stdout


def test_generate_greedy_ignores_rng_seed(trained, invoke):
    first = invoke(
        "generate", "--length", "60", "--temperature", "0", "--rng-seed", "1"
    )
    second = invoke(
        "generate", "--length", "60", "--temperature", "0", "--rng-seed", "2"
    )
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout


def test_generate_default_seed_from_training(trained, invoke):
    _, run = trained
    _, metadata = load_checkpoint(run / "latest.ckpt")
    result = invoke("generate", "--length", "10")
    assert result.stdout.startswith(metadata["training"]["sample_seed"])


def test_generate_same_text_any_threads(trained, invoke):
    from charlstm_cli.data import decode, encode
    from charlstm_cli.model import Sampler
    from charlstm_cli.state import open_model

    _, run = trained
    seed = "KING.\nThe king is good.\n" * 20  # longer than one feed chunk
    args = ["--seed", seed, "--length", "300", "--rng-seed", "5"]
    one = invoke("generate", *args, "--threads", "1")
    two = invoke("generate", *args, "--threads", "2")
    adaptive = invoke("generate", *args, "--threads", "0")
    assert one.exit_code == 0, one.output
    assert two.stdout == one.stdout
    assert adaptive.stdout == one.stdout
    # one feed call and one generate call give the same text as the chunks
    model, state = open_model(run / "latest.ckpt")
    with model, Sampler(model, 5) as sampler:
        sampler.feed(encode(seed, state.vocab))
        whole = seed + decode(sampler.generate(300, 0.8), state.vocab) + "\n"
    assert one.stdout == whole


def test_generate_num_samples_separated(trained, invoke):
    result = invoke("generate", "--length", "30", "--num-samples", "3", "--seed", "K")
    assert result.exit_code == 0, result.output
    samples = result.stdout.split("---\n")
    assert len(samples) == 3
    assert all(sample.startswith("K") and len(sample) == 32 for sample in samples)


def test_generate_explicit_checkpoint_path(trained, invoke):
    _, run = trained
    result = invoke("generate", run / "best.ckpt", "--length", "5", "--seed", "K")
    assert result.exit_code == 0, result.output
    assert len(result.stdout) == 7
    assert result.stderr == ""


def test_generate_newest_run_without_checkpoint(trained, invoke):
    _, older = trained
    # a run still in its first epoch has run.json and metrics but no checkpoint
    newest = older.parent / "new"
    newest.mkdir()
    (newest / "run.json").write_text("{}\n")
    result = invoke("generate", "--length", "5")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert error_lines(result.stderr) == [
        f"Error: the newest run {newest} has no checkpoint yet"
    ]
    assert str(older / "latest.ckpt") in result.stderr


def test_generate_top_k_one_is_greedy(trained, invoke):
    greedy = invoke("generate", "--length", "40", "--temperature", "0", "--seed", "K")
    top1 = invoke("generate", "--length", "40", "--top-k", "1", "--seed", "K")
    assert top1.stdout == greedy.stdout


def test_generate_unknown_seed_characters(trained, invoke):
    result = invoke("generate", "--seed", "KING\u00e9\t\u20ac")
    assert result.exit_code == 1
    assert result.stdout == ""
    errors = error_lines(result.stderr)
    assert len(errors) == 1
    assert "'\u00e9', '\\t', '\u20ac'" in errors[0]
    assert "Hint: pass --drop-unknown" in result.stderr


def test_generate_drop_unknown(trained, invoke):
    result = invoke(
        "generate", "--seed", "KI\u00e9NG", "--drop-unknown", "--length", "5"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("KING")
    assert "dropped seed characters" in result.stderr


@pytest.mark.parametrize("value", ["-0.5", "nan", "inf", "warm"])
def test_generate_bad_temperature(trained, invoke, value):
    result = invoke("generate", "--temperature", value)
    assert result.exit_code == 2
    assert "--temperature" in result.stderr
    assert result.stdout == ""


def test_generate_without_runs(invoke, charlstm_home):
    result = invoke("generate")
    assert result.exit_code == 1
    assert error_lines(result.stderr) == [
        f"Error: no training runs found in {charlstm_home / 'runs'}"
    ]
    assert "charlstm train" in result.stderr


def test_generate_truncated_checkpoint(trained, invoke, tmp_path):
    _, run = trained
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes((run / "latest.ckpt").read_bytes()[:5000])
    result = invoke("generate", broken)
    assert result.exit_code == 1
    (error,) = error_lines(result.stderr)
    assert str(broken) in error
    assert "truncated" in error
    assert "Traceback" not in result.output


def test_generate_foreign_checkpoint(invoke, tmp_path):
    foreign = tmp_path / "model.pt"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    result = invoke("generate", foreign)
    assert result.exit_code == 1
    (error,) = error_lines(result.stderr)
    assert str(foreign) in error
    assert "not a charlstm checkpoint" in error


# ----------------------------------------------------------------------------
# bad training input: one error line, exit 1, no run folder


def assert_rejected(result, run_folders, *fragments: str, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert run_folders() == []
    if code == 2:
        text = result.stderr
    else:
        (text,) = error_lines(result.stderr)
    for fragment in fragments:
        assert fragment in text
    return text


def test_train_missing_corpus(invoke, tiny, tmp_path, run_folders):
    missing = tmp_path / "missing.txt"
    result = invoke("train", "--corpus", missing, *tiny)
    assert_rejected(result, run_folders, "corpus file not found", str(missing))


def test_train_directory_corpus(invoke, tiny, tmp_path, run_folders):
    result = invoke("train", "--corpus", tmp_path, *tiny)
    assert_rejected(result, run_folders, "is a directory", str(tmp_path))


def limit_memory() -> None:
    """Cap the child's address space at 2 GiB, so an unbounded read fails fast."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2**31, 2**31))


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_module_device_corpus_rejected(run_module, tiny, device, charlstm_home):
    result = run_module(
        "train", "--corpus", device, *tiny, preexec_fn=limit_memory, timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        f"Error: corpus {device} is a character device, not a text file or a pipe"
    ]
    assert not (charlstm_home / "runs").exists()


@pytest.mark.parametrize("path", ["-", "/dev/stdin"])
def test_module_corpus_from_pipe(run_module, tiny, text_maker, path):
    args = ["--corpus", path, *tiny, "--max-steps", "2", "--json"]
    result = run_module("train", *args, input=text_maker(3000))
    assert result.returncode == 0, result.stderr
    run = Path(json.loads(result.stdout)["run_dir"])
    _, metadata = load_checkpoint(run / "latest.ckpt")
    assert metadata["corpus"]["n_chars"] == 3000
    assert metadata["corpus"]["path"] == path
    resumed = run_module(
        "resume", run / "latest.ckpt", "--max-steps", "3", input=text_maker(3000)
    )
    assert resumed.returncode == 0, resumed.stderr


def test_module_empty_standard_input_named(run_module, tiny, charlstm_home):
    result = run_module("train", "--corpus", "-", *tiny, input="")
    assert result.returncode == 1, result.stderr
    assert error_lines(result.stderr)[0] == "Error: corpus on standard input is empty"
    assert not (charlstm_home / "runs").exists()


def test_train_fifo_corpus(invoke, tiny, tmp_path, text_maker):
    fifo = tmp_path / "corpus.fifo"
    os.mkfifo(fifo)
    text = text_maker(3000)

    def write_text() -> None:
        with open(fifo, "w", encoding="utf-8") as out:
            out.write(text)

    writer = threading.Thread(target=write_text)
    writer.start()
    result = invoke("train", "--corpus", fifo, *tiny, "--max-steps", "2", "--json")
    writer.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 2


def test_train_empty_corpus(invoke, tiny, tmp_path, run_folders):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert_rejected(invoke("train", "--corpus", empty, *tiny), run_folders, "is empty")


def test_train_binary_corpus(invoke, tiny, tmp_path, run_folders):
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    result = invoke("train", "--corpus", binary, *tiny)
    assert_rejected(result, run_folders, "looks binary", "offset 8")


def test_train_utf16_corpus(invoke, tiny, tmp_path, text_maker, run_folders):
    wide = tmp_path / "u16.txt"
    wide.write_text(text_maker(3000), encoding="utf-16")
    result = invoke("train", "--corpus", wide, *tiny)
    assert_rejected(result, run_folders, "starts with a UTF-16 byte order mark")
    assert hint_lines(result.stderr) == [
        "Hint: pass --encoding utf-16, which reads the byte order from the mark"
    ]
    fixed = invoke(
        "train", "--corpus", wide, "--encoding", "utf-16", *tiny, "--max-steps", "2"
    )
    assert fixed.exit_code == 0, fixed.output


def test_train_non_utf8_corpus(invoke, tiny, tmp_path, text_maker, run_folders):
    latin = tmp_path / "latin.txt"
    text = text_maker(3000)
    latin.write_bytes(
        text[:100].encode() + "caf\u00e9 ".encode("latin-1") + text.encode()
    )
    result = invoke("train", "--corpus", latin, *tiny)
    assert_rejected(result, run_folders, "not valid utf-8", "offset 103")
    assert "--encoding" in result.stderr
    fixed = invoke(
        "train", "--corpus", latin, "--encoding", "latin-1", *tiny, "--max-steps", "2"
    )
    assert fixed.exit_code == 0, fixed.output


def test_train_corpus_too_short(invoke, tiny, tmp_path, text_maker, run_folders):
    short = tmp_path / "short.txt"
    short.write_text(text_maker(500))
    result = invoke("train", "--corpus", short, *tiny)
    text = assert_rejected(result, run_folders, "too short", "500 characters")
    assert "at least 680" in text


def test_train_single_character_corpus(invoke, tiny, tmp_path, run_folders):
    same = tmp_path / "a.txt"
    same.write_text("a" * 2000)
    result = invoke("train", "--corpus", same, *tiny)
    assert_rejected(result, run_folders, "only 1 distinct character")


@pytest.mark.parametrize(
    "option, value",
    [
        ("--hidden-size", "0"),
        ("--layers", "-1"),
        ("--layers", "9"),
        ("--seq-len", "0"),
        ("--batch-size", "-4"),
        ("--epochs", "0"),
        ("--lr", "0"),
        ("--lr", "nan"),
        ("--dropout", "1"),
        ("--val-fraction", "0.9"),
        ("--optimizer", "rmsprop"),
        ("--hidden-size", "99999999999999999999"),
        ("--hidden-size", "65537"),
        ("--batch-size", "65537"),
        ("--seq-len", "65537"),
        ("--epochs", "1000001"),
        ("--rng-seed", "18446744073709551617"),
        ("--rng-seed", "-1"),
        ("--threads", "4294967297"),
    ],
)
def test_train_bad_option_values(invoke, corpus, run_folders, option, value):
    result = invoke("train", "--corpus", corpus, option, value)
    assert_rejected(result, run_folders, option, code=2)


def test_train_largest_rng_seed(invoke, corpus, tiny):
    args = ["--rng-seed", str(2**64 - 1), "--epochs", "1", "--json"]
    result = invoke("train", "--corpus", corpus, *tiny, *args)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "option, value",
    [("--rng-seed", str(2**64)), ("--top-k", str(2**31)), ("--threads", "1025")],
)
def test_generate_out_of_range_options(trained, invoke, option, value):
    result = invoke("generate", option, value)
    assert result.exit_code == 2, result.output
    assert option in result.stderr


@pytest.mark.parametrize(
    "sizes, name",
    [((2**31, 16, 1), "n_vocab"), ((5, 2**32 + 16, 1), "n_hidden")],
)
def test_model_rejects_values_beyond_int32(sizes, name):
    from charlstm_cli.model import Model

    with pytest.raises(ValueError, match=f"{name} = {max(sizes)}"):
        Model(*sizes)


def test_model_and_trainer_reject_bad_seeds():
    from charlstm_cli.model import Model, Sampler, Trainer

    with pytest.raises(ValueError, match="seed = 18446744073709551617"):
        Model(5, 4, 1, seed=2**64 + 1)
    with Model(5, 4, 1, seed=2**64 - 1) as model:
        with pytest.raises(ValueError, match="seed = -1"):
            Trainer(model, 2, 3, seed=-1)
        with pytest.raises(ValueError, match="batch_size = 4294967298"):
            Trainer(model, 2**32 + 2, 3)
        with pytest.raises(ValueError, match="seed = 18446744073709551616"):
            Sampler(model, 2**64)


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_train_lr_message(invoke, corpus, value):
    result = invoke("train", "--corpus", corpus, "--lr", value)
    assert result.exit_code == 2
    assert f"must be a finite number > 0, not {value}" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "--temperature"],
        ["train", "--lr"],
        ["train", "--weight-decay"],
        ["train", "--clip"],
        ["resume", "--lr"],
    ],
)
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1e39", "(the largest float32), not 1e39"),
        ("1e-50", "1e-50 is too small: the engine computes in float32"),
    ],
)
def test_float_outside_float32_rejected(trained, invoke, corpus, tiny, command, value, reason):
    _, run = trained
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    args = ["--corpus", corpus, *tiny] if command[0] == "train" else []
    result = invoke(*command, value, *args)
    assert result.exit_code == 2, result.output
    # the console may wrap the line, so join its lines again
    message = " ".join(result.stderr.split())
    assert reason in message
    assert result.stdout == ""
    assert [path.name for path in run.parent.iterdir()] == [run.name]
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


def test_train_unknown_sample_seed(invoke, corpus, tiny, run_folders):
    result = invoke("train", "--corpus", corpus, *tiny, "--sample-seed", "Z\u00e9")
    assert_rejected(result, run_folders, "--sample-seed", "'Z', '\u00e9'")


def test_train_corpus_without_newline(invoke, tiny, tmp_path, text_maker):
    one_line = tmp_path / "oneline.txt"
    one_line.write_text(text_maker(3000).replace("\n", " "), encoding="utf-8")
    result = invoke("train", "--corpus", one_line, *tiny, "--max-steps", "2")
    assert result.exit_code == 0, result.output
    assert "--sample-seed" not in result.stderr


def test_train_unwritable_run_folder(invoke, corpus, tiny, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the run home should be")
    result = invoke("train", "--corpus", corpus, *tiny, "--run-dir", blocker / "home")
    assert result.exit_code == 1
    (error,) = error_lines(result.stderr)
    assert "cannot create run folder" in error
    assert str(blocker) in error
    assert blocker.read_text() == "a file where the run home should be"


def test_train_existing_run_name(trained, invoke, corpus, tiny):
    _, run = trained
    before = sorted(p.name for p in run.iterdir())
    result = invoke("train", "--corpus", corpus, *tiny, "--name", run.name)
    assert result.exit_code == 1
    assert "already exists" in result.stderr
    assert "charlstm resume" in result.stderr
    assert sorted(p.name for p in run.iterdir()) == before


def test_debug_env_shows_traceback(invoke, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLSTM_DEBUG", "1")
    result = invoke("train", "--corpus", tmp_path / "missing.txt", *tiny)
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "UserError"


# ----------------------------------------------------------------------------
# paths the file system rejects: one Error and one Hint line, exit 1

# Commands that take a path, with PATH where the rejected path goes. Train
# also gets the tiny model options, and CORPUS is a readable corpus.
PATH_COMMANDS = [
    ["train", "--corpus", "PATH"],
    ["train", "--run-dir", "PATH", "--corpus", "CORPUS"],
    ["inspect", "PATH"],
    ["inspect", "--run-dir", "PATH"],
    ["generate", "PATH"],
    ["generate", "--run-dir", "PATH"],
    ["resume", "PATH"],
    ["plot", "PATH"],
    ["runs", "--run-dir", "PATH"],
]


def command_id(command: list[str]) -> str:
    return " ".join(command[:3])


def fill_command(command: list[str], path: Path, corpus: Path, tiny: list[str]):
    args = [{"PATH": path, "CORPUS": corpus}.get(arg, arg) for arg in command]
    return args + tiny if command[0] == "train" else args


def assert_path_error(result, path: Path, reason: str) -> None:
    assert result.exit_code == 1, result.output
    # CliRunner keeps an uncaught exception in result.exception instead of printing it
    assert type(result.exception) is SystemExit, repr(result.exception)
    (error,) = error_lines(result.stderr)
    assert path.name in error
    assert error.endswith(f": {reason}")
    assert len(hint_lines(result.stderr)) == 1


@pytest.mark.parametrize("command", PATH_COMMANDS, ids=command_id)
def test_long_file_name_rejected(invoke, corpus, tiny, tmp_path, run_folders, command):
    long_path = tmp_path / ("a" * 300)
    result = invoke(*fill_command(command, long_path, corpus, tiny))
    assert_path_error(result, long_path, "File name too long")
    assert "255 bytes" in result.stderr
    assert run_folders() == []


@pytest.mark.parametrize("command", PATH_COMMANDS, ids=command_id)
def test_symlink_loop_rejected(invoke, corpus, tiny, tmp_path, run_folders, command):
    loop = tmp_path / "loop1"
    loop.symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    result = invoke(*fill_command(command, loop, corpus, tiny))
    assert_path_error(result, loop, "Too many levels of symbolic links")
    assert "symbolic links" in hint_lines(result.stderr)[0]
    assert run_folders() == []


# Every path option and argument, each given an empty value.
EMPTY_PATH_COMMANDS = [
    ["train", "--corpus", ""],
    ["train", "--run-dir", ""],
    ["generate", ""],
    ["generate", "--run-dir", ""],
    ["resume", ""],
    ["resume", "--corpus", ""],
    ["resume", "--run-dir", ""],
    ["inspect", ""],
    ["inspect", "--run-dir", ""],
    ["plot", ""],
    ["plot", "--out", ""],
    ["plot", "--run-dir", ""],
    ["runs", "--run-dir", ""],
]


def empty_path_id(command: list[str]) -> str:
    return " ".join(arg or "''" for arg in command)


@pytest.mark.parametrize("command", EMPTY_PATH_COMMANDS, ids=empty_path_id)
def test_empty_path_rejected(invoke, tmp_path, monkeypatch, command):
    # an accepted empty path would name the current folder, so make it an empty one
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = invoke(*command)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (error,) = error_lines(result.stderr)
    assert error.endswith(": the path is empty")
    if command[-2].startswith("--"):
        assert f"'{command[-2]}'" in error
    assert hint_lines(result.stderr) == [
        "Hint: pass a path ('.' for the current folder), or leave out the option "
        "or argument to use its default"
    ]
    assert sorted(tmp_path.rglob("*")) == before


def test_plot_path_through_file(invoke, corpus):
    result = invoke("plot", corpus / "run")
    assert_path_error(result, corpus / "run", "Not a directory")
    assert hint_lines(result.stderr) == [
        "Hint: check the path, because a part of it that must be a folder is a file"
    ]


def test_path_error_permission_denied():
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/srv/runs")
    error = path_error(denied)
    assert error is not None
    assert error.message == "cannot access /srv/runs: Permission denied"
    assert "permissions" in error.hint


def test_path_error_ignores_other_errors():
    assert path_error(OSError(errno.EIO, os.strerror(errno.EIO), "/srv/runs")) is None
    assert path_error(OSError(errno.ENAMETOOLONG, "File name too long")) is None
    assert path_error(RuntimeError("charlstm_trainer_step: failed")) is None


# ----------------------------------------------------------------------------
# python -m charlstm_cli in a real process


def test_module_train_and_generate(run_module, corpus, tiny):
    trained = run_module("train", "--corpus", corpus, *tiny, "--epochs", "1", "--json")
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["epochs_completed"] == 1
    generated = run_module(
        "generate", "--length", "40", "--seed", "KING.\n", "--rng-seed", "1"
    )
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("KING.\n")
    assert len(generated.stdout) == len("KING.\n") + 40 + 1
    assert generated.stderr.startswith("Using ")
    assert generated.stderr.endswith("latest.ckpt (newest run)\n")


def test_module_usage_error_exit_code(run_module):
    result = run_module("train", "--batch-size", "0")
    assert result.returncode == 2
    assert "--batch-size" in result.stderr


def test_module_verbose_logs_kernel(run_module, corpus, tiny):
    quiet = run_module("train", "--corpus", corpus, *tiny, "--max-steps", "1")
    loud = run_module("-v", "train", "--corpus", corpus, *tiny, "--max-steps", "1")
    assert quiet.returncode == 0, quiet.stderr
    assert loud.returncode == 0, loud.stderr
    assert "kernels:" not in quiet.stderr
    assert "kernels:" in loud.stderr


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Warning: ")]


def kernel_in_use(stderr: str) -> str:
    """Return the kernel path from the -v log line 'kernels: NAME, N threads'."""
    match = re.search(r"kernels: (\w+),", stderr)
    assert match is not None, stderr
    return match.group(1)


@pytest.mark.parametrize("value", ["bogus", "AVX2"])
def test_module_unknown_kernel_warns(run_module, corpus, tiny, value):
    run_module.env["CHARLSTM_KERNEL"] = value
    result = run_module("-v", "train", "--corpus", corpus, *tiny, "--max-steps", "1")
    assert result.returncode == 0, result.stderr
    used = kernel_in_use(result.stderr)
    assert used in KERNEL_NAMES
    assert warning_lines(result.stderr) == [
        f"Warning: CHARLSTM_KERNEL={value} is not a kernel name (valid names: "
        f"avx512, avx2, portable), so the {used} kernels run instead"
    ]


@pytest.mark.parametrize("value", KERNEL_NAMES)
def test_module_kernel_env_forces_path(run_module, corpus, tiny, value):
    run_module.env["CHARLSTM_KERNEL"] = value
    result = run_module("-v", "train", "--corpus", corpus, *tiny, "--max-steps", "1")
    assert result.returncode == 0, result.stderr
    used = kernel_in_use(result.stderr)
    if value == "portable":
        # every processor runs the portable kernels
        assert used == "portable"
    if used == value:
        assert warning_lines(result.stderr) == []
    else:
        assert warning_lines(result.stderr) == [
            f"Warning: CHARLSTM_KERNEL={value} is not supported by this processor "
            f"(valid names: avx512, avx2, portable), so the {used} kernels run instead"
        ]


def test_kernel_warning_unsupported_path(monkeypatch):
    monkeypatch.setenv("CHARLSTM_KERNEL", "avx512")
    monkeypatch.setattr(model_module, "kernel_name", lambda: "avx2")
    assert model_module.kernel_request_warning() == (
        "CHARLSTM_KERNEL=avx512 is not supported by this processor (valid names: "
        "avx512, avx2, portable), so the avx2 kernels run instead"
    )


def test_kernel_warning_empty_value(monkeypatch):
    monkeypatch.setenv("CHARLSTM_KERNEL", "")
    assert model_module.kernel_request_warning() is None


def foreign_library() -> str:
    """Return the path of a shared library without charlstm's functions."""
    import _ctypes

    path = getattr(_ctypes, "__file__", None)
    if path is None:
        pytest.skip("_ctypes is built into this Python, so it has no library file")
    return path


def test_module_foreign_library_rejected(run_module, tmp_path):
    library = foreign_library()
    run_module.env["CHARLSTM_LIB"] = library
    result = run_module("generate", tmp_path / "model.ckpt")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        f"Error: the library {library} has no function charlstm_abi_version, so it "
        "is not a charlstm library or was built from another version"
    ]
    (hint,) = hint_lines(result.stderr)
    assert "point CHARLSTM_LIB at a library built from this version" in hint


def test_module_unloadable_library_rejected(run_module, tmp_path):
    not_a_library = tmp_path / "libcharlstm.so"
    not_a_library.write_text("not a shared library\n")
    run_module.env["CHARLSTM_LIB"] = str(not_a_library)
    result = run_module("generate", tmp_path / "model.ckpt")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (error,) = error_lines(result.stderr)
    assert error.startswith(f"Error: cannot load the charlstm library {not_a_library}")
    (hint,) = hint_lines(result.stderr)
    assert "or unset it to use the installed library" in hint


def test_module_missing_library_rejected(run_module, tmp_path):
    missing = tmp_path / "nowhere" / "libcharlstm.so"
    run_module.env["CHARLSTM_LIB"] = str(missing)
    result = run_module("generate", tmp_path / "model.ckpt")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        f"Error: the charlstm C library was not found (searched: {missing})"
    ]
    (hint,) = hint_lines(result.stderr)
    assert "point CHARLSTM_LIB at a library built from this version" in hint


def test_module_generate_probes_threads(run_module, corpus, tiny):
    from charlstm_cli.model import get_num_threads, set_num_threads

    set_num_threads(0)
    if get_num_threads() < 2:
        pytest.skip("the engine runs one thread here, so there is nothing to tune")
    trained = run_module("train", "--corpus", corpus, *tiny, "--max-steps", "2")
    assert trained.returncode == 0, trained.stderr
    generated = run_module(
        "-vv", "generate", "--threads", "0", "--length", "2000", "--seed", "K"
    )
    assert generated.returncode == 0, generated.stderr
    assert "thread probe:" in generated.stderr


def test_module_warns_threads_above_cores(run_module, corpus, tiny):
    trained = run_module("train", "--corpus", corpus, *tiny, "--max-steps", "2")
    assert trained.returncode == 0, trained.stderr
    cores = len(os.sched_getaffinity(0))
    many = run_module("generate", "--threads", cores + 1, "--length", "5", "--seed", "K")
    assert many.returncode == 0, many.stderr
    warning = f"Warning: --threads {cores + 1} is more than the {cores} cores"
    assert warning in " ".join(many.stderr.split())
    fitting = run_module("generate", "--threads", cores, "--length", "5", "--seed", "K")
    assert fitting.returncode == 0, fitting.stderr
    assert "more than the" not in fitting.stderr


def test_module_generate_interrupt_during_seed(run_module, corpus, tmp_path):
    # a model large enough that feeding the seed in one call takes seconds
    size = ["--hidden-size", "512", "--layers", "1", "--batch-size", "1"]
    trained = run_module(
        "train", "--corpus", corpus, *size, "--seq-len", "8", "--max-steps", "1"
    )
    assert trained.returncode == 0, trained.stderr

    seed = corpus.read_text().replace("\n", " ") * 17  # about 50,000 characters
    command = [sys.executable, "-m", "charlstm_cli", "-v", "generate", "--seed", seed]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=run_module.env,
        cwd=tmp_path,
    )
    try:
        # the info line about the checkpoint comes just before the seed is fed
        while "rng seed" not in process.stderr.readline():
            assert process.poll() is None, "generate exited before feeding the seed"
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        stdout, stderr = process.communicate(timeout=60)
        seconds = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 130, stderr
    assert "Interrupted." in stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    assert seconds < 3, f"generate took {seconds:.1f} s to stop after Ctrl-C"


def test_module_generate_into_closed_pipe(run_module, corpus, tiny, tmp_path):
    trained = run_module("train", "--corpus", corpus, *tiny, "--max-steps", "2")
    assert trained.returncode == 0, trained.stderr
    command = [sys.executable, "-m", "charlstm_cli", "generate", "--length", "1000000"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=run_module.env,
        cwd=tmp_path,
    )
    assert len(process.stdout.read(10)) == 10
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert stderr.startswith("Using ")
    assert stderr.count("\n") == 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_module_stdout_full_disk(run_module, corpus, tiny):
    trained = run_module("train", "--corpus", corpus, *tiny, "--max-steps", "2")
    assert trained.returncode == 0, trained.stderr
    commands = [
        ["--version"],
        ["runs"],
        ["runs", "--json"],
        ["generate", "--length", "10"],
        ["train", "--corpus", corpus, *tiny, "--max-steps", "2", "--json"],
    ]
    for command in commands:
        with open("/dev/full", "w") as full:
            result = run_module(*command, stdout=full, stderr=subprocess.PIPE)
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr, command
        assert error_lines(result.stderr) == [
            "Error: cannot write to standard output: No space left on device"
        ], command
        assert hint_lines(result.stderr) == [
            "Hint: check the file or device that standard output goes to, or "
            "redirect it to another file"
        ], command


@pytest.mark.parametrize("command", [["--help"], ["train", "--help"]])
def test_module_help_into_closed_pipe(run_module, command):
    # `charlstm --help | head -1`: the reader is gone before the help is written
    process = subprocess.Popen(
        [sys.executable, "-m", "charlstm_cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=run_module.env,
    )
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert stderr == ""


def test_interrupt_before_training_removes_run(invoke, corpus, tiny, run_folders, monkeypatch):
    from charlstm_cli import cli

    def interrupted(*args, **kwargs) -> None:
        raise KeyboardInterrupt

    # Ctrl-C after the run folder exists but before training handles signals
    monkeypatch.setattr(cli, "_write_run_info", interrupted)
    result = invoke("train", "--corpus", corpus, *tiny)
    assert result.exit_code == 130, result.output
    assert "Removed " in result.stderr
    assert "Interrupted." in result.stderr
    assert run_folders() == []


def test_interrupt_while_importing(monkeypatch, capsys):
    from charlstm_cli import launch

    class InterruptImport:
        def find_spec(self, name, path=None, target=None):
            if name == "charlstm_cli.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "charlstm_cli.cli")
    monkeypatch.setattr(sys, "meta_path", [InterruptImport(), *sys.meta_path])
    with pytest.raises(SystemExit) as stopped:
        launch.main()
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "Interrupted.\n"


def test_interrupt_inside_typer_parsing(monkeypatch, capsys):
    import typer.core

    from charlstm_cli import cli

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    # Typer catches Ctrl-C in its own parsing and exits 130 without a word
    monkeypatch.setattr(typer.core.TyperGroup, "make_context", interrupted)
    monkeypatch.setattr(cli, "guard_stdout", lambda: None)
    monkeypatch.setattr(sys, "argv", ["charlstm", "runs"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "Interrupted.\n"


def test_interrupt_while_parsing_options(monkeypatch, capsys):
    from charlstm_cli import cli

    def interrupted(**kwargs) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    monkeypatch.setattr(cli, "guard_stdout", lambda: None)
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 130
    assert "Interrupted." in capsys.readouterr().err


def limit_file_size(max_bytes: int):
    """Return a preexec_fn that caps the size of written files, as `ulimit -f`."""

    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


@pytest.mark.parametrize(
    "max_bytes, name",
    [(1024, "run.json"), (4096, "metrics.jsonl"), (20480, "latest.ckpt")],
)
def test_module_train_file_too_large(
    run_module, corpus, tiny, charlstm_home, max_bytes, name
):
    args = ["--corpus", corpus, *tiny, "--log-every", "1", "--name", "full"]
    result = run_module("train", *args, preexec_fn=limit_file_size(max_bytes))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    run = charlstm_home / "runs" / "full"
    (error,) = error_lines(result.stderr)
    assert error.startswith("Error: cannot write ")
    assert error.endswith(f"{run / name}: File too large")
    assert hint_lines(result.stderr) == [
        "Hint: free disk space or raise the file size limit (ulimit -f), or pass "
        "--run-dir to save runs elsewhere"
    ]
    # the run saved no checkpoint, so its folder goes
    assert not run.exists()


def test_module_resume_metrics_too_large(run_module, corpus, tiny):
    args = ["--corpus", corpus, *tiny, "--log-every", "1", "--epochs", "1"]
    trained = run_module("train", *args)
    assert trained.returncode == 0, trained.stderr
    (run,) = (corpus.parent / "home" / "runs").iterdir()
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    # room for the rewritten metrics.jsonl but not for a whole new line
    max_bytes = len(before["metrics.jsonl"]) + 100
    result = run_module(
        "resume", "--epochs", "2", preexec_fn=limit_file_size(max_bytes)
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        f"Error: cannot write {run / 'metrics.jsonl'}: File too large"
    ]
    # resume writes into the checkpoint's folder, so --run-dir would not help
    assert hint_lines(result.stderr) == [
        "Hint: free disk space or raise the file size limit (ulimit -f), or copy "
        "the checkpoint into a new folder on another disk and resume the copy"
    ]
    assert (run / "metrics.jsonl").read_bytes() == before["metrics.jsonl"]
    assert (run / "latest.ckpt").read_bytes() == before["latest.ckpt"]
    assert not list(run.glob(".*.tmp-*"))


@pytest.mark.parametrize(
    ("args", "error", "hint"),
    [
        (
            ["train", "--threads", "-1"],
            "Error: Invalid value for '--threads': Input should be greater than or "
            "equal to 0, not -1",
            "Hint: run 'charlstm train --help' to see the options and their ranges",
        ),
        (
            ["train", "--threads", "1", "--threads", "-1"],
            "Error: Invalid value for '--threads': Input should be greater than or "
            "equal to 0, not -1",
            "Hint: run 'charlstm train --help'",
        ),
        (
            ["generate", "--top-k=-3"],
            "not -3",
            "Hint: run 'charlstm generate --help'",
        ),
        (
            ["train", "--no-such-option"],
            "Error: No such option: --no-such-option",
            "Hint: run 'charlstm train --help'",
        ),
        (
            ["train", "--optimizer", "rmsprop"],
            "Error: Invalid value for '--optimizer': 'rmsprop' is not one of",
            "Hint: run 'charlstm train --help'",
        ),
        (
            ["generate", "--seed"],
            "Error: Option '--seed' requires an argument",
            "Hint: run 'charlstm generate --help' to see the options",
        ),
        (
            ["no-such-command"],
            "Error: No such command 'no-such-command'",
            "Hint: run 'charlstm --help' to see the commands",
        ),
        (
            # runs has no option with a range
            ["runs", "--bogus"],
            "Error: No such option: --bogus",
            "Hint: run 'charlstm runs --help' to see the options\n",
        ),
    ],
)
def test_usage_errors_are_error_and_hint_lines(run_module, args, error, hint):
    result = run_module(*args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert error in lines[0]
    assert (lines[1] + "\n").startswith(hint)
    assert result.stdout == ""


def test_summary_prints_long_run_folder_whole(run_module, tiny, text_maker, tmp_path):
    run_module.env["COLUMNS"] = "80"
    home = tmp_path / ("a-long-folder-name-" * 4)
    args = ["--corpus", "-", *tiny, "--max-steps", "2", "--run-dir", home]
    result = run_module("train", *args, input=text_maker(3000))
    assert result.returncode == 0, result.stderr
    (run,) = (home / "runs").iterdir()
    assert "…" not in result.stderr
    summary = result.stderr[result.stderr.index("Training summary") :]
    # on a line of its own, which the terminal wraps without breaking the path
    assert f"\nRun folder: {run}\n" in summary
    assert "│ latest.ckpt" in summary


@pytest.mark.parametrize("command", [["runs"], ["generate"], ["train"], ["resume"]])
def test_run_dir_that_is_a_file_rejected(invoke, corpus, tiny, tmp_path, command):
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("mine\n")
    args = ["--corpus", corpus, *tiny] if command == ["train"] else []
    result = invoke(*command, "--run-dir", not_a_folder, *args)
    assert result.exit_code == 1, result.output
    assert error_lines(result.stderr) == [
        f"Error: --run-dir {not_a_folder} is a file, not a folder"
    ]
    assert not_a_folder.read_text() == "mine\n"


@pytest.mark.parametrize(
    "command",
    [["runs"], ["generate"], ["train"], ["resume"], ["plot"], ["inspect"]],
    ids=command_id,
)
def test_runs_entry_that_is_a_file_rejected(invoke, corpus, tiny, tmp_path, command):
    home = tmp_path / "fh"
    home.mkdir()
    (home / "runs").write_text("x\n")
    args = ["--corpus", corpus, *tiny] if command == ["train"] else []
    result = invoke(*command, "--run-dir", home, *args)
    assert result.exit_code == 1, result.output
    assert error_lines(result.stderr) == [
        f"Error: {home / 'runs'} is a file, not a folder"
    ]
    (hint,) = hint_lines(result.stderr)
    assert "--run-dir" in hint
    assert (home / "runs").read_text() == "x\n"


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "RUN"],
        ["resume", "RUN"],
        ["inspect", "RUN"],
        ["generate"],
        ["inspect"],
    ],
    ids=command_id,
)
def test_latest_checkpoint_folder_rejected(invoke, charlstm_home, command):
    run = charlstm_home / "runs" / "r"
    (run / "latest.ckpt").mkdir(parents=True)
    (run / "run.json").write_text("{}\n")
    result = invoke(*[run if arg == "RUN" else arg for arg in command])
    assert result.exit_code == 1, result.output
    assert error_lines(result.stderr) == [f"Error: {run / 'latest.ckpt'} is not a file"]
    assert len(hint_lines(result.stderr)) == 1
    assert (run / "latest.ckpt").is_dir()


def test_module_model_too_large_for_memory(run_module, corpus, charlstm_home):
    args = ["--hidden-size", "65536", "--layers", "8", "--max-steps", "1"]
    args += ["--batch-size", "2", "--seq-len", "8"]
    result = run_module(
        "train", "--corpus", corpus, *args, preexec_fn=limit_memory, timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (error,) = error_lines(result.stderr)
    assert error.startswith("Error: out of memory: cannot allocate ")
    assert "charlstm_" not in error
    assert "Hint: lower --hidden-size" in result.stderr


def test_module_library_path_relative_to_current_folder(
    run_module, corpus, tiny, tmp_path
):
    import shutil

    from charlstm_cli import _native

    shutil.copy(_native.lib._name, tmp_path / "copy-of-libcharlstm.so")
    run_module.env["CHARLSTM_LIB"] = "copy-of-libcharlstm.so"  # run_module's cwd
    result = run_module("train", "--corpus", corpus, *tiny, "--max-steps", "1")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--encoding", "nonsense", "Error: unknown text encoding 'nonsense'"),
        ("--name", "a/b", "Error: invalid run name 'a/b'"),
        ("--name", "n" * 300, f"Error: invalid run name '{'n' * 300}'"),
    ],
)
def test_bad_text_option_is_a_usage_error(
    invoke, corpus, tiny, charlstm_home, option, value, message
):
    result = invoke("train", "--corpus", corpus, *tiny, option, value)
    assert result.exit_code == 2, result.output
    assert error_lines(result.stderr) == [message]
    assert not (charlstm_home / "runs").exists()


@pytest.mark.parametrize(
    "command", [["generate", "--length", "5"], ["resume", "--epochs", "3"]]
)
def test_run_folder_stands_for_its_latest_checkpoint(trained, invoke, command):
    _, run = trained
    result = invoke(command[0], run, *command[1:])
    assert result.exit_code == 0, result.output
    assert f"Using {run / 'latest.ckpt'}" in result.stderr


@pytest.mark.parametrize("command", ["generate", "resume"])
def test_folder_that_is_not_a_run_rejected(invoke, tmp_path, command):
    plain = tmp_path / "plain"
    plain.mkdir()
    result = invoke(command, plain)
    assert result.exit_code == 1, result.output
    assert error_lines(result.stderr) == [
        f"Error: {plain} is a folder, not a checkpoint file or a run folder"
    ]
