"""Resume: bit-identical continuation, signals, and what resume rejects."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charlstm_cli.checkpoint import load_checkpoint

# Fields that measure wall-clock time, so they differ between any two runs.
TIMING_FIELDS = {"elapsed", "chars_per_sec"}
# Dropout and the step schedule make resume depend on the RNG and the lr too.
EXACT_OPTIONS = ["--dropout", "0.2", "--lr-schedule", "step", "--lr-decay-every", "1"]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def train_run(invoke, corpus, tiny, name: str, *extra: str) -> Path:
    """Train the tiny model into run `name`; return its run folder."""
    result = invoke(
        "train", "--corpus", corpus, *tiny, "--name", name, "--json", *extra
    )
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["run_dir"])


def assert_same_checkpoint(left: Path, right: Path) -> None:
    left_tensors, left_meta = load_checkpoint(left)
    right_tensors, right_meta = load_checkpoint(right)
    assert sorted(left_tensors) == sorted(right_tensors)
    for name in left_tensors:
        assert left_tensors[name].data == right_tensors[name].data, name
    assert without_timing(left_meta["history"]) == without_timing(right_meta["history"])
    left_progress = {k: v for k, v in left_meta["progress"].items() if k != "elapsed"}
    right_progress = {k: v for k, v in right_meta["progress"].items() if k != "elapsed"}
    assert left_progress == right_progress
    assert left_meta["best_val_loss"] == right_meta["best_val_loss"]


# ----------------------------------------------------------------------------
# exact continuation


@pytest.mark.parametrize("stop_step", [42, 50])
def test_resume_is_bit_identical(invoke, corpus, tiny, stop_step):
    straight = train_run(
        invoke, corpus, tiny, "straight", "--epochs", "3", *EXACT_OPTIONS
    )
    split = train_run(
        invoke, corpus, tiny, "split", "--epochs", "3", "--max-steps", str(stop_step),
        *EXACT_OPTIONS,
    )  # fmt: skip
    _, partial = load_checkpoint(split / "latest.ckpt")
    assert partial["progress"]["step"] == stop_step

    result = invoke("resume", split / "latest.ckpt", "--max-steps", "126")
    assert result.exit_code == 0, result.output
    assert_same_checkpoint(straight / "latest.ckpt", split / "latest.ckpt")
    assert_same_checkpoint(straight / "best.ckpt", split / "best.ckpt")
    metrics = [
        json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()
    ]
    _, final = load_checkpoint(split / "latest.ckpt")
    assert without_timing(metrics) == without_timing(final["history"])


def test_resume_from_epoch_checkpoint(invoke, corpus, tiny, tmp_path):
    run = train_run(invoke, corpus, tiny, "ref", "--epochs", "2", *EXACT_OPTIONS)
    original = tmp_path / "original.ckpt"
    original.write_bytes((run / "latest.ckpt").read_bytes())
    result = invoke("resume", run / "epoch-0001.ckpt", "--discard-newer")
    assert result.exit_code == 0, result.output
    assert "at epoch 2, step 42" in result.stderr
    # rerunning epoch 2 from its start reproduces the first run's end state
    assert_same_checkpoint(original, run / "latest.ckpt")


def step_of(checkpoint: Path) -> int:
    _, metadata = load_checkpoint(checkpoint)
    return metadata["progress"]["step"]


def test_resume_older_checkpoint_rejected(invoke, corpus, tiny):
    run = train_run(
        invoke, corpus, tiny, "rewind", "--epochs", "3", "--keep-epochs", "3"
    )
    before = snapshot(run)
    result = invoke("resume", run / "epoch-0001.ckpt", "--max-steps", "50")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert (
        f"Error: checkpoint {run / 'epoch-0001.ckpt'} is at step 42, but the run's "
        f"{run / 'latest.ckpt'} is at step 126" in result.stderr
    )
    assert "Hint: resume from" in result.stderr
    assert "--discard-newer" in result.stderr
    assert snapshot(run) == before


def test_resume_discard_newer_cleans_folder(invoke, corpus, tiny):
    run = train_run(
        invoke, corpus, tiny, "rewind", "--epochs", "3", "--keep-epochs", "3"
    )
    assert step_of(run / "best.ckpt") == 126
    result = invoke(
        "resume", run / "epoch-0001.ckpt", "--max-steps", "50", "--discard-newer"
    )
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in run.iterdir())
    assert names == [
        "best.ckpt", "epoch-0001.ckpt", "latest.ckpt", "metrics.jsonl", "run.json"
    ]  # fmt: skip
    assert step_of(run / "latest.ckpt") == 50
    assert step_of(run / "best.ckpt") == 42
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert max(json.loads(line)["step"] for line in lines) == 50


@pytest.mark.parametrize("fixed", ["epoch-0003.ckpt", "metrics.jsonl", "run.json"])
def test_resume_discard_newer_all_or_nothing(invoke, corpus, tiny, monkeypatch, fixed):
    run = train_run(
        invoke, corpus, tiny, "rewind", "--epochs", "3", "--keep-epochs", "3"
    )
    before = snapshot(run)
    rename = Path.rename

    def rename_unless_fixed(self: Path, target):
        # as for a file marked immutable (chattr +i)
        if self.name == fixed:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(self))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", rename_unless_fixed)
    result = invoke(
        "resume", run / "epoch-0001.ckpt", "--max-steps", "50", "--discard-newer"
    )
    assert result.exit_code == 1, result.output
    assert f"Error: cannot delete or replace {run / fixed}" in result.stderr
    assert f"Hint: nothing in {run} was changed" in result.stderr
    assert snapshot(run) == before


def test_resume_defaults_to_newest_run(invoke, corpus, tiny):
    run = train_run(invoke, corpus, tiny, "only", "--max-steps", "10")
    result = invoke("resume", "--max-steps", "20", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["run_dir"] == str(run)
    assert summary["steps"] == 20
    assert summary["steps_this_session"] == 10


def test_resume_ignores_plot_of_older_run(invoke, corpus, tiny):
    older = train_run(invoke, corpus, tiny, "older", "--max-steps", "10")
    newer = train_run(invoke, corpus, tiny, "newer", "--max-steps", "10")
    now = time.time()
    os.utime(older / "run.json", (now - 60, now - 60))
    for name in ("latest.ckpt", "metrics.jsonl"):
        os.utime(older / name, (now - 60, now - 60))
    plotted = invoke("plot", older)
    assert plotted.exit_code == 0, plotted.output
    result = invoke("resume", "--max-steps", "20", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["run_dir"] == str(newer)
    assert f"Using {newer / 'latest.ckpt'} (newest run)" in result.stderr


def test_resume_changes_are_announced(invoke, corpus, tiny):
    run = train_run(invoke, corpus, tiny, "grow", "--epochs", "1")
    result = invoke("resume", "--epochs", "2", "--lr", "0.004")
    assert result.exit_code == 0, result.output
    assert "--epochs: 1 -> 2" in result.stderr
    assert "--lr: 0.002 -> 0.004" in result.stderr

    _, metadata = load_checkpoint(run / "latest.ckpt")
    epochs = [r for r in metadata["history"] if r["kind"] == "epoch"]
    assert epochs[1]["lr"] == pytest.approx(0.004)
    assert metadata["training"]["epochs"] == 2
    sessions = json.loads((run / "run.json").read_text())["sessions"]
    assert [s["command"] for s in sessions] == ["train", "resume"]
    result = invoke("resume", "--epochs", "3", "--max-steps", "100")
    assert result.exit_code == 0, result.output
    assert "--max-steps: no limit -> 100" in result.stderr


def test_resume_reuses_recorded_threads(invoke, corpus, tiny):
    run = train_run(invoke, corpus, tiny, "threads", "--max-steps", "5")
    result = invoke("resume", "--max-steps", "10")
    assert result.exit_code == 0, result.output
    assert f"Using --threads 1, recorded in {run / 'run.json'}" in result.stderr
    sessions = json.loads((run / "run.json").read_text())["sessions"]
    assert [s["threads"] for s in sessions] == [1, 1]
    result = invoke("resume", "--max-steps", "15", "--threads", "2")
    assert result.exit_code == 0, result.output
    assert "recorded in" not in result.stderr
    sessions = json.loads((run / "run.json").read_text())["sessions"]
    assert sessions[-1]["threads"] == 2


# ----------------------------------------------------------------------------
# rejections: exit non-zero, files unchanged


@pytest.fixture
def finished_run(invoke, corpus, tiny) -> Path:
    return train_run(invoke, corpus, tiny, "done", "--epochs", "1")


def snapshot(run: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(run.iterdir())}


def test_resume_finished_run_rejected(invoke, finished_run):
    before = snapshot(finished_run)
    result = invoke("resume")
    assert result.exit_code == 1
    assert "this run has completed --epochs 1 (epoch 1, step 42)" in result.stderr
    assert "Hint: pass --epochs above 1 to train further" in result.stderr
    assert snapshot(finished_run) == before


@pytest.mark.parametrize(
    "option, stored",
    [("--hidden-size", "16"), ("--layers", "1"), ("--batch-size", "4")],
)
def test_resume_architecture_options_rejected(invoke, finished_run, option, stored):
    before = snapshot(finished_run)
    result = invoke("resume", "--epochs", "2", option, "32")
    assert result.exit_code == 2
    assert f"{option} cannot change when resuming" in result.stderr
    assert f"built for {option} {stored}" in result.stderr
    assert snapshot(finished_run) == before


@pytest.mark.parametrize(
    "option, stored", [("--hidden-size", "16"), ("--seq-len", "16")]
)
def test_resume_accepts_unchanged_architecture(invoke, finished_run, option, stored):
    result = invoke("resume", "--epochs", "2", option, stored)
    assert result.exit_code == 0, result.output
    assert "cannot change" not in result.stderr


def test_resume_short_corpus_hint(invoke, finished_run, corpus, text_maker):
    corpus.write_text(text_maker(500))
    result = invoke("resume", "--epochs", "2", "--allow-new-corpus")
    assert result.exit_code == 1
    assert "is too short" in result.stderr
    hint = next(line for line in result.stderr.splitlines() if line.startswith("Hint"))
    assert "--corpus" in hint
    assert "start a new run with 'charlstm train'" in hint


def error_line(result) -> str:
    return next(line for line in result.stderr.splitlines() if line.startswith("Error"))


def test_resume_max_steps_below_current_step(invoke, finished_run):
    before = snapshot(finished_run)
    result = invoke("resume", "--epochs", "5", "--max-steps", "10")
    assert result.exit_code == 1
    assert error_line(result) == (
        "Error: this run is at or past --max-steps 10 (epoch 1, step 42)"
    )
    assert "Hint: pass --max-steps above 42 to train further" in result.stderr
    # the new limits are not announced when they cannot apply
    assert "->" not in result.stderr
    assert snapshot(finished_run) == before


def test_resume_finished_run_names_both_limits(invoke, finished_run):
    result = invoke("resume", "--max-steps", "10")
    assert result.exit_code == 1
    assert error_line(result) == (
        "Error: this run has completed --epochs 1 and is at or past --max-steps 10 "
        "(epoch 1, step 42)"
    )
    assert "Hint: pass --epochs above 1 and --max-steps above 42" in result.stderr


def test_resume_undecodable_corpus_hint(invoke, finished_run, tmp_path):
    before = snapshot(finished_run)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 au lait\n".encode("latin-1") * 200)
    result = invoke("resume", "--epochs", "2", "--corpus", latin1)
    assert result.exit_code == 1
    assert "is not valid utf-8" in result.stderr
    hint = next(line for line in result.stderr.splitlines() if line.startswith("Hint"))
    assert hint == (
        "Hint: this run decodes its corpus as utf-8; pass the file it trained on "
        "with --corpus"
    )
    assert snapshot(finished_run) == before


def test_resume_undecodable_new_corpus_hint(invoke, finished_run, tmp_path):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 au lait\n".encode("latin-1") * 200)
    args = ["--epochs", "2", "--corpus", latin1, "--allow-new-corpus"]
    result = invoke("resume", *args)
    assert result.exit_code == 1
    assert (
        "Hint: this run decodes its corpus as utf-8; pass a text file in that "
        "encoding with --corpus"
    ) in " ".join(result.stderr.split())


def test_resume_changed_corpus_rejected(invoke, finished_run, corpus):
    before = snapshot(finished_run)
    corpus.write_text(corpus.read_text() + "KING.\nMore lines.\n")
    result = invoke("resume", "--epochs", "2")
    assert result.exit_code == 1
    assert "differs from the one this run trained on" in result.stderr
    assert "size 3,000 -> 3,018 bytes" in result.stderr
    assert "--allow-new-corpus" in result.stderr
    assert snapshot(finished_run) == before


def test_resume_allow_new_corpus(invoke, finished_run, corpus):
    corpus.write_text(corpus.read_text() + "KING.\nMore lines.\n")
    result = invoke("resume", "--epochs", "2", "--allow-new-corpus")
    assert result.exit_code == 0, result.output
    assert "continuing on a changed corpus" in result.stderr
    _, metadata = load_checkpoint(finished_run / "latest.ckpt")
    assert metadata["corpus"]["size_bytes"] == 3018


def test_resume_new_corpus_counts_characters(invoke, finished_run, corpus, text_maker):
    _, metadata = load_checkpoint(finished_run / "latest.ckpt")
    n_vocab = len(metadata["vocab"])
    smaller = "".join(c for c in text_maker(6000) if c not in "KQ")
    corpus.write_text(smaller)
    result = invoke("resume", "--epochs", "2", "--allow-new-corpus")
    assert result.exit_code == 0, result.output
    expected = f"{len(set(smaller))} distinct (model vocabulary: {n_vocab});"
    assert expected in result.stderr


def test_resume_new_corpus_unknown_characters(invoke, finished_run, corpus):
    before = snapshot(finished_run)
    corpus.write_text(corpus.read_text() + "Zo\u00eb\n")
    result = invoke("resume", "--epochs", "2", "--allow-new-corpus")
    assert result.exit_code == 1
    assert "outside the model's vocabulary: 'Z', '\u00eb'" in result.stderr
    assert snapshot(finished_run) == before


def test_resume_moved_corpus(invoke, finished_run, corpus, tmp_path):
    moved = tmp_path / "moved.txt"
    corpus.rename(moved)
    result = invoke("resume", "--epochs", "2")
    assert result.exit_code == 1
    assert f"corpus file not found: {corpus.resolve()}" in result.stderr
    assert "Hint: pass its new location with --corpus" in result.stderr
    result = invoke("resume", "--epochs", "2", "--corpus", moved)
    assert result.exit_code == 0, result.output


def test_resume_truncated_checkpoint(invoke, finished_run):
    damaged = finished_run / "latest.ckpt"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    result = invoke("resume", "--epochs", "2")
    assert result.exit_code == 1
    assert f"checkpoint {damaged} is truncated" in result.stderr
    assert "Traceback" not in result.output


def rewrite_metadata(checkpoint: Path, section: str, key: str | None, value) -> None:
    """Save `checkpoint` again with one metadata value replaced, as a hand edit would."""
    from charlstm_cli.checkpoint import save_checkpoint

    tensors, metadata = load_checkpoint(checkpoint)
    if key is None:
        metadata[section] = value
    else:
        metadata[section][key] = value
    save_checkpoint(checkpoint, tensors, metadata)


@pytest.mark.parametrize(
    "section, key, value, field",
    [
        ("progress", "epoch", -1, "progress.epoch"),
        ("progress", "step", "12", "progress.step"),
        ("progress", "stream_positions", [0, 1], "progress.stream_positions"),
        ("progress", "train_rng", [1, 2, 3, -4], "progress.train_rng"),
        ("model", "n_hidden", 2**40, "model.n_hidden"),
        ("model", "n_layers", 9, "model.n_layers"),
        ("training", "batch_size", 0, "training.batch_size"),
        ("training", "lr", float("nan"), "training.lr"),
        ("training", "lr", -1.0, "training.lr"),
        ("training", "dropout", 1.0, "training.dropout"),
        ("training", "clip_norm", -5.0, "training.clip_norm"),
        ("training", "lr_decay_factor", 0.0, "training.lr_decay_factor"),
        ("best_epoch", None, -3, "best_epoch"),
        ("run_id", None, 7, "run_id"),
    ],
)
def test_resume_edited_metadata_rejected(
    invoke, finished_run, section, key, value, field
):
    checkpoint = finished_run / "latest.ckpt"
    rewrite_metadata(checkpoint, section, key, value)
    for command in (["resume", checkpoint, "--epochs", "2"], ["generate", checkpoint]):
        result = invoke(*command)
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert f"checkpoint {checkpoint} has an invalid {field}:" in result.stderr
    assert not list(finished_run.glob("epoch--*"))


@pytest.mark.parametrize("key, value", [("n_hidden", 17), ("n_layers", 2)])
def test_edited_size_rejected_before_allocating(invoke, finished_run, key, value):
    checkpoint = finished_run / "latest.ckpt"
    rewrite_metadata(checkpoint, "model", key, value)
    for command in (["resume", checkpoint, "--epochs", "2"], ["generate", checkpoint]):
        result = invoke(*command)
        assert result.exit_code == 1, result.output
        assert "model parameters, but its settings" in result.stderr
        assert "Hint: the file was edited or damaged" in result.stderr


def test_edited_vocabulary_size_names_both_fields(invoke, finished_run):
    checkpoint = finished_run / "latest.ckpt"
    _, metadata = load_checkpoint(checkpoint)
    n_vocab = metadata["model"]["n_vocab"]
    rewrite_metadata(checkpoint, "model", "n_vocab", n_vocab + 1)
    result = invoke("generate", checkpoint)
    assert result.exit_code == 1, result.output
    assert (
        f"lists {n_vocab} vocab entries, but its model.n_vocab is {n_vocab + 1}"
        in result.stderr
    )


def test_resume_duplicate_vocab_rejected(invoke, finished_run):
    checkpoint = finished_run / "latest.ckpt"
    _, metadata = load_checkpoint(checkpoint)
    vocab = metadata["vocab"]
    rewrite_metadata(checkpoint, "vocab", None, [vocab[0], *vocab[:-1]])
    result = invoke("resume", checkpoint, "--epochs", "2")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    expected = (
        f"has an invalid vocab: [{vocab[0]!r}] (expected each character listed once)"
    )
    assert expected in result.stderr


def test_resume_locked_folder_rejected(invoke, finished_run):
    import fcntl

    before = snapshot(finished_run)
    fd = os.open(finished_run, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = invoke("resume", "--epochs", "2")
    finally:
        os.close(fd)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert (
        f"Error: run folder {finished_run} is in use by another charlstm process"
        in result.stderr
    )
    assert "Hint: " in result.stderr
    assert snapshot(finished_run) == before
    result = invoke("resume", "--epochs", "2")
    assert result.exit_code == 0, result.output


# ----------------------------------------------------------------------------
# folders that are not the checkpoint's run folder: rejected, files unchanged


def copy_into(folder: Path, source: Path, name: str) -> Path:
    """Copy checkpoint `source` into `folder` (made if missing) as `name`."""
    folder.mkdir(exist_ok=True)
    target = folder / name
    shutil.copyfile(source, target)
    return target


def assert_folder_rejected(result, checkpoint: Path, folder: Path, reason: str):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert lines == [
        f"Error: cannot resume {checkpoint} in folder {folder}: {reason}",
        f"Hint: copy {checkpoint} into a new, empty folder and resume the copy there",
    ]


def run_id_of(checkpoint: Path) -> str | None:
    _, metadata = load_checkpoint(checkpoint)
    return metadata.get("run_id")


def test_resume_foreign_latest_kept(invoke, corpus, tiny, tmp_path):
    small = train_run(invoke, corpus, tiny, "small", "--epochs", "1")
    big = train_run(
        invoke, corpus, tiny, "big", "--epochs", "1", "--hidden-size", "24",
        "--layers", "2",
    )  # fmt: skip
    folder = tmp_path / "mixed"
    copy_into(folder, small / "latest.ckpt", "latest.ckpt")
    checkpoint = copy_into(folder, big / "latest.ckpt", "big.ckpt")
    before = snapshot(folder)
    result = invoke("resume", checkpoint, "--epochs", "4", "--max-steps", "70")
    reason = (
        "the folder's latest.ckpt belongs to another run, and resuming would replace it"
    )
    assert_folder_rejected(result, checkpoint, folder, reason)
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    "files, reason",
    [
        (
            {"metrics.jsonl": "my notes\n", "run.json": '{"my": "config"}\n'},
            (
                "the folder's run.json is not from a charlstm run, and resuming "
                "would change it"
            ),
        ),
        (
            {"metrics.jsonl": "my notes\n"},
            (
                "the folder's metrics.jsonl belongs to no run, because the folder "
                "has no run.json, and resuming would overwrite it"
            ),
        ),
        (
            {"run.json": '{"model": '},
            "the folder's run.json is unreadable, so it may belong to another run",
        ),
    ],
    ids=["user-run-json", "metrics-only", "damaged-run-json"],
)
def test_resume_user_files_kept(
    invoke, finished_run, tmp_path, files: dict[str, str], reason: str
):
    folder = tmp_path / "notes"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    checkpoint = copy_into(folder, finished_run / "latest.ckpt", "foo.ckpt")
    before = snapshot(folder)
    result = invoke("resume", checkpoint, "--epochs", "2", "--max-steps", "70")
    assert_folder_rejected(result, checkpoint, folder, reason)
    assert snapshot(folder) == before


def test_resume_discard_newer_keeps_foreign_latest(invoke, corpus, tiny, tmp_path):
    later = train_run(invoke, corpus, tiny, "later", "--epochs", "3")
    # the same model settings, but another run
    earlier = train_run(
        invoke, corpus, tiny, "earlier", "--epochs", "1", "--rng-seed", "2"
    )
    folder = tmp_path / "mixed"
    copy_into(folder, later / "latest.ckpt", "latest.ckpt")
    checkpoint = copy_into(folder, earlier / "latest.ckpt", "early.ckpt")
    before = snapshot(folder)
    reason = (
        "the folder's latest.ckpt belongs to another run, and resuming would replace it"
    )
    for extra in ([], ["--discard-newer"]):
        result = invoke("resume", checkpoint, "--epochs", "2", *extra)
        assert_folder_rejected(result, checkpoint, folder, reason)
        assert snapshot(folder) == before


def test_resume_foreign_checkpoint_in_run_folder(invoke, corpus, tiny):
    run = train_run(invoke, corpus, tiny, "mine", "--epochs", "1")
    other = train_run(invoke, corpus, tiny, "other", "--epochs", "1", "--rng-seed", "2")
    checkpoint = copy_into(run, other / "latest.ckpt", "other.ckpt")
    before = snapshot(run)
    result = invoke("resume", checkpoint, "--epochs", "2")
    reason = (
        "the folder's run.json belongs to another run, and resuming would change it"
    )
    assert_folder_rejected(result, checkpoint, run, reason)
    assert snapshot(run) == before


def test_resume_foreign_best_kept(invoke, corpus, tiny):
    run = train_run(invoke, corpus, tiny, "mine", "--epochs", "1")
    other = train_run(invoke, corpus, tiny, "other", "--epochs", "1", "--rng-seed", "2")
    copy_into(run, other / "best.ckpt", "best.ckpt")
    before = snapshot(run)
    result = invoke("resume", run / "latest.ckpt", "--epochs", "2")
    reason = (
        "the folder's best.ckpt belongs to another run, and resuming could "
        "replace or delete it"
    )
    assert_folder_rejected(result, run / "latest.ckpt", run, reason)
    assert snapshot(run) == before


def test_resume_copy_in_new_folder(invoke, corpus, tiny, tmp_path):
    run = train_run(
        invoke, corpus, tiny, "source", "--epochs", "2", "--max-steps", "50",
        *EXACT_OPTIONS,
    )  # fmt: skip
    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert run_id_of(run / "latest.ckpt") == run_id
    folder = tmp_path / "branch"
    checkpoint = copy_into(folder, run / "latest.ckpt", "start.ckpt")
    source_files = snapshot(run)

    result = invoke("resume", checkpoint, "--max-steps", "84")
    assert result.exit_code == 0, result.output
    assert f"Run folder: {folder}" in result.stderr
    assert snapshot(run) == source_files
    names = sorted(path.name for path in folder.iterdir())
    assert names == [
        "best.ckpt", "epoch-0002.ckpt", "latest.ckpt", "metrics.jsonl", "run.json",
        "start.ckpt",
    ]  # fmt: skip
    assert json.loads((folder / "run.json").read_text())["run_id"] == run_id
    assert run_id_of(folder / "latest.ckpt") == run_id
    # the copy continues exactly as the original would
    result = invoke("resume", run / "latest.ckpt", "--max-steps", "84")
    assert result.exit_code == 0, result.output
    assert_same_checkpoint(run / "latest.ckpt", folder / "latest.ckpt")
    # the folder is now the copy's run folder
    result = invoke(
        "resume", folder / "latest.ckpt", "--epochs", "3", "--max-steps", "90"
    )
    assert result.exit_code == 0, result.output
    assert step_of(folder / "latest.ckpt") == 90


def test_train_gives_each_run_an_id(invoke, corpus, tiny):
    first = train_run(invoke, corpus, tiny, "first", "--epochs", "1")
    second = train_run(invoke, corpus, tiny, "second", "--epochs", "1")
    ids = []
    for run in (first, second):
        run_id = json.loads((run / "run.json").read_text())["run_id"]
        assert isinstance(run_id, str)
        for name in ("latest.ckpt", "best.ckpt", "epoch-0001.ckpt"):
            assert run_id_of(run / name) == run_id, name
        ids.append(run_id)
    assert ids[0] != ids[1]


def drop_run_ids(run: Path) -> None:
    """Remove run_id from run.json and all checkpoints, as before run ids existed."""
    from charlstm_cli.checkpoint import save_checkpoint

    info = json.loads((run / "run.json").read_text())
    del info["run_id"]
    (run / "run.json").write_text(json.dumps(info))
    for checkpoint in run.glob("*.ckpt"):
        tensors, metadata = load_checkpoint(checkpoint)
        del metadata["run_id"]
        save_checkpoint(checkpoint, tensors, metadata)


def test_resume_runs_without_run_id(invoke, corpus, tiny):
    run = train_run(invoke, corpus, tiny, "old", "--epochs", "1")
    other = train_run(
        invoke, corpus, tiny, "old-big", "--epochs", "1", "--hidden-size", "24"
    )
    drop_run_ids(run)
    drop_run_ids(other)
    checkpoint = copy_into(run, other / "latest.ckpt", "other.ckpt")
    before = snapshot(run)
    result = invoke("resume", checkpoint, "--epochs", "2")
    reason = (
        "the folder's run.json belongs to another run (its model settings differ), "
        "and resuming would change it"
    )
    assert_folder_rejected(result, checkpoint, run, reason)
    assert snapshot(run) == before

    result = invoke("resume", run / "latest.ckpt", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert run_id_of(run / "latest.ckpt") is None


def test_resume_nonfinite_keeps_folder(invoke, finished_run, tmp_path):
    folder = tmp_path / "mine"
    checkpoint = copy_into(folder, finished_run / "latest.ckpt", "model.bin")
    (folder / "notes.txt").write_text("my notes\n")
    result = invoke("resume", checkpoint, "--epochs", "3", "--lr", "1e38")
    assert result.exit_code == 1, result.output
    assert "NaN or infinite" in result.stderr
    assert "Removed" not in result.stderr
    assert (folder / "notes.txt").read_text() == "my notes\n"
    assert checkpoint.read_bytes() == (finished_run / "latest.ckpt").read_bytes()


# ----------------------------------------------------------------------------
# signals in a real process


def wait_for_steps(
    metrics: Path, process: subprocess.Popen, timeout: float = 30
) -> None:
    """Wait until the training subprocess has written a few step records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "training exited before it was signalled"
        if metrics.exists() and metrics.read_text().count("\n") >= 3:
            return
        time.sleep(0.05)
    pytest.fail(f"no step records in {metrics} after {timeout} s")


@pytest.mark.parametrize(
    "signals, exit_code",
    [
        ([signal.SIGINT], 130),
        ([signal.SIGINT, signal.SIGINT], 130),
        ([signal.SIGTERM], 143),
        ([signal.SIGHUP], 129),
    ],
    ids=["sigint", "double-sigint", "sigterm", "sighup"],
)
def test_signal_saves_and_resumes(
    run_module, corpus, tiny, charlstm_home, tmp_path, invoke, signals, exit_code
):
    run = charlstm_home / "runs" / "sig"
    stderr_path = tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "charlstm_cli", "train", "--corpus", str(corpus)]
    command += [*tiny, "--epochs", "100000", "--name", "sig"]
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=run_module.env,
            cwd=tmp_path,
        )
        try:
            wait_for_steps(run / "metrics.jsonl", process)
            for signum in signals:
                process.send_signal(signum)
                time.sleep(0.01)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = stderr_path.read_text()
    assert process.returncode == exit_code, output
    assert f"Continue with: charlstm resume {run / 'latest.ckpt'}" in output
    assert "Traceback" not in output
    assert not list(run.glob(".*.tmp-*"))

    _, metadata = load_checkpoint(run / "latest.ckpt")
    stopped_at = metadata["progress"]["step"]
    assert stopped_at > 0
    assert metadata["progress"]["finished"] is False
    result = invoke("resume", run / "latest.ckpt", "--max-steps", str(stopped_at + 5))
    assert result.exit_code == 0, result.output
    _, resumed = load_checkpoint(run / "latest.ckpt")
    assert resumed["progress"]["step"] == stopped_at + 5


def test_closed_stderr_saves_and_exits(run_module, text_maker, tiny, charlstm_home, tmp_path):
    # `charlstm train ... 2>&1 | head` closes the pipe while training runs. With
    # thousands of steps per epoch, the pipe closes between two epoch ends.
    corpus = tmp_path / "long.txt"
    corpus.write_text(text_maker(300_000), encoding="utf-8")
    run = charlstm_home / "runs" / "piped"
    command = [sys.executable, "-m", "charlstm_cli", "train", "--corpus", str(corpus)]
    command += [*tiny, "--epochs", "100000", "--name", run.name, "--log-every", "1"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=run_module.env,
    )
    try:
        wait_for_steps(run / "metrics.jsonl", process)
        process.stderr.close()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGPIPE
    _, metadata = load_checkpoint(run / "latest.ckpt")
    # saved at the step whose line could not be written, not at an epoch end
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [record["step"] for record in records if record.get("kind") == "step"]
    assert metadata["progress"]["step"] == steps[-1]
    assert metadata["progress"]["finished"] is False
    assert not list(run.glob(".*.tmp-*"))


def start_endless_training(run_module, corpus, tiny, run: Path, **options):
    """Start `charlstm train` into run folder `run` in the background."""
    command = [sys.executable, "-m", "charlstm_cli", "train", "--corpus", str(corpus)]
    command += [*tiny, "--epochs", "100000", "--name", run.name]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=run_module.env,
        **options,
    )


def test_ignored_sigint_stays_ignored(run_module, corpus, tiny, charlstm_home):
    # a shell starts a background job with SIGINT ignored, so that Ctrl-C
    # aimed at the shell's foreground does not reach it
    run = charlstm_home / "runs" / "background"
    process = start_endless_training(
        run_module,
        corpus,
        tiny,
        run,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        wait_for_steps(run / "metrics.jsonl", process)
        process.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert process.poll() is None, "SIGINT stopped a training that ignored it"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143


def test_resume_during_training_rejected(
    run_module, corpus, tiny, charlstm_home, invoke
):
    run = charlstm_home / "runs" / "busy"
    process = start_endless_training(run_module, corpus, tiny, run)
    try:
        deadline = time.monotonic() + 30
        while not (run / "latest.ckpt").exists():
            assert process.poll() is None, "training exited early"
            assert time.monotonic() < deadline, "training saved no checkpoint"
            time.sleep(0.05)
        # a few steps on, so that without the lock the resume ends quickly
        limit = step_of(run / "latest.ckpt") + 5
        result = invoke("resume", run / "latest.ckpt", "--max-steps", limit)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert result.exit_code == 1, result.output
    assert f"run folder {run} is in use by another charlstm process" in result.stderr
    assert process.returncode == 130


@pytest.mark.parametrize(
    "name, content",
    [
        ("epoch-0009.ckpt", b"my own notes\n"),
        ("epoch-1.ckpt", b"my own notes\n"),
        ("best.ckpt", b""),
    ],
)
def test_resume_keeps_unreadable_files_with_checkpoint_names(
    invoke, corpus, tiny, name, content
):
    run = train_run(invoke, corpus, tiny, "own", "--epochs", "2", "--keep-epochs", "2")
    (run / name).write_bytes(content)
    before = snapshot(run)
    result = invoke("resume", run / "latest.ckpt", "--epochs", "3")
    assert result.exit_code == 1, result.output
    assert f"the folder's {name} is not a readable checkpoint" in result.stderr
    assert "Hint: move that file out of the folder" in result.stderr
    assert snapshot(run) == before


def test_resume_rejects_folder_named_like_latest(invoke, corpus, tiny, tmp_path):
    run = train_run(invoke, corpus, tiny, "src", "--epochs", "1", "--keep-epochs", "1")
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "epoch-0001.ckpt").write_bytes((run / "epoch-0001.ckpt").read_bytes())
    (copy / "latest.ckpt").mkdir()
    result = invoke("resume", copy / "epoch-0001.ckpt", "--epochs", "2")
    assert result.exit_code == 1, result.output
    assert "the folder's latest.ckpt is not a file" in result.stderr
    assert "Hint: move that entry out of the folder" in result.stderr
    assert sorted(path.name for path in copy.iterdir()) == [
        "epoch-0001.ckpt",
        "latest.ckpt",
    ]
