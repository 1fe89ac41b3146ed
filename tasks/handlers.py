"""What each step does: build its request from the config and its inputs, call a client.

One handler per step, each a thin adapter over the interface of one outside system
(`tasks.clients.interfaces`). A handler does not know the step mode: the run's clients were
chosen when it started (`tasks.clients.choice`), and the step keeps the fields of the
answer its catalogue entry gives, whichever client answered (`regjobs.catalogue.shaped`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from regjobs.catalogue import step
from regjobs.config import ExecutionConfig
from regjobs.errors import AlreadyDone, ConfigError, NeedsPerson
from tasks.clients.interfaces import Call, Clients, Login

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
    progress: Callable[[str], Awaitable[None]]
    #: An earlier attempt with the same idempotency key began and may have had its effect
    #: (where the outside system takes no key, the step looks before it acts).
    repeat: bool = False
    #: Screenshots taken when a browser attempt failed (password fields masked).
    evidence: list[bytes] = field(default_factory=list)

    @property
    def trace(self) -> str:
        """Which job and step a request belongs to, for the outside systems' logs."""
        return f"{self.job_id}:{self.step_id}"

    @property
    def call(self) -> Call:
        return Call(self.trace, self.idempotency_key, self.progress, self.repeat, self.evidence)

    def need(self, step_id: str, field: str) -> Any:
        value = self.inputs.get(step_id, {}).get(field)
        if value is None:
            raise ConfigError(f"{step(step_id).label} gave no {field!r}, which this step needs")
        return value

    def login(self) -> Login:
        account = self.config.account
        if account.email is None or account.password is None:
            raise ConfigError("account.email and account.password are needed to log in")
        return Login(str(account.email), account.password.get_secret_value())

    @property
    def subdomain(self) -> str:
        return str(self.need("restaurant_registration", "subdomain"))

    async def log_in_account(self) -> Result:
        """The account the job's credentials open (LoginRefused if none)."""
        login = self.login()
        return await self.clients.platform.log_in(login.email, login.password, self.trace)

    async def log_in_onboarding_user(self, email: str, password: str) -> Result:
        """The onboarding user these credentials open (LoginRefused if none)."""
        return await self.clients.onboarding.log_in(email, password, self.trace)


def proven(done: AlreadyDone, record: Result, id_field: str, fields: tuple[str, ...]) -> Result:
    """The record the job's own login opened, once it is the one an "already exists"
    answer named (where that answer named one): the step's result, with the warning."""
    named = done.existing.get(id_field)
    if named is not None and named != record.get(id_field):
        raise NeedsPerson(
            f"{done.warning.split(';')[0]}, but not the one the job's credentials open",
            fields=fields,
        )
    return record


async def account_registration(ctx: StepContext) -> Result:
    """Create the account; one that exists already is used only once the job's credentials
    have logged in to it (an "exists" answer is given to anyone who asks)."""
    payload = {**ctx.login().body(), "phone": ctx.config.account.phone}
    try:
        return await ctx.clients.platform.create_account(payload, ctx.idempotency_key)
    except AlreadyDone as done:
        account = await ctx.log_in_account()
        raise AlreadyDone(
            done.warning, proven(done, account, "account_id", ("account.email",))
        ) from None


async def code_generation(ctx: StepContext) -> Result:
    website = ctx.config.website
    payload = {
        "restaurant_name": ctx.config.restaurant.name,
        "theme": website.theme,
        "primary_color": website.primary_color,
        "secondary_color": website.secondary_color,
    }
    return await ctx.clients.platform.generate_code(payload, ctx.idempotency_key)


async def onboarding_user(ctx: StepContext) -> Result:
    onboarding = ctx.config.onboarding
    if not (onboarding.user_name and onboarding.user_email and onboarding.user_password):
        raise ConfigError("onboarding.user_name, user_email and user_password are required")
    payload = {
        "name": onboarding.user_name,
        "email": str(onboarding.user_email),
        "password": onboarding.user_password.get_secret_value(),
    }
    try:
        return await ctx.clients.onboarding.create_user(payload, ctx.idempotency_key)
    except AlreadyDone as done:
        # Only a login with the job's own password proves the user is this job's: without
        # it, another organisation's job naming the email would take the user over (and
        # the onboarding sync would link its restaurant to it).
        user = await ctx.log_in_onboarding_user(payload["email"], payload["password"])
        raise AlreadyDone(
            done.warning, proven(done, user, "user_id", ("onboarding.user_email",))
        ) from None


async def image_upload(ctx: StepContext) -> Result:
    menu_id = ctx.config.menu.menu_id
    if not menu_id:
        raise ConfigError("menu.menu_id is required to upload images")
    return await ctx.clients.images.upload(menu_id, ctx.idempotency_key, ctx.progress)


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
    return await ctx.clients.portal.register_restaurant(
        ctx.call, ctx.login(), values, r.registration_mode, hours
    )


async def website_configuration(ctx: StepContext) -> Result:
    code = (
        str(ctx.need("code_generation", "head_injection")),
        str(ctx.need("code_generation", "body_injection")),
    )
    settings = ctx.config.website.model_dump(mode="json")
    return await ctx.clients.portal.configure_website(
        ctx.call, ctx.login(), ctx.subdomain, code, settings
    )


async def services_configuration(ctx: StepContext) -> Result:
    return await ctx.clients.portal.configure_services(ctx.call, ctx.login(), ctx.subdomain)


async def payment_configuration(ctx: StepContext) -> Result:
    stripe = ctx.config.payment.include_stripe_link
    return await ctx.clients.portal.configure_payment(ctx.call, ctx.login(), ctx.subdomain, stripe)


async def onboarding_sync(ctx: StepContext) -> Result:
    """Link the restaurant's onboarding record to its user: the one this job's
    `onboarding_user` step made or proved, else an existing one, once the job's own
    credentials have logged in to it (naming an email is not owning it)."""
    onboarding = ctx.config.onboarding
    user_email = ctx.inputs.get("onboarding_user", {}).get("email")
    if user_email is None and onboarding.user_email is not None:
        if onboarding.user_password is None:
            raise ConfigError("onboarding.user_password is needed to link an existing user")
        user = await ctx.log_in_onboarding_user(
            str(onboarding.user_email), onboarding.user_password.get_secret_value()
        )
        user_email = user.get("email") or onboarding.user_email
    record = {
        "restaurant_name": ctx.config.restaurant.name,
        "dashboard_url": ctx.need("restaurant_registration", "dashboard_url"),
        "stripe_connect_url": ctx.inputs.get("payment_configuration", {}).get("stripe_connect_url"),
        "user_email": str(user_email) if user_email else None,
    }
    return await ctx.clients.onboarding.sync_record(ctx.subdomain, record, ctx.idempotency_key)


async def menu_import(ctx: StepContext) -> Result:
    menu = ctx.config.menu
    return await ctx.clients.portal.import_menu(
        ctx.call, ctx.login(), ctx.subdomain, menu.menu_id, menu.csv_path
    )


async def option_sets(ctx: StepContext) -> Result:
    menu_id = str(ctx.need("menu_import", "menu_id"))
    return await ctx.clients.portal.add_option_sets(ctx.call, ctx.login(), ctx.subdomain, menu_id)


async def item_tags(ctx: StepContext) -> Result:
    menu_id = str(ctx.need("menu_import", "menu_id"))
    return await ctx.clients.portal.add_item_tags(ctx.call, ctx.login(), ctx.subdomain, menu_id)


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
