"""A test host's skewed wall clock (tests/hosts/harness.py, `CLOCKS`).

Python imports this module at its start when its folder is on PYTHONPATH, as it is in every
Python process of a skewed test host. With `REGJOBS_TEST_CLOCK_SKEW` seconds set, it moves
the process's wall clock by that much, still ticking, with time-machine (which patches the
C functions behind `time.time`, `datetime.datetime.now` and the rest, so the regjobs code's
`utcnow`, Prefect's and pendulum's `now` and log records all read the skewed clock);
`time.monotonic` is left alone: a host's clock being off does not change how long things
take there.

Not libfaketime, which fakes every program's clock: with Python 3.11 it made every wait with
a timeout hang (`threading.Event.wait(0.3)`, `queue.Queue.get(timeout=...)`; libfaketime
0.9.10, with and without FAKETIME_FORCE_MONOTONIC_FIX), and with its monotonic clock left
alone, `time.sleep` fail with EINVAL. So PostgreSQL, Redis and Chromium keep the true time
(the first two run on the control host, which is not skewed).
"""

from __future__ import annotations

import os
import time

SKEW_ENV = "REGJOBS_TEST_CLOCK_SKEW"

_skew = float(os.environ.get(SKEW_ENV) or 0)
if _skew:
    import time_machine

    time_machine.travel(time.time() + _skew, tick=True).start()
