"""Menu import from a menu id or a CSV file."""

from __future__ import annotations

from typing import Any

from regjobs.errors import AlreadyDone
from tasks.clients.http import segment
from tasks.portal.base import PortalPage, restaurant_path

SUBMIT = "button#import-menu"
#: The dashboard's list of the menus the restaurant holds.
MENUS = "ul#menus li.menu"


class MenuImportPage(PortalPage):
    name = "menu import"

    async def import_menu(
        self, subdomain: str, menu_id: str | None, csv_path: str | None, *, look: bool
    ) -> dict[str, Any]:
        """Import the menu. With `look` (an earlier attempt may have imported it, its answer
        lost in a crash), first see whether the restaurant holds it: a re-import would drop
        the option sets and tags later steps added. A deliberate run again (a new
        idempotency generation) imports afresh."""
        held = await self.imported(subdomain, menu_id, csv_path) if look else None
        if held is not None:
            await self.open(f"{restaurant_path(subdomain)}/menu/{segment(held, 'menu id')}")
            raise AlreadyDone("the menu is already imported; using it", await self.read())
        await self.open(f"{restaurant_path(subdomain)}/menu/import")
        await self.fill("input[name=menu_id]", menu_id)
        await self.fill("input[name=csv_path]", csv_path)
        await self.submit(SUBMIT)
        return await self.read()

    async def imported(
        self, subdomain: str, menu_id: str | None, csv_path: str | None
    ) -> str | None:
        """The id of the menu this import makes, if the restaurant holds it already (a menu
        id names it; without one, the CSV file it came from)."""
        await self.open(f"{restaurant_path(subdomain)}/dashboard")
        await self.element("#restaurant-id")
        for menu in await self.page.locator(MENUS).all():
            held = await menu.get_attribute("data-menu-id")
            if menu_id:
                if held == menu_id:
                    return held
            elif csv_path and await menu.get_attribute("data-csv-path") == csv_path:
                return held
        return None

    async def read(self) -> dict[str, Any]:
        """The menu page the import leads to: its id and item count."""
        return {
            "menu_id": await (await self.element("#menu-id")).inner_text(),
            "items": int(await (await self.element("#item-count")).inner_text()),
        }
