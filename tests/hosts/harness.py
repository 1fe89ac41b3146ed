"""The production shape across five test hosts (tests/hosts/net.py), each running the units
of deployments/systemd (tests/hosts/units.py) configured by addresses and secrets alone:

- control: PostgreSQL (a cluster of its own: its own data folder, on the host's address),
  Redis, Prefect's webserver and its services (`regjobs-prefect-server`,
  `regjobs-prefect-services`), the stand-in for the outside systems;
- worker-1, worker-2: `regjobs-warm@VERSION` and `regjobs-worker@VERSION`: a worker of the
  release, its warm processes, its own state folder, Chromium for the browser steps;
- api-1, api-2: `regjobs-api@1`, one API process each (they elect one reconciler).

Every unit runs from one release of this checkout (`python -m deployments.release make
--working-tree`, layered over this checkout's environment), made under the system's own
folder in place of /opt/registration-jobs, with `current` pointing at it.

`regjobs-db-upgrade` runs once (on api-1) and `python -m deployments.setup` once (on
control) before the API and workers start. The settings files the units read
(`/etc/registration-jobs/{regjobs,prefect,prefect-auth}.env`) are written per host.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from cryptography.fernet import Fernet

from deployments.pids import browser_processes, chromium_processes
from deployments.prefect_server import new_auth_string
from regjobs.settings import PROJECT_DIR
from tests.hosts import units
from tests.hosts.net import FOLDER_PREFIX, Host, Network

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/bin"))
#: Addresses' last octet.
OCTETS = {"control": 10, "worker-1": 21, "worker-2": 22, "api-1": 31, "api-2": 32}
WORKERS = ("worker-1", "worker-2")
APIS = ("api-1", "api-2")
PG_PORT, REDIS_PORT, PREFECT_PORT, STANDIN_PORT, API_PORT = 5432, 6379, 4200, 8100, 8000
#: The browser limit across all hosts.
BROWSER_LIMIT = 2
#: What skews a host's clock: a folder with a `sitecustomize` every Python process there
#: imports at its start (tests/hosts/clock/sitecustomize.py).
CLOCK_DIR = Path(__file__).parent / "clock"
#: Each host's clock against the control host's (PostgreSQL, Redis, Prefect's server) and
#: this machine's: hosts' clocks are never quite in step, and every test here runs so
#: (test_clock_skew.py checks it and the rules clocks touch).
CLOCKS = {"worker-1": 2.0, "worker-2": -2.0, "api-1": -2.0, "api-2": 2.0}


@dataclass
class Proc:
    host: str
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class HostSystem:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX)))
    net: Network = field(default_factory=Network)
    procs: dict[tuple[str, str], Proc] = field(default_factory=dict)
    secret_key: str = field(default_factory=lambda: Fernet.generate_key().decode())
    prefect_auth: str = field(default_factory=new_auth_string, repr=False)
    step_mode: str = "endpoints"
    #: Per-host extra environment, over the settings files.
    host_env: dict[str, dict[str, str]] = field(default_factory=dict)
    api_key: str = ""
    #: More settings in every host's regjobs.env (what an operator may set there).
    settings: dict[str, str] = field(default_factory=dict)
    #: The release every host runs (its version; `make_release`).
    release: str = ""
    #: Each host's clock skew in seconds (libfaketime); hosts not named keep the true time.
    clocks: dict[str, float] = field(default_factory=lambda: dict(CLOCKS))

    # ------------------------------------------------------------------ addresses

    def host(self, name: str) -> Host:
        return self.net.hosts[name]

    def addr(self, name: str) -> str:
        return self.host(name).address

    @property
    def database_url(self) -> str:
        return f"postgresql+psycopg2://postgres@{self.addr('control')}:{PG_PORT}/regjobs"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.addr('control')}:{PREFECT_PORT}/api"

    @property
    def standin_url(self) -> str:
        return f"http://{self.addr('control')}:{STANDIN_PORT}"

    def api_url(self, name: str) -> str:
        return f"http://{self.addr(name)}:{API_PORT}"

    @property
    def opt(self) -> Path:
        """This system's /opt/registration-jobs: `releases/VERSION` and `current`."""
        return self.root / "opt"

    @property
    def current(self) -> Path:
        return self.opt / "current"

    def make_release(self) -> None:
        """A release of this checkout (uncommitted changes included), as an operator makes
        one, with `current` pointing at it."""
        from deployments import release

        made = release.make(
            PROJECT_DIR,
            "HEAD",
            self.opt / "releases",
            working_tree=True,
            base_env=PROJECT_DIR / ".venv",
        )
        self.release = made.version
        self.current.symlink_to(made.folder)

    def state(self, host: str) -> Path:
        path = self.root / host
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ settings files

    def env_files(self, host: str) -> dict[str, dict[str, str]]:
        """What an operator writes into /etc/registration-jobs on `host`: addresses and
        secrets."""
        control = self.addr("control")
        standin = self.standin_url
        regjobs = {
            "REGJOBS_ENVIRONMENT": "production",
            "DATABASE_URL": self.database_url,
            "REGJOBS_SECRET_KEY": self.secret_key,
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "REGJOBS_STATE_DIR": str(self.state(host)),
            "PREFECT_HOME": str(self.state(host) / "prefect"),
            "REGJOBS_STEP_MODE": self.step_mode,
            "REGJOBS_BROWSER_LIMIT": str(BROWSER_LIMIT),
            "REGJOBS_WARM_PROCESSES": "1",
            "REGJOBS_PLATFORM_API_URL": f"{standin}/platform",
            "REGJOBS_PLATFORM_API_KEY": "hosts-platform-key",
            "REGJOBS_ONBOARDING_URL": f"{standin}/onboarding",
            "REGJOBS_ONBOARDING_API_KEY": "hosts-onboarding-key",
            "REGJOBS_CDN_URL": f"{standin}/cdn",
            "REGJOBS_CDN_API_KEY": "hosts-cdn-key",
            "REGJOBS_PORTAL_URL": f"{standin}/portal",
            "REGJOBS_APP_ENDPOINTS_URL": standin,
            "REGJOBS_APP_ENDPOINTS_API_KEY": "hosts-app-key",
            "REGJOBS_PUBLIC_API_URL": self.api_url("api-1"),
            "REGJOBS_PREFECT_UI_URL": f"http://{control}:{PREFECT_PORT}",
            "REGJOBS_API_WORKERS": "1",
            # Every worker's slots (the units' --limit 4) but one (README, "Across hosts").
            "REGJOBS_ORG_FLOW_RUNS": str(len(WORKERS) * 4 - 1),
            "PYTHONUNBUFFERED": "1",
            **self.settings,
        }
        prefect = {
            "PREFECT_SERVER_API_HOST": control,
            "PREFECT_HOME": str(self.state(host) / "prefect"),
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_API_DATABASE_CONNECTION_URL": (
                f"postgresql+asyncpg://postgres@{control}:{PG_PORT}/prefect"
            ),
            "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_REDIS_MESSAGING_URL": f"redis://{control}:{REDIS_PORT}/0",
            "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "5",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
        auth = {
            "PREFECT_SERVER_API_AUTH_STRING": self.prefect_auth,
            "PREFECT_API_AUTH_STRING": self.prefect_auth,
        }
        return {"regjobs.env": regjobs, "prefect.env": prefect, "prefect-auth.env": auth}

    # ------------------------------------------------------------------ processes

    def spawn(
        self,
        host: str,
        name: str,
        command: list[str],
        env: Mapping[str, str],
        nice: int = 0,
        cwd: str | Path = PROJECT_DIR,
    ) -> Proc:
        logs = self.state(host) / "logs"
        logs.mkdir(mode=0o700, exist_ok=True)
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop)
        full = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.state(host)),
            "LANG": "C.UTF-8",
            **env,
            **self.host_env.get(host, {}),
        }
        process = subprocess.Popen(
            [*self.host(host).exec_prefix(), *command],
            cwd=cwd,
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if nice:
            os.setpriority(os.PRIO_PROCESS, process.pid, nice)
        proc = Proc(host, name, process, log)
        self.procs[(host, name)] = proc
        return proc

    def unit(self, host: str, unit: str, instance: str = "1") -> Proc:
        """Start `unit` on `host` as systemd would: its command, its Environment= over its
        EnvironmentFile= contents, its Nice=, in its WorkingDirectory=."""
        runtime = self.state(host) / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        spec = units.read(
            unit, opt=str(self.opt), instance=instance, host=host, runtime_dir=str(runtime)
        )
        files = self.env_files(host)
        env: dict[str, str] = {}
        for name in spec.env_files:
            env.update(files[name])
        env.update(spec.env)
        return self.spawn(
            host, f"{unit}{instance}", spec.command, env, spec.nice, spec.cwd or PROJECT_DIR
        )

    def run_unit(self, host: str, unit: str, *, timeout: float = 180) -> str:
        """A oneshot unit (or a command with a unit's environment) to completion."""
        proc = self.unit(host, unit)
        try:
            code = proc.process.wait(timeout=timeout)
        finally:
            proc.log.close()
            del self.procs[(host, proc.name)]
        out = (self.state(host) / "logs" / f"{proc.name}.log").read_text(errors="replace")
        if code != 0:
            raise RuntimeError(f"{unit} on {host} exited {code}:\n{out[-3000:]}")
        return out

    def run(self, host: str, command: list[str], env_file: str = "regjobs.env") -> str:
        """A one-off command on `host` with its settings file (an operator's shell there, in
        the current release's folder)."""
        files = self.env_files(host)
        env = {
            "PATH": f"{self.current / '.venv' / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.state(host)),
            **files[env_file],
            **files["prefect-auth.env"],
            **self.host_env.get(host, {}),
        }
        result = subprocess.run(
            [*self.host(host).exec_prefix(), *command],
            cwd=self.current,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command} on {host}: {result.stdout}\n{result.stderr}")
        return result.stdout

    def stop(self, host: str, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        proc = self.procs.pop((host, name), None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.process.pid, sig)
        try:
            proc.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.process.pid, signal.SIGKILL)
            proc.process.wait(timeout=10)
        proc.log.close()

    def forget(self, host: str) -> None:
        """The host's processes are gone (killed with it): reap them, close their logs."""
        for key in [k for k in self.procs if k[0] == host]:
            proc = self.procs.pop(key)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.process.wait(timeout=10)
            proc.log.close()

    def log(self, host: str, name: str) -> str:
        path = self.state(host) / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs.values():
                if proc.process.poll() is not None and proc.host != "control":
                    pass
            found = check()
            if found:
                return found
            time.sleep(0.2)
        tails = "\n".join(
            f"--- {h}/{n}\n{self.log(h, n)[-1500:]}" for (h, n) in list(self.procs)[-4:]
        )
        raise TimeoutError(f"{what} not ready after {timeout} s\n{tails}")

    # ------------------------------------------------------------------ the control host

    def start_postgres(self) -> None:
        data = self.state("control") / "pg"
        if not (data / "PG_VERSION").exists():
            data.mkdir(mode=0o700, exist_ok=True)
            shutil.chown(self.root, "postgres")
            shutil.chown(self.state("control"), "postgres")
            shutil.chown(data, "postgres")
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            with (data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.net.gateway.rsplit('.', 1)[0]}.0/24 trust\n")
        self.spawn(
            "control",
            "postgres",
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "postgres"),
                "-D",
                str(data),
                "-c",
                f"listen_addresses={self.addr('control')}",
                "-c",
                f"port={PG_PORT}",
                "-c",
                f"unix_socket_directories={data}",
                "-c",
                "max_connections=200",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                # A host cut off holds its connections (and their locks: the reconciler's
                # advisory lock, a row mid-write) until the server sees it gone: README,
                # "Across hosts".
                "-c",
                "tcp_keepalives_idle=5",
                "-c",
                "tcp_keepalives_interval=2",
                "-c",
                "tcp_keepalives_count=3",
            ],
            {},
        )
        self.wait("PostgreSQL", self.postgres_ready, 60)

    def postgres_ready(self) -> bool:
        return (
            subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", self.addr("control"), "-p", str(PG_PORT)],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )

    def create_databases(self) -> None:
        for name in ("regjobs", "prefect"):
            subprocess.run(
                [
                    str(PG_BIN / "createdb"),
                    "-h",
                    self.addr("control"),
                    "-p",
                    str(PG_PORT),
                    "-U",
                    "postgres",
                    name,
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )

    def start_redis(self) -> None:
        self.spawn(
            "control",
            "redis",
            [
                "redis-server",
                "--bind",
                self.addr("control"),
                "--port",
                str(REDIS_PORT),
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.state("control")),
            ],
            {},
        )

    def start_prefect(self) -> None:
        self.unit("control", "regjobs-prefect-server", "")
        self.wait("Prefect's server", lambda: _ok(f"{self.prefect_api_url}/health"), 180)
        self.unit("control", "regjobs-prefect-services", "")

    def start_standin(self) -> None:
        env = {"PATH": f"{PROJECT_DIR / '.venv' / 'bin'}:/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
        self.spawn(
            "control",
            "standin",
            [
                "python",
                "-m",
                "standin",
                "--host",
                self.addr("control"),
                "--port",
                str(STANDIN_PORT),
            ],
            env,
        )
        self.wait("the stand-in", lambda: _ok(f"{self.standin_url}/_control/effects"))

    # ------------------------------------------------------------------ workers, APIs

    def start_worker(self, host: str) -> None:
        self.start_workers([host])

    def start_workers(self, hosts: list[str]) -> None:
        """The worker units of `hosts`, started together, each waited for."""
        before = {h: self.log(h, self.worker_unit).count("started!") for h in hosts}
        for host in hosts:
            self.unit(host, "regjobs-warm@", self.release)
            self.unit(host, "regjobs-worker@", self.release)
        for host in hosts:
            self.wait(f"the worker on {host}", functools.partial(self._started, host, before), 120)

    def _started(self, host: str, before: dict[str, int]) -> bool:
        return self.log(host, self.worker_unit).count("started!") > before[host]

    @property
    def worker_unit(self) -> str:
        """The worker unit's instance name (and its log's)."""
        return f"regjobs-worker@{self.release}"

    def restart_workers(self) -> None:
        for host in WORKERS:
            self.stop_worker(host)
        self.start_workers(list(WORKERS))

    def stop_worker(self, host: str) -> None:
        self.stop(host, self.worker_unit, timeout=40)
        self.stop(host, f"regjobs-warm@{self.release}")

    def start_api(self, host: str) -> None:
        self.unit(host, "regjobs-api@")
        self.wait(f"the API on {host}", lambda: _ok(f"{self.api_url(host)}/healthz"), 120)

    def skew_clocks(self) -> None:
        """Every Python process of each host in `clocks` runs on its own wall clock
        (tests/hosts/clock/sitecustomize.py)."""
        from tests.hosts.clock.sitecustomize import SKEW_ENV

        for name, offset in self.clocks.items():
            self.host_env.setdefault(name, {}).update(
                {"PYTHONPATH": str(CLOCK_DIR), SKEW_ENV: str(offset)}
            )

    def start(self) -> None:
        self.skew_clocks()
        self.net.up()
        for name, octet in OCTETS.items():
            self.net.add(name, octet)
        self.make_release()
        self.start_postgres()
        self.create_databases()
        self.start_redis()
        self.start_prefect()
        self.start_standin()
        self.run_unit("api-1", "regjobs-db-upgrade")
        self.run("control", ["python", "-m", "deployments.setup"])
        self.api_key = self.run(
            "api-1", ["python", "-m", "regjobs.auth", "create", "--organisation", "hosts-org"]
        ).strip()
        self.start_workers(list(WORKERS))
        for host in APIS:
            self.start_api(host)

    def teardown(self) -> None:
        for host, name in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(host, name, timeout=5)
        self.net.teardown()
        if os.environ.get("REGJOBS_HOSTS_KEEP"):  # its logs, to read after a failure
            print(f"the test hosts' folder is kept: {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ looking inside

    def chromiums(self) -> dict[str, int]:
        """Chromium browsers (main processes, not their helpers or crash reporters) alive on
        each host (deployments.pids tells them apart, as the launcher does)."""
        return {
            name: len(browser_processes(chromium_processes(host.pids())))
            for name, host in self.net.hosts.items()
        }

    def browsers_described(self) -> dict[str, list[str]]:
        """Each host's browsers: pid, parent pid, and the flow run and Prefect task run of
        the process that launched it (their environment, which Chromium inherits)."""
        found: dict[str, list[str]] = {}
        for name, host in self.net.hosts.items():
            for pid in browser_processes(chromium_processes(host.pids())):
                try:
                    environ = dict(
                        item.split(b"=", 1)
                        for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                        if b"=" in item
                    )
                    parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1]
                except OSError:
                    continue
                run = environ.get(b"PREFECT__FLOW_RUN_ID", b"?").decode()
                found.setdefault(name, []).append(f"pid {pid} (parent {parent}) run {run}")
        return found

    def browser_slots_in_use(self) -> int:
        """Prefect's count of the browser limit's slots taken (across all hosts)."""
        auth = tuple(self.prefect_auth.split(":", 1))
        response = httpx.get(
            f"{self.prefect_api_url}/v2/concurrency_limits/registration-browser",
            auth=auth,  # type: ignore[arg-type]
            timeout=10,
        )
        response.raise_for_status()
        return int(response.json()["active_slots"])

    def flow_run_hosts(self) -> dict[str, str]:
        """The host each live flow-run process runs on, by flow-run id."""
        found: dict[str, str] = {}
        for name in WORKERS:
            for pid in self.host(name).pids():
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                for item in environ:
                    if item.startswith(b"PREFECT__FLOW_RUN_ID="):
                        found[item.split(b"=", 1)[1].decode()] = name
        return found


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
