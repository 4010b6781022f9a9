"""Save and load training checkpoints in the safetensors layout.

A checkpoint is a safetensors file: an 8-byte little-endian header length N, N
bytes of JSON header, then the raw tensor data. The header's ``__metadata__``
map adds ``format``, ``format_version``, ``charlstm_version`` and ``checksum``
(SHA-256 of the data section) to the caller's metadata, whose values are stored
JSON-encoded. Loading never executes code from the file. docs/checkpoint-format.md
describes every field.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import json
import math
import os
import re
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from . import __version__
from .errors import UserError, file_write_hint, path_error_hint

FORMAT_NAME = "charlstm-checkpoint"
FORMAT_VERSION = 1

# Bytes per element for each safetensors dtype name this module accepts.
DTYPE_SIZES = {"F32": 4, "F64": 8, "I32": 4, "I64": 8, "U64": 8, "U8": 1}

# Keys this module writes into __metadata__ as plain strings, not JSON.
RESERVED_KEYS = ("format", "format_version", "charlstm_version", "checksum")

EPOCH_CHECKPOINT_PATTERN = re.compile(r"^epoch-(\d+)\.ckpt$")

_HEADER_ALIGNMENT = 8
_HASH_CHUNK_BYTES = 1 << 20
_SNIFF_BYTES = 512
_RECOVERY_HINT = (
    "use best.ckpt or an epoch-NNNN.ckpt from the same run folder, "
    "or start a new run with 'charlstm train'"
)
_NOT_CHECKPOINT_HINT = "pass a .ckpt file written by 'charlstm train'"


class Tensor(NamedTuple):
    """One named array: safetensors dtype name, shape and little-endian raw bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes | bytearray | memoryview


class CheckpointError(UserError):
    """A checkpoint file that cannot be read or written. The message names the file."""

    def __init__(self, path: Path | str, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.path = Path(path)


class _TensorEntry(NamedTuple):
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class _Header(NamedTuple):
    """A checkpoint header that passed every check that needs no tensor data."""

    entries: dict[str, _TensorEntry]
    metadata: dict[str, Any]
    data_start: int
    file_size: int


# ---------------------------------------------------------------------------
# saving


def epoch_checkpoint_path(run_dir: Path, epoch: int) -> Path:
    """Return the path of the checkpoint saved at the end of `epoch`."""
    return Path(run_dir) / f"epoch-{epoch:04d}.ckpt"


def save_checkpoint(
    path: Path, tensors: dict[str, Tensor], metadata: dict[str, Any]
) -> None:
    """Write tensors and metadata to `path` atomically.

    The file is written to a temporary file in the same folder, flushed to disk
    and renamed over `path`, so a crash, a full disk or Ctrl-C leaves either the
    previous file or the new one, never a mix. The keys in RESERVED_KEYS are
    written by this module: values the caller passes for them are replaced, so a
    loaded checkpoint's metadata can be saved again unchanged.

    Raises ValueError or TypeError for invalid tensors or metadata, and
    CheckpointError when the file cannot be written.
    """
    path = Path(path)
    ordered = _validate_tensors(tensors)
    data_checksum = hashlib.sha256()
    for _, tensor in ordered:
        data_checksum.update(tensor.data)
    header = _build_header(ordered, metadata, data_checksum.hexdigest())

    temp_path = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, struct.pack("<Q", len(header)))
            write_all(fd, header)
            for _, tensor in ordered:
                write_all(fd, tensor.data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp_path, path)
    except BaseException as exc:
        # KeyboardInterrupt included: the temp file goes, the old checkpoint stays.
        _remove_quietly(temp_path)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from exc
        raise
    try:
        _fsync_folder(path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    _remove_stale_temp_files(path)


def _validate_tensors(tensors: dict[str, Tensor]) -> list[tuple[str, Tensor]]:
    """Return the tensors sorted by name, with data as byte memoryviews."""
    ordered = []
    for name in sorted(tensors):
        tensor = tensors[name]
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        dtype, shape, data = tensor
        if dtype not in DTYPE_SIZES:
            raise ValueError(
                f"tensor {name!r} has dtype {dtype!r}, expected one of {sorted(DTYPE_SIZES)}"
            )
        shape = tuple(shape)
        if not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise ValueError(f"tensor {name!r} has invalid shape {shape}")
        view = memoryview(data)
        if not view.c_contiguous:
            raise ValueError(f"tensor {name!r} data is not contiguous")
        view = view.cast("B") if view.ndim != 1 or view.format != "B" else view
        expected = math.prod(shape) * DTYPE_SIZES[dtype]
        if view.nbytes != expected:
            raise ValueError(
                f"tensor {name!r} with shape {shape} and dtype {dtype} needs "
                f"{expected} bytes, but its data has {view.nbytes}"
            )
        ordered.append((name, Tensor(dtype, shape, view)))
    return ordered


def _build_header(
    ordered: list[tuple[str, Tensor]], metadata: dict[str, Any], checksum: str
) -> bytes:
    """Return the JSON header, padded with spaces to a multiple of 8 bytes."""
    stored: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata key {key!r} is not a string")
        if key in RESERVED_KEYS:
            continue
        try:
            stored[key] = json.dumps(value, ensure_ascii=True)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"metadata {key!r} is not JSON-serialisable: {exc}"
            ) from exc
    stored["format"] = FORMAT_NAME
    stored["format_version"] = str(FORMAT_VERSION)
    stored["charlstm_version"] = __version__
    stored["checksum"] = checksum

    header: dict[str, Any] = {"__metadata__": stored}
    offset = 0
    for name, tensor in ordered:
        end = offset + tensor.data.nbytes
        header[name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    # NOTE: safetensors 0.8.0 rejects headers over 100,000,000 bytes ("header too
    # large"). A long metrics history could pass that, and only load_checkpoint
    # would still read the file.
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    padding = -len(encoded) % _HEADER_ALIGNMENT
    return encoded + b" " * padding


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of `data`, looping because os.write may write only part."""
    view = memoryview(data)
    while view.nbytes:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_folder(folder: Path) -> None:
    """Flush the folder entry so the rename itself survives a power cut."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot fsync a folder, but the file data is already synced.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _remove_stale_temp_files(path: Path) -> None:
    """Delete temp files for `path` left by saves whose process was killed (SIGKILL).

    Only POSIX is handled, where os.kill(pid, 0) tests whether a process exists.
    A reused pid makes a stale file look live, so it is kept until a later save.
    """
    if os.name != "posix":
        return
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.tmp-(\d+)$")
    for entry in path.parent.iterdir():
        match = pattern.match(entry.name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            _remove_quietly(entry)
        except OSError:
            pass  # the process exists but belongs to another user


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _write_error(path: Path, exc: OSError) -> CheckpointError:
    reason = exc.strerror or str(exc)
    hint = file_write_hint(path.parent, exc)
    if path.exists():
        hint += "; the previous checkpoint there is unchanged"
    return CheckpointError(path, f"cannot write checkpoint {path}: {reason}", hint)


# ---------------------------------------------------------------------------
# loading


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read and validate a checkpoint, returning its tensors and metadata.

    Tensors come back in file order with `bytes` data. Metadata values are
    JSON-decoded, except the RESERVED_KEYS, which are strings. Raises
    CheckpointError naming the file and the problem. The checks run in the order
    listed in docs/checkpoint-format.md.
    """
    path = Path(path)
    checksum = hashlib.sha256()
    tensors: dict[str, Tensor] = {}
    # one open file for the header and the data, so that a save replacing
    # the file meanwhile cannot pair one file's header with another's data
    with _open_checkpoint(path) as file:
        header = _read_header(path, file)
        file.seek(header.data_start)
        for name, entry in header.entries.items():
            data = file.read(entry.end - entry.begin)
            if len(data) != entry.end - entry.begin:
                raise CheckpointError(
                    path, f"checkpoint {path} was truncated while it was being read"
                )
            checksum.update(data)
            tensors[name] = Tensor(entry.dtype, entry.shape, data)
    _check_checksum(path, header.metadata, checksum.hexdigest())
    return tensors, header.metadata


def read_checkpoint_summary(path: Path, verify: bool = True) -> dict[str, Any]:
    """Return a checkpoint's size, metadata and tensor table without its data.

    With `verify`, the data section is hashed in 1 MiB chunks and checked
    against the stored checksum, so a corrupted file raises CheckpointError
    here as it would in load_checkpoint. The result has the keys path,
    file_size_bytes, checksum_verified, metadata and tensors (name to dtype
    and shape).
    """
    path = Path(path)
    with _open_checkpoint(path) as file:
        header = _read_header(path, file)
        if verify:
            checksum = hashlib.sha256()
            remaining = header.file_size - header.data_start
            file.seek(header.data_start)
            while remaining > 0:
                chunk = file.read(min(remaining, _HASH_CHUNK_BYTES))
                if not chunk:
                    break
                checksum.update(chunk)
                remaining -= len(chunk)
            _check_checksum(path, header.metadata, checksum.hexdigest())
    return {
        "path": str(path),
        "file_size_bytes": header.file_size,
        "checksum_verified": verify,
        "metadata": header.metadata,
        "tensors": {
            name: {"dtype": entry.dtype, "shape": list(entry.shape)}
            for name, entry in header.entries.items()
        },
    }


def _open_for_reading(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(
            path,
            f"checkpoint not found: {path}",
            "check the path, or run 'charlstm runs' to list saved runs",
        ) from None
    except IsADirectoryError:
        raise _folder_error(path) from None
    except OSError as exc:
        raise CheckpointError(
            path,
            f"cannot read checkpoint {path}: {exc.strerror or exc}",
            path_error_hint(exc),
        ) from exc


def _folder_error(path: Path) -> CheckpointError:
    latest = path / "latest.ckpt"
    example = latest if latest.exists() else path / "<name>.ckpt"
    return CheckpointError(
        path,
        f"{path} is a folder, not a checkpoint file",
        f"pass a checkpoint file inside it, for example {example}",
    )


def _open_checkpoint(path: Path):
    """Open checkpoint `path` for reading, or raise CheckpointError."""
    if path.is_dir():
        raise _folder_error(path)
    return _open_for_reading(path)


def _read_header(path: Path, file: Any) -> _Header:
    """Read and validate everything up to the tensor data from open `file`."""
    file_size = os.fstat(file.fileno()).st_size
    if file_size == 0:
        raise CheckpointError(
            path,
            f"checkpoint {path} is empty (0 bytes)",
            _RECOVERY_HINT,
        )
    prefix = file.read(_SNIFF_BYTES)
    if file_size < 8:
        raise _unrecognised(
            path, prefix, f"is too short ({file_size} bytes) to be a checkpoint"
        )
    (header_size,) = struct.unpack("<Q", prefix[:8])
    looks_like_json = prefix[8:9] == b"{"
    if not looks_like_json:
        raise _unrecognised(
            path, prefix, "does not start with a safetensors header"
        )
    if 8 + header_size > file_size:
        if describe_file_type(path, prefix) is not None:
            raise _unrecognised(path, prefix, "")
        raise CheckpointError(
            path,
            f"checkpoint {path} is truncated: its header needs {8 + header_size} "
            f"bytes but the file has {file_size}",
            _RECOVERY_HINT,
        )
    file.seek(8)
    raw_header = file.read(header_size)

    try:
        header = json.loads(raw_header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(
            path,
            f"checkpoint {path} is damaged: its header is not valid JSON",
            _RECOVERY_HINT,
        ) from None
    if not isinstance(header, dict):
        raise _unrecognised(path, prefix, "has a JSON header that is not an object")

    metadata = _parse_metadata(path, header.pop("__metadata__", None))
    data_size = file_size - 8 - header_size
    entries = _parse_entries(path, header, data_size)
    return _Header(entries, metadata, 8 + header_size, file_size)


def _parse_metadata(path: Path, raw: Any) -> dict[str, Any]:
    """Check the format name and version, then JSON-decode the caller's keys."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        found = ""
        if isinstance(raw, dict) and isinstance(raw.get("format"), str):
            found = f" (its format is {raw['format']!r})"
        raise CheckpointError(
            path,
            f"{path} is not a charlstm checkpoint: it is a safetensors file "
            f"without charlstm metadata{found}",
            _NOT_CHECKPOINT_HINT,
        )
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise CheckpointError(
            path,
            f"checkpoint {path} is damaged: its metadata values are not all strings",
            _RECOVERY_HINT,
        )

    version_text = raw.get("format_version", "")
    writer = raw.get("charlstm_version", "an unknown version")
    if not version_text.isdigit():
        raise CheckpointError(
            path,
            f"checkpoint {path} is damaged: format_version {version_text!r} is not a number",
            _RECOVERY_HINT,
        )
    if int(version_text) > FORMAT_VERSION:
        raise CheckpointError(
            path,
            f"checkpoint {path} uses format version {version_text}, written by charlstm "
            f"{writer}; this charlstm {__version__} reads format version "
            f"{FORMAT_VERSION} and older",
            f"upgrade charlstm to {writer} or newer: pip install --upgrade charlstm",
        )
    if not re.fullmatch(r"[0-9a-f]{64}", raw.get("checksum", "")):
        raise CheckpointError(
            path,
            f"checkpoint {path} is damaged: it has no valid SHA-256 checksum",
            _RECOVERY_HINT,
        )

    metadata: dict[str, Any] = {}
    for key, text in raw.items():
        if key in RESERVED_KEYS:
            metadata[key] = text
            continue
        try:
            metadata[key] = json.loads(text)
        except json.JSONDecodeError:
            raise CheckpointError(
                path,
                f"checkpoint {path} is damaged: metadata {key!r} is not valid JSON",
                _RECOVERY_HINT,
            ) from None
    return metadata


def _parse_entries(
    path: Path, header: dict[str, Any], data_size: int
) -> dict[str, _TensorEntry]:
    """Validate each tensor entry and return the entries ordered by data offset."""
    entries = []
    for name, spec in header.items():
        entry = _parse_entry(path, name, spec)
        need = math.prod(entry.shape) * DTYPE_SIZES[entry.dtype]
        if entry.end - entry.begin != need:
            raise CheckpointError(
                path,
                f"checkpoint {path} is damaged: tensor {name!r} has shape "
                f"{list(entry.shape)} ({entry.dtype}), which needs {need} bytes, "
                f"but its data_offsets span {entry.end - entry.begin}",
                _RECOVERY_HINT,
            )
        entries.append((name, entry))

    entries.sort(key=lambda item: (item[1].begin, item[1].end))
    expected_begin = 0
    for name, entry in entries:
        if entry.begin != expected_begin:
            problem = (
                "overlaps the previous tensor"
                if entry.begin < expected_begin
                else ("leaves a gap after the previous tensor")
            )
            raise CheckpointError(
                path,
                f"checkpoint {path} is damaged: tensor {name!r} starts at data byte "
                f"{entry.begin} and {problem}, which ends at {expected_begin}",
                _RECOVERY_HINT,
            )
        expected_begin = entry.end

    if expected_begin > data_size:
        raise CheckpointError(
            path,
            f"checkpoint {path} is truncated: its tensors need {expected_begin} data "
            f"bytes but only {data_size} are present",
            _RECOVERY_HINT,
        )
    if expected_begin < data_size:
        raise CheckpointError(
            path,
            f"checkpoint {path} is damaged: {data_size - expected_begin} unexpected "
            "bytes follow the last tensor",
            _RECOVERY_HINT,
        )
    return dict(entries)


def _parse_entry(path: Path, name: str, spec: Any) -> _TensorEntry:
    def damaged(problem: str) -> CheckpointError:
        return CheckpointError(
            path,
            f"checkpoint {path} is damaged: tensor {name!r} {problem}",
            _RECOVERY_HINT,
        )

    if not isinstance(spec, dict):
        raise damaged("has no dtype, shape and data_offsets")
    dtype, shape, offsets = (
        spec.get("dtype"),
        spec.get("shape"),
        spec.get("data_offsets"),
    )
    if dtype not in DTYPE_SIZES:
        raise damaged(
            f"has unsupported dtype {dtype!r}, expected one of {sorted(DTYPE_SIZES)}"
        )
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise damaged(f"has invalid shape {shape!r}")
    if not (
        isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
    ):
        raise damaged(f"has invalid data_offsets {offsets!r}")
    if offsets[1] < offsets[0]:
        raise damaged(f"has data_offsets {offsets} that end before they begin")
    return _TensorEntry(dtype, tuple(shape), offsets[0], offsets[1])


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_checksum(path: Path, metadata: dict[str, Any], actual: str) -> None:
    if metadata["checksum"] != actual:
        raise CheckpointError(
            path,
            f"checkpoint {path} is corrupted: the SHA-256 checksum of its tensor data "
            "does not match the one stored when it was saved",
            "the file changed after it was written (disk or copy error); "
            + _RECOVERY_HINT,
        )


# ---------------------------------------------------------------------------
# recognising other file types


def _unrecognised(path: Path, prefix: bytes, fallback: str) -> CheckpointError:
    """Return the error for a file that is not safetensors, naming its type if known."""
    kind = describe_file_type(path, prefix)
    if kind is None:
        message = f"{path} is not a charlstm checkpoint: it {fallback}"
    else:
        message = f"{path} is not a charlstm checkpoint: it looks like {kind}"
    return CheckpointError(path, message, _NOT_CHECKPOINT_HINT)


def describe_file_type(path: Path, prefix: bytes) -> str | None:
    """Name the file type that `prefix` (the first bytes of `path`) signals, if known."""
    if prefix.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _describe_zip(path)
    if prefix.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (for example a Keras .h5 model)"
    if len(prefix) >= 2 and prefix[0] == 0x80 and 2 <= prefix[1] <= 5:
        return (
            "a Python pickle (for example a PyTorch .pt file from before PyTorch 1.6); "
            "charlstm never loads pickles because they can run code"
        )
    if prefix.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file"
    if prefix.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array file"
    if prefix.startswith(b"GGUF"):
        return "a GGUF model file"
    if _is_text(prefix):
        return "a plain text file"
    return None


def _describe_zip(path: Path) -> str:
    """Name a zip archive, recognising PyTorch's torch.save format by its data.pkl."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return "a zip archive"
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return "a PyTorch checkpoint (a zip archive made by torch.save)"
    if any(name.endswith(".npy") for name in names):
        return "a NumPy .npz archive (a zip archive)"
    return "a zip archive"


def _is_text(prefix: bytes) -> bool:
    # An incremental decoder accepts a multi-byte character cut at the end of prefix.
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(prefix, final=False)
    except UnicodeDecodeError:
        return False
    return bool(text) and all(ch.isprintable() or ch in "\n\r\t\f" for ch in text)


# ---------------------------------------------------------------------------
# run folder housekeeping


def prune_epoch_checkpoints(
    run_dir: Path, keep: int, belongs: Callable[[Path], bool] | None = None
) -> list[Path]:
    """Delete all but the `keep` highest-numbered epoch-NNNN.ckpt files in run_dir.

    Other files (latest.ckpt, best.ckpt, temp files) are never touched. With
    `belongs`, only the files it accepts count, so a file of another run, or
    one that is not a checkpoint at all, is kept whatever its name.
    Returns the deleted paths, oldest first.
    """
    if keep < 0:
        raise ValueError(f"keep = {keep} must be >= 0")
    numbered = []
    for entry in Path(run_dir).iterdir():
        match = EPOCH_CHECKPOINT_PATTERN.match(entry.name)
        if not match or not entry.is_file():
            continue
        if belongs is not None and not belongs(entry):
            continue
        numbered.append((int(match.group(1)), entry))
    numbered.sort()
    doomed = [entry for _, entry in numbered[: max(len(numbered) - keep, 0)]]
    for entry in doomed:
        try:
            entry.unlink()
        except FileNotFoundError:
            pass
    return doomed


def is_checkpoint_of_run(path: Path, run_id: str | None) -> bool:
    """Return whether `path` is a readable checkpoint that records `run_id`."""
    try:
        metadata = read_checkpoint_summary(path, verify=False)["metadata"]
    except (CheckpointError, OSError):
        return False
    return metadata.get("run_id") == run_id
