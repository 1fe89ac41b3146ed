"""Menu import from a menu id or a CSV file."""

from __future__ import annotations

from typing import Any

from tasks.portal.base import PortalPage, restaurant_path

SUBMIT = "button#import-menu"


class MenuImportPage(PortalPage):
    name = "menu import"

    async def import_menu(
        self, subdomain: str, menu_id: str | None, csv_path: str | None
    ) -> dict[str, Any]:
        await self.open(f"{restaurant_path(subdomain)}/menu/import")
        await self.fill("input[name=menu_id]", menu_id)
        await self.fill("input[name=csv_path]", csv_path)
        await self.submit(SUBMIT)
        return {
            "menu_id": await (await self.element("#menu-id")).inner_text(),
            "items": int(await (await self.element("#item-count")).inner_text()),
        }
