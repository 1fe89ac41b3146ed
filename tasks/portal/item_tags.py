"""Item tags: one checkbox per tag the menu needs."""

from __future__ import annotations

from tasks.clients.http import segment
from tasks.portal.base import Field, PortalPage, restaurant_path

TAG = "input[name=tag]"
SUBMIT = "button#save-tags"
SAVED = ".flash-success"


class ItemTagsPage(PortalPage):
    name = "item tags"

    async def apply(self, subdomain: str, menu_id: str) -> int:
        await self.open(f"{restaurant_path(subdomain)}/menu/{segment(menu_id, 'menu id')}/tags")
        await self.element("#tags-form")
        tags = [
            Field("checkbox", f"#{await tag.get_attribute('id')}", True)
            for tag in await self.page.locator(TAG).all()
        ]
        if await self.settle(tags, SUBMIT):
            await self.element(SAVED)
        return len(tags)
