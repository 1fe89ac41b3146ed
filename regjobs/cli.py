"""`regjobs`: the operator's command line.

    regjobs jobs ls [--status S] [--restaurant R]
    regjobs jobs show ID
    regjobs jobs watch ID
    regjobs jobs retry ID [--from-step S]
    regjobs jobs cancel ID
    regjobs jobs input ID
    regjobs jobs upgrade ID [--to VERSION]
    regjobs releases
    regjobs keys create --organisation O | revoke PREFIX | list
    regjobs db upgrade | reencrypt
    regjobs doctor

`jobs` talks to the API (`--api-url`, `REGJOBS_API_URL`; `--api-key`, `REGJOBS_API_KEY`,
else the development key in the state folder); `keys`, `db`, `jobs upgrade` and `releases`
to the job database (`releases` to Prefect too);
`doctor` to everything a job needs, and says what to fix. Where `REGJOBS_API_URL` or
`PREFECT_API_URL` is not set and a `make run` is running on the state folder, its API and
Prefect server are the ones meant (whatever their ports), and where `PREFECT_API_AUTH_STRING`
is not set, that launcher's (production shape: the state folder's `prefect-auth`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Column, Table

from regjobs import cli_releases
from regjobs.catalogue import JobStatus, StepStatus
from regjobs.config import secret_fields
from regjobs.errors import in_one_line
from regjobs.settings import get_settings

app = typer.Typer(
    help="The operator's command line of registration-jobs: jobs (through the API), API "
    "keys, the job database's schema, and `doctor` (is everything a job needs there?).",
    no_args_is_help=True,
    add_completion=False,
)
jobs = typer.Typer(help="Registration jobs, through the API.", no_args_is_help=True)
keys = typer.Typer(help="API keys of organisations (stored hashed).", no_args_is_help=True)
db = typer.Typer(help="The job database.", no_args_is_help=True)
app.add_typer(jobs, name="jobs")
app.add_typer(keys, name="keys")
app.add_typer(db, name="db")

console = Console(highlight=False)
MARKS: dict[str, str] = {
    StepStatus.PENDING: "[dim]·[/]",
    StepStatus.RUNNING: "[cyan]▶[/]",
    StepStatus.RETRYING: "[yellow]↻[/]",
    StepStatus.ACTION_REQUIRED: "[bold yellow]?[/]",
    StepStatus.COMPLETED: "[green]✓[/]",
    StepStatus.FAILED: "[red]✗[/]",
    StepStatus.SKIPPED: "[dim]-[/]",
    StepStatus.CANCELLED: "[magenta]■[/]",
}

ApiUrl = Annotated[str, typer.Option("--api-url", envvar="REGJOBS_API_URL")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="REGJOBS_API_KEY")]


def _key(given: str | None) -> str:
    if given:
        return given
    path = get_settings().state_dir / "dev-api-key"
    if path.exists():
        return path.read_text().strip()
    raise typer.BadParameter("give --api-key (or REGJOBS_API_KEY)", param_hint="--api-key")


@dataclass
class Api:
    url: str
    key: str

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(
            base_url=self.url.rstrip("/"),
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=timeout,
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        with self.client() as client:
            try:
                response = client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                console.print(f"[red]the API at {self.url} does not answer:[/] {exc}")
                raise typer.Exit(2) from None
        if response.status_code >= 400:
            detail = response.json().get("detail") if response.content else response.reason_phrase
            console.print(f"[red]{response.status_code}[/] {detail}")
            raise typer.Exit(1)
        return response.json()


def _api(url: str, key: str | None) -> Api:
    return Api(url, _key(key))


DEFAULT_URL = "http://127.0.0.1:8000"


def running_stack() -> dict[str, Any] | None:
    """What the `make run` on this state folder wrote of itself (`launcher.json`), if it is
    running."""
    path = get_settings().state_dir / "launcher.json"
    try:
        status: dict[str, Any] = json.loads(path.read_text())
        os.kill(int(status["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return status


def _point_at_running_stack() -> None:
    """`REGJOBS_API_URL` and `PREFECT_API_URL` of the running `make run` where they are not
    set: without a Prefect URL, Prefect's client would start a throwaway server of its own
    and the doctor would check that one."""
    running = running_stack()
    if running is None:
        return
    for name, key in (("REGJOBS_API_URL", "api_url"), ("PREFECT_API_URL", "prefect_api_url")):
        if not os.environ.get(name) and running.get(key):
            os.environ[name] = str(running[key])
    auth_file = running.get("prefect_auth_file")
    if auth_file and not os.environ.get("PREFECT_API_AUTH_STRING"):
        with contextlib.suppress(OSError):
            os.environ["PREFECT_API_AUTH_STRING"] = Path(auth_file).read_text().strip()


# ---------------------------------------------------------------------------------- jobs


@jobs.command("ls")
def jobs_ls(
    status: Annotated[str | None, typer.Option(help="pending, in_progress, ...")] = None,
    restaurant: Annotated[str | None, typer.Option(help="a restaurant id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    api_url: ApiUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Your organisation's jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    if restaurant:
        params["restaurant_id"] = restaurant
    page = _api(api_url, api_key).call("GET", "/api/registration-jobs", params=params)
    # Ids whole, whatever the terminal's width (they are what `jobs show` is given); in a
    # narrow terminal the creation time and next action make way. Piped, nothing is cut.
    out = console if console.is_terminal else Console(highlight=False, width=240)
    wide = out.width >= 120
    table = Table(
        Column("job", no_wrap=True, min_width=36),
        Column("status", no_wrap=True),
        "%",
        "step",
        Column("restaurant", overflow="fold"),
        *(["release", "created", "next"] if wide else []),
        box=box.SIMPLE_HEAD,
    )
    for job in page["jobs"]:
        table.add_row(
            job["id"],
            job["status"] + (" [bold yellow](waiting)[/]" if job.get("action_required") else ""),
            str(job["progress_percent"]),
            str(job["current_step"]),
            job["restaurant_id"],
            *(
                [
                    job.get("code_version") or "",
                    job["created_at"][:19].replace("T", " "),
                    _next(job),
                ]
                if wide
                else []
            ),
        )
    out.print(table)
    waiting = [j for j in page["jobs"] if j.get("action_required")]
    for job in waiting:
        out.print(f"{job['id']} {_waiting(job['action_required'])}")


def _at(value: str | None) -> str:
    return value[:16].replace("T", " ") + " UTC" if value else "?"


def _waiting(asks: dict[str, Any]) -> str:
    """Who waits for what, since when: one line."""
    return (
        f"waits for a person since {_at(asks['since'])}: {asks['step_id']} needs "
        f"{', '.join(asks['fields'])} (until {_at(asks['expires_at'])}; "
        "`regjobs jobs input ID`)"
    )


def _next(job: dict[str, Any]) -> str:
    asks = job.get("action_required")
    if asks:
        return f"provide_input since {_at(asks['since'])}"
    return str(job["next_action"] or "")


#: A step's bar: full once it ended (coloured by how), pulsing while it runs or waits.
BAR_STYLES: dict[str, str] = {
    StepStatus.COMPLETED: "green",
    StepStatus.FAILED: "red",
    StepStatus.SKIPPED: "grey50",
    StepStatus.CANCELLED: "magenta",
}


def _bar(status: str) -> ProgressBar:
    if status in (StepStatus.RUNNING, StepStatus.RETRYING):
        return ProgressBar(total=None, width=12, pulse_style="cyan")
    style = BAR_STYLES.get(status)
    return ProgressBar(
        total=1, completed=1 if style else 0, width=12, complete_style=style or "default"
    )


def _steps_table(job: dict[str, Any]) -> Group:
    """The job's title, a bar per step, and the job's own bar (its percent) below."""
    table = Table("#", "step", "", "status", "attempts", "time", "note", title=_title(job))
    overall = Table.grid(padding=(0, 1))
    overall.add_row(
        ProgressBar(total=100, completed=job["progress_percent"], width=60),
        f"{job['progress_percent']}%",
    )
    for step in job["steps"]:
        note = step["error_message"] or step["skip_reason"] or step["warning"]
        note = note or step["progress"] or ""
        seconds = f"{step['duration_ms'] / 1000:.1f} s" if step["duration_ms"] else ""
        table.add_row(
            str(step["step_number"]),
            step["step_label"],
            _bar(step["status"]),
            f"{MARKS.get(step['status'], '')} {step['status']}",
            str(step["attempts"]),
            seconds,
            note[:80],
        )
    return Group(table, overall)


def _title(job: dict[str, Any]) -> str:
    asks = job.get("action_required")
    extra = _waiting(asks) if asks else job.get("pending_reason") or job.get("error_message") or ""
    on = f" on release {job['code_version']}" if job.get("code_version") else ""
    return (
        f"{job['restaurant_name']} · {job['id']}: {job['status']} {job['progress_percent']}%"
        + on
        + (f" ({extra})" if extra else "")
    )


@jobs.command("show")
def jobs_show(job_id: str, api_url: ApiUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """A job and each of its steps."""
    job = _api(api_url, api_key).call("GET", f"/api/registration-jobs/{job_id}")
    console.print(_steps_table(job))
    if job.get("flow_run_url"):
        console.print(f"Prefect: {job['flow_run_url']}")


def events(api: Api, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The job's Server-Sent Events, (kind, data), until the stream ends."""
    path = f"/api/registration-jobs/{job_id}/events"
    with api.client(timeout=60) as client, client.stream("GET", path) as response:
        if response.status_code >= 400:
            response.read()
            console.print(f"[red]{response.status_code}[/] {response.json().get('detail')}")
            raise typer.Exit(1)
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            elif "data" in fields:
                yield fields.get("event", "message"), json.loads(fields["data"])
                fields = {}


@jobs.command("watch")
def jobs_watch(job_id: str, api_url: ApiUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Follow a job live, a line per step, until it ends (from its event stream)."""
    api = _api(api_url, api_key)
    job = api.call("GET", f"/api/registration-jobs/{job_id}")
    with Live(_steps_table(job), console=console, refresh_per_second=8) as live:
        for kind, data in events(api, job_id):
            if kind == "step":
                job["steps"] = [
                    data if s["step_id"] == data["step_id"] else s for s in job["steps"]
                ]
            elif kind == "job":
                job.update(data)
            live.update(_steps_table(job))
    console.print(f"job {job['status']}")
    raise typer.Exit(0 if job["status"] == JobStatus.COMPLETED else 1)


@jobs.command("retry")
def jobs_retry(
    job_id: str,
    from_step: Annotated[
        str | None, typer.Option(help="re-run this step and its dependents")
    ] = None,
    api_url: ApiUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Run an ended job again (what did not complete; with --from-step, also that step)."""
    body = {"from_step": from_step} if from_step else {}
    answer = _api(api_url, api_key).call(
        "POST", f"/api/registration-jobs/{job_id}/retry", json=body
    )
    console.print(f"job {job_id}: {answer['status']}")


@jobs.command("input")
def jobs_input(job_id: str, api_url: ApiUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Give a waiting job the values a person must correct: prompts for each field the step
    asks for (a password without echo), then the job goes on in the same flow run."""
    api = _api(api_url, api_key)
    job = api.call("GET", f"/api/registration-jobs/{job_id}")
    asks = job.get("action_required")
    if not asks:
        console.print(f"job {job_id} is {job['status']}: no step waits for input")
        raise typer.Exit(1)
    console.print(f"{job['restaurant_name']}: {asks['reason']}")
    secret = secret_fields()
    for _ in range(3):
        partial: dict[str, Any] = {}
        for field in asks["fields"]:
            section, _dot, name = field.partition(".")
            value = typer.prompt(field, hide_input=field in secret)
            partial.setdefault(section, {})[name] = value
        with api.client() as client:
            answer = client.post(
                f"/api/registration-jobs/{job_id}/input", json={"execution_config": partial}
            )
        if answer.status_code == 200:
            console.print(f"job {job_id}: {answer.json()['status']}, going on")
            return
        detail = answer.json().get("detail")
        if answer.status_code != 422:
            console.print(f"[red]{answer.status_code}[/] {detail}")
            raise typer.Exit(1)
        for problem in detail if isinstance(detail, list) else [{"msg": detail}]:
            where = ".".join(str(p) for p in problem.get("loc", [])[2:])
            console.print(f"[red]{where or 'input'}:[/] {problem['msg']}")
    console.print("the job still waits; run `regjobs jobs input` again")
    raise typer.Exit(1)


@jobs.command("cancel")
def jobs_cancel(job_id: str, api_url: ApiUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Cancel a job: no step starts after this; running steps are stopped."""
    answer = _api(api_url, api_key).call("POST", f"/api/registration-jobs/{job_id}/cancel")
    console.print(f"job {job_id}: {answer['status']}")


# ---------------------------------------------------------------------------------- keys


@keys.command("create")
def keys_create(
    organisation: Annotated[str, typer.Option(help="made if new")],
    label: Annotated[str | None, typer.Option()] = None,
) -> None:
    """A new API key of an organisation (printed once; stored hashed)."""
    from regjobs import auth

    raise typer.Exit(auth.main(["create", "--organisation", organisation,
                                *(["--label", label] if label else [])]))  # fmt: skip


@keys.command("revoke")
def keys_revoke(prefix: str) -> None:
    """Revoke keys by their first characters (as `keys list` shows them)."""
    from regjobs import auth

    raise typer.Exit(auth.main(["revoke", prefix]))


@keys.command("list")
def keys_list() -> None:
    """Every key: its first characters, organisation, state and label."""
    from regjobs import auth

    raise typer.Exit(auth.main(["list"]))


# ------------------------------------------------------------------------------------ db


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the job database's schema up to date (once, before starting API processes)."""
    from regjobs.commands import main

    raise typer.Exit(main(["upgrade"]))


@db.command("reencrypt")
def db_reencrypt() -> None:
    """Rewrite every stored config with the first key of REGJOBS_SECRET_KEY (key rotation:
    put the new key first, run this, then drop the old keys)."""
    from regjobs.commands import main

    raise typer.Exit(main(["reencrypt"]))


# -------------------------------------------------------------------------------- doctor


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _check(name: str, fix: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(name, True, probe())
    except Exception as exc:
        return Check(name, False, in_one_line(exc), fix)


def _database() -> str:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import text

    from regjobs.db import MIGRATIONS_DIR, get_engine

    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))
        current = MigrationContext.configure(connection).get_current_revision()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    if current != head:
        raise RuntimeError(f"schema at {current}, the code wants {head}")
    return f"{get_engine().dialect.name}, schema {current}"


def _prefect(what: str) -> Callable[[], str]:
    def probe() -> str:
        from prefect.client.orchestration import get_client
        from prefect.settings import get_current_settings

        if get_current_settings().api.url is None:
            raise RuntimeError("PREFECT_API_URL is not set (nor a running `make run` found)")
        settings = get_settings()
        with get_client(sync_client=True) as client:
            if what == "server":
                failure = client.api_healthcheck()
                if failure is not None:
                    raise RuntimeError(str(failure))
                # /health answers anyone; this call is the one that needs the auth string.
                try:
                    client.hello()
                except httpx.HTTPStatusError as exc:
                    if exc.response.status_code == 401:
                        raise RuntimeError(
                            "Prefect refused this client (401): set PREFECT_API_AUTH_STRING "
                            "to the server's PREFECT_SERVER_API_AUTH_STRING"
                        ) from None
                    raise
                return str(client.api_url)
            if what == "pool":
                return f"{client.read_work_pool(settings.work_pool).name}"
            if what == "deployment":
                return str(client.read_deployment_by_name(settings.deployment).id)
            if what == "worker":
                # Alive = polled the pool lately (a worker polls every
                # PREFECT_WORKER_QUERY_SECONDS; Prefect's own ONLINE lags by heartbeats).
                queues = client.read_work_queues(work_pool_name=settings.work_pool)
                polled = [q.last_polled for q in queues if q.last_polled]
                limit_s = 10 + 3 * float(os.environ.get("PREFECT_WORKER_QUERY_SECONDS", "10"))
                age = (datetime.now(UTC) - max(polled)).total_seconds() if polled else None
                if age is None or age > limit_s:
                    raise RuntimeError(
                        f"no worker polled the work pool {settings.work_pool!r} "
                        + (f"for {age:.0f} s" if age is not None else "ever")
                    )
                return f"polled {age:.1f} s ago"
            limit = client.read_global_concurrency_limit_by_name(settings.browser_limit_name)
            return f"{limit.active_slots} of {limit.limit} taken"

    return probe


def _chromium() -> str:
    path = get_settings().chromium_path()
    if not path or not shutil.which(path):
        raise RuntimeError("no Chromium found")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    return version.stdout.strip() or path


def _api_health(url: str) -> Callable[[], str]:
    def probe() -> str:
        answer = httpx.get(f"{url.rstrip('/')}/healthz", timeout=10)
        health = answer.json()
        if answer.status_code != 200:
            raise RuntimeError(f"degraded: {health}")
        return "ok"

    return probe


@app.command()
def doctor(api_url: ApiUrl = DEFAULT_URL) -> None:
    """Check the job database, Prefect, the work pool and deployment, a live worker,
    Chromium, the browser slots and the API; say what to fix."""
    pool = get_settings().work_pool
    checks = [
        _check("job database", "check DATABASE_URL; run `regjobs db upgrade`", _database),
        _check(
            "Prefect server",
            "start it, or export PREFECT_API_URL (the line `make run` prints)",
            _prefect("server"),
        ),
        _check("work pool", "run `python -m deployments.setup`", _prefect("pool")),
        _check("deployment", "run `python -m deployments.setup`", _prefect("deployment")),
        _check(
            "a live worker",
            f"start one: prefect worker start --pool {pool} (see README, Production)",
            _prefect("worker"),
        ),
        _check(
            "Chromium", "apt-get install chromium, or set REGJOBS_CHROMIUM_EXECUTABLE", _chromium
        ),
        _check("browser slots", "run `python -m deployments.setup`", _prefect("slots")),
        _check("API", f"start the API (uvicorn api.main:app) at {api_url}", _api_health(api_url)),
    ]
    table = Table("check", "", "detail", "to fix")
    for check in checks:
        table.add_row(
            check.name,
            "[green]ok[/]" if check.ok else "[red]FAIL[/]",
            check.detail,
            "" if check.ok else check.fix,
        )
    console.print(table)
    failed = [c.name for c in checks if not c.ok]
    console.print("all good" if not failed else f"[red]not healthy:[/] {', '.join(failed)}")
    raise typer.Exit(1 if failed else 0)


jobs.command("upgrade")(cli_releases.jobs_upgrade)
app.command("releases")(cli_releases.releases_ls)


def main() -> None:
    from regjobs.private import restrict_umask

    restrict_umask()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    _point_at_running_stack()
    app()


if __name__ == "__main__":
    main()
