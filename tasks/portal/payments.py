"""Payments, with the optional Stripe Connect link."""

from __future__ import annotations

from tasks.portal.base import Field, PortalPage, restaurant_path

SUBMIT = "button#save-payments"
SAVED = ".flash-success"
STRIPE_LINK = "a#stripe-connect-url"


class PaymentsPage(PortalPage):
    name = "payments"

    async def apply(self, subdomain: str, include_stripe_link: bool) -> str | None:
        """Save the payment settings; the Stripe Connect URL when one was asked for."""
        await self.open(f"{restaurant_path(subdomain)}/settings/payments")
        field = Field("checkbox", "input[name=include_stripe_link]", include_stripe_link)
        if await self.settle([field], SUBMIT):
            await self.element(SAVED)
        if not include_stripe_link:
            return None
        return await (await self.element(STRIPE_LINK)).get_attribute("href")
