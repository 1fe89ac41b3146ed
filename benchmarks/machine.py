"""How fast this machine runs Python just then, printed when a benchmark starts and ends.
The 2-core machines here are not steady: in one session the loop below took 2.0 s after a
CI run and 0.72 s at the start of a benchmark whose figures were still about twice the
previous session's, so this is a reading of the moment, not a calibration; figures of
two sessions compare only with it in view."""

from __future__ import annotations

import time


def python_loop_seconds(steps: int = 10_000_000) -> float:
    """Seconds a `steps`-step Python loop takes (the best of three)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(steps):
            total += i
        best = min(best, time.perf_counter() - started)
    return best


def describe() -> str:
    return f"machine: a 10-million-step Python loop takes {python_loop_seconds():.2f} s"
