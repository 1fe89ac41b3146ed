"""The flow-level tier: `flows.registration.registration_job` run in this process under
`prefect_test_harness` (a throwaway Prefect server), on a job database of its own (SQLite,
or PostgreSQL in its pass), with fake clients in place of the outside systems
(`FakeSystems`). No stand-in, API or worker: a test here takes about a second.

The harness and the database are the module's (one module holds the tier), not the
session's: a test process of `make test` may also hold an end-to-end test system, whose
Prefect a session-wide harness would hide from the tests that follow.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tasks.clients.interfaces import Call, Clients, Login, Progress, Result
from tests.helpers import environment, forget_settings, ledger_job, own_job_database

#: What a fake answers for each step (the fields each step gives, and one it does not).
ANSWERS: Mapping[str, Result] = {
    "account_registration": {"account_id": "acct-1", "email": "owner@example.com"},
    "code_generation": {"head_injection": "<head/>", "body_injection": "<body/>"},
    "onboarding_user": {"user_id": "user-1", "name": "Owner", "email": "chef@example.com"},
    "image_upload": {"menu_id": "menu-1", "uploaded": 3},
    "restaurant_registration": {
        "restaurant_id": "rest-1",
        "subdomain": "demo-pizza",
        "dashboard_url": "https://portal.test/r/demo-pizza/dashboard",
    },
    "website_configuration": {"subdomain": "demo-pizza", "applied": {"theme": "light"}},
    "services_configuration": {"subdomain": "demo-pizza", "services": ["pickup", "delivery"]},
    "payment_configuration": {"subdomain": "demo-pizza", "stripe_connect_url": None},
    "onboarding_sync": {"record_id": "rec-1", "subdomain": "demo-pizza", "synced_at": "now"},
    "menu_import": {"menu_id": "menu-1", "items": 12},
    "option_sets": {"menu_id": "menu-1", "option_sets": 4},
    "item_tags": {"menu_id": "menu-1", "tags": 2},
}

Behaviour = Callable[[], Awaitable[None]]


@dataclass
class FakeSystems:
    """Every outside system at once: each call is recorded (`log`: ("start"|"end", step)),
    runs the test's behaviour for its step, if any, and answers `ANSWERS[step]` with a
    field the step does not give (the result keeps only the fields it gives)."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)

    def started(self, step_id: str | None = None) -> list[str]:
        return [s for kind, s in self.log if kind == "start" and step_id in (None, s)]

    async def answer(self, step_id: str) -> Result:
        self.log.append(("start", step_id))
        behaviour = self.behaviours.get(step_id)
        if behaviour is not None:
            await behaviour()
        self.log.append(("end", step_id))
        return {**ANSWERS[step_id], "extra": "left out of the result"}

    def clients(self) -> Clients:
        return Clients(
            platform=_Platform(self),
            onboarding=_Onboarding(self),
            images=_Images(self),
            portal=_Portal(self),
        )


class _Platform:
    def __init__(self, fake: FakeSystems) -> None:
        self.fake = fake

    async def create_account(self, payload: Mapping[str, Any], key: str) -> Result:
        return await self.fake.answer("account_registration")

    async def log_in(self, email: str, password: str, trace: str) -> Result:
        return dict(ANSWERS["account_registration"])

    async def generate_code(self, payload: Mapping[str, Any], key: str) -> Result:
        return await self.fake.answer("code_generation")


class _Onboarding:
    def __init__(self, fake: FakeSystems) -> None:
        self.fake = fake

    async def create_user(self, payload: Mapping[str, Any], key: str) -> Result:
        return await self.fake.answer("onboarding_user")

    async def log_in(self, email: str, password: str, trace: str) -> Result:
        return dict(ANSWERS["onboarding_user"])

    async def sync_record(self, subdomain: str, payload: Mapping[str, Any], key: str) -> Result:
        return await self.fake.answer("onboarding_sync")


class _Images:
    def __init__(self, fake: FakeSystems) -> None:
        self.fake = fake

    async def upload(self, menu_id: str, key: str, progress: Progress) -> Result:
        return await self.fake.answer("image_upload")


class _Portal:
    uses_browser: ClassVar[bool] = False

    def __init__(self, fake: FakeSystems) -> None:
        self.fake = fake

    async def register_restaurant(
        self,
        call: Call,
        login: Login,
        values: Mapping[str, str | None],
        mode: str,
        hours: Mapping[str, Sequence[Mapping[str, str]]],
    ) -> Result:
        return await self.fake.answer("restaurant_registration")

    async def configure_website(
        self,
        call: Call,
        login: Login,
        subdomain: str,
        code: tuple[str, str],
        settings: Mapping[str, Any],
    ) -> Result:
        return await self.fake.answer("website_configuration")

    async def configure_services(self, call: Call, login: Login, subdomain: str) -> Result:
        return await self.fake.answer("services_configuration")

    async def configure_payment(
        self, call: Call, login: Login, subdomain: str, include_stripe_link: bool
    ) -> Result:
        return await self.fake.answer("payment_configuration")

    async def import_menu(
        self,
        call: Call,
        login: Login,
        subdomain: str,
        menu_id: str | None,
        csv_path: str | None,
    ) -> Result:
        return await self.fake.answer("menu_import")

    async def add_option_sets(
        self, call: Call, login: Login, subdomain: str, menu_id: str
    ) -> Result:
        return await self.fake.answer("option_sets")

    async def add_item_tags(self, call: Call, login: Login, subdomain: str, menu_id: str) -> Result:
        return await self.fake.answer("item_tags")


#: The tier's settings: no waits between attempts; ownership checked often.
FLOW_ENV: Mapping[str, str] = {
    "REGJOBS_RETRY_BASE_SECONDS": "0",
    "REGJOBS_RETRY_JITTER_FACTOR": "0",
    "REGJOBS_OWNERSHIP_CHECK_SECONDS": "0.05",
    "REGJOBS_HEARTBEAT_SECONDS": "1",
}


@pytest.fixture(scope="module")
def flow_database(tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str) -> Iterator[Path]:
    """A migrated job database and a state folder, this module's alone."""
    with own_job_database(tmp_path_factory.mktemp("flow-state"), pg_admin_url) as state:
        yield state


@pytest.fixture(scope="module")
def harness(flow_database: Path) -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def fake(harness: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystems]:
    """Fake outside systems, which the run chooses in place of the real ones."""
    import tasks.steps

    systems = FakeSystems()
    monkeypatch.setattr(tasks.steps, "build_clients", lambda *args: systems.clients())
    with environment(FLOW_ENV):
        yield systems


def tune(**env: str) -> None:
    """Change settings for the rest of this test (restored by `fake`'s `environment`)."""
    os.environ.update(env)
    forget_settings()


def new_job(**sections: Any) -> str:
    """A job of a new organisation, waiting for its run (none requested: any run may begin)."""
    return ledger_job(auto_start=False, **sections)


def run_job(job_id: str, from_step: str | None = None) -> Any:
    """Run the flow to its end here; its final Prefect state."""
    from flows.registration import registration_job

    async def main() -> Any:
        return await registration_job(job_id, from_step=from_step, return_state=True)

    return asyncio.run(main())
