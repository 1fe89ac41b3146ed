"""Clients of the platform API, the onboarding service, the image CDN and the app's endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx

from regjobs.errors import NonRetryableStepError, OutsideSystemError, RetryableStepError
from regjobs.settings import Settings
from tasks.clients.http import OutsideSystem, segment

ACCOUNT_EXISTS: Final = {"account_exists": "the account already exists; using it"}
#: Why an account that exists is not used: the job's credentials do not open it.
CREDENTIALS_MISMATCH: Final = "an account with this email exists and the credentials do not match"


class CredentialsMismatch(NonRetryableStepError):
    """The email has an account, but the job's password does not log in to it."""

    def __init__(self) -> None:
        super().__init__(CREDENTIALS_MISMATCH)


def credentials_refused(exc: OutsideSystemError) -> bool:
    """Whether an answer says the credentials were refused (not our API key)."""
    return exc.status_code in (401, 403) and exc.code == "invalid_credentials"


RESTAURANT_EXISTS: Final = {"restaurant_exists": "the restaurant is already registered; using it"}
USER_EXISTS: Final = {"user_exists": "the onboarding user already exists; using it"}


class PlatformApi:
    def __init__(self, system: OutsideSystem) -> None:
        self.system = system

    async def create_account(self, payload: Mapping[str, Any], key: str) -> dict[str, Any]:
        return await self.system.request(
            "POST",
            "/api/v1/accounts",
            json=payload,
            idempotency_key=key,
            already_done=ACCOUNT_EXISTS,
        )

    async def log_in(self, email: str, password: str, trace: str) -> dict[str, Any]:
        """The account these credentials open; CredentialsMismatch if they open none."""
        try:
            return await self.system.request(
                "POST", "/api/v1/sessions", json={"email": email, "password": password}, trace=trace
            )
        except OutsideSystemError as exc:
            if exc.status_code in (401, 403):
                raise CredentialsMismatch() from None
            raise

    async def generate_code(self, payload: Mapping[str, Any], key: str) -> dict[str, Any]:
        return await self.system.request(
            "POST", "/api/v1/code-injections", json=payload, idempotency_key=key
        )


class OnboardingService:
    def __init__(self, system: OutsideSystem) -> None:
        self.system = system

    async def create_user(self, payload: Mapping[str, Any], key: str) -> dict[str, Any]:
        return await self.system.request(
            "POST", "/api/users", json=payload, idempotency_key=key, already_done=USER_EXISTS
        )

    async def sync_record(
        self, subdomain: str, payload: Mapping[str, Any], key: str
    ) -> dict[str, Any]:
        return await self.system.request(
            "PUT",
            f"/api/records/{segment(subdomain, 'subdomain')}",
            json=payload,
            idempotency_key=key,
        )


class ImageCdn:
    def __init__(self, system: OutsideSystem, poll_seconds: float) -> None:
        self.system = system
        self.poll_seconds = poll_seconds

    async def upload(
        self, menu_id: str, key: str, progress: Callable[[str], Awaitable[None]]
    ) -> dict[str, Any]:
        """Start an upload batch and poll it until it finishes."""
        batch = await self.system.request(
            "POST", "/api/batches", json={"menu_id": menu_id, "images": []}, idempotency_key=key
        )
        while batch.get("status") == "processing":
            await progress(f"{batch.get('uploaded', 0)} of {batch.get('total', '?')} images")
            await asyncio.sleep(self.poll_seconds)
            batch_id = segment(batch.get("batch_id"), "upload batch id")
            batch = await self.system.request("GET", f"/api/batches/{batch_id}")
        if batch.get("status") != "completed":
            raise RetryableStepError(
                f"image upload batch {batch.get('batch_id')} ended {batch.get('status')!r}"
            )
        return batch


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
        return await self.system.request(
            "POST",
            path,
            json=payload,
            idempotency_key=key,
            already_done=_ENDPOINT_ALREADY_DONE.get(step_id),
        )


@dataclass(frozen=True)
class Clients:
    platform: PlatformApi
    onboarding: OnboardingService
    cdn: ImageCdn
    endpoints: AppEndpoints

    @classmethod
    def build(cls, http: httpx.AsyncClient, settings: Settings) -> Clients:
        def system(name: str, url: str, key: Any) -> OutsideSystem:
            return OutsideSystem(http, name=name, base_url=url, api_key=key)

        return cls(
            platform=PlatformApi(
                system("platform API", settings.platform_api_url, settings.platform_api_key)
            ),
            onboarding=OnboardingService(
                system("onboarding service", settings.onboarding_url, settings.onboarding_api_key)
            ),
            cdn=ImageCdn(
                system("image CDN", settings.cdn_url, settings.cdn_api_key),
                settings.cdn_poll_seconds,
            ),
            endpoints=AppEndpoints(
                system("app endpoint", settings.app_endpoints_url, settings.app_endpoints_api_key)
            ),
        )
