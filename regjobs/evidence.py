"""Links to the screenshots of failed browser attempts.

A link carries an HMAC signature, so it opens from a Prefect artifact without an API key;
anyone without the link (or a key of the job's organisation) gets nothing.
"""

from __future__ import annotations

import hashlib
import hmac

from regjobs.settings import Settings


def signature(settings: Settings, job_id: str, evidence_id: int) -> str:
    message = f"evidence:{job_id}:{evidence_id}".encode()
    return hmac.new(settings.fernet_key(), message, hashlib.sha256).hexdigest()[:32]


def evidence_url(settings: Settings, job_id: str, evidence_id: int) -> str:
    base = settings.public_api_url.rstrip("/")
    sig = signature(settings, job_id, evidence_id)
    return f"{base}/api/registration-jobs/{job_id}/evidence/{evidence_id}?sig={sig}"


def valid(settings: Settings, job_id: str, evidence_id: int, sig: str) -> bool:
    # Bytes, not str: compare_digest refuses non-ASCII strings (a 500 the fuzzer found).
    expected = signature(settings, job_id, evidence_id).encode()
    return hmac.compare_digest(expected, sig.encode("utf-8", "replace"))
