"""Services: pickup and delivery."""

from __future__ import annotations

from tasks.portal.base import Field, PortalPage, restaurant_path

SUBMIT = "button#save-services"
SAVED = ".flash-success"


class ServicesPage(PortalPage):
    name = "services"

    async def apply(self, subdomain: str, *, pickup: bool = True, delivery: bool = True) -> None:
        await self.open(f"{restaurant_path(subdomain)}/settings/services")
        fields = [
            Field("checkbox", "input[name=pickup]", pickup),
            Field("checkbox", "input[name=delivery]", delivery),
        ]
        if await self.settle(fields, SUBMIT):
            await self.element(SAVED)
