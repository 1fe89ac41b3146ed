"""Production fails closed: the API does not start with placeholder outside-system keys or
with a development key still active; a development key opens nothing; a rotated secret key
still decrypts every stored config once `python -m regjobs.commands reencrypt` has run, and the
old key is no longer needed. Each test on a scratch job database of its own (SQLite, or
PostgreSQL in CI's second pass); the API as a real `uvicorn` process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy.orm import Session

from deployments.stack import free_port
from regjobs.auth import DEVELOPMENT_LABEL, add_key, ensure_organisation
from regjobs.db import engine_for
from regjobs.settings import PROJECT_DIR, get_settings
from tests.helpers import full_config, scratch_job_database

pytestmark = pytest.mark.database

SECRET_KEY = Fernet.generate_key().decode()
REAL_KEYS = {
    "REGJOBS_PLATFORM_API_KEY": "pk_live_0123456789",
    "REGJOBS_ONBOARDING_API_KEY": "ob_live_0123456789",
    "REGJOBS_CDN_API_KEY": "cdn_live_0123456789",
    "REGJOBS_APP_ENDPOINTS_API_KEY": "app_live_0123456789",
}


@pytest.fixture
def scratch_url(tmp_path: Path, pg_admin_url: str) -> Iterator[str]:
    """A fresh, migrated job database of this test alone."""
    with scratch_job_database(tmp_path, pg_admin_url) as url:
        yield url


def production_env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    """A clean environment (none of this session's settings) for production."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGJOBS_", "DATABASE_URL"))}
    env.update(
        {
            "REGJOBS_ENVIRONMENT": "production",
            "REGJOBS_SECRET_KEY": SECRET_KEY,
            "DATABASE_URL": database_url,
            "REGJOBS_STATE_DIR": str(tmp_path / "state"),
            "REGJOBS_RECONCILER": "false",
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "PREFECT_API_URL": "http://127.0.0.1:9/api",
            "PYTHONUNBUFFERED": "1",
            **REAL_KEYS,
            **extra,
        }
    )
    return env


def start_api(env: dict[str, str], *, timeout: float = 60) -> tuple[int | None, str]:
    """Start `uvicorn api.main:app`: (None, output) once it answers /healthz (it is stopped
    then), or (exit code, output) if it exits first."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return process.returncode, process.communicate()[0]
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            return None, ""
        raise AssertionError("the API neither started nor exited")
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=15)
        if process.stdout:
            process.stdout.close()


def run_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def add_development_key(database_url: str) -> str:
    """A development key of the demo organisation, as development mode leaves behind."""
    with Session(engine_for(database_url)) as session:
        org = ensure_organisation(session, "demo-organisation")
        key = add_key(session, organisation=org, label=DEVELOPMENT_LABEL)
        session.commit()
    return key


def test_production_refuses_to_start_with_placeholder_keys(
    tmp_path: Path, scratch_url: str
) -> None:
    env = production_env(tmp_path, scratch_url)
    for name in ("REGJOBS_PLATFORM_API_KEY", "REGJOBS_CDN_API_KEY"):
        del env[name]  # back to the stand-in's placeholders
    code, output = start_api(env)
    assert code is not None and code != 0, "the API started with placeholder keys"
    assert "REGJOBS_PLATFORM_API_KEY is a placeholder" in output
    assert "REGJOBS_CDN_API_KEY is a placeholder" in output
    # The error does not print what it was given.
    assert SECRET_KEY not in output
    assert REAL_KEYS["REGJOBS_ONBOARDING_API_KEY"] not in output


def test_production_refuses_to_start_while_a_development_key_is_active(
    tmp_path: Path, scratch_url: str
) -> None:
    add_development_key(scratch_url)
    env = production_env(tmp_path, scratch_url)

    code, output = start_api(env)
    assert code is not None and code != 0, "the API started with a development key active"
    assert "python -m regjobs.auth disable-development-keys" in output

    disabled = run_command(env, "regjobs.auth", "disable-development-keys")
    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout.strip() == "disabled 1 development key(s)"

    code, output = start_api(env)
    assert code is None, output  # it starts now
    # And it made no development key of its own; nor may one be made by hand.
    listed = run_command(env, "regjobs.auth", "list")
    assert "\tactive\tdevelopment" not in listed.stdout
    made = run_command(
        env, "regjobs.auth", "create", "--organisation", "x", "--label", DEVELOPMENT_LABEL
    )
    assert made.returncode != 0 and "reserved" in made.stderr


def test_development_starts_with_the_defaults(tmp_path: Path, scratch_url: str) -> None:
    env = production_env(tmp_path, scratch_url, REGJOBS_ENVIRONMENT="development")
    for name in REAL_KEYS:
        del env[name]
    code, output = start_api(env)
    assert code is None, output


def test_a_development_key_opens_nothing_in_production(
    tmp_path: Path, scratch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api import reads

    key = add_development_key(scratch_url)
    for name, value in production_env(tmp_path, scratch_url).items():
        if name.startswith(("REGJOBS_", "DATABASE_URL")):
            monkeypatch.setenv(name, value)
    try:
        get_settings.cache_clear()
        with pytest.raises(reads.Unauthorized):
            reads.organisation(key)
        monkeypatch.setenv("REGJOBS_ENVIRONMENT", "development")
        get_settings.cache_clear()
        assert reads.organisation(key).name == "demo-organisation"
    finally:
        get_settings.cache_clear()


def test_a_rotated_key_still_decrypts_old_configs_after_reencrypt(
    tmp_path: Path, scratch_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regjobs import ledger
    from regjobs.config import ExecutionConfig
    from regjobs.db import transaction
    from regjobs.ledger import rows

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    passwords = [f"Rotate-{uuid.uuid4().hex}" for _ in range(3)]
    monkeypatch.setenv("DATABASE_URL", scratch_url)

    def use_keys(keys: str) -> None:
        monkeypatch.setenv("REGJOBS_SECRET_KEY", keys)
        get_settings.cache_clear()

    def config_of(job_id: str) -> Any:
        def read(*, session: Any) -> ExecutionConfig:
            return ledger.job_config(rows._job(session, job_id))

        return transaction(read)

    try:
        use_keys(old)

        def make(password: str) -> str:
            def create(*, session: Any) -> str:
                org = ensure_organisation(session, "rotation")
                job = ledger.create_job(
                    session=session,
                    organisation_id=org.id,
                    restaurant_id=f"rot-{uuid.uuid4().hex[:8]}",
                    config=ExecutionConfig.model_validate(
                        full_config(account={"password": password})
                    ),
                    auto_start=False,
                )
                ledger.cancel_job(session=session, job_id=job.id)
                return job.id

            return transaction(create)

        jobs = [make(p) for p in passwords]

        # The new key first, the old one still there: everything decrypts.
        use_keys(f"{new},{old}")
        assert config_of(jobs[0]).account.password.get_secret_value() == passwords[0]
        env = production_env(tmp_path, scratch_url, REGJOBS_SECRET_KEY=f"{new},{old}")
        done = run_command(env, "regjobs.commands", "reencrypt")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"re-encrypted {len(jobs)} of {len(jobs)} stored config(s)"

        # The new key alone now decrypts every config; the old one alone none.
        use_keys(new)
        for job_id, password in zip(jobs, passwords, strict=True):
            assert config_of(job_id).account.password.get_secret_value() == password
        use_keys(old)
        with pytest.raises(ValueError, match="cannot be decrypted"):
            config_of(jobs[0])
    finally:
        get_settings.cache_clear()


def test_api_processes_starting_at_once_each_find_the_development_key(
    tmp_path: Path, pg_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving forced: between this process's look for the demo organisation and
    its insert, another API process inserts the organisation and the key. The insert fails
    on the unique name; the start tries again and finds both (it does not exit)."""
    from api import main
    from regjobs.models import ApiKey, Organisation
    from tests.helpers import environment, own_job_database

    key = "rj_dev_" + uuid.uuid4().hex
    with own_job_database(tmp_path, pg_admin_url), environment({"REGJOBS_DEV_API_KEY": key}):
        settings = get_settings()
        real = ensure_organisation
        raced: list[str] = []

        def another_process_first(session: Session, name: str) -> Organisation:
            if raced:
                return real(session, name)
            raced.append(name)
            # The other process, on a connection of its own, between the look and the insert.
            with engine_for(settings.sqlalchemy_url).begin() as connection:
                other = Session(bind=connection)
                add_key(other, organisation=real(other, name), key=key, label=DEVELOPMENT_LABEL)
                other.flush()
            # This one's look found nothing: it inserts all the same.
            organisation = Organisation(name=name)
            session.add(organisation)
            session.flush()
            return organisation

        monkeypatch.setattr(main, "ensure_organisation", another_process_first)
        assert main.ensure_dev_key(settings) == key
        assert raced == [settings.dev_organisation]
        with engine_for(settings.sqlalchemy_url).connect() as connection:
            reader = Session(bind=connection)
            names = reader.query(Organisation.name).filter_by(name=settings.dev_organisation)
            assert names.count() == 1
            assert reader.query(ApiKey).filter_by(label=DEVELOPMENT_LABEL).count() == 1
