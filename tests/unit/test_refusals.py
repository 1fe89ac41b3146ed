"""Unit tests for the per-email limit on refused logins (regjobs.refusals): the window's
arithmetic with an injected clock, the keyed hash, and the records on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from regjobs import refusals
from regjobs.models import LoginRefusal
from regjobs.settings import Settings

T0 = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)
WINDOW = 900.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_fewer_than_the_limit_is_no_wait() -> None:
    times = [at(0), at(10), at(20), at(30)]
    assert refusals.wait_seconds(times, now=at(40), limit=5, window=WINDOW) is None


def test_the_limit_reached_waits_until_the_oldest_expires() -> None:
    times = [at(0), at(10), at(20), at(30), at(40)]
    assert refusals.wait_seconds(times, now=at(100), limit=5, window=WINDOW) == 800.0


def test_more_than_the_limit_waits_until_enough_have_expired() -> None:
    # Seven refusals, limit 5: three must expire, the third oldest (at 20) last.
    times = [at(40), at(0), at(60), at(10), at(20), at(30), at(50)]
    assert refusals.wait_seconds(times, now=at(100), limit=5, window=WINDOW) == 820.0


def test_a_refusal_exactly_a_window_old_no_longer_counts() -> None:
    times = [at(0), at(10), at(20), at(30), at(40)]
    assert refusals.wait_seconds(times, now=at(899.5), limit=5, window=WINDOW) == 0.5
    assert refusals.wait_seconds(times, now=at(900), limit=5, window=WINDOW) is None


def test_future_refusals_do_not_count() -> None:
    """A clock behind another process's does not lock anyone out."""
    times = [at(0)] * 4 + [at(500)]
    assert refusals.wait_seconds(times, now=at(100), limit=5, window=WINDOW) is None


@given(
    st.lists(st.floats(min_value=0, max_value=3000), max_size=30),
    st.floats(min_value=0, max_value=3000),
    st.integers(min_value=1, max_value=8),
)
def test_the_wait_ends_exactly_when_the_count_drops_below_the_limit(
    offsets: list[float], now: float, limit: int
) -> None:
    times = [at(o) for o in offsets]
    wait = refusals.wait_seconds(times, now=at(now), limit=limit, window=WINDOW)

    def counted(moment: datetime) -> int:
        return sum(moment - timedelta(seconds=WINDOW) < t <= at(now) for t in times)

    if wait is None:
        assert counted(at(now)) < limit
    else:
        assert wait > 0
        assert counted(at(now)) >= limit
        assert counted(at(now) + timedelta(seconds=wait)) < limit
        just_before = at(now) + timedelta(seconds=wait) - timedelta(microseconds=1)
        assert counted(just_before) >= limit


@pytest.mark.parametrize(
    ("typed", "same_as"),
    [
        ("  Zoë+Harbour@Café.Example.COM ", "zoë+harbour@café.example.com"),
        # NFKC: a full-width letter is the letter.
        ("\uff5aoe@example.com", "zoe@example.com"),
    ],
)
def test_emails_are_normalised_before_they_are_counted(
    typed: str, same_as: str, tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path)
    assert refusals.email_key(typed, settings) == refusals.email_key(same_as, settings)


def test_a_plus_tag_is_another_email(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert refusals.email_key("a+1@x.example", settings) != refusals.email_key(
        "a@x.example", settings
    )


def test_the_hash_is_keyed_with_the_servers_secret(tmp_path: Path) -> None:
    """Without the secret key an address cannot be tested against the stored hashes."""
    import hashlib

    one = Settings(state_dir=tmp_path / "one")
    other = Settings(state_dir=tmp_path / "other")
    email = "owner@harbour.example"
    assert refusals.email_key(email, one) != refusals.email_key(email, other)
    assert refusals.email_key(email, one) != hashlib.sha256(email.encode()).hexdigest()
    assert len(refusals.email_key(email, one)) == 64


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    from sqlalchemy import create_engine

    from regjobs.db import migrate

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrate(url)
    engine = create_engine(url)
    with Session(engine) as db:
        yield db
    engine.dispose()


def test_the_limit_over_recorded_refusals(session: Session, tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path, login_refusal_limit=3, login_refusal_window_seconds=WINDOW
    )
    victim, other = "Zoë+harbour@café.example.com", "someone@else.example"
    emails = {"account.email": victim, "onboarding.user_email": other}
    for second in (0, 60, 120):
        refusals.record(session=session, email=victim, now=at(second), settings=settings)
    refusals.record(session=session, email=other, now=at(130), settings=settings)
    session.commit()

    with pytest.raises(refusals.TooManyRefusedLogins) as refused:
        refusals.check(session=session, emails=emails, now=at(200), settings=settings)
    assert refused.value.fields == ("account.email",)
    assert refused.value.retry_after == 700.0
    assert refused.value.retry_header == "700"
    assert "account.email" in refused.value.detail and "15 minutes" in refused.value.detail
    assert "café" not in refused.value.detail.lower() and "zo" not in refused.value.detail
    # Other emails are unaffected; once the oldest refusal is a window old, nor is this one.
    refusals.check(session=session, emails={"account.email": other}, now=at(200), settings=settings)
    refusals.check(session=session, emails=emails, now=at(900), settings=settings)

    # No address is stored, only its keyed hash; old rows are forgotten as new ones come.
    stored = session.scalars(select(LoginRefusal.email_key)).all()
    assert len(stored) == 4 and all("@" not in key for key in stored)
    refusals.record(session=session, email=other, now=at(2000), settings=settings)
    session.commit()
    assert len(session.scalars(select(LoginRefusal.id)).all()) == 1
