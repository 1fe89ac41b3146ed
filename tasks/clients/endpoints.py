"""The app's existing per-step endpoints (SPEC.md) as the clients of every outside system:
the `endpoints` step mode's implementations of `tasks.clients.interfaces`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

from regjobs.errors import (
    ACCOUNT_LOGIN,
    ONBOARDING_LOGIN,
    RESTAURANT_IDENTITY,
    AlreadyDone,
    LoginRefused,
    NeedsPerson,
    OutsideSystemError,
    value_rejected,
)
from tasks.clients.http import OutsideSystem, segment
from tasks.clients.interfaces import Call, Login, Progress, Result
from tasks.clients.systems import (
    ACCOUNT_EXISTS,
    CREDENTIALS_MISMATCH,
    RESTAURANT_EXISTS,
    USER_EXISTS,
    USER_MISMATCH,
    credentials_refused,
    log_in_with,
)

#: The app's existing per-step endpoints (SPEC.md), by step.
ENDPOINT_PATHS: Final[Mapping[str, str]] = {
    "account_registration": "/api/registration/register-account",
    "code_generation": "/api/registration/generate-code-injections",
    "onboarding_user": "/api/registration/create-onboarding-user",
    "image_upload": "/menus/{menu_id}/upload-images",
    "restaurant_registration": "/api/registration/register-restaurant",
    "website_configuration": "/api/registration/configure-website",
    "services_configuration": "/api/registration/configure-services",
    "payment_configuration": "/api/registration/configure-payment",
    "onboarding_sync": "/api/registration/update-onboarding-record",
    "menu_import": "/api/registration/import-menu-direct",
    "option_sets": "/api/registration/add-option-sets",
    "item_tags": "/api/registration/add-item-tags",
}

#: The app's credential checks (a login each), which prove an "already exists" answer.
VERIFY_ACCOUNT_PATH: Final = "/api/registration/verify-account"
VERIFY_ONBOARDING_USER_PATH: Final = "/api/registration/verify-onboarding-user"

#: The login each endpoint makes with the credentials in its body (the account's, unless
#: named here): what a person corrects when the endpoint refuses them.
_ENDPOINT_LOGINS: Final[Mapping[str, tuple[str, ...]]] = {"onboarding_user": ONBOARDING_LOGIN}

_ENDPOINT_ALREADY_DONE: Final[Mapping[str, Mapping[str, str]]] = {
    "account_registration": ACCOUNT_EXISTS,
    "restaurant_registration": RESTAURANT_EXISTS,
    "onboarding_user": USER_EXISTS,
}


class AppEndpoints:
    def __init__(self, system: OutsideSystem) -> None:
        self.system = system

    async def call(
        self, step_id: str, payload: Mapping[str, Any], key: str, **path_args: str
    ) -> dict[str, Any]:
        path = ENDPOINT_PATHS[step_id].format(
            **{name: segment(value, name.replace("_", " ")) for name, value in path_args.items()}
        )
        try:
            return await self.system.request(
                "POST",
                path,
                json=payload,
                idempotency_key=key,
                already_done=_ENDPOINT_ALREADY_DONE.get(step_id),
            )
        except OutsideSystemError as exc:
            email = payload.get("email")
            if credentials_refused(exc) and isinstance(email, str):
                fields = _ENDPOINT_LOGINS.get(step_id, ACCOUNT_LOGIN)
                raise LoginRefused(exc.message, fields=fields, email=email) from None
            rejected = (
                value_rejected(step_id, exc.message, [exc.field])
                if exc.status_code == 422 and exc.field
                else None
            )
            if rejected is not None:
                raise rejected from None
            raise

    async def verify_account(self, email: str, password: str, trace: str) -> dict[str, Any]:
        """The account these credentials open (the app logs in to the platform)."""
        return await log_in_with(
            self.system,
            VERIFY_ACCOUNT_PATH,
            email,
            password,
            trace,
            refused=CREDENTIALS_MISMATCH,
            fields=ACCOUNT_LOGIN,
        )

    async def verify_onboarding_user(self, email: str, password: str, trace: str) -> dict[str, Any]:
        """The onboarding user these credentials open (the app logs in to the service)."""
        return await log_in_with(
            self.system,
            VERIFY_ONBOARDING_USER_PATH,
            email,
            password,
            trace,
            refused=USER_MISMATCH,
            fields=ONBOARDING_LOGIN,
        )


class EndpointsPlatform:
    """The platform's account and code injections, through the app's endpoints."""

    def __init__(self, endpoints: AppEndpoints) -> None:
        self.endpoints = endpoints

    async def create_account(self, payload: Mapping[str, Any], key: str) -> Result:
        return await self.endpoints.call("account_registration", payload, key)

    async def log_in(self, email: str, password: str, trace: str) -> Result:
        return await self.endpoints.verify_account(email, password, trace)

    async def generate_code(self, payload: Mapping[str, Any], key: str) -> Result:
        return await self.endpoints.call("code_generation", payload, key)


class EndpointsOnboarding:
    """The onboarding service's user and record, through the app's endpoints."""

    def __init__(self, endpoints: AppEndpoints) -> None:
        self.endpoints = endpoints

    async def create_user(self, payload: Mapping[str, Any], key: str) -> Result:
        return await self.endpoints.call("onboarding_user", payload, key)

    async def log_in(self, email: str, password: str, trace: str) -> Result:
        return await self.endpoints.verify_onboarding_user(email, password, trace)

    async def sync_record(self, subdomain: str, payload: Mapping[str, Any], key: str) -> Result:
        return await self.endpoints.call(
            "onboarding_sync", {"subdomain": subdomain, **payload}, key
        )


class EndpointsImages:
    """The image upload, through the app's endpoint (it answers once the images are up)."""

    def __init__(self, endpoints: AppEndpoints) -> None:
        self.endpoints = endpoints

    async def upload(self, menu_id: str, key: str, progress: Progress) -> Result:
        return await self.endpoints.call("image_upload", {}, key, menu_id=menu_id)


class EndpointsPortal:
    """The admin portal's forms, through the app's endpoints (each logs in with the job's
    credentials in its body)."""

    uses_browser: ClassVar[bool] = False

    def __init__(self, endpoints: AppEndpoints) -> None:
        self.endpoints = endpoints

    async def register_restaurant(
        self,
        call: Call,
        login: Login,
        values: Mapping[str, str | None],
        mode: str,
        hours: Mapping[str, Sequence[Mapping[str, str]]],
    ) -> Result:
        payload = {**login.body(), "registration_mode": mode, **values, "opening_hours": hours}
        try:
            return await self.endpoints.call(
                "restaurant_registration", payload, call.idempotency_key
            )
        except AlreadyDone as done:
            existing, warning = done.existing, done.warning
        # The restaurant is the job's only under the account the job's credentials open
        # (the endpoint says "exists" to anyone who asks).
        account = await self.endpoints.verify_account(login.email, login.password, call.trace)
        owner = existing.get("account_id")
        if owner is None or owner != account.get("account_id"):
            raise NeedsPerson(
                "the restaurant is already registered, but not under the account the job's "
                "credentials open",
                fields=RESTAURANT_IDENTITY,
            )
        raise AlreadyDone(warning, existing)

    async def configure_website(
        self,
        call: Call,
        login: Login,
        subdomain: str,
        code: tuple[str, str],
        settings: Mapping[str, Any],
    ) -> Result:
        head, body = code
        payload = {
            **login.body(),
            "subdomain": subdomain,
            "head_injection": head,
            "body_injection": body,
            "website": settings,
        }
        return await self.endpoints.call("website_configuration", payload, call.idempotency_key)

    async def configure_services(self, call: Call, login: Login, subdomain: str) -> Result:
        payload = {**login.body(), "subdomain": subdomain}
        answer = await self.endpoints.call("services_configuration", payload, call.idempotency_key)
        return {"subdomain": subdomain, **answer}

    async def configure_payment(
        self, call: Call, login: Login, subdomain: str, include_stripe_link: bool
    ) -> Result:
        payload = {
            **login.body(),
            "subdomain": subdomain,
            "include_stripe_link": include_stripe_link,
        }
        answer = await self.endpoints.call("payment_configuration", payload, call.idempotency_key)
        return {"subdomain": subdomain, **answer}

    async def import_menu(
        self,
        call: Call,
        login: Login,
        subdomain: str,
        menu_id: str | None,
        csv_path: str | None,
    ) -> Result:
        payload = {**login.body(), "subdomain": subdomain, "menu_id": menu_id, "csv_path": csv_path}
        return await self.endpoints.call("menu_import", payload, call.idempotency_key)

    async def add_option_sets(
        self, call: Call, login: Login, subdomain: str, menu_id: str
    ) -> Result:
        payload = {**login.body(), "subdomain": subdomain, "menu_id": menu_id}
        return await self.endpoints.call("option_sets", payload, call.idempotency_key)

    async def add_item_tags(self, call: Call, login: Login, subdomain: str, menu_id: str) -> Result:
        payload = {**login.body(), "subdomain": subdomain, "menu_id": menu_id}
        return await self.endpoints.call("item_tags", payload, call.idempotency_key)
