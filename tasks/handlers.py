"""What each step does: build its request from the config and its inputs, call a client.

One handler per step, each a thin adapter. In `endpoints` mode every step goes through the
app's existing per-step endpoint; in `direct` mode the API steps talk to the platform API,
the onboarding service and the CDN (the browser steps still use the endpoints).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from regjobs.catalogue import StepKind, step
from regjobs.config import ExecutionConfig
from regjobs.errors import ConfigError
from regjobs.settings import StepMode
from tasks.clients.systems import Clients

Result = dict[str, Any]


@dataclass(frozen=True)
class StepContext:
    job_id: str
    step_id: str
    config: ExecutionConfig
    #: Results of the steps this one needs, by step id.
    inputs: Mapping[str, Result]
    #: Sent to outside systems so that a repeated request has no second effect.
    idempotency_key: str
    clients: Clients
    mode: StepMode
    progress: Callable[[str], Awaitable[None]]

    @property
    def direct(self) -> bool:
        return self.mode is StepMode.DIRECT and step(self.step_id).kind is StepKind.API

    def need(self, step_id: str, field: str) -> Any:
        value = self.inputs.get(step_id, {}).get(field)
        if value is None:
            raise ConfigError(f"{step(step_id).label} gave no {field!r}, which this step needs")
        return value

    def portal_login(self) -> dict[str, Any]:
        account = self.config.account
        if account.email is None or account.password is None:
            raise ConfigError("account.email and account.password are needed to log in")
        return {"email": str(account.email), "password": account.password.get_secret_value()}

    @property
    def subdomain(self) -> str:
        return str(self.need("restaurant_registration", "subdomain"))

    async def endpoint(self, payload: Mapping[str, Any], **path_args: str) -> Result:
        return await self.clients.endpoints.call(
            self.step_id, payload, self.idempotency_key, **path_args
        )


async def account_registration(ctx: StepContext) -> Result:
    payload = {**ctx.portal_login(), "phone": ctx.config.account.phone}
    if ctx.direct:
        return await ctx.clients.platform.create_account(payload, ctx.idempotency_key)
    return await ctx.endpoint(payload)


async def code_generation(ctx: StepContext) -> Result:
    website = ctx.config.website
    payload = {
        "restaurant_name": ctx.config.restaurant.name,
        "theme": website.theme,
        "primary_color": website.primary_color,
        "secondary_color": website.secondary_color,
    }
    if ctx.direct:
        return await ctx.clients.platform.generate_code(payload, ctx.idempotency_key)
    return await ctx.endpoint(payload)


async def onboarding_user(ctx: StepContext) -> Result:
    onboarding = ctx.config.onboarding
    if not (onboarding.user_name and onboarding.user_email and onboarding.user_password):
        raise ConfigError("onboarding.user_name, user_email and user_password are required")
    payload = {
        "name": onboarding.user_name,
        "email": str(onboarding.user_email),
        "password": onboarding.user_password.get_secret_value(),
    }
    if ctx.direct:
        return await ctx.clients.onboarding.create_user(payload, ctx.idempotency_key)
    return await ctx.endpoint(payload)


async def image_upload(ctx: StepContext) -> Result:
    menu_id = ctx.config.menu.menu_id
    if not menu_id:
        raise ConfigError("menu.menu_id is required to upload images")
    if ctx.direct:
        return await ctx.clients.cdn.upload(menu_id, ctx.idempotency_key, ctx.progress)
    return await ctx.endpoint({}, menu_id=menu_id)


async def restaurant_registration(ctx: StepContext) -> Result:
    r = ctx.config.restaurant
    return await ctx.endpoint(
        {
            **ctx.portal_login(),
            "registration_mode": r.registration_mode,
            "name": r.name,
            "address": r.address,
            "city": r.city,
            "phone": r.phone,
            "cuisine": r.cuisine,
            "subdomain": r.subdomain,
            "opening_hours": {
                day: [i.model_dump(mode="json") for i in intervals]
                for day, intervals in r.opening_hours.items()
            },
        }
    )


async def website_configuration(ctx: StepContext) -> Result:
    return await ctx.endpoint(
        {
            **ctx.portal_login(),
            "subdomain": ctx.subdomain,
            "head_injection": ctx.need("code_generation", "head_injection"),
            "body_injection": ctx.need("code_generation", "body_injection"),
            "website": ctx.config.website.model_dump(mode="json"),
        }
    )


async def services_configuration(ctx: StepContext) -> Result:
    return await ctx.endpoint({**ctx.portal_login(), "subdomain": ctx.subdomain})


async def payment_configuration(ctx: StepContext) -> Result:
    return await ctx.endpoint(
        {
            **ctx.portal_login(),
            "subdomain": ctx.subdomain,
            "include_stripe_link": ctx.config.payment.include_stripe_link,
        }
    )


async def onboarding_sync(ctx: StepContext) -> Result:
    onboarding = ctx.config.onboarding
    user_email = ctx.inputs.get("onboarding_user", {}).get("email") or onboarding.user_email
    record = {
        "restaurant_name": ctx.config.restaurant.name,
        "dashboard_url": ctx.need("restaurant_registration", "dashboard_url"),
        "stripe_connect_url": ctx.inputs.get("payment_configuration", {}).get("stripe_connect_url"),
        "user_email": str(user_email) if user_email else None,
    }
    if ctx.direct:
        return await ctx.clients.onboarding.sync_record(ctx.subdomain, record, ctx.idempotency_key)
    return await ctx.endpoint({"subdomain": ctx.subdomain, **record})


async def menu_import(ctx: StepContext) -> Result:
    menu = ctx.config.menu
    return await ctx.endpoint(
        {
            **ctx.portal_login(),
            "subdomain": ctx.subdomain,
            "menu_id": menu.menu_id,
            "csv_path": menu.csv_path,
        }
    )


async def option_sets(ctx: StepContext) -> Result:
    return await ctx.endpoint(
        {
            **ctx.portal_login(),
            "subdomain": ctx.subdomain,
            "menu_id": ctx.need("menu_import", "menu_id"),
        }
    )


async def item_tags(ctx: StepContext) -> Result:
    return await ctx.endpoint(
        {
            **ctx.portal_login(),
            "subdomain": ctx.subdomain,
            "menu_id": ctx.need("menu_import", "menu_id"),
        }
    )


HANDLERS: Final[Mapping[str, Callable[[StepContext], Awaitable[Result]]]] = {
    "account_registration": account_registration,
    "code_generation": code_generation,
    "onboarding_user": onboarding_user,
    "image_upload": image_upload,
    "restaurant_registration": restaurant_registration,
    "website_configuration": website_configuration,
    "services_configuration": services_configuration,
    "payment_configuration": payment_configuration,
    "onboarding_sync": onboarding_sync,
    "menu_import": menu_import,
    "option_sets": option_sets,
    "item_tags": item_tags,
}
