"""One interface per outside system. Each has two implementations, chosen once when a run
starts (`tasks.clients.choice`): the system itself (its HTTP API, or the admin portal in
Chromium), or the app's existing per-step endpoints (SPEC.md). A step's handler knows only
these interfaces, never the mode.

A method raises the step errors of `regjobs.errors` (AlreadyDone with the existing record,
LoginRefused, NeedsPerson, ...); what it returns is the system's answer, of which the step
keeps the fields its catalogue entry gives (`regjobs.catalogue.shaped`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

Result = dict[str, Any]
Progress = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Call:
    """What one attempt of a step hands the client it calls."""

    #: "<job id>:<step id>": names the job and step in the outside systems' logs.
    trace: str
    #: Sent with a request that has an effect, so a repeated one has no second effect.
    idempotency_key: str
    progress: Progress
    #: An earlier attempt with the same idempotency key began and may have had its effect
    #: (where the system takes no key, the client looks before it acts).
    repeat: bool = False
    #: Screenshots taken when a browser attempt failed (password fields masked).
    evidence: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class Login:
    """The job's account credentials, with which the portal (or its endpoint) is used."""

    email: str
    password: str

    def body(self) -> dict[str, str]:
        return {"email": self.email, "password": self.password}


class Platform(Protocol):
    """The ordering platform: accounts and code injections."""

    async def create_account(self, payload: Mapping[str, Any], key: str) -> Result: ...

    async def log_in(self, email: str, password: str, trace: str) -> Result:
        """The account these credentials open; LoginRefused if they open none."""
        ...

    async def generate_code(self, payload: Mapping[str, Any], key: str) -> Result: ...


class Onboarding(Protocol):
    """The onboarding service: its users and the restaurants' records."""

    async def create_user(self, payload: Mapping[str, Any], key: str) -> Result: ...

    async def log_in(self, email: str, password: str, trace: str) -> Result:
        """The onboarding user these credentials open; LoginRefused if they open none."""
        ...

    async def sync_record(self, subdomain: str, payload: Mapping[str, Any], key: str) -> Result: ...


class Images(Protocol):
    """The image CDN."""

    async def upload(self, menu_id: str, key: str, progress: Progress) -> Result: ...


class Portal(Protocol):
    """The admin portal: the restaurant, its settings and its menu. Each method is safe to
    repeat; an "already registered" restaurant is proven the job's before it is used."""

    #: Whether a call drives a browser (and so needs one of the browser slots).
    uses_browser: ClassVar[bool]

    async def register_restaurant(
        self,
        call: Call,
        login: Login,
        values: Mapping[str, str | None],
        mode: str,
        hours: Mapping[str, Sequence[Mapping[str, str]]],
    ) -> Result: ...

    async def configure_website(
        self,
        call: Call,
        login: Login,
        subdomain: str,
        code: tuple[str, str],
        settings: Mapping[str, Any],
    ) -> Result: ...

    async def configure_services(self, call: Call, login: Login, subdomain: str) -> Result: ...

    async def configure_payment(
        self, call: Call, login: Login, subdomain: str, include_stripe_link: bool
    ) -> Result: ...

    async def import_menu(
        self,
        call: Call,
        login: Login,
        subdomain: str,
        menu_id: str | None,
        csv_path: str | None,
    ) -> Result: ...

    async def add_option_sets(
        self, call: Call, login: Login, subdomain: str, menu_id: str
    ) -> Result: ...

    async def add_item_tags(
        self, call: Call, login: Login, subdomain: str, menu_id: str
    ) -> Result: ...


@dataclass(frozen=True)
class Clients:
    """The run's client of each outside system."""

    platform: Platform
    onboarding: Onboarding
    images: Images
    portal: Portal
