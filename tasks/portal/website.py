"""Website settings: code injection, theme, colours, layout, header and logos."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.portal.base import PortalPage, restaurant_path

TEXT_FIELDS = (
    "primary_color",
    "secondary_color",
    "header_image_url",
    "header_logo_url",
    "nav_logo_url",
    "favicon_url",
    "nav_text_color",
    "card_text_color",
)
CHECKBOXES = ("disable_gradients", "configure_header")
SELECTS = ("theme", "item_layout")
SUBMIT = "button#save-website"
SAVED = ".flash-success"


class WebsitePage(PortalPage):
    name = "website settings"

    async def apply(
        self, subdomain: str, head: str, body: str, settings: Mapping[str, Any]
    ) -> None:
        await self.open(f"{restaurant_path(subdomain)}/settings/website")
        await self.fill("textarea[name=head_injection]", head)
        await self.fill("textarea[name=body_injection]", body)
        for field in SELECTS:
            await self.select(f"select[name={field}]", str(settings[field]))
        for field in TEXT_FIELDS:
            await self.fill(f"input[name={field}]", settings.get(field))
        for field in CHECKBOXES:
            await self.check_box(f"input[name={field}]", bool(settings.get(field)))
        await self.submit(SUBMIT)
        await self.element(SAVED)
