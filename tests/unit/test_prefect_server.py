"""`deployments.prefect_server`: Prefect's server refuses to start open (no auth string, a
wildcard or public address, CSRF off, CORS `*`), the auth string is made once, 0600 from its
first byte, and the systemd units start the server through the check. The production shape
running closed: tests/e2e/test_prefect_auth.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from deployments import prefect_server
from deployments.prefect_server import Refused
from deployments.stack_config import Production
from regjobs.private import publish_private
from regjobs.settings import PROJECT_DIR

AUTH = "regjobs:Zq9-harbour-2024-" + "x" * 10
SYSTEMD = PROJECT_DIR / "deployments" / "systemd"


@pytest.fixture(scope="module", autouse=True)
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    global PREFECT_HOME
    PREFECT_HOME = str(tmp_path_factory.mktemp("prefect-home"))


PREFECT_HOME = ""


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m deployments.prefect_server ARGS` with a clean Prefect environment plus
    `env` (the auth string goes in the environment, as in production, never argv)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    assert PREFECT_HOME
    return subprocess.run(
        [sys.executable, "-m", "deployments.prefect_server", *args],
        cwd=PROJECT_DIR,
        env={**clean, "PREFECT_HOME": PREFECT_HOME, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PREFECT_SERVER_API_AUTH_STRING": None}, "PREFECT_SERVER_API_AUTH_STRING is not set"),
        ({"PREFECT_SERVER_API_AUTH_STRING": "  "}, "PREFECT_SERVER_API_AUTH_STRING is not set"),
        ({"PREFECT_SERVER_API_AUTH_STRING": "admin:pass"}, "too short"),
        ({"PREFECT_SERVER_API_HOST": "0.0.0.0"}, "PREFECT_SERVER_API_HOST='0.0.0.0' listens"),
        ({"PREFECT_SERVER_API_HOST": "::"}, "listens on every interface"),
        ({"PREFECT_SERVER_API_HOST": "8.8.8.8"}, "not a loopback or private address"),
        ({"PREFECT_SERVER_API_HOST": "169.254.1.1"}, "not a loopback or private address"),
        ({"PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "false"}, "keeps CSRF protection on"),
        ({"PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "0"}, "keeps CSRF protection on"),
        ({"PREFECT_SERVER_CORS_ALLOWED_ORIGINS": "*"}, "allow the UI's own origin only"),
        ({"PREFECT_SERVER_CORS_ALLOWED_ORIGINS": "http://ui:4200, *"}, "own origin only"),
    ],
)
def test_the_server_refuses_to_start_open(env: dict[str, str | None], named: str) -> None:
    given = {"PREFECT_SERVER_API_AUTH_STRING": AUTH, **env}
    result = run("check", **{k: v for k, v in given.items() if v is not None})
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "refusing to start Prefect's server: " in result.stderr
    assert named in result.stderr
    assert AUTH not in result.stdout + result.stderr


def test_start_and_services_refuse_without_the_auth_string() -> None:
    for args in (("start", "--port", "1", "--no-services"), ("services",)):
        result = run(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "PREFECT_SERVER_API_AUTH_STRING is not set" in result.stderr


def test_the_checked_settings_are_what_it_serves_with() -> None:
    result = run(
        "check",
        PREFECT_SERVER_API_AUTH_STRING=AUTH,
        PREFECT_SERVER_API_HOST="10.1.2.3",
        PREFECT_SERVER_API_PORT="4300",
    )
    assert result.returncode == 0, result.stderr
    assert "PREFECT_SERVER_API_HOST=10.1.2.3" in result.stdout
    assert "PREFECT_SERVER_CSRF_PROTECTION_ENABLED=true" in result.stdout
    # CORS for the UI's own origin, here the server's own address.
    assert "PREFECT_SERVER_CORS_ALLOWED_ORIGINS=http://10.1.2.3:4300" in result.stdout
    assert AUTH not in result.stdout + result.stderr
    behind_proxy = run(
        "check",
        PREFECT_SERVER_API_AUTH_STRING=AUTH,
        PREFECT_UI_URL="https://prefect.internal.example/",
    )
    assert "PREFECT_SERVER_CORS_ALLOWED_ORIGINS=https://prefect.internal.example" in (
        behind_proxy.stdout
    )
    # The address comes from the checked setting, not from --host.
    sneaky = run("start", "--host", "0.0.0.0", PREFECT_SERVER_API_AUTH_STRING=AUTH)
    assert sneaky.returncode == 2 and "not --host" in sneaky.stderr


def test_new_auth_writes_an_owner_only_file_once(tmp_path: Path) -> None:
    target = tmp_path / "prefect-auth.env"
    made = run("new-auth", str(target))
    assert made.returncode == 0, made.stderr
    assert target.stat().st_mode & 0o777 == 0o600
    lines = target.read_text().splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [
        "PREFECT_SERVER_API_AUTH_STRING",
        "PREFECT_API_AUTH_STRING",
    ]
    server, client = (line.split("=", 1)[1] for line in lines)
    assert server == client and server.startswith("regjobs:") and len(server) >= 40
    assert server not in made.stdout + made.stderr
    again = run("new-auth", str(target))
    assert again.returncode == 2 and "exists" in again.stderr
    assert target.read_text().splitlines() == lines
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left


def test_private_files_are_owner_only_from_the_first_byte_and_made_once(tmp_path: Path) -> None:
    old = os.umask(0)  # a permissive umask changes nothing: the mode is given to open()
    try:
        path = tmp_path / "state" / "prefect-auth"
        results: list[str] = []

        def make() -> None:
            results.append(prefect_server.state_auth_string(path.parent))

        threads = [threading.Thread(target=make) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        os.umask(old)
    assert len(set(results)) == 1 and len(results) == 8
    assert path.stat().st_mode & 0o777 == 0o600
    assert prefect_server.state_auth_string(path.parent) == results[0]
    assert sorted(p.name for p in path.parent.iterdir()) == ["prefect-auth"]
    assert not publish_private(path, b"other\n")
    assert path.read_text().strip() == results[0]


def test_the_auth_string_comes_from_the_environment_or_the_state_folder(
    tmp_path: Path,
) -> None:
    for name in ("PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"):
        assert prefect_server.auth_string_for({name: AUTH}, tmp_path) == (AUTH, None)
    both = {"PREFECT_API_AUTH_STRING": AUTH, "PREFECT_SERVER_API_AUTH_STRING": AUTH}
    assert prefect_server.auth_string_for(both, tmp_path) == (AUTH, None)
    assert not (tmp_path / "prefect-auth").exists()
    with pytest.raises(Refused, match="differ"):
        prefect_server.auth_string_for(
            {**both, "PREFECT_SERVER_API_AUTH_STRING": AUTH + "-other"}, tmp_path
        )
    with pytest.raises(Refused, match="PREFECT_API_AUTH_STRING is too short"):
        prefect_server.auth_string_for({"PREFECT_API_AUTH_STRING": "a:b"}, tmp_path)
    generated, file = prefect_server.auth_string_for({}, tmp_path)
    assert file == tmp_path / "prefect-auth"
    assert prefect_server.auth_string_for({}, tmp_path) == (generated, file)


def test_the_production_shape_refuses_to_start_without_an_auth_string() -> None:
    with pytest.raises(Refused, match="PREFECT_API_AUTH_STRING is not set"):
        Production("postgresql+asyncpg://p", "postgresql://j", "redis://r")
    shape = Production("postgresql+asyncpg://p", "postgresql://j", "redis://r", prefect_auth=AUTH)
    assert shape.env()["PREFECT_API_AUTH_STRING"] == AUTH
    assert AUTH not in repr(shape)


def test_the_launcher_refuses_a_wildcard_address(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deployments.launcher", "--production"],
        cwd=PROJECT_DIR,
        env={
            **os.environ,
            "REGJOBS_STATE_DIR": str(tmp_path),
            "PREFECT_SERVER_API_HOST": "0.0.0.0",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "PREFECT_SERVER_API_HOST='0.0.0.0'" in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing was started


def test_the_systemd_units_start_prefect_closed() -> None:
    def unit(name: str) -> list[str]:
        return [line for line in (SYSTEMD / name).read_text().splitlines() if "=" in line]

    server = unit("regjobs-prefect-server.service")
    start = [line for line in server if line.startswith("ExecStart=")]
    assert start == [
        "ExecStart=/opt/registration-jobs/current/.venv/bin/python -m deployments.prefect_server "
        "start --port 4200 --no-services"
    ]
    services = unit("regjobs-prefect-services.service")
    assert (
        "ExecStart=/opt/registration-jobs/current/.venv/bin/python -m deployments.prefect_server "
        + ("services")
        in services
    )
    # Every process that serves or calls Prefect's API has the auth string's file.
    for name in (
        "regjobs-prefect-server.service",
        "regjobs-prefect-services.service",
        "regjobs-api@.service",
        "regjobs-worker@.service",
        "regjobs-warm@.service",
    ):
        lines = unit(name)
        assert "EnvironmentFile=/etc/registration-jobs/prefect-auth.env" in lines, name
        assert not any("AUTH_STRING" in line for line in lines if not line.startswith("#"))
    assert not any("0.0.0.0" in line for line in server + services)
