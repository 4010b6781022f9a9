"""Choose the kernel thread count for training and sampling from measured times."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

from .model import get_num_threads, set_num_threads

logger = logging.getLogger("charlstm.threads")
Result = TypeVar("Result")


class ThreadTuner:
    """Switch training or sampling between all cores and one core, whichever is faster.

    The kernel threads wait for each other after every matrix product. When
    another program keeps a core busy, each wait can last a scheduler time
    slice, and a step on all cores becomes many times slower than on one. The
    engine's results are bit-identical for any thread count, so switching
    changes only the speed, never the numbers.
    """

    PROBE_ROUNDS = 3  # steps measured per candidate in one probe
    PROBE_EVERY = 200  # steps between probes while nothing looks wrong
    FIRST_PROBE_AFTER = 1  # the first step also grows buffers, so it is not measured
    # A probe ends early once one candidate's fastest step is this many times
    # slower than the other's first step, so a busy machine spends few steps on
    # the slow count (one 2-thread step can take seconds there).
    CLEAR_LOSS = 4.0
    SLOWDOWN = 1.5  # a step this much slower than the baseline counts as slow
    SLOW_STEPS = 3  # consecutive slow steps that start a probe early
    MARGIN = 0.9  # one core must be 10% faster to be chosen over all

    def __init__(self, max_threads: int, adaptive: bool) -> None:
        self.max_threads = max(1, max_threads)
        self.adaptive = adaptive and self.max_threads > 1
        self.current = self.max_threads
        self._applied = 0
        self._queue: list[int] = []
        self._times: dict[int, list[float]] = {}
        self._since_probe = self.PROBE_EVERY - self.FIRST_PROBE_AFTER
        self._baseline: float | None = None
        self._slow_run = 0

    def before_step(self) -> None:
        """Apply the thread count for the coming step."""
        wanted = self._queue[0] if self._queue else self.current
        if wanted != self._applied:
            set_num_threads(wanted)
            self._applied = wanted

    def after_step(self, seconds: float) -> None:
        """Record how long the step took and decide whether to probe or switch."""
        if not self.adaptive:
            return
        if self._queue:
            self._times.setdefault(self._queue.pop(0), []).append(seconds)
            if not self._queue or self._clearly_slower():
                self._queue = []
                self._decide()
            return
        self._since_probe += 1
        slow = self._baseline is not None and seconds > self.SLOWDOWN * self._baseline
        self._slow_run = self._slow_run + 1 if slow else 0
        if self._since_probe >= self.PROBE_EVERY or self._slow_run >= self.SLOW_STEPS:
            self._start_probe()

    def _start_probe(self) -> None:
        self._times = {}
        self._queue = [self.max_threads, 1] * self.PROBE_ROUNDS
        self._since_probe = 0
        self._slow_run = 0

    def timed(self, units: int, call: Callable[[], Result]) -> Result:
        """Run `call` at the chosen thread count and record its time per unit.

        Sampling uses this with units = characters, so calls of different
        lengths compare fairly.
        """
        self.before_step()
        started = time.perf_counter()
        result = call()
        self.after_step((time.perf_counter() - started) / max(units, 1))
        return result

    def _clearly_slower(self) -> bool:
        many = self._times.get(self.max_threads)
        one = self._times.get(1)
        if not many or not one:
            return False
        return min(many) > self.CLEAR_LOSS * one[0] or (
            min(one) > self.CLEAR_LOSS * many[0]
        )

    def _decide(self) -> None:
        many = statistics.median(self._times[self.max_threads])
        one = statistics.median(self._times[1])
        chosen = 1 if one < self.MARGIN * many else self.max_threads
        logger.debug(
            "thread probe: %.1f ms/step on 1, %.1f ms/step on %d",
            one * 1e3,
            many * 1e3,
            self.max_threads,
        )
        if chosen != self.current:
            logger.info(
                "switching to %d kernel thread(s): %.1f ms/step on 1, %.1f ms/step on %d",
                chosen,
                one * 1e3,
                many * 1e3,
                self.max_threads,
            )
        self.current = chosen
        self._baseline = one if chosen == 1 else many


def make_tuner(threads_option: int) -> ThreadTuner:
    """Build the tuner for a --threads value: 0 adapts, N > 0 fixes N threads."""
    set_num_threads(threads_option)
    return ThreadTuner(get_num_threads(), adaptive=threads_option == 0)
