"""Benchmark charlstm training and sampling against PyTorch on this CPU.

Every measurement runs in its own child process, so the peak memory of one
framework and configuration does not mix with another's. The two frameworks
take turns round by round (charlstm, torch, charlstm, torch, ...), so a noisy
neighbour on a shared machine slows both rather than one. Tables report the
best round of each, and --json also lists every round.

Training FLOPs of charlstm per character (the matrix products only, forward
and backward), for L layers, H hidden units and V characters:

    forward  = 2*H*4H                  layer 0: h @ w_hh (its input is a row gather)
             + (L-1) * 2*(H+H)*4H      upper layers: x @ w_ih + h @ w_hh
             + 2*H*V                   output projection
    backward = 2 * forward             input gradient and weight gradient per product
    total    = 3 * forward

Peak memory is the process's high-water resident set (VmHWM) after the steps,
minus that of an idle interpreter with the same framework imported.

Usage: python benchmarks/bench.py [--configs abcd] [--steps N] [--rounds N]
       [--threads N] [--tiny] [--json] [--no-torch]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

VOCAB = 65
CLIP_NORM = 5.0
SAMPLE_LAYERS, SAMPLE_HIDDEN = 2, 256


@dataclass(frozen=True)
class Config:
    name: str
    n_layers: int
    n_hidden: int
    seq_len: int
    batch_size: int
    optimizer: str  # "sgd" or "adam"
    lr: float
    steps: int  # timed steps per round, unless --steps overrides
    warmup: int  # untimed steps before the timer starts


# Default step counts: each timed round took about 0.5 to 10 seconds on a 2-core Xeon.
CONFIGS = {
    "a": Config("a", 2, 256, 30, 1, "sgd", 0.05, 150, 10),
    "b": Config("b", 2, 256, 64, 32, "adam", 2e-3, 20, 2),
    "c": Config("c", 2, 512, 100, 64, "adam", 2e-3, 8, 2),
    "d": Config("d", 3, 512, 100, 64, "adam", 2e-3, 6, 2),
}
TINY_CONFIGS = {
    "a": Config("a", 2, 16, 8, 1, "sgd", 0.05, 3, 1),
    "b": Config("b", 2, 16, 8, 4, "adam", 2e-3, 3, 1),
    "c": Config("c", 2, 32, 8, 4, "adam", 2e-3, 3, 1),
    "d": Config("d", 3, 32, 8, 4, "adam", 2e-3, 3, 1),
}


def forward_flops_per_char(n_layers: int, n_hidden: int, n_vocab: int) -> float:
    """Return the forward matrix-product FLOPs per character (see the module doc)."""
    gates = 4 * n_hidden
    first = 2 * n_hidden * gates
    upper = (n_layers - 1) * 2 * (2 * n_hidden) * gates
    return float(first + upper + 2 * n_hidden * n_vocab)


def train_flops_per_char(n_layers: int, n_hidden: int, n_vocab: int) -> float:
    """Return the forward plus backward matrix-product FLOPs per character."""
    return 3.0 * forward_flops_per_char(n_layers, n_hidden, n_vocab)


# ----------------------------------------------------------------------------
# child process: one measurement, printed as one JSON line


def peak_rss_mib() -> float:
    """Return this process's peak resident set size in MiB (VmHWM)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource  # ru_maxrss is in KiB on Linux

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def random_batches(cfg: Config, count: int, seed: int) -> list[list[int]]:
    """Return `count` batches of (B, T) token ids, row-major, one list each."""
    rng = random.Random(seed)
    size = cfg.batch_size * cfg.seq_len
    return [[rng.randrange(VOCAB) for _ in range(size)] for _ in range(count)]


def train_charlstm(cfg: Config, steps: int) -> float:
    """Train for cfg.warmup + steps steps; return the timed seconds."""
    from array import array

    from charlstm_cli.model import Model, Trainer

    batches = [array("i", b) for b in random_batches(cfg, 8, seed=1)]
    targets = [array("i", b[1:] + b[:1]) for b in batches]
    model = Model(VOCAB, cfg.n_hidden, cfg.n_layers, seed=1)
    trainer = Trainer(
        model,
        cfg.batch_size,
        cfg.seq_len,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        clip_norm=CLIP_NORM,
    )
    for step in range(cfg.warmup):
        trainer.step(batches[step % 8], targets[step % 8])
    start = time.perf_counter()
    for step in range(steps):
        trainer.step(batches[step % 8], targets[step % 8])
    return time.perf_counter() - start


def torch_model(n_layers: int, n_hidden: int):
    """Return the PyTorch equivalent of a charlstm model: one-hot, LSTM, Linear."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class CharLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(VOCAB, n_hidden, n_layers)
            self.head = nn.Linear(n_hidden, VOCAB)

        def forward(self, x, state):
            # x is (T, B) token ids; nn.LSTM's default layout is time-major
            out, state = self.lstm(F.one_hot(x, VOCAB).float(), state)
            return self.head(out), state

    torch.manual_seed(1)
    return CharLSTM()


def train_torch(cfg: Config, steps: int) -> float:
    """Train the PyTorch equivalent like train_charlstm; return the timed seconds."""
    import torch
    from torch.nn import functional as F

    # (B, T) batches transposed to (T, B) before timing, matching nn.LSTM's layout
    batches = random_batches(cfg, 8, seed=1)
    shape = (cfg.batch_size, cfg.seq_len)
    inputs = [torch.tensor(b).view(shape).t().contiguous() for b in batches]
    targets = [
        torch.tensor(b[1:] + b[:1]).view(shape).t().contiguous() for b in batches
    ]
    model = torch_model(cfg.n_layers, cfg.n_hidden)
    params = list(model.parameters())
    if cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
    else:
        optimizer = torch.optim.SGD(params, lr=cfg.lr)
    state = None

    def step(index: int) -> None:
        nonlocal state
        optimizer.zero_grad(set_to_none=True)
        logits, new_state = model(inputs[index % 8], state)
        loss = F.cross_entropy(logits.view(-1, VOCAB), targets[index % 8].view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP_NORM)
        optimizer.step()
        state = tuple(s.detach() for s in new_state)

    for index in range(cfg.warmup):
        step(index)
    start = time.perf_counter()
    for index in range(steps):
        step(index)
    return time.perf_counter() - start


def sample_charlstm(n_chars: int, n_hidden: int) -> float:
    """Draw n_chars one at a time at temperature 1; return the seconds."""
    from charlstm_cli.model import Model, Sampler

    model = Model(VOCAB, n_hidden, SAMPLE_LAYERS, seed=1)
    sampler = Sampler(model, seed=1)
    sampler.feed([0])
    sampler.generate(min(n_chars, 100))  # warm-up
    start = time.perf_counter()
    sampler.generate(n_chars, temperature=1.0)
    return time.perf_counter() - start


def sample_torch(n_chars: int, n_hidden: int) -> float:
    """Draw n_chars with a per-character PyTorch loop; return the seconds."""
    import torch

    model = torch_model(SAMPLE_LAYERS, n_hidden).eval()
    torch.manual_seed(1)

    def generate(count: int) -> None:
        token, state = torch.zeros((1, 1), dtype=torch.long), None
        for _ in range(count):
            logits, state = model(token, state)
            probs = torch.softmax(logits[0, 0], dim=-1)
            token = torch.multinomial(probs, 1).view(1, 1)

    with torch.no_grad():
        generate(min(n_chars, 100))  # warm-up
        start = time.perf_counter()
        generate(n_chars)
        return time.perf_counter() - start


def run_worker(task: dict) -> dict:
    """Run one measurement described by `task` in this process."""
    framework, threads = task["framework"], task["threads"]
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
    else:
        from charlstm_cli.model import set_num_threads

        set_num_threads(threads)
    result = {"seconds": None}
    if task["kind"] == "train":
        cfg = Config(**task["config"])
        train = train_torch if framework == "torch" else train_charlstm
        result["seconds"] = train(cfg, task["steps"])
    elif task["kind"] == "sample":
        sample = sample_torch if framework == "torch" else sample_charlstm
        result["seconds"] = sample(task["n_chars"], task["n_hidden"])
    result["peak_rss_mib"] = peak_rss_mib()
    return result


# ----------------------------------------------------------------------------
# parent process: schedule the children and print the results


def run_child(task: dict) -> dict:
    """Run `task` in a fresh interpreter with its thread count; return its result."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(task["threads"])
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(task)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    progress(f"  {time.perf_counter() - start:.1f} s in the child process")
    if done.returncode != 0:
        raise RuntimeError(
            f"benchmark child failed with exit code {done.returncode} on task "
            f"{json.dumps(task)}:\n{done.stderr.strip()}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_peaks(threads: int, seconds: float) -> dict[int, float | None]:
    """Return the FMA peak GFLOP/s for 1 thread and for `threads` threads."""
    from charlstm_cli import _native

    measure = getattr(_native.lib, "charlstm_measure_peak_gflops", None)
    if measure is None:
        print(
            "Warning: the charlstm library has no charlstm_measure_peak_gflops, so no"
            " percentage of peak is shown; rebuild it from this tree",
            file=sys.stderr,
        )
        return {1: None, threads: None}
    import ctypes

    measure.restype, measure.argtypes = (
        ctypes.c_double,
        [ctypes.c_int32, ctypes.c_double],
    )
    return {n: measure(n, seconds) for n in sorted({1, threads})}


def machine_info(threads: int, with_torch: bool) -> dict:
    """Return the CPU, kernel path, versions, date, command and commit of this run."""
    from charlstm_cli.model import kernel_name

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            names = [
                ln.split(":", 1)[1].strip()
                for ln in cpuinfo
                if ln.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    torch_version = None
    if with_torch:
        from importlib.metadata import version

        torch_version = version("torch")
    here = os.path.dirname(os.path.abspath(__file__))
    commit = subprocess.run(
        ["git", "-C", here, "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "kernel_path": kernel_name(),
        "torch_version": torch_version,
        "threads": threads,
        "commit": commit or None,
    }


def max_or_none(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return max(values) if values else None


def summarize(seconds: list[float], chars: int) -> dict:
    """Return best and median characters per second over rounds."""
    rates = [chars / s for s in seconds]
    return {"best": max(rates), "median": statistics.median(rates), "rounds": rates}


def bench_training(args, frameworks: list[str], thread_counts: list[int]) -> dict:
    """Time every configuration, alternating frameworks and thread counts per round."""
    table = CONFIGS if not args.tiny else TINY_CONFIGS
    results = {}
    for key in args.configs:
        cfg = table[key]
        steps = args.steps or cfg.steps
        chars = steps * cfg.batch_size * cfg.seq_len
        runs = {(f, n): [] for f in frameworks for n in thread_counts}
        for round_index in range(args.rounds):
            for threads in thread_counts:
                for framework in frameworks:
                    task = {"kind": "train", "framework": framework, "threads": threads}
                    task.update(config=asdict(cfg), steps=steps)
                    progress(
                        f"config {key} round {round_index + 1} {framework} {threads}t"
                    )
                    runs[framework, threads].append(run_child(task))
        entry = {
            "config": asdict(cfg),
            "steps": steps,
            "chars_per_step": chars // steps,
        }
        for (framework, threads), rows in runs.items():
            stats = summarize([r["seconds"] for r in rows], chars)
            stats["peak_rss_mib"] = max(r["peak_rss_mib"] for r in rows)
            entry.setdefault(framework, {})[str(threads)] = stats
        results[key] = entry
    return results


def bench_sampling(args, frameworks: list[str], threads: int) -> dict:
    """Time one-character-at-a-time sampling from a 2-layer model, per framework."""
    n_hidden = SAMPLE_HIDDEN if not args.tiny else 16
    counts = {"charlstm": 20000, "torch": 2000} if not args.tiny else {}
    results = {}
    runs = {f: [] for f in frameworks}
    for round_index in range(args.rounds):
        for framework in frameworks:
            n_chars = counts.get(framework, 50)
            task = {"kind": "sample", "framework": framework, "threads": threads}
            task.update(n_chars=n_chars, n_hidden=n_hidden)
            progress(f"sampling round {round_index + 1} {framework}")
            runs[framework].append((n_chars, run_child(task)["seconds"]))
    for framework, rows in runs.items():
        rates = [n / s for n, s in rows]
        results[framework] = {"best": max(rates), "median": statistics.median(rates)}
    results["model"] = {"n_layers": SAMPLE_LAYERS, "n_hidden": n_hidden}
    return results


def idle_baselines(frameworks: list[str]) -> dict[str, float]:
    """Return the peak RSS (MiB) of an interpreter that only imported each framework."""
    task = {"kind": "idle", "threads": 1}
    return {f: run_child({**task, "framework": f})["peak_rss_mib"] for f in frameworks}


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------
# report


def print_report(report: dict) -> None:
    info = report["machine"]
    loads = " -> ".join(
        "/".join(f"{x:.2f}" for x in load)
        for load in (info["load_average"], report["load_end"])
    )
    print(f"date:     {info['date']}")
    print(f"command:  {info['command']}")
    print(f"commit:   {info['commit']}")
    print(f"machine:  {info['cpu']}, {info['cores']} cores")
    print(f"load:     {loads} (1/5/15-minute averages at start -> end)")
    print(
        f"kernel:   {info['kernel_path']}; torch {info['torch_version'] or 'not run'}"
    )
    print(f"threads:  {info['threads']} for both frameworks; scaling also runs 1")
    for label in ("start", "end", ""):
        values = report[f"peak_gflops_{label}" if label else "peak_gflops"]
        cells = [
            f"{n} thread{'s' if n > 1 else ''} {fmt(v, '.1f')}"
            for n, v in values.items()
        ]
        note = f"at the {label}" if label else "the higher of the two, used below"
        print(f"FMA peak: {', '.join(cells)} GFLOP/s, {note}")
    print()
    print_training_table(report)
    print_scaling_table(report)
    print_sampling(report)


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Print rows under header: the first column left-aligned, the rest right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        print("  ".join(cells))


def print_training_table(report: dict) -> None:
    threads = report["machine"]["threads"]
    peak = report["peak_gflops"][threads]
    base = report["baseline_rss_mib"]
    key_t = str(threads)
    print(f"training, {threads} threads, best of {report['rounds']} rounds")
    header = ["config", "L x H", "T x B", "opt", "charlstm ch/s", "torch ch/s", "ratio"]
    header += ["GFLOP/s", "of peak", "charlstm MiB", "torch MiB"]
    rows = []
    for key, entry in report["training"].items():
        cfg = entry["config"]
        ours = entry["charlstm"][key_t]
        theirs = entry.get("torch", {}).get(key_t)
        flops = train_flops_per_char(cfg["n_layers"], cfg["n_hidden"], VOCAB)
        gflops = ours["best"] * flops * 1e-9
        rows.append(
            [
                key,
                f"{cfg['n_layers']} x {cfg['n_hidden']}",
                f"{cfg['seq_len']} x {cfg['batch_size']}",
                cfg["optimizer"],
                fmt(ours["best"], ",.0f"),
                fmt(theirs and theirs["best"], ",.0f"),
                fmt(theirs and ours["best"] / theirs["best"], ".2f"),
                fmt(gflops, ".1f"),
                fmt(peak and 100 * gflops / peak, ".0f", "%"),
                fmt(ours["peak_rss_mib"] - base["charlstm"], ".1f"),
                fmt(theirs and theirs["peak_rss_mib"] - base["torch"], ".1f"),
            ]
        )
    print_table(header, rows)
    idle = ", ".join(f"{f} {v:.1f}" for f, v in base.items())
    print(
        f"MiB: peak RSS minus an idle interpreter with the framework imported ({idle} MiB)"
    )
    print()
    print_round_spread(report)


def print_round_spread(report: dict) -> None:
    """Print the lowest and highest round of every config, next to the best above.

    On a shared machine the rounds of one run differ by several percent, so a
    target near a threshold needs this spread beside the best round.
    """
    if report["rounds"] < 2:
        return
    threads = report["machine"]["threads"]
    peak = report["peak_gflops"][threads]
    key_t = str(threads)
    print(
        f"training, {threads} threads, lowest to highest of {report['rounds']} rounds"
    )
    header = ["config", "charlstm ch/s", "of peak", "ratio, round by round"]
    rows = []
    for key, entry in report["training"].items():
        rates = entry["charlstm"][key_t]["rounds"]
        theirs = entry.get("torch", {}).get(key_t)
        flops = train_flops_per_char(
            entry["config"]["n_layers"], entry["config"]["n_hidden"], VOCAB
        )
        shares = [100 * rate * flops * 1e-9 / peak for rate in rates] if peak else []
        ratios = (
            [ours / other for ours, other in zip(rates, theirs["rounds"])]
            if theirs
            else []
        )
        rows.append(
            [
                key,
                f"{min(rates):,.0f} to {max(rates):,.0f}",
                f"{min(shares):.0f} to {max(shares):.0f}%" if shares else "-",
                f"{min(ratios):.2f} to {max(ratios):.2f}" if ratios else "-",
            ]
        )
    print_table(header, rows)
    print()


def print_scaling_table(report: dict) -> None:
    threads = report["machine"]["threads"]
    if threads == 1:
        return
    print(
        f"scaling, characters/s at 1 and {threads} threads, best of {report['rounds']}"
    )
    header = ["config"]
    for framework in ("charlstm", "torch"):
        header += [f"{framework} 1t", f"{threads}t", "speedup"]
    rows = []
    for key, entry in report["training"].items():
        row = [key]
        for framework in ("charlstm", "torch"):
            runs = entry.get(framework)
            one = runs and runs["1"]["best"]
            many = runs and runs[str(threads)]["best"]
            row += [fmt(one, ",.0f"), fmt(many, ",.0f"), fmt(one and many / one, ".2f")]
        rows.append(row)
    print_table(header, rows)
    print()


def print_sampling(report: dict) -> None:
    sampling = report["sampling"]
    model = sampling["model"]
    ours = sampling["charlstm"]["best"]
    theirs = sampling.get("torch", {}).get("best")
    print(
        f"sampling, {model['n_layers']} x {model['n_hidden']}, one character at a time,"
        f" {report['machine']['threads']} threads, best of {report['rounds']}:"
        f" charlstm {ours:,.0f} ch/s, torch {fmt(theirs, ',.0f')} ch/s,"
        f" ratio {fmt(theirs and ours / theirs, '.2f')}"
    )


def fmt(value, spec: str, suffix: str = "") -> str:
    """Format value, or '-' when it is missing (PyTorch not run)."""
    return "-" if value is None or value is False else format(value, spec) + suffix


# ----------------------------------------------------------------------------
# command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs", default="abcd", help="configurations to run, from a, b, c, d"
    )
    parser.add_argument(
        "--steps", type=int, help="timed steps per round for every config"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per framework")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="threads for both frameworks (default: all usable cores)",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--json", action="store_true", help="print JSON, not tables")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.configs) - set(CONFIGS))
    if unknown or not args.configs:
        parser.error(f"--configs {args.configs!r} must be letters from 'abcd'")
    for name in ("steps", "rounds", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} {value} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    with_torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    if not args.no_torch and not with_torch:
        print(
            "Warning: PyTorch is not installed, so only charlstm runs", file=sys.stderr
        )
    frameworks = ["charlstm", "torch"] if with_torch else ["charlstm"]
    thread_counts = [args.threads] + ([1] if args.threads > 1 else [])
    if args.tiny and args.rounds == 3:
        args.rounds = 1

    report = {"machine": machine_info(args.threads, with_torch), "rounds": args.rounds}
    peak_seconds = 0.05 if args.tiny else 1.0
    report["peak_gflops_start"] = measure_peaks(args.threads, peak_seconds)
    report["baseline_rss_mib"] = idle_baselines(frameworks)
    report["training"] = bench_training(args, frameworks, thread_counts)
    report["sampling"] = bench_sampling(args, frameworks, args.threads)
    report["load_end"] = os.getloadavg()
    report["peak_gflops_end"] = measure_peaks(args.threads, peak_seconds)
    # The peak is a property of the hardware, so a lower reading means another process
    # took a core during that measurement; the higher of the two is the closer estimate.
    report["peak_gflops"] = {
        n: max_or_none(report["peak_gflops_start"][n], report["peak_gflops_end"][n])
        for n in report["peak_gflops_start"]
    }
    report["flops_formula"] = "3 * (2*H*4H + (L-1)*2*(2H)*4H + 2*H*V) per character"
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
