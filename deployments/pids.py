"""Finding a stack's processes in /proc: every process of a stack carries its marker
(`REGJOBS_STACK_ID`) in its environment, also those started in sessions of their own (the
worker's flow-run processes, their Chromium), so nothing a stack started outlives it and
nothing it did not start is touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

#: The environment variable that marks every process of one stack.
MARKER = "REGJOBS_STACK_ID"


def processes_with_env(name: str, value: str) -> list[int]:
    """Processes whose environment (as they started) carries `name=value`."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def marked_processes(stack_id: str) -> list[int]:
    """Live processes whose environment carries `REGJOBS_STACK_ID=<stack_id>`."""
    return [pid for pid in processes_with_env(MARKER, stack_id) if alive(pid)]


def chromium_processes(pids: Iterable[int]) -> list[int]:
    """Of `pids` (e.g. a system's `marked_processes`), Chromium's: browsers, their helpers
    (zygotes, renderers, GPU) and crash reporters. Told by the executable, not the command
    line: Chromium's helpers rewrite theirs."""
    return [pid for pid in pids if "chrom" in _executable(pid)]


def browser_processes(chromium: Iterable[int]) -> list[int]:
    """Of Chromium's processes, the browsers: main processes. Told apart two ways at once,
    each closing a gap of the other: a helper (zygote, renderer, GPU, utility) has `--type=`
    on its command line, rewritten or not, also when its browser has gone and init is its
    parent; and a browser's parent is not Chromium, as a child forked by a browser, for the
    moment before it becomes a helper, has its browser's command line."""
    return [
        pid
        for pid in chromium
        if _executable(pid) in CHROMIUM_EXECUTABLES
        and b"--type=" not in _cmdline(pid)
        and _executable(_parent(pid)) not in CHROMIUM_EXECUTABLES
    ]


#: Chromium's own executable (not its crash reporter), as Debian and Playwright name it,
#: the full browser's and the headless shell's.
CHROMIUM_EXECUTABLES = frozenset(
    {"chromium", "chrome", "chromium-headless-shell", "headless_shell", "chrome-headless-shell"}
)


def _executable(pid: int) -> str:
    """The file name of the program a process runs ("" if it is gone)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name
    except OSError:
        return ""


def _cmdline(pid: int) -> bytes:
    """A process's command line (b"--type=" stands in for one that is gone: not a browser)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b"--type="


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def alive(pid: int) -> bool:
    """Running (a zombie is not: it waits only to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
