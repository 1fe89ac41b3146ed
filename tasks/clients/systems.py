"""The direct clients of the platform API, the onboarding service and the image CDN (the
`Platform`, `Onboarding` and `Images` interfaces of `tasks.clients.interfaces`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from regjobs.errors import (
    ACCOUNT_LOGIN,
    ONBOARDING_LOGIN,
    LoginRefused,
    OutsideSystemError,
    RetryableStepError,
)
from tasks.clients.http import OutsideSystem, segment

ACCOUNT_EXISTS: Final = {"account_exists": "the account already exists; using it"}
#: Why an account that exists is not used: the job's credentials do not open it.
CREDENTIALS_MISMATCH: Final = "an account with this email exists and the credentials do not match"
#: The same for an onboarding user.
USER_MISMATCH: Final = "an onboarding user with this email exists and the credentials do not match"


def credentials_refused(exc: OutsideSystemError) -> bool:
    """Whether an answer says the credentials were refused (not our API key)."""
    return exc.status_code in (401, 403) and exc.code == "invalid_credentials"


async def log_in_with(
    system: OutsideSystem,
    path: str,
    email: str,
    password: str,
    trace: str,
    *,
    refused: str,
    fields: tuple[str, ...],
) -> dict[str, Any]:
    """The record these credentials open at `path`; LoginRefused (naming `fields`) when
    the system refuses them."""
    try:
        return await system.request(
            "POST", path, json={"email": email, "password": password}, trace=trace
        )
    except OutsideSystemError as exc:
        if credentials_refused(exc):
            raise LoginRefused(refused, fields=fields, email=email) from None
        raise


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
        """The account these credentials open; LoginRefused if they open none."""
        return await log_in_with(
            self.system,
            "/api/v1/sessions",
            email,
            password,
            trace,
            refused=CREDENTIALS_MISMATCH,
            fields=ACCOUNT_LOGIN,
        )

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

    async def log_in(self, email: str, password: str, trace: str) -> dict[str, Any]:
        """The onboarding user these credentials open; LoginRefused if they open none."""
        return await log_in_with(
            self.system,
            "/api/sessions",
            email,
            password,
            trace,
            refused=USER_MISMATCH,
            fields=ONBOARDING_LOGIN,
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
        # The batch does not name its menu; the step's result does (as the endpoint's).
        return {**batch, "menu_id": menu_id}
