"""Job view tokens (`regjobs.viewtokens`): one job, one organisation, until they expire,
while the key that signed them is configured; nothing else opens."""

from __future__ import annotations

import uuid

from cryptography.fernet import Fernet
from hypothesis import assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from regjobs import viewtokens
from regjobs.settings import Settings

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
JOB = "0b7f6a2e-8a3c-4a8e-9d43-1f2e3d4c5b6a"
ORG = "5d1c7c4e-2f0b-4f55-9a3e-7e8f1c2b3a4d"
NOW = 1_800_000_000.0


def keys(*given: str) -> Settings:
    return Settings(secret_key=SecretStr(",".join(given)))


SETTINGS = keys(OLD)
TOKEN = viewtokens.issue(SETTINGS, JOB, ORG, now=NOW).token


def test_a_token_opens_its_job_for_its_organisation_until_it_expires() -> None:
    made = viewtokens.issue(SETTINGS, JOB, ORG, ttl_seconds=3600, now=NOW)
    assert made.expires_at.timestamp() == NOW + 3600
    assert viewtokens.organisation_of(SETTINGS, made.token, JOB, now=NOW) == ORG
    assert viewtokens.organisation_of(SETTINGS, made.token, JOB, now=NOW + 3599) == ORG
    assert viewtokens.organisation_of(SETTINGS, made.token, JOB, now=NOW + 3600) is None
    assert viewtokens.looks_like(made.token)


def test_the_default_lifetime_is_a_day() -> None:
    made = viewtokens.issue(SETTINGS, JOB, ORG, now=NOW)
    assert made.expires_at.timestamp() == NOW + 24 * 3600


def test_a_token_survives_a_rotation_until_its_key_is_dropped() -> None:
    assert viewtokens.organisation_of(keys(NEW, OLD), TOKEN, JOB, now=NOW) == ORG
    assert viewtokens.organisation_of(keys(NEW), TOKEN, JOB, now=NOW) is None
    # New tokens are signed with the first key.
    rotated = viewtokens.issue(keys(NEW, OLD), JOB, ORG, now=NOW).token
    assert viewtokens.organisation_of(keys(NEW), rotated, JOB, now=NOW) == ORG
    assert viewtokens.organisation_of(keys(OLD), rotated, JOB, now=NOW) is None


@given(st.uuids())
def test_a_token_opens_no_other_job(other: uuid.UUID) -> None:
    assume(str(other) != JOB)
    assert viewtokens.organisation_of(SETTINGS, TOKEN, str(other), now=NOW) is None


@given(st.uuids())
def test_a_token_naming_another_organisation_opens_nothing(other: uuid.UUID) -> None:
    prefix, _org, expires, sig = TOKEN.split(".")
    forged = ".".join([prefix, str(other), expires, sig])
    assume(str(other) != ORG)
    assert viewtokens.organisation_of(SETTINGS, forged, JOB, now=NOW) is None


@given(st.integers(min_value=0, max_value=len(TOKEN) - 1), st.characters(codec="ascii"))
def test_any_changed_character_is_refused(position: int, replacement: str) -> None:
    assume(TOKEN[position] != replacement)
    tampered = TOKEN[:position] + replacement + TOKEN[position + 1 :]
    # (base64url's last character carries 2 spare bits: a change there can decode to the
    # same bytes, but the token compares as text, so even that is refused.)
    assert viewtokens.organisation_of(SETTINGS, tampered, JOB, now=NOW) is None


@given(st.integers(min_value=1, max_value=10**9))
def test_a_later_expiry_written_into_a_token_is_refused(later: int) -> None:
    prefix, org, expires, sig = TOKEN.split(".")
    forged = ".".join([prefix, org, str(int(expires) + later), sig])
    assert viewtokens.organisation_of(SETTINGS, forged, JOB, now=NOW) is None


@hypothesis_settings(max_examples=300)
@given(st.text(max_size=300))
def test_any_other_text_is_refused_without_an_error(text: str) -> None:
    assume(text != TOKEN)
    assert viewtokens.organisation_of(SETTINGS, text, JOB, now=NOW) is None


def test_a_token_signed_with_a_key_never_configured_is_refused() -> None:
    stranger = viewtokens.issue(keys(NEW), JOB, ORG, now=NOW).token
    assert viewtokens.organisation_of(SETTINGS, stranger, JOB, now=NOW) is None


def test_the_page_url_carries_the_token() -> None:
    url = viewtokens.page_url(Settings(public_api_url="https://jobs.example.com/"), JOB, TOKEN)
    assert url == f"https://jobs.example.com/jobs/{JOB}?token={TOKEN}"
