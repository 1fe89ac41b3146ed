"""The job's public view, materialised: after every change a writer calls `_publish`, which
writes the job as GET, `/progress` and the list answer it, one event per changed step or
job, and the version (the count of events). Reads answer from these columns alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from regjobs import translate
from regjobs.catalogue import StepStatus
from regjobs.ledger.rows import (
    JobNotFound,
    _job,
    _steps,
    _table,
)
from regjobs.models import (
    JobEvent,
    RegistrationJob,
    RegistrationJobStep,
    StepEvidence,
)
from regjobs.schemas import EvidencePublic, JobPublic
from regjobs.settings import get_settings


def evidence_index(session: Session, *, job_id: str) -> dict[str, list[tuple[int, int]]]:
    """(attempt, evidence id) of every screenshot of the job, by step."""
    rows = session.execute(
        select(StepEvidence.step_id, StepEvidence.attempt, StepEvidence.id)
        .where(StepEvidence.job_id == job_id)
        .order_by(StepEvidence.id)
    ).tuples()
    index: dict[str, list[tuple[int, int]]] = {}
    for step_id, attempt, evidence_id in rows:
        index.setdefault(step_id, []).append((attempt, evidence_id))
    return index


def _publish(
    session: Session, job: RegistrationJob, rows: Iterable[RegistrationJobStep] | None = None
) -> None:
    """Write the job's public view again; one event per step whose public state changed,
    then one for the job if its own state changed; the version counts the events. `rows`:
    the job's step rows, if the caller has them all."""
    rows = list(rows) if rows is not None else list(_steps(session, job.id).values())
    shots = evidence_index(session, job_id=job.id) if any(map(_may_have_evidence, rows)) else {}
    events = _render(job, rows, shots)
    if events:
        session.execute(insert(_table(JobEvent)), events)


def _may_have_evidence(row: RegistrationJobStep) -> bool:
    """Whether a screenshot of the step may be kept: only a failed attempt leaves one
    (`attempts.fail_attempt`), so none for a step never tried, nor for one whose only
    attempt is running or completed (a successful job's every write, which then reads
    no evidence)."""
    if row.attempts == 0:
        return False
    return row.attempts > 1 or row.status not in (StepStatus.RUNNING, StepStatus.COMPLETED)


def _render(
    job: RegistrationJob,
    rows: Sequence[RegistrationJobStep],
    shots: Mapping[str, list[tuple[int, int]]],
) -> list[dict[str, Any]]:
    """The job's view from its rows (set on the job: view, progress, list entry, version)
    and the event rows of what changed since the view it had."""
    evidence = {
        step_id: [EvidencePublic(attempt=a, evidence_id=e) for a, e in taken]
        for step_id, taken in shots.items()
    }
    public = translate.job_public(
        job, rows, None, prefect_ui_url=get_settings().prefect_ui_url, evidence=evidence
    )
    before = json.loads(job.view) if job.view else {}
    before_steps = {s["step_id"]: s for s in before.get("steps", ())}
    changes: list[tuple[str, dict[str, Any]]] = []
    for step in public.steps:
        data = step.model_dump(mode="json")
        if before_steps.get(step.step_id) != data:
            changes.append(("step", data))
    summary = translate.summary(public).model_dump(mode="json", exclude={"version"})
    before_summary = {k: v for k, v in before.items() if k not in ("steps", "version")}
    if summary != before_summary:
        changes.append(("job", summary))
    if not changes:
        return []
    version = job.version
    events = []
    for kind, data in changes:
        version += 1
        if kind == "job":
            data = {**data, "version": version}
        events.append({"job_id": job.id, "seq": version, "kind": kind, "data": json.dumps(data)})
    job.version = public.version = version
    job.view = public.model_dump_json()
    job.progress_view = translate.progress_public(public).model_dump_json()
    job.summary_view = translate.summary(public).model_dump_json()
    return events


def publish_missing_views(*, session: Session) -> int:
    """Write the view of every job that has none (made before views existed)."""
    jobs = session.scalars(select(RegistrationJob).where(RegistrationJob.view.is_(None))).all()
    for job in jobs:
        _publish(session, job)
    return len(jobs)


def public_view(*, session: Session, job_id: str) -> JobPublic:
    """The job as the API shows it (its materialised view)."""
    job = _job(session, job_id)
    if job.view is None:
        raise JobNotFound(job_id)
    return JobPublic.model_validate_json(job.view)
