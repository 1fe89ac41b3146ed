"""Prefect's API in the production shape is closed (issue 19): the production shape on this
machine, started as an operator starts it (`python -m deployments.launcher --production`,
PostgreSQL and Redis), answers an outsider 401 (or 403, CSRF), runs jobs end to end with
its auth string, listens on loopback only, refuses a POST without a CSRF token, allows
cross-origin calls from the UI's own origin only, and its auth string is in no process's
command line, no log and neither database."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text

from benchmarks.throughput import empty_redis_db
from regjobs.db import scratch_postgres_database
from tests.e2e.test_launcher import Launched, launch, stop
from tests.helpers import create, own_accounts, steps_by_id, wait_for, watch_job

pytestmark = [pytest.mark.e2e]


@dataclass
class Closed:
    """The running production shape and what an insider knows of it."""

    launched: Launched
    prefect_db: str
    jobs_db: str
    auth: str

    @property
    def prefect_api(self) -> str:
        return str(self.launched.status()["prefect_api_url"])

    @property
    def prefect_origin(self) -> str:
        return self.prefect_api.removesuffix("/api")

    def insider(self) -> httpx.Client:
        """Prefect's API with the auth string (Basic) and a CSRF token of its own."""
        user, _, password = self.auth.partition(":")
        client = httpx.Client(base_url=self.prefect_api, auth=(user, password), timeout=30)
        client_id = str(uuid.uuid4())
        token = client.get("/csrf-token", params={"client": client_id})
        assert token.status_code == 200, token.text
        client.headers.update(
            {"Prefect-Csrf-Token": token.json()["token"], "Prefect-Csrf-Client": client_id}
        )
        return client


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory, pg_admin_url: str) -> Iterator[Closed]:
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=5).ping()
    except redis.RedisError as exc:
        pytest.fail(f"the production shape needs Redis on 127.0.0.1:6379 ({exc}); start it")
    state_dir = tmp_path_factory.mktemp("production") / "state"
    with contextlib.ExitStack() as resources:
        jobs_db = resources.enter_context(scratch_postgres_database(pg_admin_url, "rj_pauth"))
        prefect_db = resources.enter_context(
            scratch_postgres_database(pg_admin_url, "rj_pauth_prefect")
        )
        redis_url = resources.enter_context(empty_redis_db())
        env = {
            "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db.replace("+psycopg2", "+asyncpg"),
            "DATABASE_URL": jobs_db,
            "REGJOBS_REDIS_URL": redis_url,
            "REGJOBS_WORKERS": "1",
            "REGJOBS_WARM_PROCESSES": "1",
        }
        for name in ("PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"):
            assert name not in os.environ  # the launcher makes one in the state folder
        launched = launch(state_dir, "--production", **env)
        try:
            auth_file = state_dir / "prefect-auth"
            auth = auth_file.read_text().strip()
            yield Closed(launched, prefect_db, jobs_db, auth)
        finally:
            if launched.process.poll() is None:
                stop(launched)


def test_an_outsider_is_refused_and_an_insider_is_not(closed: Closed) -> None:
    mode = (closed.launched.state_dir / "prefect-auth").stat().st_mode & 0o777
    assert mode == 0o600, oct(mode)
    assert len(closed.auth) >= 24 and ":" in closed.auth

    insider = closed.insider()
    deployment = insider.get("/deployments/name/registration-job/registration-job")
    assert deployment.status_code == 200, deployment.text
    deployment_id = deployment.json()["id"]
    runs_before = insider.post("/flow_runs/count", json={}).json()
    csrf = {k: v for k, v in insider.headers.items() if k.lower().startswith("prefect-csrf")}
    user, _, password = closed.auth.partition(":")

    wrong = [
        None,
        httpx.BasicAuth(user, password[:-1] + ("x" if password[-1] != "x" else "y")),
        httpx.BasicAuth("admin", password),
        httpx.BasicAuth(user, ""),
    ]
    for auth in wrong:
        with httpx.Client(base_url=closed.prefect_api, auth=auth, timeout=30) as outsider:
            # Reads need the auth string, and so does the CSRF token every write needs.
            for path in (
                "/flow_runs/filter",
                f"/deployments/{deployment_id}",
                "/flows/",
                f"/csrf-token?client={uuid.uuid4()}",
                "/hello",
            ):
                answer = outsider.get(path)
                assert answer.status_code == 401, (path, answer.status_code)
            # Writes without a CSRF token stop at CSRF (403); with a valid token (as if one
            # leaked), at the auth string (401): listing every organisation's jobs, reading
            # artifacts, rerunning an ended job.
            writes: list[tuple[str, dict[str, Any]]] = [
                ("/flow_runs/filter", {}),
                ("/artifacts/filter", {}),
                ("/task_runs/filter", {}),
                (f"/deployments/{deployment_id}/create_flow_run", {"parameters": {}}),
            ]
            for path, body in writes:
                assert outsider.post(path, json=body).status_code == 403, path
                answer = outsider.post(path, json=body, headers=csrf)
                assert answer.status_code == 401, (path, answer.status_code, answer.text)
                assert answer.json() == {"exception_message": "Unauthorized"}
        # Not Basic: a bearer token of the auth string is not accepted either.
        bearer = {"Authorization": f"Bearer {closed.auth}", **csrf}
        answer = httpx.post(f"{closed.prefect_api}/flow_runs/filter", json={}, headers=bearer)
        assert answer.status_code == 401

    # Health probes stay open (Prefect exempts exactly GET /health and /ready).
    assert httpx.get(f"{closed.prefect_api}/health").status_code == 200
    # Nothing was created by any of that; the insider reads everything.
    assert insider.post("/flow_runs/count", json={}).json() == runs_before
    assert insider.post("/flow_runs/filter", json={"limit": 1}).status_code == 200
    assert insider.post("/artifacts/filter", json={"limit": 1}).status_code == 200


def test_a_post_without_a_csrf_token_is_refused(closed: Closed) -> None:
    user, _, password = closed.auth.partition(":")
    with httpx.Client(base_url=closed.prefect_api, auth=(user, password), timeout=30) as client:
        missing = client.post("/flow_runs/filter", json={})
        assert missing.status_code == 403
        assert missing.json() == {"detail": "Missing CSRF token."}
        forged = client.post(
            "/flow_runs/filter",
            json={},
            headers={"Prefect-Csrf-Token": "0" * 64, "Prefect-Csrf-Client": str(uuid.uuid4())},
        )
        assert forged.status_code == 403
    # The same POST with the token Prefect handed out for this client goes through.
    assert closed.insider().post("/flow_runs/filter", json={}).status_code == 200


def test_cross_origin_calls_only_from_the_ui_origin(closed: Closed) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{closed.prefect_api}/flow_runs/filter",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )

    ui = preflight(closed.prefect_origin)
    assert ui.status_code == 200
    assert ui.headers["access-control-allow-origin"] == closed.prefect_origin
    for origin in ("http://evil.example", "http://localhost:1", "null"):
        other = preflight(origin)
        assert other.status_code == 400, origin
        assert "access-control-allow-origin" not in other.headers
    simple = httpx.get(f"{closed.prefect_api}/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def _listening(pid: int) -> set[tuple[str, int]]:
    """The TCP sockets process `pid` listens on: (address, port), from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            (address, port), state, inode = fields[1].split(":"), fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # /proc prints each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, raw), int(port, 16)))
    return found


def test_prefect_listens_on_loopback_only(closed: Closed) -> None:
    status = closed.launched.status()
    port = int(status["prefect_api_url"].rsplit(":", 1)[1].split("/")[0])
    listening = _listening(int(status["children"]["prefect"]))
    assert listening == {("127.0.0.1", port)}, listening
    # Nor does any process of the machine listen on Prefect's port on every interface.
    everyone = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                everyone.add(address)
    assert everyone == {"0100007F"}, everyone


def _haystacks(closed: Closed) -> dict[str, bytes]:
    """Every process's command line, every file of the state folder (the processes' logs
    among them) but the auth string's own file, the launcher's output, and every row of
    Prefect's database and of the job database."""
    found: dict[str, bytes] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found[f"cmdline {entry.name}"] = (entry / "cmdline").read_bytes()
    state = closed.launched.state_dir
    for file in state.rglob("*"):
        if file.is_file() and file != state / "prefect-auth":
            found[f"file {file.relative_to(state)}"] = file.read_bytes()
    found["launcher output"] = "\n".join(closed.launched.output).encode()
    for name, url in (("Prefect", closed.prefect_db), ("jobs", closed.jobs_db)):
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                for table in inspect(engine).get_table_names():
                    rows = connection.execute(text(f'SELECT t::text FROM "{table}" t')).scalars()
                    found[f"{name} table {table}"] = "\n".join(rows).encode()
        finally:
            engine.dispose()
    return found


def test_jobs_run_with_the_auth_string_which_is_nowhere_else(closed: Closed) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    restaurant = f"rest-{uuid.uuid4().hex[:8]}"
    sections = own_accounts(restaurant)
    sections["restaurant"]["name"] = "Café Zoë 東京 <script>x</script>"
    job_id = create(closed.launched.api, restaurant, **sections)
    job = watch_job(closed.launched.api, job_id, timeout=180).job
    assert job["status"] == "completed", job
    assert {s["status"] for s in steps_by_id(job).values()} <= {"completed", "skipped"}

    # Prefect's own client (the one the API, workers and flow runs use) with the auth
    # string: it reads the run, and fetches its CSRF token for the POST by itself.
    updates = {PREFECT_API_URL: closed.prefect_api, PREFECT_API_AUTH_STRING: closed.auth}
    with temporary_settings(updates=updates), get_client(sync_client=True) as client:
        run_id = uuid.UUID(job["flow_run_id"])
        run = wait_for(
            lambda: (run := client.read_flow_run(run_id)).state_type == StateType.COMPLETED and run,
            timeout=30,
            what="the flow run to be Completed in Prefect",
        )
        assert run.parameters["job_id"] == job_id
        assert client.read_flow_runs(limit=5)

    # Every process of the stack is a client with the auth string in its environment
    # (where it belongs: readable by its own user only) ...
    children = closed.launched.status()["children"]
    needle = f"PREFECT_API_AUTH_STRING={closed.auth}".encode()
    for name in ("api", "worker", "worker-warm", "prefect-services"):
        environ = Path(f"/proc/{children[name]}/environ").read_bytes().split(b"\0")
        assert needle in environ, name
    server = Path(f"/proc/{children['prefect']}/environ").read_bytes().split(b"\0")
    assert f"PREFECT_SERVER_API_AUTH_STRING={closed.auth}".encode() in server

    # ... and in no command line, file, log, or row of either database.
    password = closed.auth.partition(":")[2]
    secrets = {
        closed.auth.encode(),
        password.encode(),
        base64.b64encode(closed.auth.encode()),  # the Basic header's value
    }
    haystacks = _haystacks(closed)
    assert sum(1 for name in haystacks if name.startswith("cmdline")) > 10
    assert any(name.startswith("Prefect table log") for name in haystacks)
    leaks = {name for name, data in haystacks.items() for s in secrets if s in data}
    assert not leaks, sorted(leaks)


def test_the_operators_clis_log_in_with_it(closed: Closed, tmp_path: Path) -> None:
    """The `prefect` CLI with PREFECT_API_AUTH_STRING in its environment (never its argv),
    and `regjobs doctor`, which finds the launcher's auth string by itself."""
    restaurant = f"rest-{uuid.uuid4().hex[:8]}"
    job_id = create(closed.launched.api, restaurant, **own_accounts(restaurant))
    assert watch_job(closed.launched.api, job_id, timeout=180).job["status"] == "completed"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "REGJOBS_"))}
    prefect = {**clean, "PREFECT_HOME": str(tmp_path), "PREFECT_API_URL": closed.prefect_api}

    def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *args],
            env={**prefect, "COLUMNS": "300", **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    listed = cli("prefect", "flow-run", "ls", "--limit", "50", PREFECT_API_AUTH_STRING=closed.auth)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert job_id[:8] in listed.stdout
    refused = cli("prefect", "flow-run", "ls")
    assert refused.returncode != 0 and job_id[:8] not in refused.stdout
    assert "401" in refused.stdout + refused.stderr

    doctor = cli("regjobs.cli", "doctor", REGJOBS_STATE_DIR=str(closed.launched.state_dir))
    prefect_row = next(line for line in doctor.stdout.splitlines() if "Prefect server" in line)
    assert " ok " in prefect_row, doctor.stdout
    assert any("deployment" in line and " ok " in line for line in doctor.stdout.splitlines())
    wrong = cli(
        "regjobs.cli",
        "doctor",
        REGJOBS_STATE_DIR=str(closed.launched.state_dir),
        PREFECT_API_AUTH_STRING=closed.auth + "-wrong",
    )
    assert wrong.returncode == 1
    assert "refused this client (401)" in wrong.stdout, wrong.stdout
    for run in (listed, refused, doctor, wrong):
        assert closed.auth not in run.stdout + run.stderr


def test_the_ui_asks_for_it_and_works_with_it(closed: Closed) -> None:
    """The UI (Prefect's own, served by the server) asks for the auth string, refuses a
    wrong one, and with the right one reads through CSRF and the auth: no 401 or 403."""
    from playwright.sync_api import Response, sync_playwright

    from regjobs.settings import get_settings
    from tasks.browser import CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=get_settings().chromium_path(), args=CHROMIUM_ARGS
        )
        answers: list[Response] = []

        def record(response: Response) -> None:
            answers.append(response)

        try:
            for given, works in ((closed.auth[:-1], False), (closed.auth, True)):
                answers.clear()
                page = browser.new_context().new_page()
                page.goto(closed.prefect_origin)
                page.wait_for_url("**/login**")
                field = page.locator("input[type=password]")
                page.on("response", record)

                def api(response: Response, path: str, method: str = "GET") -> bool:
                    return response.url.startswith(closed.prefect_api + path) and (
                        response.request.method == method
                    )

                if works:
                    with page.expect_response(
                        lambda r: api(r, "/flow_runs/filter", "POST"), timeout=30_000
                    ) as first:
                        field.fill(given)
                        field.press("Enter")
                    assert first.value.status == 200
                    page.wait_for_load_state("networkidle")
                    assert "/login" not in page.url
                    assert any(api(r, "/csrf-token") and r.status == 200 for r in answers)
                    # Of the UI's calls with the auth string (the login page's own checks
                    # before it have none), none is refused, writes (CSRF) included.
                    refused = [
                        (r.request.method, r.url, r.status)
                        for r in answers
                        if r.status in (401, 403) and "authorization" in r.request.headers
                    ]
                    assert not refused, refused
                    assert any("authorization" in r.request.headers for r in answers)
                else:
                    with page.expect_response(
                        lambda r: api(r, "/admin/version"), timeout=30_000
                    ) as check:
                        field.fill(given)
                        field.press("Enter")
                    assert check.value.status == 401
                    page.wait_for_load_state("networkidle")
                    assert "/login" in page.url and field.count() == 1
                    assert not any(api(r, "/flow_runs/filter", "POST") for r in answers)
                page.context.close()
        finally:
            browser.close()
