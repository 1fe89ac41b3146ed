"""What a stack runs: the embedded default of `make run` (SQLite, one worker, Prefect's
server in one process) or the production shape (`Production`), and the settings of the
processes it starts (`StackConfig`; `deployments.stack` starts them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deployments import prefect_server
from regjobs.settings import get_settings

#: The pool name in prefect.yaml.
WORK_POOL = "registration-jobs"


#: A flow-run process's job-database pool, per engine (one writes, one reads): at most 2
#: connections, kept from the first use to the run's end, never one more. A call beyond
#: them waits for one (at most 30 s, not the API's 5): the job's writes take its row lock
#: in turn anyway. Opened for a step fan-out and closed at once (overflow, as before),
#: they cost PostgreSQL a new backend each: 7.7 sessions a job, 3.3 now (docs/figures.md,
#: "Against Prefect itself, thirteenth session"; one connection each made the walls
#: longer). At the API's size (10 kept) the flow runs of two workers, with the API
#: processes and Prefect's server and services, took all of PostgreSQL's 100 connections
#: in a burst of 200 jobs ("too many clients already").
FLOW_RUN_POOL = {
    "REGJOBS_DB_POOL_SIZE": "2",
    "REGJOBS_DB_MAX_OVERFLOW": "0",
    "REGJOBS_DB_POOL_TIMEOUT_SECONDS": "30",
}

#: The CPU priority (`nice`) of workers and their flow-run processes: when the cores are
#: busy, the API (a person waiting on every request) goes first and the flow runs (minutes
#: long in the background) take what is left; an idle machine runs them at full speed. The
#: systemd units say the same (`Nice=`). Measured: docs/figures.md.
FLOW_RUN_NICE = 5


@dataclass
class Production:
    """The production shape on one machine (docs/design.md, "The production shape"): the
    Prefect server and the job tables on PostgreSQL, Redis (`prefect-redis`) for Prefect's
    messaging, event ordering, cache and concurrency leases, the Prefect server's
    background services as a process of their own beside a webserver started with
    `--no-services`, and several workers. The API runs as `api_workers` processes behind one
    port (its reconciler leader-elected through PostgreSQL, as always). Prefect's API is
    closed (docs/design.md, "Prefect's API is closed"): the server starts through
    `deployments.prefect_server` (its auth, CSRF protection, CORS for the UI's origin, a
    private address), and every process of the stack is its client with `prefect_auth`."""

    #: Prefect's database (`postgresql+asyncpg://...`).
    prefect_database_url: str
    #: The job database (`postgresql+psycopg2://...`).
    database_url: str
    #: Redis for prefect-redis (`redis://host:port/db`).
    redis_url: str
    #: Workers polling the work pool (each with its warm processes).
    workers: int = 2
    #: Prefect webserver processes (`prefect server start --workers`).
    prefect_workers: int = 1
    #: Prefect's auth string (`user:password`): the server's PREFECT_SERVER_API_AUTH_STRING,
    #: every client's PREFECT_API_AUTH_STRING. Required: the shape refuses to start without.
    prefect_auth: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        prefect_server.check_auth(self.prefect_auth, prefect_server.CLIENT_AUTH)

    def env(self) -> dict[str, str]:
        """Every process's environment (the server's auth is added to the server's alone)."""
        return {
            prefect_server.CLIENT_AUTH: self.prefect_auth,
            "PREFECT_API_DATABASE_CONNECTION_URL": self.prefect_database_url,
            "DATABASE_URL": self.database_url,
            "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_REDIS_MESSAGING_URL": self.redis_url,
        }

    @property
    def worker_names(self) -> list[str]:
        return ["worker", *(f"worker-{n}" for n in range(2, self.workers + 1))]


@dataclass
class StackConfig:
    state_dir: Path
    api_port: int = 8000
    prefect_port: int = 4200
    standin_port: int = 8100
    #: The address Prefect's server listens on: loopback, or (production shape) a private
    #: address other machines reach it on (PREFECT_SERVER_API_HOST; never a wildcard).
    prefect_host: str = "127.0.0.1"
    #: Extra environment for every child (DATABASE_URL, REGJOBS_* settings...).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Serve the Prefect UI (operators want it; tests do not need it).
    prefect_ui: bool = True
    #: How often the worker asks for runs; Prefect's default makes a job wait ~10 s.
    poll_seconds: float = field(default_factory=lambda: get_settings().worker_poll_seconds)
    #: API processes behind the API port (`api.serve`); they elect one reconciler.
    api_workers: int = field(default_factory=lambda: get_settings().api_workers)
    #: Flow runs one worker runs at once (`prefect worker start --limit`); 0: no limit.
    #: Runs beyond it wait in the work pool as Scheduled, where any worker may take them.
    worker_limit: int = field(default_factory=lambda: get_settings().worker_limit)
    #: Warm flow-run processes kept beside each worker (`deployments.warm`); 0: every flow
    #: run starts a new interpreter (cold).
    warm_processes: int = field(default_factory=lambda: get_settings().warm_processes)
    #: The production shape (PostgreSQL, Redis, services apart, several workers); None:
    #: the embedded default (`make run`: SQLite, one worker, Prefect's server in one process).
    production: Production | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def prefect_url(self) -> str:
        return f"http://{self.prefect_host}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def standin_url(self) -> str:
        return f"http://127.0.0.1:{self.standin_port}"


def postgres_database(admin_url: str, name: str) -> str:
    """`name` on the PostgreSQL server of `admin_url`, created if it does not exist; its
    URL, with `admin_url`'s driver."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def production_from_env(env: Mapping[str, str], state_dir: Path) -> Production:
    """The production shape against this machine's PostgreSQL and Redis: the databases
    named by PREFECT_API_DATABASE_CONNECTION_URL and DATABASE_URL when set, else
    `regjobs_prefect` and `regjobs` on REGJOBS_PG_ADMIN_URL's server (created if missing);
    Redis at REGJOBS_REDIS_URL (redis://127.0.0.1:6379/0); Prefect's auth string from
    PREFECT_SERVER_API_AUTH_STRING / PREFECT_API_AUTH_STRING, else the state folder's
    (`prefect-auth`, generated once)."""
    from regjobs.db import LOCAL_POSTGRES_ADMIN_URL

    admin = env.get("REGJOBS_PG_ADMIN_URL", LOCAL_POSTGRES_ADMIN_URL)
    prefect_db = env.get("PREFECT_API_DATABASE_CONNECTION_URL") or postgres_database(
        admin, "regjobs_prefect"
    ).replace("+psycopg2", "+asyncpg")
    jobs_db = env.get("DATABASE_URL") or postgres_database(admin, "regjobs")
    return Production(
        prefect_database_url=prefect_db,
        database_url=jobs_db,
        redis_url=env.get("REGJOBS_REDIS_URL", "redis://127.0.0.1:6379/0"),
        workers=int(env.get("REGJOBS_WORKERS", "2")),
        prefect_auth=prefect_server.auth_string_for(env, state_dir)[0],
    )
