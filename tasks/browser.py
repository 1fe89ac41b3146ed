"""One Chromium per flow-run process at most, and only while the run holds a browser slot:
started when a browser step that holds a slot first needs it, shared by the job's browser
steps holding slots at the same time (each in a fresh context), and closed as soon as the
last of them lets its slot go. A run waiting for a slot holds no browser, so the browsers
alive on a machine never outnumber the slots (REGJOBS_BROWSER_LIMIT), however many jobs
run there (measured: docs/figures.md).

Playwright's temporary files go to a folder of this flow run (TMPDIR), removed on close and
swept at the next start if a killed process left it behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, Page, Playwright, async_playwright

from regjobs.settings import Settings

#: Flags for a closed network (as on this machine): no background chatter to Google.
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-gpu",
]


TMP_ROOT = Path(tempfile.gettempdir())
TMP_PREFIX = "regjobs-pw-"


class BrowserPool:
    def __init__(self, settings: Settings, run_id: str) -> None:
        self.settings = settings
        # Short on purpose: Chromium puts a Unix socket in it (108 bytes at most).
        self.tmp_dir = TMP_ROOT / f"{TMP_PREFIX}{run_id[:13]}"
        self._lock = asyncio.Lock()
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        #: Browser steps of this run holding a slot right now.
        self._holders = 0
        #: How many times a browser was launched (a crashed one is replaced).
        self.launches = 0

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """While a step holds a browser slot; the last one out closes the browser (the
        Playwright driver, which is no browser, stays for the run)."""
        self._holders += 1
        try:
            yield
        finally:
            self._holders -= 1
            if self._holders == 0:
                await self._close_browser()

    async def _close_browser(self) -> None:
        async with self._lock:
            if self._browser is not None and self._holders == 0:
                with contextlib.suppress(Exception):
                    await self._browser.close()
                self._browser = None

    async def browser(self) -> Browser:
        async with self._lock:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            if self._playwright is None:
                sweep()
                self.tmp_dir.mkdir(parents=True, exist_ok=True)
                (self.tmp_dir / "pid").write_text(str(os.getpid()))
                # The Playwright driver and Chromium inherit TMPDIR: their profiles land
                # here. Only the driver's start sees it: the folder goes with this pool, and
                # a later Playwright in the same process must not find it gone.
                previous = os.environ.get("TMPDIR")
                os.environ["TMPDIR"] = str(self.tmp_dir)
                try:
                    self._playwright = await async_playwright().start()
                finally:
                    if previous is None:
                        del os.environ["TMPDIR"]
                    else:
                        os.environ["TMPDIR"] = previous
            self._browser = await self._playwright.chromium.launch(
                executable_path=self.settings.chromium_path(),
                headless=self.settings.browser_headless,
                args=CHROMIUM_ARGS,
            )
            self.launches += 1
            return self._browser

    @contextlib.asynccontextmanager
    async def page(self, headers: dict[str, str] | None = None) -> AsyncIterator[Page]:
        """A page in a fresh context (no cookies shared between steps); `headers` go with
        every request it makes."""
        browser = await self.browser()
        context = await browser.new_context(extra_http_headers=headers)
        timeout_ms = self.settings.browser_action_timeout_seconds * 1000
        context.set_default_timeout(timeout_ms)
        context.set_default_navigation_timeout(timeout_ms)
        try:
            yield await context.new_page()
        finally:
            with contextlib.suppress(Exception):
                await context.close()

    async def close(self) -> None:
        self._holders = 0
        await self._close_browser()
        async with self._lock:
            if self._playwright is not None:
                with contextlib.suppress(Exception):
                    await self._playwright.stop()
                self._playwright = None
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


async def masked_screenshot(page: Page, timeout_seconds: float) -> bytes:
    """The whole page as PNG, every password field painted over."""
    return await page.screenshot(
        full_page=True,
        mask=[page.locator("input[type=password]")],
        timeout=timeout_seconds * 1000,
    )


def sweep() -> None:
    """Remove temporary folders of flow-run processes that no longer exist."""
    for folder in TMP_ROOT.glob(f"{TMP_PREFIX}*"):
        try:
            pid = int((folder / "pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            shutil.rmtree(folder, ignore_errors=True)
