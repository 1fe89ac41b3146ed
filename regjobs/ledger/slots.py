"""Browser slots as the ledger sees them: which step holds one under which of Prefect's
leases, and the leases of holders found ended, for the reconciler to free.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from regjobs.ledger.rows import (
    ACTIVE,
)
from regjobs.ledger.runs import _owned
from regjobs.models import (
    RegistrationJob,
    RegistrationJobStep,
    utcnow,
)


def hold_slot(*, session: Session, job_id: str, epoch: int, step_id: str, lease: str) -> None:
    """Record that a step holds a browser slot under Prefect's lease `lease` (once Prefect
    granted it; only while this run holds the job, else OwnershipLost)."""
    _owned(session, job_id, epoch)
    session.execute(
        update(RegistrationJobStep)
        .where(RegistrationJobStep.job_id == job_id, RegistrationJobStep.step_id == step_id)
        .values(slot_since=utcnow(), slot_lease=lease)
    )


def give_back_slot(*, session: Session, job_id: str, step_id: str, lease: str) -> bool:
    """Record that the holder of `lease` gave its slot back, if the step still names that
    lease: a stale holder (a run that lost the job, whose step another run now holds under
    a lease of its own) changes nothing. Whether anything was cleared."""
    cleared = session.execute(
        update(RegistrationJobStep)
        .where(
            RegistrationJobStep.job_id == job_id,
            RegistrationJobStep.step_id == step_id,
            RegistrationJobStep.slot_lease == lease,
        )
        .values(slot_since=None, slot_lease=None)
    )
    return bool(getattr(cleared, "rowcount", 0))


def slots_held(*, session: Session) -> int:
    """Browser slots live holders have: steps of active jobs between being granted a slot
    and giving it back."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(RegistrationJobStep)
            .join(RegistrationJob, RegistrationJob.id == RegistrationJobStep.job_id)
            .where(
                RegistrationJobStep.slot_since.is_not(None),
                RegistrationJob.status.in_(ACTIVE),
            )
        )
        or 0
    )


@dataclass(frozen=True)
class ExpiredLease:
    """A browser slot's lease whose holder the reconciler found ended (`record_outcome`)."""

    job_id: str
    step_id: str
    lease: str


def leases_to_free(*, session: Session) -> list[ExpiredLease]:
    """The leases of holders found ended, which Prefect may still count (until it frees
    them itself when they run out)."""
    step = RegistrationJobStep
    rows = session.execute(
        select(step.job_id, step.step_id, step.slot_lease).where(
            step.slot_lease.is_not(None), step.slot_since.is_(None)
        )
    ).tuples()
    return [ExpiredLease(job_id, step_id, lease) for job_id, step_id, lease in rows if lease]


def forget_lease(*, session: Session, job_id: str, step_id: str, lease: str) -> bool:
    """The expired `lease` was freed: forget it, if the step still names it as expired."""
    cleared = session.execute(
        update(RegistrationJobStep)
        .where(
            RegistrationJobStep.job_id == job_id,
            RegistrationJobStep.step_id == step_id,
            RegistrationJobStep.slot_lease == lease,
            RegistrationJobStep.slot_since.is_(None),
        )
        .values(slot_lease=None)
    )
    return bool(getattr(cleared, "rowcount", 0))
