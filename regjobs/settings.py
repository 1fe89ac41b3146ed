"""One settings object, read from the environment (and `.env`)."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from uuid import UUID

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_DIR = Path(__file__).resolve().parent.parent


class StepMode(StrEnum):
    DIRECT = "direct"
    ENDPOINTS = "endpoints"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="REGJOBS_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        # A settings error must not print what it was given: the secret key, API keys.
        hide_input_in_errors=True,
    )

    environment: Environment = Environment.DEVELOPMENT
    state_dir: Path = PROJECT_DIR / ".state"
    #: SQLAlchemy URL of the job tables; SQLite under the state folder unless set.
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    #: Connections each process keeps to the job database, and how many more it may open
    #: under load; a request waits at most `db_pool_timeout_seconds` for one. Reads hold a
    #: connection only for their query, never while waiting on anything else.
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    #: Fernet keys for secrets at rest, comma-separated: the first encrypts, every one
    #: decrypts (rotation: put the new key first, run `regjobs db reencrypt`,
    #: then drop the old one). In development a key is generated into the state folder.
    secret_key: SecretStr | None = None
    #: How long a signed link to a screenshot opens it (the link names its expiry).
    evidence_link_ttl_seconds: float = Field(default=24 * 3600.0, gt=0)
    #: How long a job view token (`regjobs.viewtokens`) opens its job when the request for
    #: it does not say.
    view_token_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=7 * 24 * 3600)
    #: The largest request body the API reads; a longer one is answered 413 unread.
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    #: Refused logins per email (from every organisation's jobs) within the window, past
    #: which a create whose config carries that email answers 429 with Retry-After: each
    #: refusal counts for `login_refusal_window_seconds` (5 in 15 minutes by default).
    login_refusal_limit: int = Field(default=5, ge=1)
    login_refusal_window_seconds: float = Field(default=900.0, gt=0)

    step_mode: StepMode = StepMode.DIRECT
    #: Outside systems. Every one defaults to the stand-in on loopback.
    platform_api_url: str = "http://127.0.0.1:8100/platform"
    platform_api_key: SecretStr = SecretStr("standin-platform-key")
    onboarding_url: str = "http://127.0.0.1:8100/onboarding"
    onboarding_api_key: SecretStr = SecretStr("standin-onboarding-key")
    cdn_url: str = "http://127.0.0.1:8100/cdn"
    cdn_api_key: SecretStr = SecretStr("standin-cdn-key")
    portal_url: str = "http://127.0.0.1:8100/portal"
    #: The app's existing per-step endpoints (`/api/registration/...`, `/menus/...`).
    app_endpoints_url: str = "http://127.0.0.1:8100"
    app_endpoints_api_key: SecretStr = SecretStr("standin-app-key")

    #: Seconds one HTTP request to an outside system may take before it counts as a timeout.
    http_timeout_seconds: float = 30.0
    #: Retries after the first attempt, for every step, in place of the catalogue's own
    #: (3 each: SPEC's 4 attempts); unset, each step keeps its catalogue value.
    step_retries: int | None = Field(default=None, ge=0, le=10)
    #: First retry delay for every step, in place of the catalogue's; each further retry
    #: doubles it, with jitter.
    retry_base_seconds: float | None = Field(default=None, ge=0)
    retry_jitter_factor: float = Field(default=0.5, ge=0)
    #: How often the image-upload step polls the CDN batch.
    cdn_poll_seconds: float = Field(default=1.0, gt=0)
    #: Multiplies every catalogue timeout (tests shrink it; 1.0 in production).
    step_timeout_scale: float = Field(default=1.0, gt=0)

    #: Browser steps: the Chromium to launch (`chromium_path`: by default a headless shell).
    chromium_executable: str | None = None
    browser_headless: bool = True
    #: How many browser steps may run at once across every worker (a Prefect global
    #: concurrency limit, created by the deployment set-up).
    browser_limit: int = Field(default=2, ge=1)
    browser_limit_name: str = "registration-browser"
    #: Seconds a browser step waits for a slot before that attempt fails (retryably), so a
    #: step never waits for ever (REGJOBS_SLOT_WAIT_LIMIT; 15 min).
    slot_wait_limit: float = Field(default=900.0, gt=0)
    #: How long Prefect may count more browser slots taken than live holders hold before
    #: the reconciler reports it (longer than a slot's lease, 60 s, so a dead holder's lease
    #: has been freed by Prefect itself by then); nothing is freed by count.
    slot_leak_seconds: float = Field(default=90.0, gt=0)
    #: A job waiting this long for its flow run to start is marked stalled (no worker?).
    queue_stall_seconds: float = Field(default=600.0, gt=0)
    #: How long a job waits for a person's corrected input (a step `action_required`, its
    #: flow run Suspended in Prefect) before it fails with `next_action: fix_config`
    #: (REGJOBS_INPUT_TIMEOUT, seconds; 7 days by default).
    input_timeout: float = Field(default=7 * 24 * 3600.0, gt=0)
    #: A release's work queue no worker has polled for this long has no live worker: the
    #: jobs waiting on it say so, naming the release and the way out (`regjobs.release`).
    release_worker_gone_seconds: float = Field(default=30.0, gt=0)
    #: Waiting for one element or one navigation in the portal.
    browser_action_timeout_seconds: float = Field(default=15.0, gt=0)
    #: Taking the screenshot of a failed attempt: its own bound, not the action's, since it
    #: is taken when the page (or the machine) was too slow for an action.
    browser_screenshot_timeout_seconds: float = Field(default=30.0, gt=0)
    #: Where operators reach the API (links to evidence in Prefect artifacts).
    public_api_url: str = "http://127.0.0.1:8000"

    #: The flow-run process renews the job's lease this often; a job whose lease is older
    #: than `worker_lost_seconds` has lost its worker (killed with it, machine gone, hung).
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    worker_lost_seconds: float = Field(default=20.0, gt=0)
    #: How often a flow-run process checks that it still holds its job (a read): a cancel or
    #: a takeover stops its running steps within this, even with Prefect down.
    ownership_check_seconds: float = Field(default=1.0, gt=0)
    #: A cancelled flow run that began is given this long to see the cancel in the ledger
    #: and stop itself before Prefect is asked to stop its process.
    cancel_grace_seconds: float = Field(default=15.0, ge=0)
    #: The job's summary and progress artifacts are written at most this often while the
    #: job runs, counted from its first ask (always at its end, and before the run
    #: suspends for a person): each write is a Prefect API call and a database row,
    #: a third of what a short job added over bare Prefect (docs/figures.md, "Against
    #: Prefect itself"). 0: after every batch of step ends.
    artifact_seconds: float = Field(default=2.0, ge=0)

    #: Flow runs a worker started by `make run` (or the tests) runs at once; beyond it they
    #: wait in the work pool, Scheduled. Each holds a Chromium while it has browser steps
    #: left, so this bounds a machine's memory. 0: no limit. Workers started by hand take
    #: the same bound as `prefect worker start --limit N`.
    worker_limit: int = Field(default=4, ge=0)
    #: How often a worker started by `make run` (or the tests) asks the work pool for flow
    #: runs (`PREFECT_WORKER_QUERY_SECONDS`; Prefect's default is 10 s). A new job waits on
    #: average half of it; each poll is one query of the Prefect server (docs/figures.md).
    worker_poll_seconds: float = Field(default=0.25, gt=0)

    #: The reconciler (one per deployment, elected among the API processes): how often it
    #: reads Prefect and dispatches, how long its lease lasts without renewal (a standby
    #: takes over after that), and whether this process takes part.
    reconcile_seconds: float = Field(default=1.0, gt=0)
    reconciler_lease_seconds: float = Field(default=5.0, gt=0)
    reconciler: bool = True
    #: With several run requests waiting, the dispatcher starts once none has come for
    #: this long (at most a cycle later): a burst of creates is answered first.
    dispatch_settle_seconds: float = Field(default=0.25, ge=0)
    #: Run requests handed to Prefect per cycle.
    dispatch_batch: int = Field(default=50, ge=1)
    #: Flow runs of one organisation in Prefect at once (handed over, waiting in the work
    #: pool or running); the rest of its backlog waits in the job database, where dispatch
    #: is round robin between organisations. Unset: the worker's limit less one, so that
    #: one organisation's backlog always leaves a worker slot for another's job (with
    #: several workers, set it to their slots in all less the ones kept for others).
    org_flow_runs: int | None = Field(default=None, ge=1)
    #: Active (pending or in progress) jobs one organisation may have at once; a create or
    #: retry beyond it is answered 429 with Retry-After. 1,000: a chain onboarding every
    #: restaurant it has at once stays under it; a runaway client does not queue without end.
    org_active_job_limit: int = Field(default=1000, ge=1)

    #: Server-Sent Events: a comment line this often keeps proxies from closing an idle
    #: stream; new events are looked for this often.
    sse_keepalive_seconds: float = Field(default=15.0, gt=0)
    sse_poll_seconds: float = Field(default=0.1, gt=0)
    #: Event streams one API key may hold open at once in one API process; one more is 429
    #: (a tab needs one stream; a backend watching its organisation's jobs, one per job).
    sse_streams_per_key: int = Field(default=100, ge=1)
    #: Connections one API process serves at once (uvicorn's `limit_concurrency`): a request
    #: beyond it is answered 503 at once. Kept below the process's open-file limit (raised
    #: to its hard limit at start) less a reserve for the database and logs.
    api_max_connections: int = Field(default=2000, ge=1)
    #: A connection that has not sent a whole request head (line and headers) this long
    #: after it opened, or after the first byte of its next request, is closed.
    api_header_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Browser origins allowed to call the API (CORS), e.g. `https://app.example.com`;
    #: comma-separated or a JSON list. None by default.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Upgrade the job database's schema when the API starts (development). With several
    #: API processes, run `regjobs db upgrade` once instead and set this false.
    auto_migrate: bool = True

    #: Warm flow-run processes each worker keeps waiting (`deployments.warm`): a flow run
    #: starts in one that has imported Prefect and the flow already. 0: a new interpreter
    #: per flow run, as Prefect's process worker does by itself.
    warm_processes: int = Field(default=2, ge=0)
    #: API processes `make run` starts behind the API port (uvicorn workers).
    api_workers: int = Field(default=2, ge=1)

    #: Prefect deployment the API starts flow runs of ("flow-name/deployment-name").
    deployment: str = "registration-job/registration-job"
    work_pool: str = "registration-jobs"
    prefect_ui_url: str | None = None
    #: A Prefect notification block (its id) the set-up's example automation sends to when
    #: a job fails or stalls; without one the automation only records that it fired.
    alert_block_id: UUID | None = None

    dev_api_key: SecretStr | None = None
    dev_organisation: str = "demo-organisation"

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("secret_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        from cryptography.fernet import Fernet

        keys = _split_keys(value.get_secret_value())
        if not keys:
            raise ValueError("REGJOBS_SECRET_KEY is empty: give one Fernet key or several")
        for number, key in enumerate(keys, 1):
            try:
                Fernet(key)
            except (ValueError, TypeError):
                raise ValueError(
                    f"REGJOBS_SECRET_KEY: key {number} of {len(keys)} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes; make one with "
                    "`python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'`)"
                ) from None
        return value

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> Settings:
        if self.environment is not Environment.PRODUCTION:
            return self
        if self.secret_key is None:
            raise ValueError("REGJOBS_SECRET_KEY must be set in production")
        if self.database_url is None:
            raise ValueError("DATABASE_URL must be set in production")
        problems = []
        used = self.outside_systems_used()
        for name, key in self.outside_system_keys().items():
            value = key.get_secret_value()
            variable = f"REGJOBS_{name.upper()}"
            if value.startswith(PLACEHOLDER_KEY_PREFIX):
                problems.append(f"{variable} is a placeholder ({PLACEHOLDER_KEY_PREFIX}...)")
            elif not value.strip() and name in used:
                problems.append(f"{variable} is empty, and step mode {self.step_mode} uses it")
        if problems:
            raise ValueError(
                "production needs the outside systems' real keys: "
                + "; ".join(problems)
                + " (a system the step mode does not use may be set empty)"
            )
        return self

    def outside_system_keys(self) -> dict[str, SecretStr]:
        """Each outside system's key, by setting name."""
        return {
            "platform_api_key": self.platform_api_key,
            "onboarding_api_key": self.onboarding_api_key,
            "cdn_api_key": self.cdn_api_key,
            "app_endpoints_api_key": self.app_endpoints_api_key,
        }

    def outside_systems_used(self) -> frozenset[str]:
        """The keys (setting names) the step mode needs."""
        if self.step_mode is StepMode.ENDPOINTS:
            return frozenset({"app_endpoints_api_key"})
        return frozenset({"platform_api_key", "onboarding_api_key", "cdn_api_key"})

    def chromium_path(self) -> str | None:
        """The Chromium to launch: the setting; else, headless, a headless shell (Chromium's
        headless mode as a program of its own, as Playwright itself launches headless: less
        than half a full Chromium's CPU a launch, docs/figures.md), Playwright's or
        Debian's; else Playwright's own Chromium or Debian's; None lets Playwright decide.
        Never downloads a browser."""
        if self.chromium_executable:
            return self.chromium_executable
        full = (_playwright_browser(PLAYWRIGHT_CHROMIUM), "/usr/bin/chromium")
        shell = (_playwright_browser(PLAYWRIGHT_SHELL), "/usr/bin/chromium-headless-shell")
        for candidate in (*shell, *full) if self.browser_headless else full:
            if candidate and Path(candidate).exists():
                return candidate
        return None

    @property
    def org_flow_run_share(self) -> int | None:
        """`org_flow_runs`, or the worker's limit less one (None: workers without a limit,
        whose every run handed over runs at once)."""
        if self.org_flow_runs is not None:
            return self.org_flow_runs
        return max(1, self.worker_limit - 1) if self.worker_limit else None

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            # Heroku-style URLs name the scheme "postgres://"; SQLAlchemy wants the dialect.
            if self.database_url.startswith("postgres://"):
                return "postgresql+psycopg2://" + self.database_url.removeprefix("postgres://")
            return self.database_url
        return f"sqlite:///{self.state_dir / 'regjobs.db'}"

    def fernet_keys(self) -> list[bytes]:
        """The keys for secrets at rest, the one that encrypts first; in development one key
        generated once per state folder."""
        if self.secret_key is not None:
            return [key.encode() for key in _split_keys(self.secret_key.get_secret_value())]
        return [self._generated_key()]

    def _generated_key(self) -> bytes:
        return _generated_key(self.state_dir.resolve())


@lru_cache
def _generated_key(state_dir: Path) -> bytes:
    """The development key of a state folder, made by the first process that needs it and
    read once per process (it never changes once written)."""
    from cryptography.fernet import Fernet

    from regjobs.private import private_dir, publish_private

    path = state_dir / "secret.key"
    if not path.exists():
        # 0600 from its creation and whole before it takes the name; another process may
        # have won the race, and then its key is the one kept.
        publish_private(private_dir(state_dir) / "secret.key", Fernet.generate_key())
    return path.read_bytes().strip()


#: What the default outside-system keys (the stand-in's) start with; refused in production.
PLACEHOLDER_KEY_PREFIX = "standin-"


def _split_keys(value: str) -> list[str]:
    return [key.strip() for key in value.split(",") if key.strip()]


#: Where Playwright installs its Chromium and its headless shell (by version).
PLAYWRIGHT_CHROMIUM = ("chromium-*/chrome-linux*/chrome",)
PLAYWRIGHT_SHELL = (
    "chromium_headless_shell-*/chrome-linux*/headless_shell",
    "chromium_headless_shell-*/chrome-headless-shell-linux*/chrome-headless-shell",
)


def _playwright_browser(patterns: tuple[str, ...]) -> str | None:
    """Where Playwright's own browser would be, without starting anything."""
    base = Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH", Path.home() / ".cache/ms-playwright"))
    found = sorted(path for pattern in patterns for path in base.glob(pattern))
    return str(found[-1]) if found else None


@lru_cache
def get_settings() -> Settings:
    return Settings()
