"""Settings fail closed in production (regjobs.settings), and the secret key is a list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from regjobs.settings import Settings

KEY = Fernet.generate_key().decode()
REAL = {
    "platform_api_key": "pk_live_1",
    "onboarding_api_key": "ob_live_1",
    "cdn_api_key": "cdn_live_1",
    "app_endpoints_api_key": "app_live_1",
}


def production(tmp_path: Path, **values: Any) -> Settings:
    base: dict[str, Any] = {
        "environment": "production",
        "secret_key": KEY,
        "DATABASE_URL": "postgresql+psycopg2://db/regjobs",
        "state_dir": tmp_path,
        # Explicit, not from the environment (the end-to-end fixtures set endpoints mode).
        "step_mode": "direct",
        **REAL,
    }
    return Settings(**{**base, **values})


def refused(tmp_path: Path, **values: Any) -> str:
    with pytest.raises(ValidationError) as info:
        production(tmp_path, **values)
    return str(info.value)


def test_production_with_real_keys_is_fine(tmp_path: Path) -> None:
    assert production(tmp_path).fernet_keys() == [KEY.encode()]


@pytest.mark.parametrize("name", sorted(REAL))
def test_a_placeholder_key_is_refused_in_production(tmp_path: Path, name: str) -> None:
    message = refused(tmp_path, **{name: "standin-whatever"})
    assert f"REGJOBS_{name.upper()} is a placeholder" in message


def test_the_defaults_are_placeholders(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(
            environment="production",
            secret_key=KEY,
            DATABASE_URL="postgresql+psycopg2://db/x",
            state_dir=tmp_path,
        )
    for name in REAL:
        assert f"REGJOBS_{name.upper()} is a placeholder" in str(info.value)


def test_an_unused_system_may_be_left_empty_a_used_one_not(tmp_path: Path) -> None:
    settings = production(tmp_path, step_mode="endpoints", platform_api_key="", cdn_api_key="")
    assert settings.outside_systems_used() == {"app_endpoints_api_key"}
    message = refused(tmp_path, step_mode="endpoints", app_endpoints_api_key="")
    assert "REGJOBS_APP_ENDPOINTS_API_KEY is empty" in message
    message = refused(tmp_path, platform_api_key=" ")
    assert "REGJOBS_PLATFORM_API_KEY is empty" in message


def test_development_keeps_the_stand_in_defaults(tmp_path: Path) -> None:
    assert Settings(state_dir=tmp_path).platform_api_key.get_secret_value().startswith("standin-")


def test_production_needs_a_secret_key_and_a_database(tmp_path: Path) -> None:
    assert "REGJOBS_SECRET_KEY must be set" in refused(tmp_path, secret_key=None)
    assert "DATABASE_URL must be set" in refused(tmp_path, DATABASE_URL=None)


def test_a_settings_error_does_not_print_what_it_was_given(tmp_path: Path) -> None:
    message = refused(tmp_path, cdn_api_key="standin-x")
    assert KEY not in message
    assert REAL["platform_api_key"] not in message


def test_the_secret_key_is_a_list_the_first_encrypts(tmp_path: Path) -> None:
    second = Fernet.generate_key().decode()
    settings = Settings(state_dir=tmp_path, secret_key=f" {KEY} , {second},")
    assert settings.fernet_keys() == [KEY.encode(), second.encode()]


@pytest.mark.parametrize(
    "value",
    ["not-a-key", f"{KEY},short", ","],
    ids=["not-a-key", "a-key-and-a-short-one", "commas"],
)
def test_a_bad_secret_key_is_refused_without_showing_it(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(state_dir=tmp_path, secret_key=value)
    assert "REGJOBS_SECRET_KEY" in str(info.value)
    assert KEY not in str(info.value)
    assert "not-a-key" not in str(info.value)


def test_development_generates_one_key_per_state_folder(tmp_path: Path) -> None:
    first = Settings(state_dir=tmp_path).fernet_keys()
    assert first == Settings(state_dir=tmp_path).fernet_keys()
    assert len(first) == 1
    Fernet(first[0])


def test_links_and_body_limits_have_defaults(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert settings.evidence_link_ttl_seconds == 24 * 3600
    assert settings.max_body_bytes == 256 * 1024


def test_headless_runs_launch_a_headless_shell_headed_ones_chromium(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Playwright's own browsers first (as Playwright launches them: a headless shell when
    headless), whatever Debian has; the setting over both."""
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path))
    shell = tmp_path / "chromium_headless_shell-1187/chrome-linux/headless_shell"
    chrome = tmp_path / "chromium-1187/chrome-linux/chrome"
    for path in (shell, chrome):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")

    assert Settings(state_dir=tmp_path).chromium_path() == str(shell)
    assert Settings(state_dir=tmp_path, browser_headless=False).chromium_path() == str(chrome)
    chosen = Settings(state_dir=tmp_path, chromium_executable="/opt/my/chrome")
    assert chosen.chromium_path() == "/opt/my/chrome"
    shell.unlink()  # then Debian's headless shell, where installed, before any full browser
    debian_shell = Path("/usr/bin/chromium-headless-shell")
    expected = str(debian_shell) if debian_shell.exists() else str(chrome)
    assert Settings(state_dir=tmp_path).chromium_path() == expected
