"""The per-email limit on refused logins.

A job whose config names an email with a password asks an outside system "does this
password open this account?", and the step's outcome answers. Unbounded, jobs with guessed
passwords for a known email would be a password oracle. So every login an outside system
refuses is recorded here (by the flow run whose step it refused), keyed by a keyed hash of
the normalised email (never the address), and a create whose config carries an email with
`login_refusal_limit` refusals in the last `login_refusal_window_seconds` is answered 429
with `Retry-After`: the seconds until enough of those refusals are older than the window
for the count to drop below the limit again (a sliding window).

The count is per email across organisations (the oracle is about the email's account,
whoever asks) and both systems with a login (platform/portal account, onboarding user)
count into it. Repeating an earlier create (`Idempotency-Key`) is never refused: it starts
nothing new.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from regjobs.crypto import derived_key
from regjobs.models import LoginRefusal, utcnow
from regjobs.settings import Settings, get_settings

#: The purpose the hashing key is derived for (`regjobs.crypto.derived_key`).
KEY_PURPOSE = "login-refusals"


def normalise(email: str) -> str:
    """One form per address as people type it: Unicode NFKC, no surrounding blanks, case
    folded. A `+tag` stays: the outside systems treat `a+x@` and `a@` as two accounts."""
    return unicodedata.normalize("NFKC", email).strip().casefold()


def email_key(email: str, settings: Settings | None = None) -> str:
    """The keyed hash an email is counted under: without the server's secret key it
    cannot be tested against a list of addresses."""
    key = derived_key(KEY_PURPOSE, settings)
    return hmac.new(key, normalise(email).encode(), hashlib.sha256).hexdigest()


def wait_seconds(
    refusals: Iterable[datetime], *, now: datetime, limit: int, window: float
) -> float | None:
    """Seconds until fewer than `limit` of `refusals` lie within `window` seconds before
    `now`; None when fewer do already. A refusal exactly `window` old no longer counts."""
    start = now - timedelta(seconds=window)
    recent = sorted(t for t in refusals if start < t <= now)
    if len(recent) < limit:
        return None
    # The count falls below the limit once this one (and every older one) has expired.
    expires = recent[len(recent) - limit] + timedelta(seconds=window)
    return (expires - now).total_seconds()


class TooManyRefusedLogins(Exception):
    """A create carries an email past the limit: the config fields that hold it, and the
    seconds to wait (the longest of them)."""

    def __init__(
        self, fields: Sequence[str], retry_after: float, *, limit: int, window: float
    ) -> None:
        self.fields = tuple(fields)
        self.retry_after = retry_after
        self.limit = limit
        self.window = window
        super().__init__(self.detail)

    @property
    def detail(self) -> str:
        """What the 429 says: the fields, never the address (the caller sent it)."""
        minutes = self.window / 60
        span = f"{minutes:g} minutes" if minutes >= 1 else f"{self.window:g} s"
        return (
            f"too many refused logins for the email in {' and '.join(self.fields)} "
            f"({self.limit} or more in {span}); try again in {self.retry_header} s"
        )

    @property
    def retry_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


def record(
    *,
    session: Session,
    email: str,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> None:
    """Count one refused login of `email`, and forget every refusal older than the window."""
    settings = settings or get_settings()
    now = now or utcnow()
    session.add(LoginRefusal(email_key=email_key(email, settings), refused_at=now))
    cutoff = now - timedelta(seconds=settings.login_refusal_window_seconds)
    session.execute(delete(LoginRefusal).where(LoginRefusal.refused_at <= cutoff))


def check(
    *,
    session: Session,
    emails: Mapping[str, str],
    now: datetime | None = None,
    settings: Settings | None = None,
) -> None:
    """Raise TooManyRefusedLogins if any of `emails` (config field -> address) is past the
    limit."""
    if not emails:
        return
    settings = settings or get_settings()
    now = now or utcnow()
    window = settings.login_refusal_window_seconds
    keys = {field: email_key(email, settings) for field, email in emails.items()}
    rows = session.execute(
        select(LoginRefusal.email_key, LoginRefusal.refused_at).where(
            LoginRefusal.email_key.in_(set(keys.values())),
            LoginRefusal.refused_at > now - timedelta(seconds=window),
        )
    ).all()
    waits: dict[str, float] = {}
    for field, key in keys.items():
        wait = wait_seconds(
            (at for k, at in rows if k == key),
            now=now,
            limit=settings.login_refusal_limit,
            window=window,
        )
        if wait is not None:
            waits[field] = wait
    if waits:
        raise TooManyRefusedLogins(
            tuple(waits), max(waits.values()), limit=settings.login_refusal_limit, window=window
        )
