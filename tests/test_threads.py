"""The thread tuner picks the faster thread count from measured step times."""

from __future__ import annotations

import pytest

from charlstm_cli.model import get_num_threads, set_num_threads
from charlstm_cli.threads import ThreadTuner


@pytest.fixture(autouse=True)
def restore_threads():
    yield
    set_num_threads(0)


def _run(tuner: ThreadTuner, seconds_for, steps: int) -> list[int]:
    """Drive `steps` steps whose duration depends on the thread count; return counts used."""
    used = []
    for _ in range(steps):
        tuner.before_step()
        threads = get_num_threads()
        used.append(threads)
        tuner.after_step(seconds_for(threads))
    return used


def test_tuner_drops_to_one_thread_when_faster():
    tuner = ThreadTuner(2, adaptive=True)
    used = _run(tuner, lambda n: 0.010 if n == 2 else 0.004, 30)
    first = ThreadTuner.FIRST_PROBE_AFTER
    assert used[:first] == [2] * first
    assert 1 in used[first : first + 2 * ThreadTuner.PROBE_ROUNDS]
    assert tuner.current == 1
    assert used[-5:] == [1] * 5


def test_tuner_keeps_all_threads_when_faster():
    tuner = ThreadTuner(2, adaptive=True)
    used = _run(tuner, lambda n: 0.004 if n == 2 else 0.008, 30)
    assert tuner.current == 2
    assert used[-5:] == [2] * 5


def test_tuner_probes_again_after_slow_steps():
    tuner = ThreadTuner(2, adaptive=True)
    _run(tuner, lambda n: 0.004 if n == 2 else 0.008, 20)
    assert tuner.current == 2
    # another program takes a core: two threads become slow
    _run(tuner, lambda n: 0.050 if n == 2 else 0.008, 20)
    assert tuner.current == 1


def test_tuner_returns_to_all_threads_at_next_probe():
    tuner = ThreadTuner(2, adaptive=True)
    _run(tuner, lambda n: 0.050 if n == 2 else 0.008, 20)
    assert tuner.current == 1
    _run(tuner, lambda n: 0.004 if n == 2 else 0.008, ThreadTuner.PROBE_EVERY + 10)
    assert tuner.current == 2


def test_fixed_thread_count_never_changes():
    tuner = ThreadTuner(2, adaptive=False)
    used = _run(tuner, lambda n: 0.010 if n == 2 else 0.001, 50)
    assert set(used) == {2}


def test_tuner_ends_probe_when_clearly_slower():
    tuner = ThreadTuner(2, adaptive=True)
    # a busy machine: one 2-thread step takes about 2 s, a 1-thread step 15 ms
    used = _run(tuner, lambda n: 1.9 if n == 2 else 0.015, 10)
    assert tuner.current == 1
    assert used.count(2) == ThreadTuner.FIRST_PROBE_AFTER + 1
