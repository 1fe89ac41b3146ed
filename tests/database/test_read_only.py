"""No read handler calls Prefect or writes to the database, and no request handler calls
Prefect at all: checked in the code (imports) and at run time (the API over HTTP with
Prefect's client made to fail and every SQL statement recorded)."""

from __future__ import annotations

import ast
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import event

from deployments.stack import free_port
from regjobs import ledger
from regjobs.config import ExecutionConfig
from regjobs.db import engine_for, transaction
from regjobs.models import Organisation
from regjobs.settings import PROJECT_DIR, get_settings
from tests.helpers import full_config

pytestmark = pytest.mark.database

#: Modules that serve requests; everything they import from the project is checked too.
REQUEST_PATH = ["api.routes.jobs", "api.reads", "api.events", "api.deps"]
#: What talks to Prefect: only the reconciler may reach it.
PREFECT_DOORS = {
    "api.dispatch",
    "api.orchestrator",
    "api.reconcile",
    "api.reconciler",
    "prefect.client.orchestration",
    "prefect.deployments",
    "prefect.flow_runs",
}


def first_party_imports(module: str) -> set[str]:
    path = PROJECT_DIR / Path(*module.split(".")).with_suffix(".py")
    if not path.exists():
        path = PROJECT_DIR / Path(*module.split(".")) / "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_request_handler_module_reaches_prefect() -> None:
    seen: set[str] = set()
    todo = list(REQUEST_PATH)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        imports = first_party_imports(module)
        assert not imports & PREFECT_DOORS, (module, imports & PREFECT_DOORS)
        todo += [
            m
            for m in imports
            if m.split(".")[0] in ("api", "regjobs")
            and (
                (PROJECT_DIR / Path(*m.split("."))).with_suffix(".py").exists()
                or (PROJECT_DIR / Path(*m.split(".")) / "__init__.py").exists()
            )
        ]
    assert "regjobs.ledger.rows" in seen  # the walk did follow the project's own imports


class Recorder:
    """Every SQL statement sent, by engine, while recording."""

    def __init__(self) -> None:
        self.on = False
        self.statements: list[tuple[str, str]] = []

    def __call__(self, name: str) -> Any:
        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if self.on:
                self.statements.append((name, statement.strip().split()[0].upper()))

        return record


@pytest.fixture
def api_in_process(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The API app on a real socket in this process, its reconciler off, Prefect's client
    made to fail, and every statement on both engines recorded."""
    monkeypatch.setenv("REGJOBS_RECONCILER", "false")
    get_settings.cache_clear()
    import prefect.client.orchestration as orchestration

    def no_prefect(*_: Any, **__: Any) -> Any:
        raise AssertionError("a request handler called Prefect")

    monkeypatch.setattr(orchestration, "get_client", no_prefect)
    monkeypatch.setattr(orchestration.SyncPrefectClient, "__init__", no_prefect)
    monkeypatch.setattr(orchestration.PrefectClient, "__init__", no_prefect)

    from api.main import create_app

    recorder = Recorder()
    url = get_settings().sqlalchemy_url
    engines = {"write": engine_for(url), "read": engine_for(url, read_only=True)}
    listeners = {name: recorder(name) for name in engines}
    for name, engine in engines.items():
        event.listen(engine, "before_cursor_execute", listeners[name])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", recorder
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        for name, engine in engines.items():
            event.remove(engine, "before_cursor_execute", listeners[name])
        get_settings.cache_clear()


def test_reads_only_read_and_never_call_prefect(
    api_in_process: tuple[str, Recorder], stack_env: dict[str, str]
) -> None:
    base, recorder = api_in_process
    headers = {"Authorization": f"Bearer {stack_env['REGJOBS_DEV_API_KEY']}"}

    def make(*, session: Any) -> str:
        org = session.query(Organisation).filter_by(name=get_settings().dev_organisation).one()
        job = ledger.create_job(
            session=session,
            organisation_id=org.id,
            restaurant_id=f"ro-{uuid.uuid4().hex[:8]}",
            config=ExecutionConfig.model_validate(full_config()),
            auto_start=False,
        )
        ledger.cancel_job(session=session, job_id=job.id)
        return job.id

    job_id = transaction(make)
    reads = [
        f"/api/registration-jobs/{job_id}",
        f"/api/registration-jobs/{job_id}/progress",
        f"/api/registration-jobs/{uuid.uuid4()}/progress",  # 404, answered by the routes
        "/api/registration-jobs",
        "/api/registration-jobs?status=cancelled&limit=1",
        f"/api/registration-jobs/{job_id}/events",
        "/api/restaurants/nobody/registration-jobs/active",
    ]
    recorder.on = True
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for path in reads:
            assert client.get(path).status_code in (200, 404), path
        etag = client.get(f"/api/registration-jobs/{job_id}").headers["etag"]
        assert (
            client.get(
                f"/api/registration-jobs/{job_id}", headers={"If-None-Match": etag}
            ).status_code
            == 304
        )
        assert httpx.get(f"{base}/api/registration-jobs/{job_id}").status_code == 401
    recorder.on = False

    kinds = {kind for _, kind in recorder.statements}
    assert kinds <= {"SELECT", "BEGIN", "ROLLBACK"}, recorder.statements
    assert "SELECT" in kinds
    assert {engine for engine, _ in recorder.statements} == {"read"}
