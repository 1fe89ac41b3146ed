"""Evidence screenshots never show a password: checked in real Chromium."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from regjobs.settings import Settings
from tasks.browser import BrowserPool, masked_screenshot

pytestmark = pytest.mark.e2e

PAGE = """<form><label>Email <input name=email value="owner@example.com"></label>
<label>Password <input type=password name=password value="{secret}"></label></form>"""


def shots(tmp_path: Path, secrets: list[str]) -> list[bytes]:
    async def take() -> list[bytes]:
        pool = BrowserPool(Settings(state_dir=tmp_path), "screenshot-test")
        try:
            result = []
            for secret in secrets:
                async with pool.page() as page:
                    await page.set_content(PAGE.format(secret=secret))
                    result.append(await masked_screenshot(page))
            return result
        finally:
            await pool.close()

    return asyncio.run(take())


def test_password_fields_are_masked(tmp_path: Path) -> None:
    short, long_, again = shots(tmp_path, ["a", "a-much-longer-password-123", "a"])
    assert short.startswith(b"\x89PNG")
    # Under the mask the field looks the same whatever it holds.
    assert short == long_ == again


def test_a_pool_leaves_the_process_able_to_start_another_playwright(tmp_path: Path) -> None:
    """The pool's temporary folder goes with it, and TMPDIR is the process's again: a
    Playwright started after it in the same process (a test worker running the next test)
    once failed to make its artifacts folder in the removed one."""
    from playwright.sync_api import sync_playwright

    before = os.environ.get("TMPDIR")
    shots(tmp_path, ["a"])
    assert os.environ.get("TMPDIR") == before
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=Settings().chromium_path())
        try:
            assert browser.new_page().evaluate("1 + 1") == 2
        finally:
            browser.close()
