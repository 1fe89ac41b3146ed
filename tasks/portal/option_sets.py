"""Option sets: a list of the sets the menu needs, and one form per set."""

from __future__ import annotations

from urllib.parse import quote

from tasks.clients.http import segment
from tasks.portal.base import PortalPage, restaurant_path

ITEM = "li.option-set"
SUBMIT = "button#save-option-set"


class OptionSetsPage(PortalPage):
    name = "option sets"

    def path(self, subdomain: str, menu_id: str) -> str:
        return f"{restaurant_path(subdomain)}/menu/{segment(menu_id, 'menu id')}/option-sets"

    async def missing(self, subdomain: str, menu_id: str) -> tuple[list[str], int]:
        """The option sets not created yet, and how many the menu needs in all."""
        await self.open(self.path(subdomain, menu_id))
        items = await self.page.locator(ITEM).all()
        missing = [
            name
            for item in items
            if (name := await item.get_attribute("data-name"))
            and await item.get_attribute("data-created") != "true"
        ]
        return missing, len(items)

    async def create(self, subdomain: str, menu_id: str, name: str) -> None:
        await self.open(f"{self.path(subdomain, menu_id)}/new?name={quote(name, safe='')}")
        await self.fill("input[name=name]", name)
        await self.submit(SUBMIT)
