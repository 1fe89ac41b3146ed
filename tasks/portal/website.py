"""Website settings: code injection, theme, colours, layout, header and logos."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.portal.base import Field, PortalPage, restaurant_path

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
        fields = [
            Field("text", "textarea[name=head_injection]", head),
            Field("text", "textarea[name=body_injection]", body),
            *(Field("select", f"select[name={f}]", str(settings[f])) for f in SELECTS),
            *(Field("text", f"input[name={f}]", settings.get(f)) for f in TEXT_FIELDS),
            *(Field("checkbox", f"input[name={f}]", bool(settings.get(f))) for f in CHECKBOXES),
        ]
        if await self.settle(fields, SUBMIT):
            await self.element(SAVED)
