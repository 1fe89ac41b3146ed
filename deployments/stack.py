"""Start and stop the whole system on one machine: Prefect server, work pool and deployment,
worker, stand-in and API. Used by `make run` (the launcher) and by the end-to-end tests, so
both exercise the same start-up path.

Every child runs in its own process group and is stopped by that group's id. Processes the
children start in sessions of their own (the worker's flow-run processes, their Chromium)
are found by a marker every process of the stack inherits in its environment
(`REGJOBS_STACK_ID`), so nothing this started outlives it and nothing it did not start is
touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from regjobs.settings import PROJECT_DIR, get_settings

PYTHON = sys.executable
#: The pool name in prefect.yaml.
WORK_POOL = "registration-jobs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


#: The job-database pool of a flow-run process (and of its worker): 2 connections kept, up to
#: 4 more while its steps run at once. A flow run holds what its pool keeps until it ends;
#: at the API's size (10 kept) the flow runs of two workers, with the API processes and
#: Prefect's server and services, took all of PostgreSQL's 100 connections in a burst of
#: 200 jobs ("too many clients already").
FLOW_RUN_POOL = {"REGJOBS_DB_POOL_SIZE": "2", "REGJOBS_DB_MAX_OVERFLOW": "4"}

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
    port (its reconciler leader-elected through PostgreSQL, as always)."""

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

    def env(self) -> dict[str, str]:
        return {
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
        return f"http://127.0.0.1:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def standin_url(self) -> str:
        return f"http://127.0.0.1:{self.standin_port}"


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]


#: The environment variable that marks every process of one stack.
MARKER = "REGJOBS_STACK_ID"


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.children: dict[str, Child] = {}
        self.logs_dir = config.state_dir / "logs"
        #: Inherited by every process this stack causes, wherever it runs.
        self.stack_id = uuid.uuid4().hex
        #: The environment each worker was started with (its warm processes share it).
        self._worker_env: dict[str, dict[str, str]] = {}

    # ------------------------------------------------------------------ environment

    def env(self) -> dict[str, str]:
        c = self.config
        prefect_home = c.state_dir / "prefect"
        env = {
            **os.environ,
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_API_URL": c.prefect_api_url,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(c.prefect_port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true" if c.prefect_ui else "false",
            "PREFECT_UI_API_URL": c.prefect_api_url,
            "PREFECT_WORKER_QUERY_SECONDS": str(c.poll_seconds),
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
            "PREFECT_RUNNER_POLL_FREQUENCY": str(max(1, int(c.poll_seconds))),
            "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
            # A slot's lease is at least 60 s; the server frees expired ones this often
            # (Prefect's default is 15 s), so a dead process's browser slot is back sooner.
            "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "5",
            # Slot leases kept on disk: they outlive a Prefect server crash, and the server
            # frees a dead holder's slot when its lease runs out, instead of forgetting the
            # lease and counting the slot taken for good (the default keeps them in memory).
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": (
                "prefect.server.concurrency.lease_storage.filesystem"
            ),
            "REGJOBS_STATE_DIR": str(c.state_dir),
            MARKER: self.stack_id,
            "REGJOBS_PLATFORM_API_URL": f"{c.standin_url}/platform",
            "REGJOBS_ONBOARDING_URL": f"{c.standin_url}/onboarding",
            "REGJOBS_CDN_URL": f"{c.standin_url}/cdn",
            "REGJOBS_PORTAL_URL": f"{c.standin_url}/portal",
            "REGJOBS_APP_ENDPOINTS_URL": c.standin_url,
            "REGJOBS_PREFECT_UI_URL": c.prefect_url,
            "REGJOBS_PUBLIC_API_URL": c.api_url,
            "PYTHONUNBUFFERED": "1",
            # `python` is this environment's (the work pool's command runs `python -m ...`).
            "PATH": os.pathsep.join([str(Path(PYTHON).parent), os.environ.get("PATH", "")]),
            "REGJOBS_WARM_PROCESSES": str(c.warm_processes),
        }
        if c.production is not None:
            env.update(c.production.env())
        if "PREFECT_API_SSL_CERT_FILE" not in env and "PREFECT_API_SSL_CERT_FILE" not in c.env:
            env["PREFECT_API_SSL_CERT_FILE"] = str(self.loopback_ca())
        env.update(c.env)
        return env

    def loopback_ca(self) -> Path:
        """A CA file of one certificate for Prefect's clients: every Prefect client (a
        flow run makes five or so) builds a TLS context from PREFECT_API_SSL_CERT_FILE,
        certifi's bundle by default, ~20 ms of CPU each to parse 140 certificates, though
        the stack's Prefect API is plain HTTP on loopback and never uses it. (Set the
        variable to a real bundle for a Prefect API over HTTPS.)"""
        path = self.config.state_dir / "prefect-loopback-ca.pem"
        if not path.exists():
            import certifi

            bundle = Path(certifi.where()).read_text()
            end = "-----END CERTIFICATE-----"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                bundle[bundle.index("-----BEGIN CERTIFICATE-----") :].split(end)[0] + end + "\n"
            )
        return path

    # ------------------------------------------------------------------ processes

    def spawn(
        self, name: str, args: list[str], env: Mapping[str, str] | None = None, *, nice: int = 0
    ) -> Child:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        previous = self.children.pop(name, None)
        if previous is not None:  # it exited: this starts it again
            previous.log.close()
        log = open(self.logs_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(
            args,
            cwd=PROJECT_DIR,
            env={**self.env(), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if nice:
            # Before it has started anything of its own (Popen returns once it has exec'd;
            # the interpreter is still starting), so its children inherit it.
            os.setpriority(os.PRIO_PROCESS, process.pid, os.getpriority(os.PRIO_PROCESS, 0) + nice)
        child = Child(name, process, log)
        self.children[name] = child
        return child

    def run(self, args: list[str], *, timeout: float = 120) -> str:
        """Run a command to completion in the stack's environment; its output on failure."""
        result = subprocess.run(
            args,
            cwd=PROJECT_DIR,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def stop_child(self, name: str, *, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        self.stop_children([name], sig=sig, timeout=timeout)

    def stop_children(
        self, names: list[str], *, sig: int = signal.SIGTERM, timeout: float = 15
    ) -> None:
        """Signal each child's process group, wait for all, then kill what is left. A
        worker goes with its warm processes."""
        names = [*names, *(f"{n}-warm" for n in names if n.startswith("worker"))]
        children = [self.children.pop(n) for n in names if n in self.children]
        for child in children:
            _signal_group(child.process, sig)
        deadline = time.monotonic() + timeout
        for child in children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            finally:
                # The leader if it is still there, and whatever it left behind in its group
                # (flow-run processes, for one): whatever happened while waiting.
                _signal_group(child.process, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(timeout=10)
                child.log.close()

    def stop(self, *, grace: float = 5) -> None:
        """Everything this stack caused, within about 15 s: the API and the workers first (so
        no new work starts), then what they left in sessions of their own (flow-run
        processes, their browsers: SIGTERM, then SIGKILL after `grace` seconds), then the
        rest."""
        workers = [n for n in self.children if n == "api" or n.startswith("worker")]
        self.stop_children(workers, timeout=grace)
        self.stop_leftovers(grace=grace)
        self.stop_children(list(self.children), timeout=grace)
        self.stop_leftovers(grace=grace)

    def leftovers(self) -> list[int]:
        """Processes that carry this stack's marker and are not its children's leaders."""
        return [pid for pid in marked_processes(self.stack_id) if pid != os.getpid()]

    def stop_leftovers(self, *, grace: float = 5) -> None:
        pids = self.leftovers()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = [pid for pid in pids if alive(pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    # ------------------------------------------------------------------ services

    def wait_until(self, name: str, check: Callable[[], bool], *, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            child = self.children.get(name)
            if child is not None and child.process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {child.process.returncode}; see "
                    f"{self.logs_dir / (name + '.log')}\n{self.tail(name)}"
                )
            if check():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout} s\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def start_prefect(self) -> None:
        """Prefect's server; in the production shape its webserver only (`--no-services`,
        `prefect_workers` processes), its background services apart (`start_services`)."""
        (self.config.state_dir / "prefect").mkdir(parents=True, exist_ok=True)
        production = self.config.production
        self.spawn(
            "prefect",
            [
                PYTHON,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.config.prefect_port),
                *(["--no-services"] if production else []),
                *(
                    ["--workers", str(production.prefect_workers)]
                    if production and production.prefect_workers > 1
                    else []
                ),
            ],
        )
        self.wait_until(
            "prefect", lambda: _ok(f"{self.config.prefect_api_url}/health"), timeout=120
        )

    def start_services(self) -> None:
        """Prefect's background services (scheduler, event persister, triggers, lease
        repossessor, ...) as one process of their own (production shape)."""
        before = self.log_count("prefect-services", "Starting services")
        self.spawn("prefect-services", [PYTHON, "-m", "prefect", "server", "services", "start"])
        self.wait_until(
            "prefect-services",
            lambda: self.log_count("prefect-services", "Starting services") > before,
            timeout=60,
        )

    def set_up_deployment(self) -> None:
        self.run([PYTHON, "-m", "deployments.setup"])

    def flow_run_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        """A worker's environment, which its flow runs inherit: `env` over FLOW_RUN_POOL
        (unless the stack's own environment sets those)."""
        pool = {k: v for k, v in FLOW_RUN_POOL.items() if k not in self.config.env}
        return {**pool, **(env or {})}

    def warm_socket(self, worker: str) -> str:
        """The Unix socket of a worker's warm-process pool (short: at most 108 bytes)."""
        return f"/tmp/regjobs-{self.stack_id[:12]}-{worker}.sock"

    def start_warm_pool(self, worker: str = "worker", env: Mapping[str, str] | None = None) -> None:
        """The warm flow-run processes of a worker (`deployments.warm`), started with the
        worker's own environment (as last given), so they run what the worker would."""
        if env is not None:
            self._worker_env[worker] = dict(env)
        worker_env = self.flow_run_env(self._worker_env.get(worker))
        self.spawn(
            f"{worker}-warm",
            [PYTHON, "-m", "deployments.warm", "pool"],
            {**worker_env, "REGJOBS_WARM_SOCKET": self.warm_socket(worker)},
            nice=FLOW_RUN_NICE,
        )

    def start_worker(self, name: str = "worker", env: Mapping[str, str] | None = None) -> Child:
        """A process worker on the pool, with its warm flow-run processes beside it; `env`
        overrides settings for it and its flow runs."""
        if self.config.warm_processes and f"{name}-warm" not in self.children:
            self.start_warm_pool(name, env or {})
        env = {**self.flow_run_env(env), "REGJOBS_WARM_SOCKET": self.warm_socket(name)}
        before = self.log_count(name, "started!")
        child = self.spawn(
            name,
            [
                PYTHON,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                WORK_POOL,
                "--type",
                "process",
                "--name",
                f"{name}-{os.getpid()}",
                *(["--limit", str(self.config.worker_limit)] if self.config.worker_limit else []),
            ],
            env,
            nice=FLOW_RUN_NICE,
        )
        self.wait_until(name, lambda: self.log_count(name, "started!") > before, timeout=60)
        return child

    def start_standin(self) -> None:
        self.spawn(
            "standin",
            [
                PYTHON,
                "-m",
                "standin",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.config.standin_port),
            ],
        )
        self.wait_until("standin", lambda: _ok(f"{self.config.standin_url}/_control/effects"))

    def migrate(self) -> None:
        """The job database's schema, once, before any API process starts."""
        self.run([PYTHON, "-m", "regjobs.db", "upgrade"])

    def start_api(
        self,
        env: Mapping[str, str] | None = None,
        *,
        name: str = "api",
        port: int | None = None,
        workers: int | None = None,
    ) -> Child:
        """The API (`name`, on `port`; the configured port by default) as `workers` processes
        (the configured number by default); every API process takes part in electing the
        one reconciler."""
        port = port or self.config.api_port
        workers = workers or self.config.api_workers
        child = self.spawn(
            name,
            [
                PYTHON,
                "-m",
                "api.serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            {"REGJOBS_AUTO_MIGRATE": "false", **(env or {})},
        )
        self.wait_until(name, lambda: _ok(f"http://127.0.0.1:{port}/healthz"))
        return child

    def log_count(self, name: str, text: str) -> int:
        path = self.logs_dir / f"{name}.log"
        return path.read_text(errors="replace").count(text) if path.exists() else 0

    @property
    def worker_names(self) -> list[str]:
        production = self.config.production
        return production.worker_names if production else ["worker"]

    def start_all(self) -> None:
        """Everything, in dependency order; stops what it started if a part fails."""
        try:
            self.start_prefect()
            if self.config.production:
                self.start_services()
            self.set_up_deployment()
            self.start_standin()
            for name in self.worker_names:
                self.start_worker(name)
            self.migrate()
            self.start_api()
        except BaseException:
            self.stop()
            raise

    def dev_api_key(self) -> str:
        explicit = self.env().get("REGJOBS_DEV_API_KEY")
        if explicit:
            return explicit
        return (self.config.state_dir / "dev-api-key").read_text().strip()


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


def production_from_env(env: Mapping[str, str]) -> Production:
    """The production shape against this machine's PostgreSQL and Redis: the databases
    named by PREFECT_API_DATABASE_CONNECTION_URL and DATABASE_URL when set, else
    `regjobs_prefect` and `regjobs` on REGJOBS_PG_ADMIN_URL's server (created if missing);
    Redis at REGJOBS_REDIS_URL (redis://127.0.0.1:6379/0)."""
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
    )


def processes_with_env(name: str, value: str) -> list[int]:
    """Processes whose environment (as they started) carries `name=value`."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def marked_processes(stack_id: str) -> list[int]:
    """Live processes whose environment carries `REGJOBS_STACK_ID=<stack_id>`."""
    return [pid for pid in processes_with_env(MARKER, stack_id) if alive(pid)]


def chromium_processes(pids: Iterable[int]) -> list[int]:
    """Of `pids` (e.g. a system's `marked_processes`), Chromium's: browsers, their helpers
    (zygotes, renderers, GPU) and crash reporters. Told by the executable, not the command
    line: Chromium's helpers rewrite theirs."""
    return [pid for pid in pids if "chrom" in _executable(pid)]


def browser_processes(chromium: Iterable[int]) -> list[int]:
    """Of Chromium's processes, the browsers: main processes (started by a Playwright
    driver; every helper is started by a Chromium process, the crash reporter is another
    program)."""
    return [
        pid
        for pid in chromium
        if _executable(pid) in CHROMIUM_EXECUTABLES
        and _executable(_parent(pid)) not in CHROMIUM_EXECUTABLES
    ]


#: Chromium's own executable (not its crash reporter), as Debian and Playwright name it.
CHROMIUM_EXECUTABLES = frozenset({"chromium", "chrome", "headless_shell"})


def _executable(pid: int) -> str:
    """The file name of the program a process runs ("" if it is gone)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def alive(pid: int) -> bool:
    """Running (a zombie is not: it waits only to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
