"""Links to the screenshots of failed browser attempts.

A link names the job's organisation and when it expires, and carries an HMAC signature of
the job, the screenshot, the organisation and the expiry, so it opens from a Prefect
artifact without an API key until then. The signing key is derived from the secret key for
this purpose alone (`regjobs.crypto.derived_key`), never the encryption key itself. A link
that is expired, altered, or names an organisation the job does not belong to opens
nothing (404).

Expiries are rounded up to the hour, so a job read twice within the hour gives the same
links (and its body stays the same for its ETag).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from typing import Final
from urllib.parse import urlencode

from regjobs.crypto import derived_key
from regjobs.settings import Settings

PURPOSE: Final = "evidence-links"
#: Expiries are rounded up to a multiple of this (or of the lifetime, if shorter).
ROUNDING_SECONDS: Final = 3600.0


def expiry(settings: Settings, now: float | None = None) -> int:
    """When a link made now expires (Unix seconds)."""
    now = time.time() if now is None else now
    ttl = settings.evidence_link_ttl_seconds
    step = min(ROUNDING_SECONDS, ttl)
    return int(math.ceil((now + ttl) / step) * step)


def _message(job_id: str, evidence_id: int, organisation_id: str, expires: int) -> bytes:
    return f"evidence:{job_id}:{evidence_id}:{organisation_id}:{expires}".encode()


def signature(
    settings: Settings,
    job_id: str,
    evidence_id: int,
    organisation_id: str,
    expires: int,
    *,
    key_index: int = 0,
) -> str:
    key = derived_key(PURPOSE, settings, key_index=key_index)
    message = _message(job_id, evidence_id, organisation_id, expires)
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def evidence_url(
    settings: Settings,
    job_id: str,
    evidence_id: int,
    organisation_id: str,
    *,
    now: float | None = None,
) -> str:
    base = settings.public_api_url.rstrip("/")
    expires = expiry(settings, now)
    sig = signature(settings, job_id, evidence_id, organisation_id, expires)
    query = urlencode({"org": organisation_id, "exp": expires, "sig": sig})
    return f"{base}/api/registration-jobs/{job_id}/evidence/{evidence_id}?{query}"


def valid(
    settings: Settings,
    job_id: str,
    evidence_id: int,
    organisation_id: str,
    expires: str,
    sig: str,
    *,
    now: float | None = None,
) -> bool:
    """Whether the link's signature is right and it has not expired. Links signed with any
    of the secret keys open (a rotation does not break the links of the day)."""
    if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
        return False
    when = int(expires)
    if when <= (time.time() if now is None else now):
        return False
    # Bytes, not str: compare_digest refuses non-ASCII strings (a 500 the fuzzer found).
    given = sig.encode("utf-8", "replace")
    return any(
        hmac.compare_digest(
            signature(settings, job_id, evidence_id, organisation_id, when, key_index=i).encode(),
            given,
        )
        for i in range(len(settings.fernet_keys()))
    )
