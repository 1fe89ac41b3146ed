"""What every portal page shares: navigation, waiting for elements, reading the portal's
error pages, and logging in again when the session expired."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from playwright.async_api import Locator, Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from regjobs.errors import (
    NonRetryableStepError,
    PreconditionFailed,
    RetryableStepError,
    value_rejected,
)
from tasks.clients.http import segment

LOGIN_PATH = "/login"


def restaurant_path(subdomain: str) -> str:
    """The path of a restaurant's pages (the subdomain comes from the portal's answer)."""
    return f"/r/{segment(subdomain, 'subdomain')}"


#: A settings form whose values were saved before (the portal's mark), not defaults.
SAVED_FORM = "form[data-saved=true]"


@dataclass(frozen=True)
class Field:
    """A form field and the value a step wants in it."""

    kind: Literal["text", "checkbox", "select"]
    selector: str
    wanted: str | bool | None


class SessionExpired(RetryableStepError):
    """The portal sent us back to its login page."""


class PortalPage:
    #: How the page is named in error messages.
    name: ClassVar[str] = "portal"
    #: The step whose form the page is (its typed fields: `regjobs.errors.TYPED_FIELDS`).
    step_id: ClassVar[str] = ""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url.rstrip("/")
        self.base_path = urlsplit(self.base_url).path

    def url(self, path: str) -> str:
        return self.base_url + path

    async def open(self, path: str) -> None:
        """Go to a portal page; raise if the portal answered with an error page."""
        try:
            response = await self.page.goto(self.url(path))
        except PlaywrightTimeout:
            raise RetryableStepError(f"{self.name} page: {path} did not load in time") from None
        await self.check(response.status if response else None)

    #: Landing on the login page means the session expired (except for the login page).
    expects_login: ClassVar[bool] = False

    async def check(self, status: int | None = None) -> None:
        """Turn the portal's answer into an error a person can act on, if it is one."""
        on_login = urlsplit(self.page.url).path.startswith(self.base_path + LOGIN_PATH)
        if on_login and not self.expects_login:
            raise SessionExpired(f"{self.name} page: the portal session expired")
        if status is not None and (status >= 500 or status == 429):
            raise RetryableStepError(f"{self.name} page: the portal answered HTTP {status}")
        error = self.page.locator(".portal-error")
        if await error.count():
            # The portal's precondition page: something an earlier step made is missing.
            raise PreconditionFailed(f"{self.name} page: {await error.first.inner_text()}")
        fields = self.page.locator(".field-error")
        if await fields.count():
            named = [
                (await f.get_attribute("data-field") or "form", await f.inner_text())
                for f in await fields.all()
            ]
            message = f"{self.name} page: the portal rejected the form: " + "; ".join(
                f"{name}: {said}" for name, said in named
            )
            # A value a person typed (a phone number, a subdomain taken): they correct it.
            rejected = value_rejected(self.step_id, message, [n for n, _ in named])
            if rejected is not None:
                raise rejected
            raise NonRetryableStepError(message)
        if status is not None and 400 <= status < 500:
            raise NonRetryableStepError(f"{self.name} page: the portal answered HTTP {status}")

    async def element(self, selector: str) -> Locator:
        """The element, once visible; a retryable error naming page and element if it never
        appears."""
        locator = self.page.locator(selector).first
        try:
            await locator.wait_for(state="visible")
        except PlaywrightTimeout:
            raise RetryableStepError(
                f"{self.name} page: element {selector} did not appear "
                f"(at {urlsplit(self.page.url).path})"
            ) from None
        return locator

    async def fill(self, selector: str, value: str | None) -> None:
        await (await self.element(selector)).fill(value or "")

    async def check_box(self, selector: str, on: bool) -> None:
        await (await self.element(selector)).set_checked(on)

    async def select(self, selector: str, value: str) -> None:
        await (await self.element(selector)).select_option(value)

    async def settle(self, fields: Sequence[Field], submit: str) -> bool:
        """Set each field that differs from what is wanted, and submit the form, unless it
        holds saved values (not the portal's defaults) that are all as wanted already: a
        step repeated after a crash then sets nothing twice. Whether it submitted."""
        saved = await self.page.locator(SAVED_FORM).count() > 0
        differs = False
        for field in fields:
            locator = await self.element(field.selector)
            if field.kind == "checkbox":
                if await locator.is_checked() != bool(field.wanted):
                    differs = True
                    await locator.set_checked(bool(field.wanted))
            elif await locator.input_value() != (field.wanted or ""):
                differs = True
                if field.kind == "select":
                    await locator.select_option(str(field.wanted))
                else:
                    await locator.fill(str(field.wanted or ""))
        if saved and not differs:
            return False
        await self.submit(submit)
        return True

    async def submit(self, selector: str) -> None:
        """Click a submit button and wait for the page it leads to."""
        button = await self.element(selector)
        try:
            async with self.page.expect_navigation() as navigation:
                await button.click()
            response = await navigation.value
        except PlaywrightTimeout:
            raise RetryableStepError(
                f"{self.name} page: no answer after clicking {selector}"
            ) from None
        await self.check(response.status if response else None)


Action = Callable[[], Awaitable[None]]
