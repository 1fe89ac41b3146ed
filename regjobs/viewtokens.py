"""Job view tokens: what a browser holds instead of an organisation's API key.

A token opens one job's reads (GET, `/progress`, `/events`, evidence) and its `/input`, for
the job's organisation, until it expires. It is

    rjv1.<organisation id>.<expiry, Unix seconds>.<signature>

where the signature is an HMAC-SHA256 (base64url) of the job, the organisation and the
expiry, with a key derived for this purpose alone from the first secret key
(`regjobs.crypto.derived_key`). Any of the secret keys verifies it, so a rotation does not
break the links of the day; once the key that signed a token is dropped from
`REGJOBS_SECRET_KEY`, the token opens nothing. The job is not in the token: the request's
path names it, and a token used on another job's path fails its signature.

Checking one costs a few HMACs and no database read (the polled reads stay cheap); the
caller still reads the job with the organisation the token names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from regjobs.crypto import derived_key
from regjobs.settings import Settings

PURPOSE: Final = "job-view-tokens"
PREFIX: Final = "rjv1"
#: Longer than any token this module makes; a longer credential is not looked at.
MAX_LENGTH: Final = 200
_ORG_CHARS: Final = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_")


@dataclass(frozen=True)
class ViewToken:
    token: str
    expires_at: datetime


def _signature(settings: Settings, job_id: str, organisation_id: str, expires: int, i: int) -> str:
    key = derived_key(PURPOSE, settings, key_index=i)
    message = f"view:{job_id}:{organisation_id}:{expires}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue(
    settings: Settings,
    job_id: str,
    organisation_id: str,
    *,
    ttl_seconds: int | None = None,
    now: float | None = None,
) -> ViewToken:
    """A token for the job, signed with the first secret key, expiring `ttl_seconds` from
    now (`view_token_ttl_seconds` by default)."""
    ttl = settings.view_token_ttl_seconds if ttl_seconds is None else ttl_seconds
    expires = int((time.time() if now is None else now) + ttl)
    sig = _signature(settings, job_id, organisation_id, expires, 0)
    return ViewToken(
        f"{PREFIX}.{organisation_id}.{expires}.{sig}", datetime.fromtimestamp(expires, UTC)
    )


def page_url(settings: Settings, job_id: str, token: str) -> str:
    """The job status page's address with this token (`GET /jobs/{job_id}?token=`)."""
    return f"{settings.public_api_url.rstrip('/')}/jobs/{job_id}?token={token}"


def looks_like(credential: str) -> bool:
    """Whether a bearer credential is meant as a view token (rather than an API key)."""
    return credential.startswith(PREFIX + ".")


def organisation_of(
    settings: Settings, token: str, job_id: str, *, now: float | None = None
) -> str | None:
    """The organisation a valid, unexpired token for this job names; None for anything
    else (another job's, expired, altered, signed with a key no longer configured)."""
    if len(token) > MAX_LENGTH or not token.isascii():
        return None
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != PREFIX:
        return None
    _, organisation_id, expires, sig = parts
    if not organisation_id or not set(organisation_id) <= _ORG_CHARS:
        return None
    if not expires.isdigit() or len(expires) > 12 or (len(expires) > 1 and expires[0] == "0"):
        return None
    if int(expires) <= (time.time() if now is None else now):
        return None
    given = sig.encode()
    for i in range(len(settings.fernet_keys())):
        expected = _signature(settings, job_id, organisation_id, int(expires), i).encode()
        if hmac.compare_digest(expected, given):
            return organisation_id
    return None
