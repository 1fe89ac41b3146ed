"""A flow-run process killed outright (SIGKILL, out of memory) takes its browser with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from regjobs.settings import Settings
    from tasks.browser import BrowserPool

    async def main() -> None:
        pool = BrowserPool(Settings(state_dir=Path(sys.argv[1])), sys.argv[2])
        async with pool.page() as page:
            await page.set_content("<p>a step in progress</p>")
            print(pool.tmp_dir, flush=True)
            await asyncio.sleep(120)

    asyncio.run(main())
""")


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_a_killed_process_leaves_no_browser_and_no_playwright_files(tmp_path: Path) -> None:
    run_id = f"crash-{time.time_ns()}"
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), run_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    tmp_dir = Path(process.stdout.readline().strip())
    tree = descendants(process.pid)
    assert any(b"chrom" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in tree)

    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed = time.monotonic()
    wait_for(
        lambda: not [p for p in tree if Path(f"/proc/{p}").exists()],
        timeout=10,
        interval=0.2,
        what="the browser's processes to end",
    )
    print(f"browser gone {time.monotonic() - killed:.1f} s after the kill")

    # Playwright removed its own profile; what is left is our marker with the dead pid, which
    # the next browser start on this machine sweeps (another test process's may do it first).
    def only_the_marker_or_swept() -> bool:
        try:
            return [p.name for p in tmp_dir.iterdir()] == ["pid"]
        except FileNotFoundError:
            return True

    wait_for(
        only_the_marker_or_swept,
        timeout=10,
        interval=0.2,
        what=f"Playwright's files in {tmp_dir} to go",
    )
    from tasks.browser import sweep

    sweep()
    assert not tmp_dir.exists()
