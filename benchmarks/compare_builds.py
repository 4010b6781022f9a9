"""Compare the training speed of several builds of the charlstm library.

Loads every library given on the command line into one process and trains the
same model with each, alternating one step at a time and reversing the order
every round. Every build thus runs under the same background load, which on a shared
machine changes far more between runs than a typical engine change does. It
prints each build's median and best characters per second and the median of
the per-step speed ratios against the first build.

Usage: python benchmarks/compare_builds.py [--config c] [--rounds 20]
       [--threads N] [--tiny] LIB [LIB ...]

Build the libraries to compare with cmake from two checkouts or commits, e.g.
`cmake -S . -B /tmp/old -DCHARLSTM_BUILD_TESTS=OFF && cmake --build /tmp/old`.
Results of the builds are not compared: this measures speed only.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import CLIP_NORM, CONFIGS, TINY_CONFIGS, VOCAB, Config

ADAM, SGD = 1, 0
ROUNDS_SKIPPED = 2  # untimed first rounds, which warm the caches and grow buffers


@dataclass
class Build:
    path: str
    lib: ctypes.CDLL
    trainer: ctypes.c_void_p
    seconds: list[float] = field(default_factory=list)


def open_build(path: str, cfg: Config, threads: int) -> Build:
    """Load the library at `path` and make a trainer for `cfg` with it."""
    from charlstm_cli._native import ModelConfig, TrainConfig

    lib = ctypes.CDLL(os.path.abspath(path))
    lib.charlstm_sizeof.argtypes = [ctypes.c_char_p]
    lib.charlstm_sizeof.restype = ctypes.c_size_t
    for name, struct in (("model_config", ModelConfig), ("train_config", TrainConfig)):
        if lib.charlstm_sizeof(name.encode()) != ctypes.sizeof(struct):
            raise SystemExit(
                f"{path}: its {name} struct differs from this checkout's, so it was "
                "built from another version: rebuild it from this checkout"
            )
    lib.charlstm_set_num_threads(threads)
    model_cfg = ModelConfig()
    lib.charlstm_model_config_default(ctypes.byref(model_cfg))
    model_cfg.n_vocab, model_cfg.n_hidden = VOCAB, cfg.n_hidden
    model_cfg.n_layers, model_cfg.seed = cfg.n_layers, 1
    model = ctypes.c_void_p()
    if lib.charlstm_model_init(ctypes.byref(model_cfg), ctypes.byref(model)) != 0:
        raise SystemExit(f"{path}: charlstm_model_init failed")
    train_cfg = TrainConfig()
    lib.charlstm_train_config_default(ctypes.byref(train_cfg))
    train_cfg.batch_size, train_cfg.seq_len = cfg.batch_size, cfg.seq_len
    train_cfg.optimizer = ADAM if cfg.optimizer == "adam" else SGD
    train_cfg.lr, train_cfg.clip_norm = cfg.lr, CLIP_NORM
    trainer = ctypes.c_void_p()
    if lib.charlstm_trainer_init(model, ctypes.byref(train_cfg), ctypes.byref(trainer)) != 0:
        raise SystemExit(f"{path}: charlstm_trainer_init failed")
    lib.charlstm_trainer_step.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_size_t] + [
        ctypes.c_void_p
    ] * 2
    return Build(path, lib, trainer)


def make_batches(cfg: Config, count: int) -> list[tuple]:
    """Return `count` (inputs, targets) pairs of ctypes int32 arrays."""
    rng = random.Random(1)
    n = cfg.batch_size * cfg.seq_len
    batches = []
    for _ in range(count):
        tokens = [rng.randrange(VOCAB) for _ in range(n)]
        shifted = tokens[1:] + tokens[:1]
        batches.append(((ctypes.c_int32 * n)(*tokens), (ctypes.c_int32 * n)(*shifted)))
    return batches


def run_rounds(builds: list[Build], cfg: Config, rounds: int) -> None:
    """Step every build once per round, first to last, then last to first."""
    batches = make_batches(cfg, 4)
    n = cfg.batch_size * cfg.seq_len
    loss, norm = ctypes.c_float(), ctypes.c_float()
    for r in range(rounds + ROUNDS_SKIPPED):
        order = builds if r % 2 == 0 else builds[::-1]
        inputs, targets = batches[r % len(batches)]
        for build in order:
            start = time.perf_counter()
            status = build.lib.charlstm_trainer_step(
                build.trainer, inputs, targets, n, ctypes.byref(loss), ctypes.byref(norm)
            )
            elapsed = time.perf_counter() - start
            if status != 0:
                raise SystemExit(f"{build.path}: charlstm_trainer_step returned {status}")
            if r >= ROUNDS_SKIPPED:
                build.seconds.append(elapsed)


def report(builds: list[Build], cfg: Config, threads: int) -> None:
    chars = cfg.batch_size * cfg.seq_len
    first = builds[0].seconds
    print(
        f"config {cfg.name}: {cfg.n_layers} x {cfg.n_hidden}, {cfg.seq_len} x "
        f"{cfg.batch_size}, {cfg.optimizer}, {threads} threads, {len(first)} steps each"
    )
    print(f"{'library':40s} {'median ch/s':>12s} {'best ch/s':>10s} {'speed vs first':>15s}")
    for build in builds:
        ratios = [a / b for a, b in zip(first, build.seconds)]
        print(
            f"{build.path[-40:]:40s} {chars / statistics.median(build.seconds):12,.0f} "
            f"{chars / min(build.seconds):10,.0f} {statistics.median(ratios):15.4f}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("libraries", nargs="+", metavar="LIB", help="libcharlstm builds")
    parser.add_argument("--config", default="c", choices=sorted(CONFIGS))
    parser.add_argument("--rounds", type=int, default=20, help="timed steps per build")
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="kernel threads"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, for CI")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be at least 1")
    missing = [path for path in args.libraries if not Path(path).is_file()]
    if missing:
        parser.error(f"no library file at {', '.join(missing)}; build one with cmake first")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # charlstm_cli._native, which defines the config structs, loads a library when
    # imported, so point it at the first build instead of an installed one.
    os.environ.setdefault("CHARLSTM_LIB", os.path.abspath(args.libraries[0]))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    cfg = (TINY_CONFIGS if args.tiny else CONFIGS)[args.config]
    builds = [open_build(path, cfg, args.threads) for path in args.libraries]
    run_rounds(builds, cfg, args.rounds)
    report(builds, cfg, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
