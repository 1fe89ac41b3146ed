"""Evidence screenshots never show a password: checked in real Chromium."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from regjobs.settings import Settings
from tasks.browser import BrowserPool, masked_screenshot
from tasks.clients.interfaces import Call, Login
from tasks.portal import client

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
                    timeout = pool.settings.browser_screenshot_timeout_seconds
                    result.append(await masked_screenshot(page, timeout))
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


async def _no_progress(_: str) -> None:
    return None


def failed_attempt(tmp_path: Path, *, close_page: bool) -> Call:
    """An attempt whose step fails inside a portal session (its page closed first, or not);
    the step's own error must come out either way."""

    async def attempt() -> Call:
        pool = BrowserPool(Settings(state_dir=tmp_path), "screenshot-fail")
        portal = client.BrowserPortal(pool, "http://127.0.0.1:9")
        call = Call(trace="job:step", idempotency_key="key", progress=_no_progress)
        try:
            with pytest.raises(RuntimeError, match="the step's own failure"):
                async with portal.session(call, Login("owner@example.com", "pw")) as session:
                    await session.page.set_content("<p>Café Ünïcode</p>")
                    if close_page:
                        await session.page.close()
                    raise RuntimeError("the step's own failure")
        finally:
            await pool.close()
        return call

    return asyncio.run(attempt())


def test_a_failed_attempt_keeps_its_screenshot(tmp_path: Path) -> None:
    call = failed_attempt(tmp_path, close_page=False)
    assert len(call.evidence) == 1
    assert call.evidence[0].startswith(b"\x89PNG")


def test_a_screenshot_that_cannot_be_taken_is_logged_and_the_failure_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Once, under load, an attempt's screenshot was dropped without a word (it shared the
    3 s action timeout): now it has its own bound, and a missing one is logged."""
    monkeypatch.setattr(client, "get_run_logger", lambda: logging.getLogger("test.portal"))
    with caplog.at_level(logging.WARNING, logger="test.portal"):
        call = failed_attempt(tmp_path, close_page=True)
    assert call.evidence == []
    assert "no screenshot of the failed attempt" in caplog.text
