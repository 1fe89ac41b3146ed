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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from deployments import prefect_server, warm
from deployments.pids import MARKER, alive, marked_processes
from deployments.stack_config import (
    FLOW_RUN_NICE,
    FLOW_RUN_POOL,
    WORK_POOL,
    StackConfig,
)
from regjobs import release
from regjobs.private import UMASK, open_private, private_dir, write_private
from regjobs.settings import PROJECT_DIR

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]


#: The longest path of a Unix socket (sun_path holds 108 bytes, its NUL included).
UNIX_PATH_MAX = 107


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.children: dict[str, Child] = {}
        self.logs_dir = config.state_dir / "logs"
        #: Inherited by every process this stack causes, wherever it runs.
        self.stack_id = uuid.uuid4().hex
        #: The environment each worker was started with (its warm processes share it).
        self._worker_env: dict[str, dict[str, str]] = {}
        #: A private folder for the warm pools' sockets when the state folder's path is too
        #: long for one (made on first use, removed by `stop`).
        self._socket_dir: Path | None = None
        #: Each API process started: its port, its environment over the stack's, and the
        #: names of its group (stopped together).
        self._api: dict[str, tuple[int, dict[str, str], list[str]]] = {}

    def state_folder(self) -> Path:
        """The state folder, 0700 (made so, or tightened)."""
        return private_dir(self.config.state_dir)

    # ------------------------------------------------------------------ environment

    def env(self) -> dict[str, str]:
        c = self.config
        prefect_home = c.state_dir / "prefect"
        env = {
            **os.environ,
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_API_URL": c.prefect_api_url,
            "PREFECT_SERVER_API_HOST": c.prefect_host,
            "PREFECT_SERVER_API_PORT": str(c.prefect_port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true" if c.prefect_ui else "false",
            "PREFECT_UI_API_URL": c.prefect_api_url,
            "PREFECT_WORKER_QUERY_SECONDS": str(c.poll_seconds),
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
            "PREFECT_RUNNER_POLL_FREQUENCY": str(max(1, int(c.poll_seconds))),
            # Logs reach Prefect in batches every 2 s, its default: every 0.5 s a job cost
            # about 15% more CPU (docs/figures.md, "Logs in batches of 2 s").
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
            warm.SIZE_ENV: str(c.warm_processes),
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
            self.state_folder()
            first = bundle[bundle.index("-----BEGIN CERTIFICATE-----") :].split(end)[0]
            write_private(path, (first + end + "\n").encode())
        return path

    # ------------------------------------------------------------------ processes

    def spawn(
        self, name: str, args: list[str], env: Mapping[str, str] | None = None, *, nice: int = 0
    ) -> Child:
        self.state_folder()
        private_dir(self.logs_dir)
        previous = self.children.pop(name, None)
        if previous is not None:  # it exited: this starts it again
            previous.log.close()
        log = os.fdopen(open_private(self.logs_dir / f"{name}.log"), "ab")  # closed in stop()
        process = subprocess.Popen(
            args,
            cwd=PROJECT_DIR,
            env={**self.env(), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # What it and its children create is theirs alone (regjobs.private).
            umask=UMASK,
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
            umask=UMASK,
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
        worker goes with its warm processes, an API's first process with its group's."""
        groups = [self._api[n][2] for n in names if n in self._api and self._api[n][2][0] == n]
        names = [*names, *(f"{n}-warm" for n in names if n.startswith("worker"))]
        names = list(dict.fromkeys([*names, *(n for group in groups for n in group)]))
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
        workers = [n for n in self.children if n in self._api or n.startswith("worker")]
        self.stop_children(workers, timeout=grace)
        self.stop_leftovers(grace=grace)
        self.stop_children(list(self.children), timeout=grace)
        self.stop_leftovers(grace=grace)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

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

    def prefect_server_env(self) -> dict[str, str]:
        """What Prefect's server and services add to the stack's environment: in the
        production shape, the server's auth string."""
        production = self.config.production
        return {prefect_server.SERVER_AUTH: production.prefect_auth} if production else {}

    def start_prefect(self) -> None:
        """Prefect's server; in the production shape its webserver only (`--no-services`,
        `prefect_workers` processes) through `deployments.prefect_server`, which refuses an
        open API, and its background services apart (`start_services`)."""
        self.state_folder()
        private_dir(self.config.state_dir / "prefect")
        production = self.config.production
        port = ["--port", str(self.config.prefect_port)]
        if production is None:
            command = ["-m", "prefect", "server", "start", "--host", self.config.prefect_host]
        else:
            command = ["-m", "deployments.prefect_server", "start", "--no-services"]
            if production.prefect_workers > 1:
                command += ["--workers", str(production.prefect_workers)]
        self.spawn("prefect", [PYTHON, *command, *port], self.prefect_server_env())
        self.wait_until(
            "prefect", lambda: _ok(f"{self.config.prefect_api_url}/health"), timeout=120
        )

    def start_services(self) -> None:
        """Prefect's background services (scheduler, event persister, triggers, lease
        repossessor, ...) as one process of their own (production shape)."""
        before = self.log_count("prefect-services", "Starting services")
        self.spawn(
            "prefect-services",
            [PYTHON, "-m", "deployments.prefect_server", "services"],
            self.prefect_server_env(),
        )
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
        """The Unix socket of a worker's warm-process pool: in the state folder's `run/`
        (0700), or, where that path is longer than a Unix socket's may be, in a private
        folder of this stack's own (`mkdtemp`, 0700)."""
        path = self.config.state_dir / "run" / f"warm-{worker}.sock"
        if len(os.fsencode(path)) > UNIX_PATH_MAX:
            if self._socket_dir is None:
                self._socket_dir = Path(tempfile.mkdtemp(prefix="regjobs-"))
            path = self._socket_dir / f"warm-{worker}.sock"
        return str(path)

    def start_warm_pool(self, worker: str = "worker", env: Mapping[str, str] | None = None) -> None:
        """The warm flow-run processes of a worker (`deployments.warm`), started with the
        worker's own environment (as last given), so they run what the worker would."""
        if env is not None:
            self._worker_env[worker] = dict(env)
        worker_env = self.flow_run_env(self._worker_env.get(worker))
        self.state_folder()
        private_dir(Path(self.warm_socket(worker)).parent)
        self.spawn(
            f"{worker}-warm",
            [PYTHON, *warm.POOL_COMMAND],
            {**worker_env, warm.SOCKET_ENV: self.warm_socket(worker)},
            nice=FLOW_RUN_NICE,
        )

    def start_worker(self, name: str = "worker", env: Mapping[str, str] | None = None) -> Child:
        """A process worker on the pool, with its warm flow-run processes beside it; `env`
        overrides settings for it and its flow runs."""
        if self.config.warm_processes and f"{name}-warm" not in self.children:
            self.start_warm_pool(name, env or {})
        env = {**self.flow_run_env(env), warm.SOCKET_ENV: self.warm_socket(name)}
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
                # The implicit release's queue (`make run`, the tests: `default`); a
                # release's workers poll only their own (`deployments.release worker`).
                "--work-queue",
                release.current().queue,
                "--name",
                f"{name}-{os.getpid()}@{release.current().version}",
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
        self.run([PYTHON, "-m", "regjobs.commands", "upgrade"])

    def start_api(
        self,
        env: Mapping[str, str] | None = None,
        *,
        name: str = "api",
        port: int | None = None,
        workers: int | None = None,
    ) -> Child:
        """The API (`name`, on `port`; the configured port by default) as `workers` processes
        (the configured number by default), each a child of this stack (`name`, `name-2`,
        ...) listening on its own socket of the port (`api.serve`); every API process takes
        part in electing the one reconciler. The port must be free: a server left on it (an
        API included) is an error here, not a silent partner. The first process."""
        port = port or self.config.api_port
        workers = workers or self.config.api_workers
        try:  # bound alone: fails while anything else holds the port
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise RuntimeError(f"cannot listen on 127.0.0.1:{port}: {error.strerror}") from None
        names = [name, *(f"{name}-{n}" for n in range(2, workers + 1))]
        for process in names:
            self._api[process] = (port, dict(env or {}), names)
        # All at once (each imports the app for a second or two), then each waited for.
        started = [self._spawn_api(process) for process in names]
        for process, before in zip(names, started, strict=True):
            self._wait_api(process, before)
        return self.children[name]

    def start_api_process(self, name: str) -> Child:
        """One API process of a group `start_api` started (again, if it exited)."""
        self._wait_api(name, self._spawn_api(name))
        return self.children[name]

    def _spawn_api(self, name: str) -> int:
        """Start API process `name`; the count of its log's start-up lines before."""
        port, env, _ = self._api[name]
        before = self.log_count(name, "Application startup complete")
        self.spawn(
            name,
            [PYTHON, "-m", "api.serve", "--host", "127.0.0.1", "--port", str(port)],
            {"REGJOBS_AUTO_MIGRATE": "false", **env},
        )
        return before

    def _wait_api(self, name: str, before: int) -> None:
        port = self._api[name][0]
        self.wait_until(name, lambda: self.log_count(name, "Application startup complete") > before)
        self.wait_until(name, lambda: _ok(f"http://127.0.0.1:{port}/healthz"))

    @property
    def api_names(self) -> list[str]:
        """The API processes this stack started (and may start again)."""
        return list(self._api)

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


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
