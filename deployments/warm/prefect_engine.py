"""What a warm process does with Prefect: the one module of the warm pool that relies on
Prefect's internals. Each of them is checked by tests/unit/test_prefect_internals.py, which
fails naming the one a Prefect upgrade changed:
- `python -m prefect.engine` is run in this process through `runpy` (its `__main__` block
  reads the flow run's id from `sys.argv` or PREFECT__FLOW_RUN_ID);
- PREFECT__FLOW_ENTRYPOINT (what Prefect's own runner sets for served flows) makes the
  engine load the flow from an imported module instead of the deployment;
- Prefect's settings are made once at warm-up and handed to the engine through its
  `SettingsContext` (`Settings.to_environment_variables` tells whether they still hold);
- Prefect's log and event workers are drained by hand (`drain_all`), since the process ends
  with `os._exit`;
- `WARM_IMPORTS` names modules of Prefect's and anyio's that a flow run imports."""

from __future__ import annotations

import contextlib
import importlib
import os
import runpy
import sys
from typing import Any

#: What a flow run imports on its way to its first step beyond the engine and the flow
#: (seen by diffing sys.modules around a run): imported here, before the run is handed over.
WARM_IMPORTS = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.deployments.steps.core",
    "prefect.deployments.steps.pull",
    "prefect.runner",
    "prefect.utilities.visualization",
    "anyio._backends._asyncio",
    "sqlite3",
    "flows.registration",
    # The cost baseline (benchmarks/throughput.py) runs warm as the registration flow does.
    "flows.baseline",
    "tasks.steps",
    # The deployments' pull step (`project_directory`), which each flow run runs (or, warm,
    # calls) before its flow: importing it took ~11% of the flow-run processes' samples.
    "deployments.setup",
    # The job database's driver, which SQLAlchemy imports at the first connect.
    "psycopg2",
    "psycopg2.extras",
)
#: The environment variable that names the flow to Prefect's engine as `module:function`.
FLOW_ENTRYPOINT = "PREFECT__FLOW_ENTRYPOINT"


def imports() -> None:
    for name in WARM_IMPORTS:
        importlib.import_module(name)
    # The job database's ORM mappers, configured once here rather than at each flow run's
    # first query (no thread, no connection: safe before a fork).
    from sqlalchemy.orm import configure_mappers

    configure_mappers()


def warm_up() -> None:
    """Import what a flow run needs (if the pool has not), and open the job database once
    (its engine is kept per URL: the flow run, given the same URL, finds its pool and
    driver ready)."""
    imports()
    from regjobs.db import get_engine, get_read_engine

    for engine in (get_engine(), get_read_engine()):
        try:
            with engine.connect():
                pass
        except Exception:  # the database is not up yet: the flow run connects itself
            engine.dispose()


def prefect_env(env: Any) -> dict[str, str]:
    """The environment Prefect's settings are read from (PREFECT_*, not PREFECT__*: those
    name the flow run, not settings)."""
    return {
        k: v for k, v in env.items() if k.startswith("PREFECT_") and not k.startswith("PREFECT__")
    }


def prefect_settings() -> tuple[Any, dict[str, str]]:
    """Prefect's settings as this process's environment gives them (~50-130 ms to build),
    and the PREFECT_* environment a flow run handed over by this process's worker has when
    its settings are these: the worker passes its own environment with its settings written
    over it (`to_environment_variables`). A flow run handed over with
    exactly that environment uses the settings built here."""
    from prefect.settings import Settings

    settings = Settings()
    expected = {**os.environ, **settings.to_environment_variables(exclude_unset=True)}
    return settings, prefect_env(expected)


def prefect_client() -> Any:
    """A Prefect client for the hand-over (None if it cannot be made; never one that
    would start a temporary server of its own)."""
    if not os.environ.get("PREFECT_API_URL"):
        return None
    try:
        from prefect.client.orchestration import get_client

        client = get_client(sync_client=True)
        client.__enter__()
    except Exception:
        return None
    return client


def run_handed_over(
    env: dict[str, str],
    cwd: str,
    argv: list[str],
    settings: tuple[Any, dict[str, str]],
    client: Any,
) -> int:
    """Become the flow-run process the worker started (its environment, folder and
    arguments), run Prefect's engine, send what its log and event workers hold; the exit
    code. `settings` and `client`: what `prefect_settings` and `prefect_client` made at
    warm-up."""
    prepared, expected = settings
    same_settings = prefect_env(env) == expected
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    if same_settings:  # (the client was made for this Prefect API)
        entrypoint_imported(client)
    if client is not None:
        with contextlib.suppress(Exception):
            client.__exit__(None, None, None)
    sys.argv = ["prefect.engine", *argv]
    code = run_engine(prepared if same_settings else None)
    drain()
    return code


def entrypoint_imported(client: Any) -> None:
    """Skip loading a flow this process has imported already: when the flow run's
    deployment's only pull step is the project's own (`project_directory`) or
    `set_working_directory`, and its entrypoint file is a
    module imported here, go to that folder and name the module to Prefect's engine
    (`PREFECT__FLOW_ENTRYPOINT`, what Prefect's own runner sets for served flows). The
    engine then neither reads the deployment nor runs its pull step nor executes the flow's
    file again as a new module (~0.3-0.5 s). Anything else: the engine does all of it.
    `client`: a Prefect client made at warm-up (making one costs ~30 ms)."""
    deployment_id = os.environ.get("PREFECT__DEPLOYMENT_ID")
    if client is None or not deployment_id or os.environ.get(FLOW_ENTRYPOINT):
        return
    try:
        deployment = client.read_deployment(deployment_id)
    except Exception:
        return
    steps = deployment.pull_steps or []
    if len(steps) != 1 or not deployment.entrypoint or ".py:" not in deployment.entrypoint:
        return
    (key, arguments), *_ = steps[0].items()
    if key == "deployments.setup.project_directory":
        # The project's own pull step (prefect.yaml): the folder is decided here, now.
        from deployments.setup import project_directory

        try:
            directory: str = project_directory()["directory"]
        except Exception:
            return  # the engine runs the step and reports what is wrong
    else:
        given = (arguments or {}).get("directory")
        if key.rsplit(".", 1)[-1] != "set_working_directory" or not isinstance(given, str):
            return
        directory = given
    if "{{" in directory or not os.path.isdir(directory):
        return
    path, function = deployment.entrypoint.rsplit(":", 1)
    name = os.path.normpath(path).removesuffix(".py").replace(os.sep, ".")
    module = sys.modules.get(name)
    found = getattr(module, "__file__", None)
    target = os.path.join(directory, path)
    if found and os.path.realpath(found) == os.path.realpath(target):
        os.chdir(directory)
        os.environ[FLOW_ENTRYPOINT] = f"{name}:{function}"


def run_engine(prepared: Any = None) -> int:
    """`python -m prefect.engine`, with Prefect's and this project's settings read again
    from the environment the flow run was given (Prefect's `prepared` ones if that
    environment gives the same)."""
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import Settings

    from regjobs.settings import get_settings

    get_settings.cache_clear()
    current = get_settings_context()
    try:
        with SettingsContext(profile=current.profile, settings=prepared or Settings()):
            runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1
    return 0


def drain() -> None:
    """Send what Prefect's log and event workers still hold, as the interpreter's exit
    would (`os._exit` skips it): a run's last lines and events are not lost."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=5)
