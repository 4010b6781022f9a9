"""Smoke tests of benchmarks/bench.py at tiny sizes: it runs and reports, nothing timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def run_bench(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(BENCH), "--tiny", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False
    )


def test_bench_tiny_prints_tables():
    done = run_bench("--no-torch")
    assert done.returncode == 0, done.stderr
    assert "charlstm ch/s" in done.stdout
    assert "scaling, characters/s" in done.stdout or "threads:  1" in done.stdout
    assert "sampling, 2 x 16" in done.stdout
    for config in "abcd":
        assert any(line.startswith(f"{config} ") for line in done.stdout.splitlines())


def test_bench_tiny_prints_round_spread():
    done = run_bench("--no-torch", "--configs", "c", "--rounds", "2")
    assert done.returncode == 0, done.stderr
    block = done.stdout.split("lowest to highest of 2 rounds", 1)[1].split("\n\n")[0]
    (line,) = [row for row in block.splitlines() if row.startswith("c ")]
    assert " to " in line


def test_bench_tiny_json():
    done = run_bench("--no-torch", "--configs", "b", "--threads", "1", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert list(report["training"]) == ["b"]
    assert report["training"]["b"]["charlstm"]["1"]["best"] > 0
    assert report["sampling"]["charlstm"]["best"] > 0
    assert report["baseline_rss_mib"]["charlstm"] > 0


def test_bench_tiny_with_torch():
    pytest.importorskip("torch")
    done = run_bench("--configs", "a", "--threads", "1")
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("a "))
    assert " - " not in f" {line} ", f"a torch column is empty: {line}"


def test_bench_rejects_unknown_config():
    done = run_bench("--configs", "x")
    assert done.returncode == 2
    assert "--configs" in done.stderr


COMPARE = BENCH.parent / "compare_builds.py"


def run_compare(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(COMPARE), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False
    )


def test_compare_builds_reports_each_library():
    from charlstm_cli._native import lib

    done = run_compare(
        "--tiny", "--rounds", "2", "--threads", "1", "--config", "b", lib._name, lib._name
    )
    assert done.returncode == 0, done.stderr
    rows = [ln for ln in done.stdout.splitlines() if ln.endswith(tuple("0123456789"))]
    assert len(rows) == 2, done.stdout
    assert "config b: 2 x 16" in done.stdout


def test_compare_builds_rejects_missing_library(tmp_path):
    done = run_compare(str(tmp_path / "missing.so"))
    assert done.returncode == 2
    assert "no library file" in done.stderr
