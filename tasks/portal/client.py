"""The admin portal driven in Chromium: the `direct` step mode's `Portal`
(`tasks.clients.interfaces`). Each call logs in with the job's credentials in a fresh
browser context and walks the portal's pages (one page object each, in this package)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from prefect.logging import get_run_logger

from regjobs.errors import AlreadyDone, in_one_line
from tasks.browser import BrowserPool, masked_screenshot
from tasks.clients.http import TRACE_HEADER
from tasks.clients.interfaces import Call, Login, Result
from tasks.portal.item_tags import ItemTagsPage
from tasks.portal.menu_import import MenuImportPage
from tasks.portal.option_sets import OptionSetsPage
from tasks.portal.payments import PaymentsPage
from tasks.portal.restaurant import RestaurantPage
from tasks.portal.services import ServicesPage
from tasks.portal.session import PortalSession
from tasks.portal.website import WebsitePage


class BrowserPortal:
    uses_browser: ClassVar[bool] = True

    def __init__(self, browser: BrowserPool, portal_url: str) -> None:
        self.browser = browser
        self.url = portal_url

    @contextlib.asynccontextmanager
    async def session(self, call: Call, login: Login) -> AsyncIterator[PortalSession]:
        """A logged-in portal session in a fresh browser context; on failure a screenshot
        with every password field masked is kept as the attempt's evidence."""
        async with self.browser.page({TRACE_HEADER: call.trace}) as page:
            try:
                yield PortalSession(page, self.url, login.email, login.password)
            except AlreadyDone:
                raise
            except BaseException:
                timeout = self.browser.settings.browser_screenshot_timeout_seconds
                try:
                    call.evidence.append(await masked_screenshot(page, timeout))
                except Exception as error:
                    # The attempt's own failure is what counts; the missing screenshot
                    # is said, not silent.
                    get_run_logger().warning(
                        "no screenshot of the failed attempt: %s", in_one_line(error)
                    )
                raise

    async def register_restaurant(
        self,
        call: Call,
        login: Login,
        values: Mapping[str, str | None],
        mode: str,
        hours: Mapping[str, Sequence[Mapping[str, str]]],
    ) -> Result:
        # The portal proves an "already registered" itself: the session is the job's own
        # login, and the page opens the restaurant's dashboard in it (RestaurantPage).
        async with self.session(call, login) as portal:
            page = RestaurantPage(portal.page, self.url)
            return await portal.run(lambda: page.register(values, mode, hours))

    async def configure_website(
        self,
        call: Call,
        login: Login,
        subdomain: str,
        code: tuple[str, str],
        settings: Mapping[str, Any],
    ) -> Result:
        head, body = code
        async with self.session(call, login) as portal:
            page = WebsitePage(portal.page, self.url)
            await portal.run(lambda: page.apply(subdomain, head, body, settings))
        return {"subdomain": subdomain, "applied": dict(settings)}

    async def configure_services(self, call: Call, login: Login, subdomain: str) -> Result:
        async with self.session(call, login) as portal:
            page = ServicesPage(portal.page, self.url)
            await portal.run(lambda: page.apply(subdomain))
        return {"subdomain": subdomain, "services": ["pickup", "delivery"]}

    async def configure_payment(
        self, call: Call, login: Login, subdomain: str, include_stripe_link: bool
    ) -> Result:
        async with self.session(call, login) as portal:
            page = PaymentsPage(portal.page, self.url)
            url = await portal.run(lambda: page.apply(subdomain, include_stripe_link))
        return {"subdomain": subdomain, "stripe_connect_url": url}

    async def import_menu(
        self,
        call: Call,
        login: Login,
        subdomain: str,
        menu_id: str | None,
        csv_path: str | None,
    ) -> Result:
        async with self.session(call, login) as portal:
            page = MenuImportPage(portal.page, self.url)
            return await portal.run(
                lambda: page.import_menu(subdomain, menu_id, csv_path, look=call.repeat)
            )

    async def add_option_sets(
        self, call: Call, login: Login, subdomain: str, menu_id: str
    ) -> Result:
        async with self.session(call, login) as portal:
            page = OptionSetsPage(portal.page, self.url)
            missing, total = await portal.run(lambda: page.missing(subdomain, menu_id))
            done = total - len(missing)
            # One form per option set; each is safe to repeat (the portal keys them by
            # name), so an expired session only costs a login and the set in hand.
            for name in missing:
                await call.progress(f"option set {done + 1} of {total}")
                await portal.run(functools.partial(page.create, subdomain, menu_id, name))
                done += 1
        return {"menu_id": menu_id, "option_sets": total, "created": len(missing)}

    async def add_item_tags(self, call: Call, login: Login, subdomain: str, menu_id: str) -> Result:
        async with self.session(call, login) as portal:
            page = ItemTagsPage(portal.page, self.url)
            tags = await portal.run(lambda: page.apply(subdomain, menu_id))
        return {"menu_id": menu_id, "tags": tags}
