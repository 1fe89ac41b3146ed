"""What this project relies on inside Prefect, beyond its public API: each test names the
internal and who relies on it, so a Prefect upgrade that changes one fails here, loudly,
before a flow run does in production (where the warm pool would fall back silently, or a
run's last log lines would be lost). pyproject.toml pins Prefect to the range tested here.

- the warm pool (`deployments/warm/prefect_engine.py`): `prefect.engine` run as `__main__`
  through `runpy`, PREFECT__FLOW_ENTRYPOINT, the settings context, the process worker's
  environment, the log and event workers' `drain_all`, the modules it imports ahead;
- the browser slot's lease (`tasks/steps.py`, `browser_slot`): the private
  `prefect.concurrency._asyncio` and `prefect.concurrency._leases`;
- the stack's lease storage module (`deployments/stack.py`)."""

from __future__ import annotations

import importlib
import inspect
import runpy
import sys
from collections.abc import Callable
from typing import Any

import prefect
import pytest

from deployments.warm import prefect_engine

WARM = "deployments/warm/prefect_engine.py"
SLOT = "tasks/steps.py (browser_slot)"


def relied_on(internal: str, by: str, what: str) -> str:
    return (
        f"Prefect {prefect.__version__} changed {internal}, which {by} relies on: {what}. "
        "Adapt that code (or keep Prefect within pyproject.toml's pinned range)."
    )


def parameters(function: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(inspect.unwrap(function)).parameters)


def takes(internal: str, by: str, function: Callable[..., Any], *names: str) -> None:
    """`function` accepts each of `names` as a keyword."""
    found = parameters(function)
    missing = [
        n for n in names if n not in found or found[n].kind is inspect.Parameter.POSITIONAL_ONLY
    ]
    assert not missing, relied_on(
        internal, by, f"no keyword argument {missing} (has {list(found)})"
    )


# ------------------------------------------------------------------------- the warm pool


# A warm process has imported prefect.engine (WARM_IMPORTS) before it runs it as __main__:
# runpy warns of that, harmlessly (it runs a fresh copy of the module).
@pytest.mark.filterwarnings("ignore:'prefect.engine' found in sys.modules:RuntimeWarning")
def test_prefect_engine_runs_as_main_through_runpy_reading_the_run_id_from_argv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The warm process runs `runpy.run_module("prefect.engine", run_name="__main__")` with
    the flow run's arguments in `sys.argv` (what `python -m prefect.engine` does): the
    module's `__main__` block must take the run id from `sys.argv[1]` (or
    PREFECT__FLOW_RUN_ID). An id that is not one ends it with exit code 1 before anything
    else happens."""
    internal = "`python -m prefect.engine` (its module's __main__ block)"
    spec = importlib.util.find_spec("prefect.engine")
    assert spec is not None and spec.submodule_search_locations is None, relied_on(
        internal, WARM, "prefect.engine is no longer a module runpy can run as __main__"
    )
    importlib.import_module("prefect.engine")  # as in a warm process, whatever ran before
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    monkeypatch.setattr(sys, "argv", ["prefect.engine", "not-a-flow-run-id"])
    with pytest.raises(SystemExit) as ended:
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    assert ended.value.code == 1, relied_on(
        internal, WARM, f"a bad run id in sys.argv[1] did not exit 1 ({ended.value.code!r})"
    )
    source = inspect.getsource(importlib.import_module("prefect.engine"))
    main = source.split('if __name__ == "__main__":', 1)
    assert len(main) == 2 and "sys.argv[1]" in main[1] and "load_flow(" in main[1], relied_on(
        internal,
        WARM,
        "its __main__ block no longer reads the run id from sys.argv and loads the flow "
        "through prefect.flow_engine.load_flow (which honours PREFECT__FLOW_ENTRYPOINT)",
    )


def test_flow_entrypoint_makes_the_engine_use_the_imported_flow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PREFECT__FLOW_ENTRYPOINT=`module:function` makes `load_flow` return the flow of the
    module already imported (not read from the deployment, not executed again)."""
    from prefect.flow_engine import load_flow

    import flows.registration

    monkeypatch.setenv(prefect_engine.FLOW_ENTRYPOINT, "flows.registration:registration_job")
    internal = f"{prefect_engine.FLOW_ENTRYPOINT} (prefect.flow_engine.load_flow)"
    try:
        loaded = load_flow(None)  # type: ignore[arg-type]  # (the run is not read then)
    except Exception as error:
        pytest.fail(relied_on(internal, WARM, f"load_flow with it set raised {error!r}"))
    assert loaded is flows.registration.registration_job, relied_on(
        internal, WARM, "the flow loaded is not the imported module's object"
    )


def test_the_process_worker_names_the_run_in_the_environment_and_runs_the_pools_command() -> None:
    """The work pool's command (`python -m deployments.warm`) is run as configured, with the
    flow run's id in PREFECT__FLOW_RUN_ID (the launcher passes its arguments through and
    falls back to `python -m prefect.engine`)."""
    from prefect.workers.base import BaseJobConfiguration
    from prefect.workers.process import ProcessJobConfiguration

    internal = "the process worker's flow-run environment and command"
    run = type("Run", (), {"id": "0b1c"})()
    environment = BaseJobConfiguration._base_flow_run_environment(run)
    assert environment == {"PREFECT__FLOW_RUN_ID": "0b1c"}, relied_on(
        internal, "deployments/warm (the launcher)", f"the run's environment is {environment}"
    )
    assert "command" in ProcessJobConfiguration.model_fields, relied_on(
        internal, "prefect.yaml's work pool command", "ProcessJobConfiguration has no command"
    )


def test_settings_context_and_settings_as_environment() -> None:
    """A warm process makes Prefect's settings at warm-up and hands them to the engine in a
    `SettingsContext(profile=..., settings=...)`; whether they still hold for a flow run is
    told by `Settings.to_environment_variables(exclude_unset=True)`."""
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import Settings, get_current_settings

    internal = "prefect.context.SettingsContext / Settings.to_environment_variables"
    takes(internal, WARM, Settings.to_environment_variables, "exclude_unset")
    assert isinstance(Settings().to_environment_variables(exclude_unset=True), dict)
    current = get_settings_context()
    assert hasattr(current, "profile"), relied_on(internal, WARM, "the context has no profile")
    prepared = Settings()
    with SettingsContext(profile=current.profile, settings=prepared):
        assert get_current_settings() is prepared, relied_on(
            internal, WARM, "the settings given to the context are not the ones in force"
        )


@pytest.mark.parametrize(
    ("module", "name"),
    [("prefect.logging.handlers", "APILogWorker"), ("prefect.events.worker", "EventsWorker")],
)
def test_log_and_event_workers_drain_all(module: str, name: str) -> None:
    """A warm process ends with `os._exit`, skipping the interpreter's exit: it sends what
    Prefect's log and event workers hold with `drain_all(timeout=...)`, and suppresses any
    error, so a change here would lose a run's last lines silently."""
    internal = f"{module}.{name}.drain_all"
    worker = getattr(importlib.import_module(module), name, None)
    assert worker is not None, relied_on(internal, WARM, f"{module} has no {name}")
    drain_all = getattr(worker, "drain_all", None)
    assert callable(drain_all), relied_on(internal, WARM, "it is gone")
    takes(internal, WARM, drain_all, "timeout")
    drain_all(timeout=1)  # none started here: returns at once


def test_the_sync_client_reads_a_deployments_pull_steps_and_entrypoint() -> None:
    """The warm process reads the flow run's deployment with a sync client made at warm-up
    (`get_client(sync_client=True)`, entered and left by hand)."""
    from prefect.client.orchestration import SyncPrefectClient, get_client
    from prefect.client.schemas.responses import DeploymentResponse

    internal = "get_client(sync_client=True).read_deployment"
    takes(internal, WARM, get_client, "sync_client")
    for attribute in ("read_deployment", "__enter__", "__exit__"):
        assert hasattr(SyncPrefectClient, attribute), relied_on(
            internal, WARM, f"SyncPrefectClient has no {attribute}"
        )
    for field in ("pull_steps", "entrypoint"):
        assert field in DeploymentResponse.model_fields, relied_on(
            internal, WARM, f"a deployment has no {field}"
        )


@pytest.mark.parametrize("module", prefect_engine.WARM_IMPORTS)
def test_the_modules_a_warm_process_imports_ahead(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as error:
        pytest.fail(relied_on(module, f"{WARM} (WARM_IMPORTS)", f"it cannot be imported: {error}"))


# ------------------------------------------------------------------- the browser slot's lease


def test_concurrency_slots_with_lease_private_module() -> None:
    internal = "prefect.concurrency._asyncio"
    try:
        from prefect.concurrency._asyncio import (
            aacquire_concurrency_slots_with_lease,
            arelease_concurrency_slots_with_lease,
        )
    except ImportError as error:
        pytest.fail(relied_on(internal, SLOT, str(error)))
    takes(
        f"{internal}.aacquire_concurrency_slots_with_lease",
        SLOT,
        aacquire_concurrency_slots_with_lease,
        "names",
        "slots",
        "timeout_seconds",
        "lease_duration",
        "strict",
        "holder",
    )
    takes(
        f"{internal}.arelease_concurrency_slots_with_lease",
        SLOT,
        arelease_concurrency_slots_with_lease,
        "lease_id",
    )
    from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse

    assert "lease_id" in ConcurrencyLimitWithLeaseResponse.model_fields, relied_on(
        internal, SLOT, "what it grants has no lease_id"
    )


def test_maintain_concurrency_lease_private_module() -> None:
    internal = "prefect.concurrency._leases.amaintain_concurrency_lease"
    try:
        from prefect.concurrency._leases import amaintain_concurrency_lease
    except ImportError as error:
        pytest.fail(relied_on(internal, SLOT, str(error)))
    takes(
        internal,
        SLOT,
        amaintain_concurrency_lease,
        "lease_id",
        "lease_duration",
        "raise_on_lease_renewal_failure",
    )
    held = amaintain_concurrency_lease("00000000-0000-0000-0000-000000000000", 60)  # type: ignore[arg-type]
    assert hasattr(held, "__aenter__") and hasattr(held, "__aexit__"), relied_on(
        internal, SLOT, "it is no longer an async context manager"
    )


def test_the_stacks_lease_storage_module() -> None:
    """The stack keeps slot leases on disk (PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE names
    a module of Prefect's server), so they outlive a server crash."""
    from prefect.server.concurrency.lease_storage import ConcurrencyLeaseStorageModule

    internal = "prefect.server.concurrency.lease_storage.filesystem"
    try:
        module = importlib.import_module(internal)
    except ImportError as error:
        pytest.fail(relied_on(internal, "deployments/stack.py", str(error)))
    assert isinstance(module, ConcurrencyLeaseStorageModule), relied_on(
        internal, "deployments/stack.py", "it is no longer a lease storage module"
    )
