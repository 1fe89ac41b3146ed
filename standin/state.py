"""The stand-in's memory: accounts, restaurants, menus, onboarding, CDN batches, counts, calls.

A test double: one process, one event loop, no persistence. No operation awaits between
reading and writing, so every operation is atomic.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

from regjobs.catalogue import STEP_IDS
from standin.faults import FaultBook

JSON = dict[str, Any]

#: Seconds a CDN batch stays `processing`; `POST /_control/config` changes it per server.
CDN_PROCESSING_SECONDS: float = 0.5
#: What a synthesised menu holds unless configured otherwise.
MENU_ITEMS: int = 12
MENU_OPTION_SETS: int = 5
MENU_TAGS: int = 3
#: How many image names the CDN invents for a batch that names none.
INVENTED_IMAGES: int = 8


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


@dataclass
class Config:
    cdn_processing_seconds: float = field(default_factory=lambda: CDN_PROCESSING_SECONDS)
    menu_items: int = field(default_factory=lambda: MENU_ITEMS)
    menu_option_sets: int = field(default_factory=lambda: MENU_OPTION_SETS)
    menu_tags: int = field(default_factory=lambda: MENU_TAGS)
    invented_images: int = field(default_factory=lambda: INVENTED_IMAGES)
    #: The portal's login page renders its password field disabled: a browser's fill()
    #: waits for it until it times out (a hostile page for the secrets audit).
    portal_password_disabled: bool = False
    #: The app's account and restaurant endpoints check the credentials before they answer
    #: "already exists". Off: they say so on the email alone, as a looser endpoint might
    #: (the caller must then prove the record is its own with a login).
    endpoints_check_credentials: bool = True
    #: Values the portal's restaurant form (and the app's endpoint behind it) rejects, by
    #: field (`{"phone": ["+64 9 000 0000"]}`): what a real portal does with a number it
    #: cannot reach or an address it cannot place. A person must type another value.
    rejected_values: dict[str, list[str]] = field(default_factory=dict)

    def public(self) -> JSON:
        return asdict(self)


@dataclass
class Secret:
    """A salted password hash: the stand-in never keeps a password it could leak."""

    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)

    @classmethod
    def of(cls, password: str) -> Secret:
        salt = secrets.token_bytes(16)
        return cls(salt, hashlib.sha256(salt + password.encode()).digest())

    def matches(self, password: str) -> bool:
        digest = hashlib.sha256(self.salt + password.encode()).digest()
        return hmac.compare_digest(self.digest, digest)


@dataclass
class Account:
    account_id: str
    email: str
    phone: str | None
    secret: Secret = field(repr=False)
    created_at: float = field(default_factory=time.time)

    def public(self) -> JSON:
        return {
            "account_id": self.account_id,
            "email": self.email,
            "phone": self.phone,
            "created_at": self.created_at,
        }


@dataclass
class Menu:
    """A synthesised menu, as imported from a menu id or a CSV file."""

    menu_id: str
    source: JSON
    items: list[JSON]
    option_sets: list[str]
    tags: list[str]


@dataclass
class RestaurantMenu:
    """What the portal holds of one menu imported into one restaurant."""

    menu_id: str
    imports: int = 0
    #: True once every option set the menu needs exists.
    option_sets_added: bool = False
    #: The option sets that exist, each once, in the order they were created.
    option_sets: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    #: True once the menu's item tags were saved (even as none).
    tags_saved: bool = False
    #: Per option set: the choices it was created with (the portal's form gives them).
    option_set_choices: dict[str, list[str]] = field(default_factory=dict)
    #: Per option set: how often it was created; 1 for every set that exists.
    option_set_creations: dict[str, int] = field(default_factory=dict)
    #: Per option set: how often creating it was asked for, repeats included.
    option_set_requests: dict[str, int] = field(default_factory=dict)


@dataclass
class Restaurant:
    restaurant_id: str
    account_id: str
    email: str
    name: str
    subdomain: str
    dashboard_url: str
    registration_mode: str
    address: str | None = None
    city: str | None = None
    phone: str | None = None
    cuisine: str | None = None
    opening_hours: JSON | None = None
    created_at: float = field(default_factory=time.time)
    website: JSON | None = None
    services: list[str] = field(default_factory=list)
    #: Whether the services and payment settings were ever saved (a form shows defaults
    #: until then; the portal marks a saved form so a page can tell them apart).
    services_saved: bool = False
    payment_saved: bool = False
    stripe_connect_url: str | None = None
    menus: dict[str, RestaurantMenu] = field(default_factory=dict)
    #: Every successful portal call's body (password removed), by step, in order.
    received: dict[str, list[JSON]] = field(default_factory=dict)

    def summary(self) -> JSON:
        """The data an already-registered answer carries."""
        return {
            "restaurant_id": self.restaurant_id,
            "name": self.name,
            "subdomain": self.subdomain,
            "dashboard_url": self.dashboard_url,
            "account_id": self.account_id,
        }

    def public(self) -> JSON:
        data = asdict(self)
        data["menus"] = {k: asdict(v) for k, v in self.menus.items()}
        return data


@dataclass
class OnboardingUser:
    user_id: str
    name: str
    email: str
    secret: Secret = field(repr=False)
    created_at: float = field(default_factory=time.time)

    def public(self) -> JSON:
        return {
            "user_id": self.user_id,
            "name": self.name,
            "email": self.email,
            "created_at": self.created_at,
        }


@dataclass
class OnboardingRecord:
    record_id: str
    subdomain: str
    restaurant_name: str
    dashboard_url: str
    stripe_connect_url: str | None
    user_email: str | None
    synced_at: str
    syncs: int = 1


@dataclass
class Batch:
    batch_id: str
    menu_id: str
    images: list[str]
    processing_seconds: float
    created_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)

    def progress(self) -> JSON:
        total = len(self.images)
        elapsed = time.monotonic() - self.started
        if elapsed >= self.processing_seconds:
            status, uploaded = "completed", total
        else:
            status = "processing"
            uploaded = min(total - 1, int(total * elapsed / self.processing_seconds))
        return {
            "batch_id": self.batch_id,
            "menu_id": self.menu_id,
            "status": status,
            "total": total,
            "uploaded": max(uploaded, 0),
        }


@dataclass
class Call:
    step: str
    method: str
    path: str
    start: float
    end: float | None = None
    status: int | None = None
    #: The fault mode applied to this call, if any.
    fault: str | None = None
    #: The caller's `X-Registration-Step` header ("<job id>:<step id>"), if it sent one.
    client: str | None = None
    #: Which reset of the state the call began after (see `StandinState.effect`).
    epoch: int = 0

    def public(self) -> JSON:
        return {k: v for k, v in asdict(self).items() if k != "epoch"}


#: The call the gate is serving in this request (the gate sets it around the request).
CURRENT_CALL: ContextVar[Call | None] = ContextVar("standin_current_call", default=None)


@dataclass(frozen=True)
class Reply:
    status: int
    body: JSON


class StandinState:
    """Everything the stand-in remembers; `reset()` forgets it all."""

    def __init__(self) -> None:
        #: Set by `release_held()`: every `slow` call waiting then goes on at once.
        self._release = asyncio.Event()
        self.reset()

    def held(self) -> asyncio.Event:
        """What a `slow` call waits on (besides its delay): set by the next release."""
        return self._release

    def release_held(self) -> None:
        """Let every `slow` call now waiting go on; later ones wait their delay again."""
        self._release.set()
        self._release = asyncio.Event()

    def reset(self) -> None:
        #: Bumped by every reset: a call begun before it counts no effect after it.
        self.epoch = getattr(self, "epoch", 0) + 1
        self.config = Config()
        self.faults = FaultBook()
        self.effects: dict[str, int] = dict.fromkeys(STEP_IDS, 0)
        self.calls: list[Call] = []
        self.idempotency: dict[tuple[str, str], Reply] = {}
        self.accounts: dict[str, Account] = {}
        self.restaurants: dict[str, Restaurant] = {}
        self.menus: dict[str, Menu] = {}
        self.code_generations: list[JSON] = []
        self.onboarding_users: dict[str, OnboardingUser] = {}
        self.onboarding_records: dict[str, OnboardingRecord] = {}
        self.batches: dict[str, Batch] = {}
        self.images: dict[str, list[str]] = {}
        #: Admin-portal sessions: cookie token -> account email.
        self.portal_sessions: dict[str, str] = {}

    def effect(self, step: str) -> None:
        """Count one side effect of `step`, unless the call making it began before the last
        reset (a caller from before it, still in flight, is not the new one's)."""
        call = CURRENT_CALL.get()
        if call is not None and call.epoch != self.epoch:
            return
        self.effects[step] += 1

    def begin_call(self, step: str, method: str, path: str, client: str | None = None) -> Call:
        call = Call(
            step=step, method=method, path=path, start=time.time(), client=client, epoch=self.epoch
        )
        self.calls.append(call)
        return call

    def _session_counts(self) -> dict[str, int]:
        """Live portal sessions per account email (the tokens themselves stay private)."""
        counts: dict[str, int] = {}
        for email in self.portal_sessions.values():
            counts[email] = counts.get(email, 0) + 1
        return counts

    def public(self) -> JSON:
        """The whole state as JSON; no password or password hash in it."""
        return {
            "accounts": {k: a.public() for k, a in self.accounts.items()},
            "restaurants": {k: r.public() for k, r in self.restaurants.items()},
            "menus": {k: asdict(m) for k, m in self.menus.items()},
            "code_generations": list(self.code_generations),
            "onboarding": {
                "users": {k: u.public() for k, u in self.onboarding_users.items()},
                "records": {k: asdict(r) for k, r in self.onboarding_records.items()},
            },
            "cdn": {
                "batches": {
                    k: {**b.progress(), "images": b.images, "created_at": b.created_at}
                    for k, b in self.batches.items()
                },
                "images": {k: list(v) for k, v in self.images.items()},
            },
            "portal": {"sessions": self._session_counts()},
            "config": self.config.public(),
            "faults": self.faults.public(),
            "effects": dict(self.effects),
        }
