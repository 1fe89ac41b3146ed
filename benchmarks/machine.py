"""How fast this machine runs Python, printed beside a benchmark's figures: the same code
gave create-burst p95s of 233-382 ms on one 2-core machine and 633-1106 ms on another whose
loop below took 2.0 s, so figures of two machines compare only through it."""

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
