"""Register restaurant: the form, the dashboard it leads to, and the already-registered page."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from regjobs.errors import RESTAURANT_IDENTITY, AlreadyDone, NeedsPerson, PreconditionFailed
from tasks.portal.base import PortalPage, restaurant_path

PATH = "/restaurants/new"
FIELDS = ("name", "address", "city", "phone", "cuisine", "subdomain")
MODE = "select[name=registration_mode]"
SUBMIT = "button#register-restaurant"
EXISTS = "div.alert-exists"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class RestaurantPage(PortalPage):
    name = "register restaurant"
    step_id = "restaurant_registration"

    async def register(
        self,
        values: Mapping[str, str | None],
        mode: str,
        hours: Mapping[str, Sequence[Mapping[str, str]]],
    ) -> dict[str, Any]:
        await self.open(PATH)
        for field in FIELDS:
            await self.fill(f"input[name={field}]", values.get(field))
        await self.select(MODE, mode)
        for day in DAYS:
            text = ",".join(f"{i['open']}-{i['close']}" for i in hours.get(day, []))
            await self.fill(f"input[name=hours_{day}]", text)
        button = await self.element(SUBMIT)
        async with self.page.expect_navigation() as navigation:
            await button.click()
        response = await navigation.value
        exists = self.page.locator(EXISTS)
        if await exists.count():
            found = exists.first
            named = await found.get_attribute("data-restaurant-id")
            subdomain = await found.get_attribute("data-subdomain")
            raise AlreadyDone(
                "the restaurant is already registered; using it",
                await DashboardPage(self.page, self.base_url).owned(named, subdomain),
            )
        await self.check(response.status if response else None)
        return await DashboardPage(self.page, self.base_url).read()


class DashboardPage(PortalPage):
    name = "dashboard"

    async def owned(self, restaurant_id: str | None, subdomain: str | None) -> dict[str, Any]:
        """The restaurant an "already registered" page named, once its dashboard opens in
        this session (the job's own login: the portal shows a dashboard to its owner
        only) and is that restaurant; NeedsPerson otherwise."""
        shown = None
        if restaurant_id and subdomain:
            try:
                await self.open(f"{restaurant_path(subdomain)}/dashboard")
                shown = await self.read()
            except PreconditionFailed:
                shown = None
        if shown is None or shown["restaurant_id"] != restaurant_id:
            raise NeedsPerson(
                "the portal says the restaurant is already registered, but its dashboard "
                "does not open under the job's account",
                fields=RESTAURANT_IDENTITY,
            )
        return shown

    async def read(self) -> dict[str, Any]:
        return {
            "restaurant_id": await (await self.element("#restaurant-id")).inner_text(),
            "subdomain": await (await self.element("#subdomain")).inner_text(),
            "dashboard_url": await (await self.element("#dashboard-url")).inner_text(),
        }
