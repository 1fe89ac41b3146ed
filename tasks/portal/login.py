"""The portal's login page."""

from __future__ import annotations

from urllib.parse import quote

from regjobs.errors import ACCOUNT_LOGIN, LoginRefused
from tasks.portal.base import LOGIN_PATH, PortalPage

FORM = "#login-form"
EMAIL = "input[name=email]"
PASSWORD = "input[name=password]"
SUBMIT = "button#login-submit"
ERROR = ".login-error"


class LoginPage(PortalPage):
    name = "login"
    expects_login = True

    async def log_in(self, email: str, password: str, next_path: str = "/") -> None:
        await self.open(f"{LOGIN_PATH}?next={quote(self.base_path + next_path)}")
        await self.fill(EMAIL, email)
        await self.fill(PASSWORD, password)
        button = await self.element(SUBMIT)
        async with self.page.expect_navigation():
            await button.click()
        if await self.page.locator(ERROR).count():
            said = await self.page.locator(ERROR).first.inner_text()
            raise LoginRefused(
                f"login page: the portal refused the credentials ({said.strip()[:100]})",
                fields=ACCOUNT_LOGIN,
                email=email,
            )
