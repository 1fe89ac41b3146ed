"""The start path's pieces without a system: the reconciler's doorbell, the warm process's
shortcut past the deployment's pull step (a busy Prefect: tests/unit/test_orchestrator.py)."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deployments.warm import prefect_engine
from regjobs.doorbell import Doorbell

PROJECT = Path(__file__).resolve().parents[2]


def test_doorbell_wakes_the_leader_of_the_same_database() -> None:
    url = f"sqlite:////tmp/doorbell-{uuid.uuid4().hex}.db"
    leader, other, elsewhere = Doorbell(url), Doorbell(url), Doorbell(url + "x")
    woken = threading.Event()
    leader.listen(woken)
    try:
        for _ in range(50):  # the listener binds in its thread
            other.ring()
            if woken.wait(0.1):
                break
        assert woken.is_set()
        woken.clear()
        elsewhere.ring()  # another database's leader is not this one
        assert not woken.wait(0.3)
    finally:
        leader.stop_listening()
    other.ring()  # nobody listens: nothing happens, nothing raises


class FakeClient:
    def __init__(self, deployment: Any) -> None:
        self.deployment = deployment

    def read_deployment(self, deployment_id: str) -> Any:
        return self.deployment


def _deployment(directory: str, entrypoint: str = "flows/registration.py:registration_job"):
    step = {"prefect.deployments.steps.set_working_directory": {"directory": directory}}
    return SimpleNamespace(entrypoint=entrypoint, pull_steps=[step])


@pytest.fixture
def flow_run_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import flows.registration  # noqa: F401  (imported, as in a warm process)

    monkeypatch.setenv("PREFECT__DEPLOYMENT_ID", str(uuid.uuid4()))
    monkeypatch.delenv("PREFECT__FLOW_ENTRYPOINT", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_an_imported_flow_is_named_to_the_engine(flow_run_env: Path) -> None:
    prefect_engine.entrypoint_imported(FakeClient(_deployment(str(PROJECT))))
    assert os.environ["PREFECT__FLOW_ENTRYPOINT"] == "flows.registration:registration_job"
    assert Path.cwd() == PROJECT


def test_the_projects_own_pull_step_names_the_imported_flow_too(
    flow_run_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGJOBS_PROJECT_DIR", str(PROJECT))
    deployment = SimpleNamespace(
        entrypoint="flows/registration.py:registration_job",
        pull_steps=[{"deployments.setup.project_directory": {}}],
    )
    prefect_engine.entrypoint_imported(FakeClient(deployment))
    assert os.environ["PREFECT__FLOW_ENTRYPOINT"] == "flows.registration:registration_job"
    assert Path.cwd() == PROJECT


def test_the_projects_pull_step_without_a_project_leaves_it_to_the_engine(
    flow_run_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGJOBS_PROJECT_DIR", str(flow_run_env))  # no project there
    deployment = SimpleNamespace(
        entrypoint="flows/registration.py:registration_job",
        pull_steps=[{"deployments.setup.project_directory": {}}],
    )
    prefect_engine.entrypoint_imported(FakeClient(deployment))
    assert "PREFECT__FLOW_ENTRYPOINT" not in os.environ


@pytest.mark.parametrize(
    "deployment",
    [
        _deployment("/nonexistent"),
        _deployment(str(PROJECT), "flows/other.py:other"),
        _deployment("{{ some-step.directory }}"),
        SimpleNamespace(entrypoint="flows/registration.py:registration_job", pull_steps=[]),
        SimpleNamespace(
            entrypoint="flows/registration.py:registration_job",
            pull_steps=[{"prefect.deployments.steps.git_clone": {"repository": "x"}}],
        ),
    ],
)
def test_anything_else_is_left_to_the_engine(flow_run_env: Path, deployment: Any) -> None:
    prefect_engine.entrypoint_imported(FakeClient(deployment))
    assert "PREFECT__FLOW_ENTRYPOINT" not in os.environ
    assert Path.cwd() == flow_run_env


def test_settings_are_reused_only_for_the_environment_they_were_built_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFECT_WORKER_PREFETCH_SECONDS", "2")
    _settings, expected = prefect_engine.prefect_settings()
    # What the worker hands over: its environment with its settings written over it.
    handed = {**os.environ, **_settings.to_environment_variables(exclude_unset=True)}
    handed["PREFECT__FLOW_RUN_ID"] = str(uuid.uuid4())  # names the run, not a setting
    assert prefect_engine.prefect_env(handed) == expected
    handed["PREFECT_API_URL"] = "http://elsewhere:4200/api"
    assert prefect_engine.prefect_env(handed) != expected


def test_flow_runs_get_the_small_job_database_pool_wherever_their_worker_runs() -> None:
    """The stack's workers and the systemd units give flow runs the same pool size and the
    same CPU priority."""
    from deployments.stack_config import FLOW_RUN_NICE, FLOW_RUN_POOL

    for unit in ("regjobs-worker@.service", "regjobs-warm@.service"):
        text = (PROJECT / "deployments" / "systemd" / unit).read_text()
        settings = dict(
            pair.split("=", 1)
            for line in text.splitlines()
            if line.startswith("Environment=REGJOBS_DB_")
            for pair in line.removeprefix("Environment=").split()
        )
        assert settings == FLOW_RUN_POOL, unit
        assert f"\nNice={FLOW_RUN_NICE}\n" in text, unit
