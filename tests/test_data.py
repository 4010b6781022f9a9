"""Corpus reading, vocabulary, batching and run-folder paths, without training."""

from __future__ import annotations

import codecs
import errno
import hashlib
import os
import time
from array import array
from pathlib import Path

import pytest

from charlstm_cli import data as data_module
from charlstm_cli import paths
from charlstm_cli.data import (
    StreamBatcher,
    build_vocab,
    check_corpus_size,
    decode,
    default_sample_seed,
    encode,
    format_characters,
    min_corpus_chars,
    read_corpus,
    split_validation,
    unknown_characters,
)
from charlstm_cli.errors import UserError


def write(tmp_path: Path, data: bytes, name: str = "c.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------
# reading


def test_read_removes_bom_and_normalises_newlines(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfone\r\ntwo\rthree\n")
    corpus = read_corpus(path)
    assert corpus.text == "one\ntwo\nthree\n"
    assert corpus.size_bytes == 18
    assert corpus.n_chars == 14
    assert corpus.path == path.resolve()


def test_read_fingerprint_is_sha256_of_raw_bytes(tmp_path):
    raw = "caf\u00e9\r\n".encode()
    corpus = read_corpus(write(tmp_path, raw))
    assert corpus.sha256 == hashlib.sha256(raw).hexdigest()
    assert corpus.fingerprint()["size_bytes"] == len(raw)


def test_read_other_encoding(tmp_path):
    path = write(tmp_path, "na\u00efve".encode("latin-1"))
    assert read_corpus(path, "latin-1").text == "na\u00efve"


def test_read_invalid_utf8_names_offset(tmp_path):
    path = write(tmp_path, b"abc\n" + "d\u00e9f".encode("latin-1"))
    with pytest.raises(UserError) as info:
        read_corpus(path)
    assert "offset 5" in info.value.message
    assert "0xe9" in info.value.message
    assert "--encoding" in info.value.hint


def test_read_binary_file_rejected(tmp_path):
    path = write(tmp_path, b"PK\x03\x04\x00\x00binary")
    with pytest.raises(UserError) as info:
        read_corpus(path)
    assert "binary" in info.value.message
    assert "offset 4" in info.value.message


# Text with a UTF-16 or UTF-32 byte order mark, in both byte orders.
WIDE_TEXTS = [
    pytest.param(codecs.BOM_UTF16_LE + "to be\n".encode("utf-16-le"), "utf-16", id="16le"),
    pytest.param(codecs.BOM_UTF16_BE + "to be\n".encode("utf-16-be"), "utf-16", id="16be"),
    pytest.param(codecs.BOM_UTF32_LE + "to be\n".encode("utf-32-le"), "utf-32", id="32le"),
    pytest.param(codecs.BOM_UTF32_BE + "to be\n".encode("utf-32-be"), "utf-32", id="32be"),
]  # fmt: skip


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_read_utf16_without_mark_names_encoding(tmp_path, codec):
    path = write(tmp_path, "to be, or not to be\n".encode(codec))
    with pytest.raises(UserError) as info:
        read_corpus(path)
    assert info.value.message == (
        f"corpus file {path.resolve()} has a NUL byte in every other position, as "
        f"{codec.upper()} text without a byte order mark has, so it cannot be read "
        "as utf-8"
    )
    assert info.value.hint == f"pass --encoding {codec} if it is text"
    assert read_corpus(path, codec).text == "to be, or not to be\n"


def test_read_binary_with_nul_bytes_stays_binary(tmp_path):
    path = write(tmp_path, bytes(range(256)) * 4)
    with pytest.raises(UserError) as info:
        read_corpus(path)
    assert "looks binary" in info.value.message


@pytest.mark.parametrize("raw, family", WIDE_TEXTS)
def test_read_byte_order_mark_names_encoding(tmp_path, raw, family):
    path = write(tmp_path, raw)
    with pytest.raises(UserError) as info:
        read_corpus(path)
    assert info.value.message == (
        f"corpus file {path.resolve()} starts with a {family.upper()} byte order "
        "mark, so it cannot be read as utf-8"
    )
    assert f"--encoding {family}," in info.value.hint
    assert read_corpus(path, family).text == "to be\n"


@pytest.mark.parametrize(
    "raw, encoding, family",
    [
        ("to be\n".encode("utf-16"), "cp1252", "utf-16"),
        (codecs.BOM_UTF16_LE + "to be\n".encode("utf-16-le"), "utf-16-be", "utf-16"),
        ("to be\n".encode("utf-32"), "utf-16", "utf-32"),
        ("to be\n".encode("utf-16"), "utf-32", "utf-16"),
    ],
    ids=["16-as-cp1252", "16le-as-16be", "32-as-16", "16-as-32"],
)
def test_read_byte_order_mark_other_encoding(tmp_path, raw, encoding, family):
    with pytest.raises(UserError) as info:
        read_corpus(write(tmp_path, raw), encoding)
    assert info.value.message.endswith(f"cannot be read as {encoding}")
    assert f"--encoding {family}," in info.value.hint


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])
def test_read_byte_order_mark_matching_encoding(tmp_path, encoding):
    path = write(tmp_path, codecs.BOM_UTF16_LE + "to be\n".encode("utf-16-le"))
    assert read_corpus(path, encoding).text == "to be\n"


def test_read_oversized_file_rejected_unread(tmp_path, monkeypatch):
    path = tmp_path / "huge.txt"
    with open(path, "wb") as sparse:
        sparse.truncate(4096)  # a sparse file: its size, not its bytes, must stop it
    monkeypatch.setattr(data_module, "MAX_CORPUS_BYTES", 1024)
    monkeypatch.setattr(data_module, "_read_limited", None)  # reading at all would fail
    with pytest.raises(UserError, match="larger than the 0 MiB limit"):
        read_corpus(path)


class _EndlessStream:
    """A stream that never ends, like `yes` into a pipe, counting its reads."""

    def __init__(self, chunk: bytes):
        self.chunk = chunk
        self.reads = 0

    def read(self, size: int) -> bytes:
        self.reads += 1
        return self.chunk


def test_endless_text_stream_stops_at_limit(monkeypatch):
    monkeypatch.setattr(data_module, "MAX_CORPUS_BYTES", 3 * 1024 * 1024)
    stream = _EndlessStream(b"hello\n" * 100_000)
    with pytest.raises(UserError, match="standard input is larger than the 3 MiB limit"):
        data_module._read_limited(stream, "standard input", "utf-8")
    assert stream.reads <= 7


def test_endless_binary_stream_stops_at_once():
    stream = _EndlessStream(b"\x00" * 4096)
    with pytest.raises(UserError, match="looks binary: it contains a NUL byte at offset 0"):
        data_module._read_limited(stream, "standard input", "utf-8")
    assert stream.reads == 1


def test_utf16_stream_stops_at_once():
    stream = _EndlessStream("to be\n".encode("utf-16"))
    with pytest.raises(UserError, match="starts with a UTF-16 byte order mark"):
        data_module._read_limited(stream, "standard input", "utf-8")
    assert stream.reads == 1


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf"])
def test_read_empty_file_rejected(tmp_path, data):
    with pytest.raises(UserError, match="is empty"):
        read_corpus(write(tmp_path, data))


def test_read_missing_file_rejected(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_corpus(tmp_path / "nope.txt")


def test_read_directory_rejected(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        read_corpus(tmp_path)


def test_read_unknown_encoding_rejected(tmp_path):
    with pytest.raises(UserError, match="unknown text encoding 'klingon'"):
        read_corpus(write(tmp_path, b"abc"), "klingon")


# ----------------------------------------------------------------------------
# vocabulary


def test_vocab_sorted_distinct_characters():
    assert build_vocab("banana\n") == ["\n", "a", "b", "n"]


def test_encode_decode_round_trip():
    vocab = build_vocab("hello world")
    tokens = encode("hello world", vocab)
    assert tokens.typecode == "i"
    assert decode(tokens, vocab) == "hello world"


def test_unknown_characters_in_order_of_appearance():
    assert unknown_characters("x\u00e9yx\u20ac", ["x", "y"]) == ["\u00e9", "\u20ac"]


def test_format_characters_uses_repr_and_limit():
    assert format_characters(["\t", "\u00e9"]) == "'\\t', '\u00e9'"
    assert format_characters(list("abcd"), limit=2) == "'a', 'b' and 2 more"


def test_default_sample_seed_prefers_speaker_line():
    text = "Title\n\nHAM.\nTo be.\n\nHOR.\nAy.\n\nHAM.\nNo.\n\nHAM.\nYes.\n"
    assert default_sample_seed(text) == "HAM.\n"


def test_default_sample_seed_falls_back_to_first_line():
    assert default_sample_seed("\n\n  just prose here\nmore") == "just prose here\n"


def test_default_sample_seed_without_newline():
    text = "one long line of prose without any line break"
    seed = default_sample_seed(text)
    assert seed == text[:40]
    assert set(seed) <= set(text)


# ----------------------------------------------------------------------------
# splitting and batching


def test_split_validation_takes_the_end():
    tokens = array("i", range(100))
    train, val = split_validation(tokens, 0.1)
    assert list(train) == list(range(90))
    assert list(val) == list(range(90, 100))


def test_batcher_streams_and_shifted_targets():
    tokens = array("i", range(40))
    batcher = StreamBatcher(tokens, batch_size=2, seq_len=3)
    # streams: 0..19 and 20..39; (20 - 1) // 3 = 6 batches per epoch
    assert batcher.n_batches == 6
    inputs, targets = batcher.batch(0)
    assert list(inputs) == [0, 1, 2, 20, 21, 22]
    assert list(targets) == [1, 2, 3, 21, 22, 23]
    inputs, targets = batcher.batch(1)
    assert list(inputs) == [3, 4, 5, 23, 24, 25]
    assert batcher.positions(1) == [3, 23]


def test_batcher_last_batch_stays_inside_each_stream():
    tokens = array("i", range(40))
    batcher = StreamBatcher(tokens, batch_size=2, seq_len=3)
    _, targets = batcher.batch(batcher.n_batches - 1)
    assert list(targets) == [16, 17, 18, 36, 37, 38]
    with pytest.raises(IndexError):
        batcher.batch(batcher.n_batches)


def test_min_corpus_chars_is_exact():
    for batch_size, seq_len, fraction in [(4, 16, 0.1), (32, 64, 0.1), (3, 5, 0.3)]:
        need = min_corpus_chars(batch_size, seq_len, fraction)
        per_split = batch_size * (seq_len + 1)
        n_val = int(need * fraction)
        assert need - n_val >= per_split
        assert n_val >= per_split
        n_val_short = int((need - 1) * fraction)
        assert need - 1 - n_val_short < per_split or n_val_short < per_split


def test_min_corpus_chars_without_validation():
    assert min_corpus_chars(4, 16, 0.0) == 68


def test_check_corpus_size_names_minimum():
    with pytest.raises(UserError) as info:
        check_corpus_size(500, 4, 16, 0.1, "c.txt")
    assert "500 characters" in info.value.message
    assert f"at least {min_corpus_chars(4, 16, 0.1)}" in info.value.message
    assert "--batch-size" in info.value.hint


# ----------------------------------------------------------------------------
# paths


def test_data_home_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARLSTM_HOME", str(tmp_path / "env"))
    assert paths.data_home(tmp_path / "option") == tmp_path / "option"
    assert paths.data_home(None) == tmp_path / "env"
    monkeypatch.delenv("CHARLSTM_HOME")
    assert paths.data_home(None).name == "charlstm"


def set_mtime(path: Path, seconds: float) -> None:
    os.utime(path, (seconds, seconds))


def test_list_runs_most_recent_first(tmp_path):
    old = paths.create_run_folder(tmp_path, "old")
    new = paths.create_run_folder(tmp_path, "new")
    now = time.time()
    for run, age in ((old, 100), (new, 200)):
        (run / paths.RUN_INFO).write_text("{}")
        set_mtime(run / paths.RUN_INFO, now - age)
    (old / paths.METRICS).write_text("")
    set_mtime(old / paths.METRICS, now)
    assert paths.list_runs(tmp_path) == [old, new]
    assert paths.latest_run(tmp_path) == old


def test_list_runs_ignores_folder_time(tmp_path):
    old = paths.create_run_folder(tmp_path, "old")
    new = paths.create_run_folder(tmp_path, "new")
    now = time.time()
    for run, age in ((old, 200), (new, 100)):
        (run / paths.RUN_INFO).write_text("{}")
        (run / paths.LATEST).write_bytes(b"x")
        set_mtime(run / paths.RUN_INFO, now - age)
        set_mtime(run / paths.LATEST, now - age)
    # plot writes loss.png into a run, which updates the folder's time
    (old / "loss.png").write_bytes(b"png")
    set_mtime(old, now)
    assert paths.latest_run(tmp_path) == new
    assert paths.default_checkpoint(tmp_path) == new / paths.LATEST


def test_default_checkpoint_newest_run_without_one(tmp_path):
    with_checkpoint = paths.create_run_folder(tmp_path, "a")
    (with_checkpoint / paths.LATEST).write_bytes(b"x")
    empty = paths.create_run_folder(tmp_path, "b")
    (empty / paths.RUN_INFO).write_text("{}")
    now = time.time()
    set_mtime(with_checkpoint / paths.LATEST, now - 50)
    set_mtime(empty / paths.RUN_INFO, now)
    with pytest.raises(UserError) as info:
        paths.default_checkpoint(tmp_path)
    assert info.value.message == f"the newest run {empty} has no checkpoint yet"
    assert str(with_checkpoint / paths.LATEST) in info.value.hint


def test_default_checkpoint_without_runs_explains(tmp_path):
    with pytest.raises(UserError) as info:
        paths.default_checkpoint(tmp_path)
    assert "no training runs found" in info.value.message
    assert "charlstm train" in info.value.hint


def test_run_names_are_unique_and_checked(tmp_path):
    first = paths.create_run_folder(tmp_path, None)
    second = paths.create_run_folder(tmp_path, None)
    assert first != second
    with pytest.raises(UserError, match="already exists"):
        paths.create_run_folder(tmp_path, first.name)
    with pytest.raises(UserError, match="invalid run name"):
        paths.create_run_folder(tmp_path, "../escape")


def test_replace_file_read_only_cleanup(tmp_path, monkeypatch):
    target = tmp_path / "run.json"
    target.write_text("old")

    def fail_read_only(path: Path, *args, **kwargs) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    # on a read-only mount, unlink fails with EROFS even for a missing file
    monkeypatch.setattr(Path, "unlink", fail_read_only)
    with pytest.raises(UserError) as info:
        paths.replace_file(target, fail_read_only)
    assert info.value.message == f"cannot write {target}: Read-only file system"
    assert info.value.hint.startswith(f"make {tmp_path} writable")
    assert target.read_text() == "old"


def test_metrics_write_error_survives_failed_cleanup(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from charlstm_cli import checkpoint, train
    from charlstm_cli.errors import UserError

    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def cannot_truncate(fd, size):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(checkpoint, "write_all", disk_full)
    monkeypatch.setattr(train.os, "ftruncate", cannot_truncate)
    training = SimpleNamespace(run_dir=tmp_path, run=SimpleNamespace(history=[]))
    with pytest.raises(UserError) as caught:
        train.Training.append_record(training, {"kind": "step", "step": 1})
    assert caught.value.message.endswith(
        f"{tmp_path / 'metrics.jsonl'}: {os.strerror(errno.ENOSPC)}"
    )
    assert training.run.history == []


def test_taken_run_name_gets_next_suffix(monkeypatch, tmp_path):
    # another train creates the folder between new_run_name and mkdir
    (tmp_path / "runs" / "20261204-213447").mkdir(parents=True)
    names = iter(["20261204-213447", "20261204-213447-2"])
    monkeypatch.setattr(paths, "new_run_name", lambda home: next(names))
    run = paths.create_run_folder(tmp_path, None)
    assert run == tmp_path / "runs" / "20261204-213447-2"
    assert run.is_dir()
