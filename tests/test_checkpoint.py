"""Checkpoint format: round trips, every corrupt-file error, and failed saves."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from array import array
from pathlib import Path

import pytest

from charlstm_cli import __version__
from charlstm_cli import checkpoint as ckpt
from charlstm_cli.checkpoint import (
    CheckpointError,
    Tensor,
    load_checkpoint,
    prune_epoch_checkpoints,
    read_checkpoint_summary,
    save_checkpoint,
)
from charlstm_cli.errors import UserError

# struct codes for each safetensors dtype, used by the independent reader below
STRUCT_CODES = {"F32": "f", "F64": "d", "I32": "i", "I64": "q", "U64": "Q", "U8": "B"}


def sample_tensors() -> dict[str, Tensor]:
    """Return one small tensor of every dtype, with values that use the full range."""
    return {
        "model.w": Tensor(
            "F32", (2, 3), struct.pack("<6f", 0.5, -1.25, 3e30, -0.0, 1e-38, 7)
        ),
        "optim.step": Tensor("F64", (1,), struct.pack("<d", 3.141592653589793)),
        "state.ids": Tensor(
            "I32", (2, 2), struct.pack("<4i", -(2**31), -1, 0, 2**31 - 1)
        ),
        "a.big": Tensor("I64", (2,), struct.pack("<2q", -(2**63), 2**63 - 1)),
        "rng": Tensor("U64", (4,), struct.pack("<4Q", 0, 1, 2**63, 2**64 - 1)),
        "bytes": Tensor("U8", (5,), bytes([0, 1, 127, 128, 255])),
        "empty": Tensor("F32", (0, 4), b""),
        "scalar": Tensor("F32", (), struct.pack("<f", 2.0)),
    }


def sample_metadata() -> dict:
    return {
        "model": {"n_vocab": 5, "n_hidden": 4, "n_layers": 2, "forget_bias": 1.0},
        "vocab": ["\n", "\t", " ", "é", "😀"],
        "progress": {"epoch": 3, "step": 120, "lr": 0.002, "finished": False},
        "history": [{"kind": "step", "step": 1, "loss": 1.5}],
        "best_val_loss": None,
        "saved_at": "2024-05-01T12:00:00+00:00",
    }


def read_header(path: Path) -> tuple[dict, int]:
    """Return the parsed JSON header and the offset where the data starts."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + size]), 8 + size


def rewrite_header(path: Path, edit) -> None:
    """Apply `edit` to the parsed header and write the file back with the same data."""
    header, data_start = read_header(path)
    data = path.read_bytes()[data_start:]
    edit(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


def read_with_minimal_reader(path: Path) -> tuple[dict, dict]:
    """Decode a safetensors file from the layout alone, sharing no code with charlstm."""
    header, data_start = read_header(path)
    raw = path.read_bytes()
    metadata = header.pop("__metadata__")
    values = {}
    for name, spec in header.items():
        begin, end = spec["data_offsets"]
        chunk = raw[data_start + begin : data_start + end]
        values[name] = array(STRUCT_CODES[spec["dtype"]], chunk).tolist()
    return values, metadata


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "latest.ckpt"
    save_checkpoint(path, sample_tensors(), sample_metadata())
    return path


# ---------------------------------------------------------------------------
# round trips and layout


def test_round_trip_every_dtype(saved: Path):
    tensors, _ = load_checkpoint(saved)
    expected = sample_tensors()
    assert set(tensors) == set(expected)
    for name, tensor in expected.items():
        assert tensors[name].dtype == tensor.dtype, name
        assert tensors[name].shape == tensor.shape, name
        assert tensors[name].data == tensor.data, name


def test_round_trip_metadata(saved: Path):
    _, metadata = load_checkpoint(saved)
    for key, value in sample_metadata().items():
        assert metadata[key] == value, key
    assert metadata["format"] == "charlstm-checkpoint"
    assert metadata["format_version"] == "1"
    assert metadata["charlstm_version"] == __version__
    assert len(metadata["checksum"]) == 64


def test_metadata_stored_as_json_strings(saved: Path):
    header, _ = read_header(saved)
    stored = header["__metadata__"]
    assert all(isinstance(value, str) for value in stored.values())
    assert json.loads(stored["vocab"]) == sample_metadata()["vocab"]
    assert stored["format_version"] == "1"


def test_layout_sorted_contiguous_padded(saved: Path):
    raw = saved.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header, data_start = read_header(saved)
    assert size % 8 == 0
    names = [name for name in header if name != "__metadata__"]
    assert names == sorted(names)
    end = 0
    for name in names:
        begin, stop = header[name]["data_offsets"]
        assert begin == end, name
        end = stop
    assert data_start + end == len(raw)
    digest = hashlib.sha256(raw[data_start:]).hexdigest()
    assert header["__metadata__"]["checksum"] == digest


def test_minimal_reader_matches(saved: Path):
    values, metadata = read_with_minimal_reader(saved)
    assert values["model.w"] == list(
        struct.unpack("<6f", sample_tensors()["model.w"].data)
    )
    assert values["rng"] == [0, 1, 2**63, 2**64 - 1]
    assert values["a.big"] == [-(2**63), 2**63 - 1]
    assert values["bytes"] == [0, 1, 127, 128, 255]
    assert values["empty"] == []
    assert json.loads(metadata["progress"])["step"] == 120


def test_safetensors_package_reads_it(saved: Path):
    st_numpy = pytest.importorskip(
        "safetensors.numpy", reason="the safetensors test extra is not installed"
    )
    safetensors = pytest.importorskip("safetensors")
    arrays = st_numpy.load_file(str(saved))
    expected = sample_tensors()
    assert set(arrays) == set(expected)
    for name, tensor in expected.items():
        assert (
            arrays[name].dtype.str.lstrip("<|")
            == {
                "F32": "f4",
                "F64": "f8",
                "I32": "i4",
                "I64": "i8",
                "U64": "u8",
                "U8": "u1",
            }[tensor.dtype]
        ), name
        assert tuple(arrays[name].shape) == tensor.shape, name
        assert arrays[name].tobytes() == tensor.data, name
    with safetensors.safe_open(str(saved), framework="np") as file:
        assert file.metadata()["format"] == "charlstm-checkpoint"


def test_accepts_memoryview_and_bytearray(tmp_path: Path):
    floats = array("f", [1.0, 2.0, 3.0, 4.0])
    tensors = {
        "view": Tensor("F32", (2, 2), memoryview(floats)),
        "buffer": Tensor("U8", (3,), bytearray(b"xyz")),
    }
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, tensors, {})
    loaded, _ = load_checkpoint(path)
    assert loaded["view"].data == floats.tobytes()
    assert loaded["buffer"].data == b"xyz"


def test_loaded_metadata_saves_again(saved: Path):
    tensors, metadata = load_checkpoint(saved)
    metadata["charlstm_version"] = "0.0.1"
    metadata["checksum"] = "0" * 64
    save_checkpoint(saved, tensors, metadata)
    _, again = load_checkpoint(saved)
    assert again["charlstm_version"] == __version__
    assert again["progress"] == sample_metadata()["progress"]


def test_summary_skips_data(saved: Path):
    summary = read_checkpoint_summary(saved)
    assert summary["file_size_bytes"] == saved.stat().st_size
    assert summary["checksum_verified"] is True
    assert summary["tensors"]["model.w"] == {"dtype": "F32", "shape": [2, 3]}
    assert summary["metadata"]["vocab"] == sample_metadata()["vocab"]


@pytest.mark.parametrize(
    "tensor, problem",
    [
        (Tensor("F16", (1,), b"\0\0"), "dtype"),
        (Tensor("F32", (2,), b"\0\0\0\0"), "needs 8 bytes"),
        (Tensor("F32", (-1,), b""), "invalid shape"),
    ],
)
def test_save_rejects_invalid_tensor(tmp_path: Path, tensor: Tensor, problem: str):
    with pytest.raises(ValueError, match=problem):
        save_checkpoint(tmp_path / "a.ckpt", {"t": tensor}, {})
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_unserialisable_metadata(tmp_path: Path):
    with pytest.raises(TypeError, match="'when'"):
        save_checkpoint(tmp_path / "a.ckpt", {}, {"when": object()})


# ---------------------------------------------------------------------------
# corrupt and foreign files


def expect_error(path: Path, *fragments: str) -> CheckpointError:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = caught.value.message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message
    assert isinstance(caught.value, UserError)
    return caught.value


def test_missing_file(tmp_path: Path):
    error = expect_error(tmp_path / "nope.ckpt", "not found")
    assert error.hint


def test_folder_instead_of_file(saved: Path):
    error = expect_error(saved.parent, "is a folder")
    assert "latest.ckpt" in error.hint


def test_empty_file(tmp_path: Path):
    path = tmp_path / "latest.ckpt"
    path.write_bytes(b"")
    expect_error(path, "is empty")


@pytest.mark.parametrize("keep", [1, 4, 7])
def test_shorter_than_length_field(saved: Path, keep: int):
    saved.write_bytes(saved.read_bytes()[:keep])
    expect_error(saved, "too short")


@pytest.mark.parametrize("cut", [9, 40, "mid-header", "end-of-header"])
def test_truncated_inside_header(saved: Path, cut):
    raw = saved.read_bytes()
    _, data_start = read_header(saved)
    if cut == "mid-header":
        cut = data_start // 2
    elif cut == "end-of-header":
        cut = data_start - 1
    saved.write_bytes(raw[:cut])
    expect_error(saved, "is truncated", "header needs")


@pytest.mark.parametrize("missing", [1, 7, "half", "all"])
def test_truncated_inside_data(saved: Path, missing):
    raw = saved.read_bytes()
    _, data_start = read_header(saved)
    data_size = len(raw) - data_start
    count = {"half": data_size // 2, "all": data_size}.get(missing, missing)
    saved.write_bytes(raw[: len(raw) - count])
    expect_error(saved, "is truncated", f"only {data_size - count} are present")


def test_flipped_data_byte(saved: Path):
    raw = bytearray(saved.read_bytes())
    _, data_start = read_header(saved)
    raw[data_start + 3] ^= 0x01
    saved.write_bytes(bytes(raw))
    expect_error(saved, "corrupted", "checksum")
    with pytest.raises(CheckpointError, match="checksum"):
        read_checkpoint_summary(saved)


def test_summary_without_verify_ignores_data(saved: Path):
    raw = bytearray(saved.read_bytes())
    raw[-1] ^= 0xFF
    saved.write_bytes(bytes(raw))
    summary = read_checkpoint_summary(saved, verify=False)
    assert summary["checksum_verified"] is False


def test_trailing_bytes(saved: Path):
    saved.write_bytes(saved.read_bytes() + b"junk")
    expect_error(saved, "4 unexpected bytes")


def test_header_not_json(saved: Path):
    raw = bytearray(saved.read_bytes())
    raw[9:12] = b"\xff\x00}"
    saved.write_bytes(bytes(raw))
    expect_error(saved, "header is not valid JSON")


def test_zip_archive(tmp_path: Path):
    path = tmp_path / "weights.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    expect_error(path, "not a charlstm checkpoint", "a zip archive")


def test_pytorch_zip(tmp_path: Path):
    # torch.save writes a zip whose entries sit under one folder, with data.pkl inside.
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/data.pkl", pickle.dumps({"w": 1}))
        archive.writestr("model/version", "3\n")
    expect_error(path, "PyTorch checkpoint")


def test_hdf5_signature(tmp_path: Path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    expect_error(path, "HDF5")


def test_pickle(tmp_path: Path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=2))
    error = expect_error(path, "Python pickle", "never loads pickles")
    assert error.hint


def test_gzip(tmp_path: Path):
    path = tmp_path / "model.gz"
    path.write_bytes(gzip.compress(b"x" * 100))
    expect_error(path, "gzip")


@pytest.mark.parametrize(
    "text", ["First Citizen:\nBefore we proceed any further, hear me speak.\n", "hi"]
)
def test_plain_text(tmp_path: Path, text: str):
    path = tmp_path / "input.txt"
    path.write_text(text, encoding="utf-8")
    expect_error(path, "plain text file")


def test_unknown_binary(tmp_path: Path):
    path = tmp_path / "random.bin"
    path.write_bytes(bytes(range(256)) * 4)
    expect_error(path, "not a charlstm checkpoint", "safetensors header")


def test_foreign_safetensors(tmp_path: Path):
    path = tmp_path / "other.safetensors"
    header = json.dumps({"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})
    encoded = header.encode() + b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"\x01\x02")
    expect_error(path, "a safetensors file without charlstm metadata")


def test_future_format_version(saved: Path):
    def from_the_future(header):
        header["__metadata__"]["format_version"] = "2"
        header["__metadata__"]["charlstm_version"] = "9.0.0"

    rewrite_header(saved, from_the_future)
    error = expect_error(saved, "format version 2", "charlstm 9.0.0", __version__)
    assert "upgrade charlstm" in error.hint


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda h: h["model.w"].update(shape=[3, 3]), "needs 36 bytes"),
        (lambda h: h["model.w"].update(dtype="F64"), "needs 48 bytes"),
        (lambda h: h["model.w"].update(dtype="BF16"), "unsupported dtype"),
        (lambda h: h["model.w"].update(shape=[2, -3]), "invalid shape"),
        (lambda h: h["model.w"].update(data_offsets=[8]), "invalid data_offsets"),
    ],
)
def test_inconsistent_tensor_entry(saved: Path, edit, fragment: str):
    rewrite_header(saved, edit)
    expect_error(saved, "is damaged", fragment)


def test_overlapping_offsets(saved: Path):
    def overlap(header):
        begin, end = header["rng"]["data_offsets"]
        header["rng"]["data_offsets"] = [begin - 4, end - 4]

    rewrite_header(saved, overlap)
    expect_error(saved, "overlaps the previous tensor")


def test_gap_between_offsets(saved: Path):
    def gap(header):
        begin, end = header["scalar"]["data_offsets"]
        header["scalar"]["data_offsets"] = [begin + 4, end + 4]

    rewrite_header(saved, gap)
    expect_error(saved, "leaves a gap")


def test_metadata_value_not_json(saved: Path):
    rewrite_header(saved, lambda h: h["__metadata__"].update(vocab="[oops"))
    expect_error(saved, "metadata 'vocab' is not valid JSON")


# ---------------------------------------------------------------------------
# failed saves keep the previous checkpoint


def assert_only_previous(path: Path, previous: bytes) -> None:
    assert path.read_bytes() == previous
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def fail_after(limit: int, error: BaseException):
    """Return an os.write replacement that writes `limit` bytes, then raises."""
    real_write = os.write
    written = 0

    def write(fd, data):
        nonlocal written
        if written >= limit:
            raise error
        count = real_write(fd, memoryview(data)[: limit - written])
        written += count
        return count

    return write


@pytest.mark.parametrize("limit", [0, 20, 300])
def test_disk_full_mid_write(saved: Path, monkeypatch, limit: int):
    previous = saved.read_bytes()
    disk_full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "write", fail_after(limit, disk_full))
    with pytest.raises(CheckpointError) as caught:
        save_checkpoint(saved, {"w": Tensor("U8", (4096,), bytes(4096))}, {})
    monkeypatch.undo()
    assert (
        caught.value.message
        == f"cannot write checkpoint {saved}: No space left on device"
    )
    assert "unchanged" in caught.value.hint
    assert_only_previous(saved, previous)


def test_disk_full_on_fsync(saved: Path, monkeypatch):
    previous = saved.read_bytes()

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(saved, sample_tensors(), {"step": 2})
    monkeypatch.undo()
    assert_only_previous(saved, previous)


def test_read_only_folder_simulated(saved: Path, monkeypatch):
    previous = saved.read_bytes()
    real_open = os.open

    def deny_temp_files(path, flags, *args):
        if ".tmp-" in os.fspath(path):
            raise PermissionError(
                errno.EACCES, os.strerror(errno.EACCES), os.fspath(path)
            )
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", deny_temp_files)
    with pytest.raises(CheckpointError, match="Permission denied") as caught:
        save_checkpoint(saved, sample_tensors(), {})
    monkeypatch.undo()
    assert "writable" in caught.value.hint
    assert_only_previous(saved, previous)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root ignores folder permissions; the simulated read-only test covers this",
)
def test_read_only_folder_real(saved: Path):
    previous = saved.read_bytes()
    saved.parent.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match="Permission denied"):
            save_checkpoint(saved, sample_tensors(), {})
    finally:
        saved.parent.chmod(0o755)
    assert_only_previous(saved, previous)


def test_missing_folder(tmp_path: Path):
    path = tmp_path / "gone" / "latest.ckpt"
    with pytest.raises(CheckpointError, match="No such file or directory") as caught:
        save_checkpoint(path, {}, {})
    assert "exists" in caught.value.hint


@pytest.mark.parametrize("limit", [0, 100])
def test_ctrl_c_mid_save(saved: Path, monkeypatch, limit: int):
    previous = saved.read_bytes()
    monkeypatch.setattr(os, "write", fail_after(limit, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(saved, {"w": Tensor("U8", (4096,), bytes(4096))}, {})
    monkeypatch.undo()
    assert_only_previous(saved, previous)


def test_ctrl_c_before_rename(saved: Path, monkeypatch):
    previous = saved.read_bytes()

    def interrupted_replace(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(saved, sample_tensors(), {"step": 3})
    monkeypatch.undo()
    assert_only_previous(saved, previous)


def test_save_replaces_previous(saved: Path):
    save_checkpoint(saved, {"only": Tensor("U8", (1,), b"z")}, {"step": 9})
    tensors, metadata = load_checkpoint(saved)
    assert list(tensors) == ["only"]
    assert metadata["step"] == 9
    assert sorted(p.name for p in saved.parent.iterdir()) == ["latest.ckpt"]


def test_temp_file_name_recognisable(saved: Path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(source, target):
        seen.append(Path(source).name)
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", spy)
    save_checkpoint(saved, {}, {})
    assert seen == [f".latest.ckpt.tmp-{os.getpid()}"]


@pytest.mark.skipif(
    os.name != "posix", reason="stale temp files are detected by pid on POSIX only"
)
def test_save_removes_stale_temp_files(saved: Path):
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(finished.stdout)
    stale = saved.parent / f".latest.ckpt.tmp-{dead_pid}"
    live = saved.parent / f".latest.ckpt.tmp-{os.getppid()}"
    other = saved.parent / f".best.ckpt.tmp-{dead_pid}"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    save_checkpoint(saved, sample_tensors(), {})
    assert not stale.exists()
    assert live.exists()
    assert other.exists()


# ---------------------------------------------------------------------------
# epoch checkpoint pruning


def test_prune_keeps_newest(tmp_path: Path):
    for epoch in (1, 2, 3, 10, 11):
        ckpt.epoch_checkpoint_path(tmp_path, epoch).write_bytes(b"x")
    others = ["latest.ckpt", "best.ckpt", ".epoch-0012.ckpt.tmp-5", "epoch-notes.txt"]
    for name in others:
        (tmp_path / name).write_bytes(b"x")
    deleted = prune_epoch_checkpoints(tmp_path, keep=2)
    assert [p.name for p in deleted] == [
        "epoch-0001.ckpt",
        "epoch-0002.ckpt",
        "epoch-0003.ckpt",
    ]
    remaining = sorted(p.name for p in tmp_path.iterdir())
    assert remaining == sorted(others + ["epoch-0010.ckpt", "epoch-0011.ckpt"])


def test_prune_keep_zero_and_more_than_present(tmp_path: Path):
    for epoch in (1, 2):
        ckpt.epoch_checkpoint_path(tmp_path, epoch).write_bytes(b"x")
    assert prune_epoch_checkpoints(tmp_path, keep=5) == []
    assert len(prune_epoch_checkpoints(tmp_path, keep=0)) == 2
    assert list(tmp_path.iterdir()) == []


def test_prune_rejects_negative(tmp_path: Path):
    with pytest.raises(ValueError, match="keep"):
        prune_epoch_checkpoints(tmp_path, keep=-1)


def test_prune_counts_only_files_that_belong(tmp_path: Path):
    for epoch in (1, 2, 3):
        ckpt.epoch_checkpoint_path(tmp_path, epoch).write_bytes(b"run's")
    (tmp_path / "epoch-0000.ckpt").write_bytes(b"user's")
    deleted = prune_epoch_checkpoints(
        tmp_path, keep=1, belongs=lambda path: path.read_bytes() == b"run's"
    )
    assert [p.name for p in deleted] == ["epoch-0001.ckpt", "epoch-0002.ckpt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-0000.ckpt",
        "epoch-0003.ckpt",
    ]


@pytest.mark.parametrize("reader", ["load_checkpoint", "read_checkpoint_summary"])
def test_read_survives_a_save_replacing_the_file(monkeypatch, tmp_path, reader):
    # A reader such as generate can open latest.ckpt while training saves a new
    # one: the header and the data must come from the same file.
    path, newer = tmp_path / "latest.ckpt", tmp_path / "newer.ckpt"
    save_checkpoint(path, sample_tensors(), sample_metadata())
    changed = dict(sample_tensors())
    changed["scalar"] = Tensor("F32", (), struct.pack("<f", 3.0))
    save_checkpoint(newer, changed, sample_metadata())
    read_header_once = ckpt._read_header

    def read_then_replace(*args):
        header = read_header_once(*args)
        os.replace(newer, path)  # the save lands between header and data
        return header

    monkeypatch.setattr(ckpt, "_read_header", read_then_replace)
    result = getattr(ckpt, reader)(path)
    if reader == "load_checkpoint":
        tensors, _ = result
        assert tensors["scalar"].data == struct.pack("<f", 2.0)
