"""The FastAPI application: `uvicorn api.main:app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from api import reads, service
from api.bodylimit import BodyLimit
from api.events import EventHub
from api.headers import HeaderRules
from api.leader import lease_report
from api.orchestrator import Orchestrator
from api.reconciler import Reconciler
from api.routes import jobs, page
from api.schemas import HealthPublic
from regjobs.auth import (
    DEVELOPMENT_LABEL,
    DISABLE_DEVELOPMENT_KEYS,
    active_development_keys,
    add_key,
    ensure_organisation,
)
from regjobs.commands import upgrade
from regjobs.config import public_errors
from regjobs.db import get_read_engine, session_scope
from regjobs.private import private_dir, write_private
from regjobs.settings import Environment, Settings, get_settings

logger = logging.getLogger("regjobs.api")
#: Retry-After of a request the job database could not serve (a restart takes seconds).
DATABASE_AWAY_RETRY_AFTER = 2


def _log_to_stderr() -> None:
    """The API's own lines (the reconciler's, above all) beside uvicorn's."""
    ours = logging.getLogger("regjobs")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)


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
    try:
        key = _development_key(settings, key)
    except IntegrityError:
        # The API's processes start at once: another inserted the organisation or the key
        # between this one's look and its insert. The second try finds them.
        key = _development_key(settings, key)
    if settings.dev_api_key is None:
        path = settings.state_dir / "dev-api-key"
        write_private(private_dir(path.parent) / path.name, (key + "\n").encode())
    return key


def _development_key(settings: Settings, key: str | None) -> str:
    """The demo organisation and its development key (`key`, or a new one), made if missing."""
    with session_scope() as session:
        org = ensure_organisation(session, settings.dev_organisation)
        return add_key(session, organisation=org, key=key, label=DEVELOPMENT_LABEL)


class DevelopmentKeysActive(RuntimeError):
    """Production with a development key still active: the API does not start."""


def refuse_development_keys(settings: Settings) -> None:
    """In production, refuse to start while any development key is active (they open
    nothing there, but one left active is a door someone forgot to close)."""
    if settings.environment is not Environment.PRODUCTION:
        return
    with session_scope() as session:
        active = [key.prefix for key in active_development_keys(session)]
    if active:
        raise DevelopmentKeysActive(
            f"REGJOBS_ENVIRONMENT=production, but {len(active)} development API key(s) "
            f"are active ({', '.join(p + '…' for p in active)}); disable them with "
            f"`{DISABLE_DEVELOPMENT_KEYS}` and start again"
        )


def create_app(
    settings: Settings | None = None, orchestrator: Orchestrator | None = None
) -> FastAPI:
    settings = settings or get_settings()
    _log_to_stderr()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.auto_migrate:
            upgrade()
        refuse_development_keys(settings)
        ensure_dev_key(settings)
        reads.warm()
        service.warm()
        app.state.events = EventHub(settings)
        reconciler = None
        if settings.reconciler:
            reconciler = Reconciler(settings, orchestrator or Orchestrator(settings))
            reconciler.start()
        app.state.reconciler = reconciler
        yield
        await app.state.events.close()
        if reconciler is not None:
            reconciler.stop()

    # /docs (Swagger UI) and /redoc with their scripts served by the API itself, not a CDN:
    # they work on a machine without the internet.
    app = FastAPIOffline(
        title="registration-jobs",
        summary="Server-side restaurant registration jobs, run by Prefect.",
        version="0.2.0",
        lifespan=lifespan,
    )
    app.include_router(jobs.router)
    app.include_router(jobs.restaurants)
    app.include_router(page.router)
    # Added first, so CORS (added after it) wraps it.
    app.add_middleware(HeaderRules)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "If-None-Match",
                "Last-Event-ID",
            ],
            expose_headers=["ETag"],
            max_age=600,
        )

    # Added last, so it is the outermost: no body is read past the limit, by anything.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _database_away(_: Request, exc: Exception) -> JSONResponse:
        # The job database is unreachable (restarting, failing over) or has no connection
        # to spare: nothing was done, so the caller may send the same request again.
        logger.warning("the job database is unavailable: %s", str(exc).splitlines()[0])
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content={"detail": "the job database is unavailable; try again shortly"},
            headers={"Retry-After": str(DATABASE_AWAY_RETRY_AFTER)},
        )

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
        operation_id="get_health",
        response_model=HealthPublic,
        tags=["health"],
        responses={503: {"model": HealthPublic}},
    )
    def healthz(request: Request, response: Response) -> HealthPublic:
        """200 once the database answers and the reconciler (in whichever API process
        leads) last found Prefect and the deployment; 503 otherwise. Never asks Prefect."""
        try:
            with get_read_engine().connect() as connection:
                connection.execute(text("SELECT 1"))
            database = True
            report = lease_report(settings)
        except Exception:
            database, report = False, None
        prefect = bool(report and report.get("prefect"))
        deployment = bool(report and report.get("deployment"))
        ok = database and prefect and deployment
        if not ok:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        reconciler: Reconciler | None = request.app.state.reconciler
        return HealthPublic(
            status="ok" if ok else "degraded",
            database=database,
            prefect=prefect,
            deployment=deployment,
            reconciler=reconciler.role if reconciler else "off",
            reconciler_cycles=reconciler.cycles if reconciler else 0,
        )

    return app


app = create_app()
