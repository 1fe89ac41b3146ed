"""What each step does: build its request from the config and its inputs, call a client.

One handler per step, each a thin adapter. In `endpoints` mode every step goes through the
app's existing per-step endpoint; in `direct` mode the API steps talk to the platform API,
the onboarding service and the CDN, and the browser steps drive the admin portal in
Chromium (the page objects in `tasks.portal`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from regjobs.catalogue import StepKind, step
from regjobs.config import ExecutionConfig
from regjobs.errors import AlreadyDone, ConfigError, OutsideSystemError
from regjobs.settings import StepMode
from tasks.browser import BrowserPool, masked_screenshot
from tasks.clients.http import TRACE_HEADER
from tasks.clients.systems import Clients, CredentialsMismatch, credentials_refused
from tasks.portal.item_tags import ItemTagsPage
from tasks.portal.menu_import import MenuImportPage
from tasks.portal.option_sets import OptionSetsPage
from tasks.portal.payments import PaymentsPage
from tasks.portal.restaurant import RestaurantPage
from tasks.portal.services import ServicesPage
from tasks.portal.session import PortalSession
from tasks.portal.website import WebsitePage

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
    #: The flow run's browser (direct mode, browser steps) and the portal's base URL.
    browser: BrowserPool | None = None
    portal_url: str = ""
    #: An earlier attempt with the same idempotency key began and may have had its effect
    #: (where the outside system takes no key, the step looks before it acts).
    repeat: bool = False
    #: Screenshots taken when a browser attempt failed (password fields masked).
    evidence: list[bytes] = field(default_factory=list)

    @property
    def direct(self) -> bool:
        return self.mode is StepMode.DIRECT and step(self.step_id).kind is StepKind.API

    @property
    def trace(self) -> str:
        """Which job and step a request belongs to, for the outside systems' logs."""
        return f"{self.job_id}:{self.step_id}"

    @property
    def in_portal(self) -> bool:
        return self.mode is StepMode.DIRECT and step(self.step_id).kind is StepKind.BROWSER

    @contextlib.asynccontextmanager
    async def portal(self) -> AsyncIterator[PortalSession]:
        """A logged-in portal session in a fresh browser context; on failure a screenshot
        with every password field masked is kept as evidence."""
        if self.browser is None:
            raise ConfigError("no browser is available to this step")
        login = self.portal_login()
        async with self.browser.page({TRACE_HEADER: self.trace}) as page:
            try:
                yield PortalSession(page, self.portal_url, login["email"], login["password"])
            except AlreadyDone:
                raise
            except BaseException:
                with contextlib.suppress(Exception):
                    self.evidence.append(await masked_screenshot(page))
                raise

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
    """Create the account; one that exists already is used only once the job's credentials
    have logged in to it (the platform says "exists" to anyone who asks)."""
    login = ctx.portal_login()
    payload = {**login, "phone": ctx.config.account.phone}
    if not ctx.direct:
        # The app's endpoint has the credentials and answers "exists" only when they open
        # the account; it refuses them otherwise.
        try:
            return await ctx.endpoint(payload)
        except OutsideSystemError as exc:
            if credentials_refused(exc):
                raise CredentialsMismatch() from None
            raise
    try:
        return await ctx.clients.platform.create_account(payload, ctx.idempotency_key)
    except AlreadyDone as done:
        warning = done.warning
    # The platform's 409 names the account; only a login proves it is this job's to use.
    account = await ctx.clients.platform.log_in(login["email"], login["password"], ctx.trace)
    raise AlreadyDone(warning, account)


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
    hours: dict[str, list[dict[str, str]]] = {
        day: [i.model_dump(mode="json") for i in intervals]
        for day, intervals in r.opening_hours.items()
    }
    values = {
        "name": r.name,
        "address": r.address,
        "city": r.city,
        "phone": r.phone,
        "cuisine": r.cuisine,
        "subdomain": r.subdomain,
    }
    if ctx.in_portal:
        async with ctx.portal() as portal:
            page = RestaurantPage(portal.page, ctx.portal_url)
            return await portal.run(lambda: page.register(values, r.registration_mode, hours))
    return await ctx.endpoint(
        {
            **ctx.portal_login(),
            "registration_mode": r.registration_mode,
            **values,
            "opening_hours": hours,
        }
    )


async def website_configuration(ctx: StepContext) -> Result:
    head = ctx.need("code_generation", "head_injection")
    body = ctx.need("code_generation", "body_injection")
    settings = ctx.config.website.model_dump(mode="json")
    if ctx.in_portal:
        async with ctx.portal() as portal:
            page = WebsitePage(portal.page, ctx.portal_url)
            await portal.run(lambda: page.apply(ctx.subdomain, head, body, settings))
        return {"subdomain": ctx.subdomain, "applied": settings}
    return await ctx.endpoint(
        {
            **ctx.portal_login(),
            "subdomain": ctx.subdomain,
            "head_injection": head,
            "body_injection": body,
            "website": settings,
        }
    )


async def services_configuration(ctx: StepContext) -> Result:
    if ctx.in_portal:
        async with ctx.portal() as portal:
            page = ServicesPage(portal.page, ctx.portal_url)
            await portal.run(lambda: page.apply(ctx.subdomain))
        return {"subdomain": ctx.subdomain, "services": ["pickup", "delivery"]}
    return await ctx.endpoint({**ctx.portal_login(), "subdomain": ctx.subdomain})


async def payment_configuration(ctx: StepContext) -> Result:
    stripe = ctx.config.payment.include_stripe_link
    if ctx.in_portal:
        async with ctx.portal() as portal:
            page = PaymentsPage(portal.page, ctx.portal_url)
            url = await portal.run(lambda: page.apply(ctx.subdomain, stripe))
        return {"subdomain": ctx.subdomain, "stripe_connect_url": url}
    return await ctx.endpoint(
        {
            **ctx.portal_login(),
            "subdomain": ctx.subdomain,
            "include_stripe_link": stripe,
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
    if ctx.in_portal:
        async with ctx.portal() as portal:
            page = MenuImportPage(portal.page, ctx.portal_url)
            return await portal.run(
                lambda: page.import_menu(
                    ctx.subdomain, menu.menu_id, menu.csv_path, look=ctx.repeat
                )
            )
    return await ctx.endpoint(
        {
            **ctx.portal_login(),
            "subdomain": ctx.subdomain,
            "menu_id": menu.menu_id,
            "csv_path": menu.csv_path,
        }
    )


async def option_sets(ctx: StepContext) -> Result:
    menu_id = str(ctx.need("menu_import", "menu_id"))
    if not ctx.in_portal:
        return await ctx.endpoint(
            {
                **ctx.portal_login(),
                "subdomain": ctx.subdomain,
                "menu_id": menu_id,
            }
        )
    async with ctx.portal() as portal:
        page = OptionSetsPage(portal.page, ctx.portal_url)
        missing, total = await portal.run(lambda: page.missing(ctx.subdomain, menu_id))
        done = total - len(missing)
        # One form per option set; each is safe to repeat (the portal keys them by name),
        # so an expired session only costs a login and the set in hand.
        for name in missing:
            await ctx.progress(f"option set {done + 1} of {total}")
            await portal.run(functools.partial(page.create, ctx.subdomain, menu_id, name))
            done += 1
    return {"menu_id": menu_id, "option_sets": total, "created": len(missing)}


async def item_tags(ctx: StepContext) -> Result:
    menu_id = str(ctx.need("menu_import", "menu_id"))
    if ctx.in_portal:
        async with ctx.portal() as portal:
            page = ItemTagsPage(portal.page, ctx.portal_url)
            tags = await portal.run(lambda: page.apply(ctx.subdomain, menu_id))
        return {"menu_id": menu_id, "tags": tags}
    return await ctx.endpoint(
        {
            **ctx.portal_login(),
            "subdomain": ctx.subdomain,
            "menu_id": menu_id,
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
