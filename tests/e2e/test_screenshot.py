"""Evidence screenshots never show a password: checked in real Chromium."""

from __future__ import annotations

import asyncio
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
