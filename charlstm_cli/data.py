"""Corpus reading and validation, the character vocabulary, and batching.

A corpus is read as text (UTF-8 unless --encoding names another codec), with
a leading byte order mark removed and CRLF and CR line endings turned into LF. The
vocabulary is every distinct character, sorted, and token ids index it.
"""

from __future__ import annotations

import codecs
import hashlib
import math
import os
import stat
import sys
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import UserError, path_error_hint

BUNDLED_CORPUS = "shakespeare.txt"
# The --corpus value that reads standard input.
STDIN_PATH = "-"
# Bytes checked for NUL, which text files never contain but binary files do.
_BINARY_PROBE = 8192
# Byte order marks of UTF-16 and UTF-32 text, each with the codec family and
# the codec of its byte order. The UTF-32 LE mark comes first, because it
# starts with the UTF-16 LE mark.
_WIDE_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32", "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32", "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16", "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16", "utf-16-be"),
)
# Largest corpus read, because training keeps the text and its token ids in
# memory (about 5 bytes per character for ASCII text).
MAX_CORPUS_BYTES = 1 << 30
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Corpus:
    """A corpus file's normalised text and the fingerprint of its raw bytes."""

    path: Path
    text: str
    size_bytes: int
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def n_chars(self) -> int:
        return len(self.text)

    def fingerprint(self) -> dict:
        """Return the checkpoint's `corpus` record."""
        return {
            "path": str(self.path),
            "name": self.name,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "n_chars": self.n_chars,
        }


def bundled_corpus_path() -> Path:
    """Return the Shakespeare corpus installed with the package.

    In a source checkout that was never installed, the package has no data
    folder, so this falls back to the repository's examples/ copy.
    """
    installed = Path(str(resources.files("charlstm_cli"))) / "data" / BUNDLED_CORPUS
    if installed.is_file():
        return installed
    checkout = Path(__file__).resolve().parent.parent / "examples" / BUNDLED_CORPUS
    if checkout.is_file():
        return checkout
    raise UserError(
        f"the bundled corpus {BUNDLED_CORPUS} is missing from {installed.parent}",
        hint="reinstall charlstm, or pass your own text file with --corpus",
    )


def check_encoding(encoding: str) -> str:
    """Return the codec's canonical name; raise UserError for an unknown one."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise UserError(
            f"unknown text encoding {encoding!r}",
            hint="use a Python codec name such as utf-8, latin-1 or cp1252",
            exit_code=2,
        ) from None


def _file_kind(mode: int) -> str:
    """Return a short name for a non-regular file type, as `ls -l` would classify it."""
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _check_readable_kind(mode: int, label: str) -> None:
    """Raise UserError unless `mode` is a regular file or a FIFO (a pipe).

    Devices such as /dev/zero or /dev/urandom never end, so reading one
    would fill memory, and a terminal would wait for typed text.
    """
    if stat.S_ISDIR(mode):
        raise UserError(
            f"corpus path {label} is a directory, not a text file",
            hint="pass one text file; join several with 'cat a.txt b.txt > all.txt'",
        )
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise UserError(
            f"corpus {label} is {_file_kind(mode)}, not a text file or a pipe",
            hint="pass a text file to --corpus, or pipe the text in with --corpus -",
        )


def _too_large(label: str) -> UserError:
    return UserError(
        f"corpus {label} is larger than the {MAX_CORPUS_BYTES >> 20} MiB limit",
        hint="train on a sample of it, e.g. 'head -c 500M big.txt > sample.txt'",
    )


def _check_byte_order_mark(head: bytes, source: str, codec: str) -> None:
    """Raise UserError when `head` has a byte order mark that `codec` cannot decode.

    Only the UTF-16 and UTF-32 marks are checked. NOTE: a single-byte text
    (latin-1, cp1252) that really starts with the characters ÿþ or þÿ is
    rejected too.
    """
    match = next(
        (entry for entry in _WIDE_BYTE_ORDER_MARKS if head.startswith(entry[0])),
        None,
    )
    if match is None:
        return
    _mark, family, ordered_codec = match
    if codec in (family, ordered_codec):
        return
    raise UserError(
        f"{source} starts with a {family.upper()} byte order mark, so it cannot "
        f"be read as {codec}",
        hint=f"pass --encoding {family}, which reads the byte order from the mark",
    )


def _check_text_start(head: bytes, source: str, codec: str) -> None:
    """Raise UserError when the first bytes show that `codec` cannot decode the text.

    A UTF-16 or UTF-32 byte order mark needs a codec of its family. A NUL
    byte in the first _BINARY_PROBE bytes marks binary data, unless the codec
    is UTF-16 or UTF-32, whose text contains NUL bytes.
    """
    _check_byte_order_mark(head, source, codec)
    if codec.startswith(("utf-16", "utf-32")):
        return
    nul = head.find(b"\x00", 0, _BINARY_PROBE)
    if nul >= 0:
        wide = _utf16_without_mark(head[:_BINARY_PROBE])
        if wide is not None:
            raise UserError(
                f"{source} has a NUL byte in every other position, as {wide.upper()} "
                f"text without a byte order mark has, so it cannot be read as {codec}",
                hint=f"pass --encoding {wide} if it is text",
            )
        raise UserError(
            f"{source} looks binary: it contains a NUL byte at offset {nul}",
            hint="train on a plain text file",
        )


def _utf16_without_mark(sample: bytes) -> str | None:
    """Return 'utf-16-le' or 'utf-16-be' when `sample` looks like mostly-Latin UTF-16.

    Such text has a NUL as the high byte of nearly every character, and none
    in the other half. An estimate: binary data can look like this too.
    """
    even, odd = sample[0::2], sample[1::2]
    if len(odd) < 8:
        return None
    for codec, zeros, other in (("utf-16-le", odd, even), ("utf-16-be", even, odd)):
        if zeros.count(0) >= 0.9 * len(zeros) and other.count(0) == 0:
            return codec
    return None


def _read_limited(stream, label: str, codec: str) -> bytes:
    """Read a stream to its end in chunks, stopping at MAX_CORPUS_BYTES.

    Checks the first chunk with _check_text_start at once, so an endless
    binary stream fails after one chunk instead of filling memory.
    """
    data = bytearray()
    while True:
        chunk = stream.read(_READ_CHUNK)
        if not chunk:
            return bytes(data)
        if not data:
            _check_text_start(chunk, f"corpus {label}", codec)
        data += chunk
        if len(data) > MAX_CORPUS_BYTES:
            raise _too_large(label)


def read_bytes(path: Path, codec: str = "utf-8") -> bytes:
    """Read a corpus file, a FIFO or, for path '-', standard input.

    Turns the usual file-system failures into UserError, and rejects input
    over MAX_CORPUS_BYTES, or input that `codec` (a canonical codec name)
    cannot decode as text (see _check_text_start), without reading all of it.
    """
    if str(path) == STDIN_PATH:
        label = "standard input"
        _check_readable_kind(os.fstat(sys.stdin.fileno()).st_mode, label)
        return _read_limited(sys.stdin.buffer, label, codec)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(
            f"corpus file not found: {path}", hint="check the path given to --corpus"
        ) from None
    except OSError as exc:
        raise UserError(
            f"cannot read corpus file {path}: {exc.strerror or exc}",
            hint=path_error_hint(exc),
        ) from None
    _check_readable_kind(info.st_mode, str(path))
    if info.st_size > MAX_CORPUS_BYTES:
        raise _too_large(f"file {path}")
    try:
        with open(path, "rb") as stream:
            return _read_limited(stream, f"file {path}", codec)
    except OSError as exc:
        raise UserError(
            f"cannot read corpus file {path}: {exc.strerror or exc}",
            hint=path_error_hint(exc),
        ) from None


def decode_text(raw: bytes, path: Path, encoding: str = "utf-8") -> str:
    """Decode a corpus and normalise it: no BOM, LF line endings.

    Raises UserError for an empty or binary file, for a UTF-16 or UTF-32
    byte order mark that `encoding` does not decode, and for bytes that are
    invalid in `encoding`, naming the byte offset of the first bad byte.
    """
    codec = check_encoding(encoding)
    source = f"corpus file {path}"
    if str(path) == STDIN_PATH:
        source = "corpus on standard input"
    empty_hint = "train on a file that contains text"
    if not raw:
        raise UserError(f"{source} is empty", hint=empty_hint)
    _check_text_start(raw, source, codec)
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1]
        raise UserError(
            f"{source} is not valid {codec}: byte 0x{bad.hex()} at offset "
            f"{exc.start} cannot be decoded",
            hint="if the file uses another encoding, name it with --encoding "
            "(for example --encoding latin-1 or --encoding cp1252)",
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise UserError(f"{source} is empty", hint=empty_hint)
    return text


def absolute_corpus_path(path: Path) -> Path:
    """Return `path` made absolute, with symbolic links resolved where they lead to a file.

    /dev/stdin on a pipe links to a name such as "pipe:[1234]" that is no
    file, so such a path is kept as given (made absolute). '-' stays '-'.
    """
    path = Path(path).expanduser()
    if str(path) == STDIN_PATH:
        return path
    resolved = path.resolve()
    if resolved.exists() or not path.exists():
        return resolved
    return path.absolute()


def read_corpus(path: Path, encoding: str = "utf-8") -> Corpus:
    """Read and decode a corpus file, a FIFO, or standard input for '-'."""
    path = absolute_corpus_path(path)
    codec = check_encoding(encoding)
    raw = read_bytes(path, codec)
    text = decode_text(raw, path, encoding)
    return Corpus(path, text, len(raw), hashlib.sha256(raw).hexdigest())


def build_vocab(text: str) -> list[str]:
    """Return every distinct character of `text`, sorted by code point."""
    return sorted(set(text))


def encode(text: str, vocab: Sequence[str]) -> array:
    """Map `text` to int32 token ids; every character must be in `vocab`."""
    index = {char: i for i, char in enumerate(vocab)}
    return array("i", map(index.__getitem__, text))


def decode(tokens: Sequence[int], vocab: Sequence[str]) -> str:
    return "".join(vocab[token] for token in tokens)


def unknown_characters(text: str, vocab: Sequence[str]) -> list[str]:
    """Return the distinct characters of `text` missing from `vocab`, in order of appearance."""
    known = set(vocab)
    return list(dict.fromkeys(char for char in text if char not in known))


def format_characters(chars: Sequence[str], limit: int = 20) -> str:
    """Return chars as a comma-separated list of Python literals, e.g. 'é', '\\t'."""
    shown = ", ".join(repr(char) for char in chars[:limit])
    if len(chars) > limit:
        shown += f" and {len(chars) - limit} more"
    return shown


def default_sample_seed(text: str) -> str:
    """Return a short priming string for samples, taken from the corpus.

    Prefers the most frequent speaker line among the first 200,000
    characters, such as "Ham." or "MACBETH." in a play or "ROMEO:" in a
    script: a line of at most three words that starts with a capital letter
    and ends in '.' or ':'. Falls back to the first non-blank line, cut to 40
    characters. The result uses only characters of `text`, so it ends in a
    newline only when the text contains one.
    """
    head = text[:200_000].split("\n")
    speakers = Counter(
        line
        for line in head
        if 2 <= len(line) <= 30
        and line[0].isupper()
        and line[-1] in ".:"
        and len(line.split()) <= 3
    )
    if speakers:
        line, count = speakers.most_common(1)[0]
        if count >= 3:
            return line + "\n"
    end = "\n" if "\n" in text else ""
    for line in head:
        if line.strip():
            return line.strip()[:40] + end
    return text[:1]


# ----------------------------------------------------------------------------
# splitting and batching


def split_validation(tokens: array, val_fraction: float) -> tuple[array, array]:
    """Split tokens into (train, validation); validation is the last val_fraction."""
    n_val = int(len(tokens) * val_fraction)
    return tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]


def min_stream_chars(batch_size: int, seq_len: int) -> int:
    """Return the fewest characters that fill one (B, T) batch plus its targets."""
    return batch_size * (seq_len + 1)


def min_corpus_chars(batch_size: int, seq_len: int, val_fraction: float) -> int:
    """Return the fewest corpus characters that give both splits one full batch."""
    need = min_stream_chars(batch_size, seq_len)
    if val_fraction <= 0:
        return need
    n = max(need, math.ceil(need / val_fraction), math.ceil(need / (1 - val_fraction)))
    # int() truncation in split_validation can leave one split a character
    # short of the estimate, so step up to the exact minimum.
    while True:
        n_val = int(n * val_fraction)
        if n - n_val >= need and n_val >= need:
            return n
        n += 1


def check_corpus_size(
    n_chars: int,
    batch_size: int,
    seq_len: int,
    val_fraction: float,
    label: str,
    hint: str = "use a longer corpus, or lower --batch-size or --seq-len",
) -> None:
    """Raise UserError when a corpus of n_chars cannot fill one batch per split."""
    need = min_corpus_chars(batch_size, seq_len, val_fraction)
    if n_chars >= need:
        return
    held_out = (
        f", with {val_fraction:.0%} held out for validation" if val_fraction > 0 else ""
    )
    raise UserError(
        f"corpus {label} is too short: it has {n_chars} characters, but batch size "
        f"{batch_size} and sequence length {seq_len} need at least {need}{held_out}",
        hint=hint,
    )


class StreamBatcher:
    """Cuts a token sequence into B parallel streams read T tokens at a time.

    Stream b covers tokens[b*S : (b+1)*S] with S = len(tokens) // B. Batch k
    contains tokens [k*T, k*T + T) of every stream as inputs and the same span
    shifted by one as targets, so each stream's carried state continues from
    one batch to the next. One epoch is n_batches batches; the last
    (S - 1) % T tokens of each stream are not read.
    """

    def __init__(self, tokens: array, batch_size: int, seq_len: int):
        self.tokens = tokens
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.stream_len = len(tokens) // batch_size
        self.n_batches = max(0, (self.stream_len - 1) // seq_len)
        self.starts = [b * self.stream_len for b in range(batch_size)]

    def positions(self, batch_index: int) -> list[int]:
        """Return each stream's offset into tokens for batch `batch_index`."""
        return [start + batch_index * self.seq_len for start in self.starts]

    def batch(self, batch_index: int) -> tuple[array, array]:
        """Return (inputs, targets) for batch `batch_index`, each (B, T) row-major."""
        if not 0 <= batch_index < self.n_batches:
            raise IndexError(f"batch {batch_index} is outside 0..{self.n_batches - 1}")
        inputs, targets = array("i"), array("i")
        for position in self.positions(batch_index):
            inputs.extend(self.tokens[position : position + self.seq_len])
            targets.extend(self.tokens[position + 1 : position + self.seq_len + 1])
        return inputs, targets

    def batches(self, first: int = 0) -> Iterator[tuple[int, array, array]]:
        for index in range(first, self.n_batches):
            inputs, targets = self.batch(index)
            yield index, inputs, targets
