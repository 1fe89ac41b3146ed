"""The deployment's pull step (prefect.yaml), found by its name as Prefect finds it, enters
the project's folder on the machine it runs on. (tests/e2e/test_redeploy.py runs it in a real
flow-run process.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # (Prefect's dependency; no stubs here)
from prefect.utilities.importtools import import_object

from deployments.setup import ENTRYPOINT_FILE, PROJECT_DIR_ENV
from regjobs.settings import PROJECT_DIR


def pull_steps() -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = yaml.safe_load((PROJECT_DIR / "prefect.yaml").read_text())["pull"]
    return steps


def run_pull() -> dict[str, Any]:
    ((name, inputs),) = (item for step in pull_steps() for item in step.items())
    result: dict[str, Any] = import_object(name)(**inputs)
    return result


@pytest.fixture(autouse=True)
def _keep_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(os.getcwd())  # restored after each test


def test_the_pull_step_names_no_folder() -> None:
    assert pull_steps() == [{"deployments.setup.project_directory": {}}]
    assert str(PROJECT_DIR) not in (PROJECT_DIR / "prefect.yaml").read_text()


def test_it_enters_the_folder_the_worker_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = tmp_path / "srv" / "registration-jobs"
    (project / ENTRYPOINT_FILE).parent.mkdir(parents=True)
    (project / ENTRYPOINT_FILE).touch()
    monkeypatch.setenv(PROJECT_DIR_ENV, str(project))
    assert run_pull()["directory"] == str(project.resolve())
    assert Path.cwd() == project.resolve()


def test_unset_it_enters_the_folder_the_project_is_installed_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(PROJECT_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert run_pull()["directory"] == str(PROJECT_DIR)
    assert Path.cwd() == PROJECT_DIR


def test_a_folder_without_the_project_fails_saying_what_to_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(PROJECT_DIR_ENV, str(tmp_path))
    with pytest.raises(RuntimeError) as raised:
        run_pull()
    message = str(raised.value)
    assert f"{PROJECT_DIR_ENV}={tmp_path}" in message
    assert "worker's environment" in message


def test_a_folder_of_another_release_than_the_worker_s_code_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker of one release pointed at another release's folder would run a flow of one
    and steps of the other: the run fails at once, naming both."""
    project = tmp_path / "releases" / "0123456789ab"
    (project / ENTRYPOINT_FILE).parent.mkdir(parents=True)
    (project / ENTRYPOINT_FILE).touch()
    (project / "RELEASE.json").write_text('{"version": "0123456789ab"}')
    monkeypatch.setenv(PROJECT_DIR_ENV, str(project))
    with pytest.raises(RuntimeError, match=r"holds release 0123456789ab, but .* runs release dev"):
        run_pull()
