"""What one browser step's Chromium costs: launch, a page of forms, a few fields filled, the
masked screenshot, close. Prints CPU seconds (Chromium's and the Playwright driver's, all
children of this process) and wall seconds a launch, for each executable given.

    .venv/bin/python -m benchmarks.chromium [--launches 8] [EXECUTABLE ...]

By default Debian's full Chromium and its headless shell (`regjobs.settings` prefers the
headless shell for headless runs, as Playwright itself does). Each executable in a process
of its own, so their children's CPU is counted apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time

from playwright.async_api import async_playwright

from tasks.browser import CHROMIUM_ARGS, masked_screenshot

DEFAULT = ["/usr/bin/chromium", "/usr/bin/chromium-headless-shell"]
PAGE = "".join(
    f"<form><label>Name {i}<input name=a{i}></label><input type=password name=p{i}>"
    "<button>Save</button></form>"
    for i in range(30)
)


async def launches(executable: str, n: int) -> dict[str, float]:
    async with async_playwright() as playwright:
        started = time.perf_counter()
        for _ in range(n):
            browser = await playwright.chromium.launch(
                executable_path=executable, headless=True, args=CHROMIUM_ARGS
            )
            context = await browser.new_context()
            page = await context.new_page()
            await page.set_content(PAGE)
            for i in range(5):
                await page.fill(f"input[name=a{i}]", "Café «Ünïcode» & <b>markup</b>")
            await masked_screenshot(page, 30)
            await context.close()
            await browser.close()
        wall = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu": (children.ru_utime + children.ru_stime) / n, "wall": wall / n}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("executables", nargs="*", default=DEFAULT)
    parser.add_argument("--launches", type=int, default=8)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(launches(args.executables[0], args.launches))))
        return
    print(f"{'executable':40} {'CPU s a launch':>15} {'wall s a launch':>16}")
    for executable in args.executables:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.chromium", "--one", executable,
             "--launches", str(args.launches)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        figures = json.loads(out.stdout)
        print(f"{executable:40} {figures['cpu']:15.2f} {figures['wall']:16.2f}")


if __name__ == "__main__":
    main()
