"""Shared fixtures for the command-line tests: an isolated home, corpora, runners."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import charlstm_cli
from charlstm_cli.cli import app

# A model small enough that a few epochs take well under a second; one thread
# keeps the floating-point summation order, and so every result, repeatable.
TINY_MODEL = [
    "--hidden-size", "16",
    "--layers", "1",
    "--seq-len", "16",
    "--batch-size", "4",
    "--threads", "1",
    "--log-every", "5",
    "--sample-length", "20",
]  # fmt: skip

_WORDS = (
    "the king queen lord lady sword crown night day love death heart "
    "speak hear come go fair foul good ill my thy thou art is not"
).split()


def make_text(n_chars: int, seed: int = 0) -> str:
    """Return about n_chars of play-like lines drawn from a small word list."""
    rng = random.Random(seed)
    lines = []
    total = 0
    while total < n_chars:
        speaker = rng.choice(["KING.", "QUEEN.", "LORD."])
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 9)))
        line = f"{speaker}\n{words.capitalize()}.\n\n"
        lines.append(line)
        total += len(line)
    return "".join(lines)[:n_chars]


@pytest.fixture(autouse=True)
def charlstm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point CHARLSTM_HOME at a fresh folder so no test touches real runs."""
    home = tmp_path / "home"
    monkeypatch.setenv("CHARLSTM_HOME", str(home))
    monkeypatch.delenv("CHARLSTM_DEBUG", raising=False)
    return home


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A 3,000-character UTF-8 corpus: 42 tiny-model steps per epoch."""
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(3000), encoding="utf-8")
    return path


@pytest.fixture
def invoke():
    """Run the Typer app in-process; returns the click Result."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(arg) for arg in args])

    return run


@pytest.fixture
def run_module(tmp_path: Path):
    """Run `python -m charlstm_cli ARGS` in a subprocess; returns CompletedProcess."""
    env = dict(os.environ)
    package_root = str(Path(charlstm_cli.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [package_root, env.get("PYTHONPATH")])
    )

    def run(*args: str, timeout: float = 60, **options):
        """Run the command; `options` go to subprocess.run (input=, stdout=).

        Output is captured unless `options` redirect stdout or stderr.
        """
        if "stdout" not in options and "stderr" not in options:
            options["capture_output"] = True
        return subprocess.run(
            [sys.executable, "-m", "charlstm_cli", *map(str, args)],
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=timeout,
            **options,
        )

    run.env = env
    return run


@pytest.fixture
def tiny() -> list[str]:
    """Options for a tiny, single-threaded model."""
    return list(TINY_MODEL)


@pytest.fixture
def text_maker():
    """make_text(n_chars, seed): play-like text for corpora of any size."""
    return make_text


@pytest.fixture
def run_folders(charlstm_home: Path):
    """List the run folders under the test's CHARLSTM_HOME, sorted by name."""

    def listing() -> list[Path]:
        runs = charlstm_home / "runs"
        return sorted(runs.iterdir()) if runs.is_dir() else []

    return listing
