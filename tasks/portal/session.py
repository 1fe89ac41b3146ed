"""A logged-in walk through the portal for one step: logs in, runs the step's pages, and
logs in again (up to a few times) when the portal ends the session midway."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from playwright.async_api import Page

from tasks.portal.base import SessionExpired
from tasks.portal.login import LoginPage

T = TypeVar("T")
RELOGINS = 3


class PortalSession:
    def __init__(self, page: Page, base_url: str, email: str, password: str) -> None:
        self.page = page
        self.base_url = base_url
        self._email = email
        self._password = password
        self.logins = 0

    async def log_in(self) -> None:
        await LoginPage(self.page, self.base_url).log_in(self._email, self._password)
        self.logins += 1

    async def run(self, action: Callable[[], Awaitable[T]]) -> T:
        """Run `action` logged in; an expired session means log in and run it again, so an
        action must be safe to repeat (each portal form here is)."""
        if self.logins == 0:
            await self.log_in()
        for _ in range(RELOGINS):
            try:
                return await action()
            except SessionExpired:
                await self.log_in()
        return await action()
