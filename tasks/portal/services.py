"""Services: pickup and delivery."""

from __future__ import annotations

from tasks.portal.base import PortalPage, restaurant_path

SUBMIT = "button#save-services"
SAVED = ".flash-success"


class ServicesPage(PortalPage):
    name = "services"

    async def apply(self, subdomain: str, *, pickup: bool = True, delivery: bool = True) -> None:
        await self.open(f"{restaurant_path(subdomain)}/settings/services")
        await self.check_box("input[name=pickup]", pickup)
        await self.check_box("input[name=delivery]", delivery)
        await self.submit(SUBMIT)
        await self.element(SAVED)
