"""Item tags: one checkbox per tag the menu needs."""

from __future__ import annotations

from tasks.clients.http import segment
from tasks.portal.base import PortalPage, restaurant_path

TAG = "input[name=tag]"
SUBMIT = "button#save-tags"
SAVED = ".flash-success"


class ItemTagsPage(PortalPage):
    name = "item tags"

    async def apply(self, subdomain: str, menu_id: str) -> int:
        await self.open(f"{restaurant_path(subdomain)}/menu/{segment(menu_id, 'menu id')}/tags")
        await self.element("#tags-form")
        tags = await self.page.locator(TAG).all()
        for tag in tags:
            await tag.set_checked(True)
        await self.submit(SUBMIT)
        await self.element(SAVED)
        return len(tags)
