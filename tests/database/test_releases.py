"""Releases in the ledger: a job pinned by its first run, a run of another release refused,
a job moved to another release on purpose (`ledger.releases`), and what the dispatcher and
`regjobs releases` see of them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from regjobs import ledger
from regjobs.catalogue import STEP_IDS, JobStatus
from regjobs.db import read_session, transaction
from regjobs.release import Release
from tests.database.test_ledger import _run_id, begin, new_job, snapshot, view_of

pytestmark = pytest.mark.database


@pytest.fixture(autouse=True)
def _settings(stack_env: dict[str, str]) -> None:
    """The job database of this test session (no system started)."""


def two_releases() -> tuple[str, str]:
    """Two releases recorded in the job database, the second newer, whose code differs in
    code generation and item tags."""
    tag = uuid.uuid4().hex[:8]
    old = dict.fromkeys(STEP_IDS, "same")
    new = {**old, "code_generation": "changed", "item_tags": "changed"}
    versions = (f"{tag}-a", f"{tag}-b")
    for version, steps in zip(versions, (old, new), strict=True):
        release = Release(version, commit="0" * 40, folder=Path("/nowhere"), steps=steps)
        assert transaction(ledger.remember_release, release=release)
        assert not transaction(ledger.remember_release, release=release)  # made once
    return versions


def fail_after_code_generation(job_id: str, version: str) -> int:
    """A run of `version` completes code generation, then the job fails; its epoch."""
    start = begin(job_id, f"run-{uuid.uuid4().hex[:6]}", code_version=version)
    attempt = transaction(
        ledger.start_attempt, job_id=job_id, epoch=start.epoch, step_id="code_generation",
        flow_run_id=None, task_run_id=None,
    )  # fmt: skip
    transaction(
        ledger.complete_attempt, job_id=job_id, epoch=start.epoch, step_id="code_generation",
        attempt=attempt.number, result={"head": "<!-- a -->"}, warning=None,
    )  # fmt: skip
    transaction(
        ledger.finish_run, job_id=job_id, epoch=start.epoch, status=JobStatus.FAILED,
        error_message="failed step: Item tags",
    )  # fmt: skip
    return start.epoch


def test_the_first_run_pins_the_job_and_a_run_of_another_release_refuses() -> None:
    old, new = two_releases()
    job_id = new_job()
    fail_after_code_generation(job_id, old)
    assert view_of(job_id)["code_version"] == old
    before = snapshot(job_id)
    # An operator's rerun that landed on the new release's worker: refused, naming the
    # command that moves the job; nothing about the job changes.
    with pytest.raises(ledger.RunRefused) as refused:
        begin(job_id, "operator-run", generation=None, code_version=new)
    assert f"pinned to release {old}" in str(refused.value)
    assert f"regjobs jobs upgrade {job_id} --to {new}" in str(refused.value)
    assert snapshot(job_id) == before
    # A rerun on the job's own release begins it.
    assert begin(job_id, "operator-run-2", generation=None, code_version=old).epoch > 0


def test_upgrade_moves_a_waiting_job_to_the_new_release_reusing_its_results() -> None:
    old, new = two_releases()
    job_id = new_job()
    fail_after_code_generation(job_id, old)
    transaction(ledger.retry_job, job_id=job_id, from_step=None)
    with read_session() as session:
        waiting = [
            r for r in ledger.runs_to_dispatch(session=session, limit=500) if r.job_id == job_id
        ]
    assert [(r.code_version, r.work_queue) for r in waiting] == [(old, f"release-{old}")]
    transaction(
        ledger.record_dispatch, run_id=_run_id(job_id, 2), flow_run_id="run-on-old-queue",
        work_queue=f"release-{old}",
    )  # fmt: skip
    with read_session() as session:
        assert ledger.waiting_queues(session=session, job_ids=[job_id]) == {
            job_id: f"release-{old}"
        }
        overview = {g.version: g for g in ledger.releases_overview(session=session)}
    assert job_id in overview[old].waiting and job_id not in overview[new].waiting

    moved = transaction(ledger.upgrade_job, job_id=job_id, to_version=None)  # the newest
    assert (moved.from_version, moved.to_version, moved.requeued) == (old, new, True)
    assert list(moved.changed) == [("code_generation", "completed"), ("item_tags", "pending")]
    assert list(moved.reused) == ["code_generation"]
    view = view_of(job_id)
    assert view["code_version"] == new and view["flow_run_id"] is None
    assert [s["status"] for s in view["steps"]].count("completed") == 1
    with read_session() as session:
        cancels = [d.flow_run_id for d in ledger.deliveries(session=session) if d.kind == "cancel"]
        again = [
            r for r in ledger.runs_to_dispatch(session=session, limit=500) if r.job_id == job_id
        ]
    assert "run-on-old-queue" in cancels  # the run waiting on the old queue is given up
    assert [(r.generation, r.work_queue) for r in again] == [(3, f"release-{new}")]
    # The old run, should a worker of the old release start it after all, does not begin.
    with pytest.raises(ledger.RunRefused):
        begin(job_id, "run-on-old-queue", generation=2, code_version=old)
    with pytest.raises(ledger.Conflict, match="already"):
        transaction(ledger.upgrade_job, job_id=job_id, to_version=new)


def test_a_running_job_or_an_unknown_release_is_not_moved() -> None:
    old, new = two_releases()
    job_id = new_job()
    begin(job_id, "running-run", code_version=old)
    with pytest.raises(ledger.Conflict, match="running on release"):
        transaction(ledger.upgrade_job, job_id=job_id, to_version=new)
    with pytest.raises(ledger.UnknownRelease, match="regjobs db upgrade"):
        transaction(ledger.upgrade_job, job_id=job_id, to_version="never-made")
    assert view_of(job_id)["code_version"] == old
