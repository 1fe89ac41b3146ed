"""The FastAPI application: `uvicorn api.main:app`."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.orchestrator import Orchestrator
from api.routes import jobs
from api.schemas import HealthPublic
from api.service import fail_jobs_without_heartbeat
from regjobs.auth import add_key, ensure_organisation
from regjobs.config import public_errors
from regjobs.db import get_engine, migrate, session_scope
from regjobs.settings import Environment, Settings, get_settings

logger = logging.getLogger("regjobs.api")


def ensure_dev_key(settings: Settings) -> str | None:
    """In development, the demo organisation's key: REGJOBS_DEV_API_KEY, else one kept in
    the state folder (made once)."""
    if settings.environment is not Environment.DEVELOPMENT:
        return None
    if settings.dev_api_key is not None:
        key: str | None = settings.dev_api_key.get_secret_value()
    else:
        path = settings.state_dir / "dev-api-key"
        key = path.read_text().strip() if path.exists() else None
    with session_scope() as session:
        org = ensure_organisation(session, settings.dev_organisation)
        key = add_key(session, organisation=org, key=key, label="development")
    if settings.dev_api_key is None:
        path = settings.state_dir / "dev-api-key"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key + "\n")
        path.chmod(0o600)
    return key


def _watch_leases(orchestrator: Orchestrator, stop: threading.Event) -> None:
    """Fail jobs whose worker is gone, whether or not anybody is looking at them."""
    while not stop.wait(orchestrator.settings.heartbeat_seconds):
        try:
            fail_jobs_without_heartbeat(orchestrator)
        except Exception:
            logger.exception("checking the jobs' leases failed; trying again")


def create_app(
    settings: Settings | None = None, orchestrator: Orchestrator | None = None
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate()
        ensure_dev_key(settings)
        app.state.orchestrator = orchestrator or Orchestrator(settings)
        stop = threading.Event()
        watcher = threading.Thread(
            target=_watch_leases,
            args=(app.state.orchestrator, stop),
            daemon=True,
            name="lease-watcher",
        )
        watcher.start()
        yield
        stop.set()
        watcher.join(timeout=10)
        app.state.orchestrator.close()

    app = FastAPI(
        title="registration-jobs",
        summary="Server-side restaurant registration jobs, run by Prefect.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(jobs.router)
    app.include_router(jobs.restaurants)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer echoes each error's input, which can be the whole body,
        # password included: answer with the errors alone.
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={"detail": public_errors(exc.errors())},
        )

    @app.get(
        "/healthz",
        response_model=HealthPublic,
        tags=["health"],
        responses={503: {"model": HealthPublic}},
    )
    def healthz(response: Response) -> HealthPublic:
        """200 once the database, Prefect and the deployment are all there; 503 otherwise."""
        try:
            with get_engine().connect() as connection:
                connection.execute(text("SELECT 1"))
            database = True
        except Exception:
            database = False
        prefect, deployment = app.state.orchestrator.healthy()
        ok = database and prefect and deployment
        if not ok:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return HealthPublic(
            status="ok" if ok else "degraded",
            database=database,
            prefect=prefect,
            deployment=deployment,
        )

    return app


app = create_app()
