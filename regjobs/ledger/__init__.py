"""The step ledger: the only writer of jobs, their steps, attempts, runs and events.

A package of rooms, one concern each (docs/design.md, "Architecture"):

- `rows`: the errors, and how a write reads and locks a job's rows;
- `view`: the job's public view, materialised after every change;
- `transitions`: the API's writes (create, start, cancel, retry);
- `runs`: a flow run's hold on its job (begin, fencing, finish);
- `attempts`: the fenced writes of a step's attempts;
- `slots`: browser slots and the leases of their holders;
- `outbox`: what Prefect must be told (run requests, cancels, crashes);
- `outcomes`: what only Prefect saw (a dead run, a cancel in its UI, a stall);
- `releases`: the releases it knows, the jobs each holds, moving a job to another.

Every function takes the session (`*, session, ...`) and does one step of one transaction;
the caller commits (`regjobs.db.transaction`). Each write locks the job row first
(PostgreSQL `FOR UPDATE`; on SQLite the write transaction holds the database's write lock
from its start), so what it checks cannot change before it writes.

Three writers, one rule each:
- the API's transitions (create, start, cancel, retry) are compare-and-set on the job's
  status: of two at once, exactly one wins and the other gets `Conflict`;
- a flow-run process writes only while it holds the job's epoch (the fencing token it took
  in `begin_run`); once a cancel, a retry or another run has taken a newer epoch, every
  write of the old process raises `OwnershipLost` and changes nothing;
- the reconciler records what only Prefect saw (a dead or deleted run, a cancel in the
  Prefect UI) for the epoch it looked at, and takes a new epoch doing so.

After every change the job's public view is written again (`view._publish`): the job as
GET, `/progress` and the list answer it, one event per changed step or job, and the
version. Completed steps keep their result, so any re-run of a job reuses them.

This module only gathers the rooms' public names, so `ledger.cancel_job(...)` reads as
before; the rooms import nothing from it.
"""

from regjobs.ledger.attempts import (
    Attempt,
    complete_attempt,
    fail_attempt,
    set_progress,
    start_attempt,
)
from regjobs.ledger.outbox import (
    Delivery,
    Dispatch,
    deliveries,
    record_delivered,
    record_dispatch,
    record_dispatch_failure,
    run_requests_waiting,
    runs_to_dispatch,
)
from regjobs.ledger.outcomes import (
    RUNS_BEFORE_BEGIN,
    Stall,
    expire_wait,
    expired_waits,
    job_and_steps,
    mark_stalled,
    note_flow_run,
    record_outcome,
    replace_unbegun_run,
    stalls,
)
from regjobs.ledger.releases import (
    NOT_PINNED,
    ReleaseJobs,
    UnknownRelease,
    Upgrade,
    newest_release,
    releases_overview,
    remember_release,
    upgrade_job,
    waiting_queues,
)
from regjobs.ledger.rows import (
    ACTIVE,
    NOT_STARTED,
    QUEUED,
    ActiveJobExists,
    ConfigInvalid,
    Conflict,
    JobNotFound,
    OwnershipLost,
    RunRefused,
    StepState,
    TooManyActiveJobs,
    completed_ok,
    disabled_steps,
    encrypted_job_ids,
    failure_summary,
    job_config,
    reencrypt_config,
    step_states,
)
from regjobs.ledger.runs import (
    RunStart,
    Waiting,
    Walk,
    begin_run,
    finish_run,
    heartbeat,
    holds,
    refuse_start,
    skip_steps,
    suspend_run,
    walk_state,
)
from regjobs.ledger.slots import (
    ExpiredLease,
    forget_lease,
    give_back_slot,
    hold_slot,
    leases_to_free,
    slots_held,
)
from regjobs.ledger.transitions import (
    NewJob,
    PreparedJob,
    cancel_job,
    create_job,
    create_jobs,
    insert_jobs,
    prepare_job,
    provide_input,
    retry_job,
    room_for_active_jobs,
    start_job,
    waiting_steps,
)
from regjobs.ledger.view import public_view, publish_missing_views

__all__ = [
    "ACTIVE",
    "NOT_PINNED",
    "NOT_STARTED",
    "QUEUED",
    "RUNS_BEFORE_BEGIN",
    "ActiveJobExists",
    "Attempt",
    "ConfigInvalid",
    "Conflict",
    "Delivery",
    "Dispatch",
    "ExpiredLease",
    "JobNotFound",
    "NewJob",
    "OwnershipLost",
    "PreparedJob",
    "ReleaseJobs",
    "RunRefused",
    "RunStart",
    "Stall",
    "StepState",
    "TooManyActiveJobs",
    "UnknownRelease",
    "Upgrade",
    "Waiting",
    "Walk",
    "begin_run",
    "cancel_job",
    "complete_attempt",
    "completed_ok",
    "create_job",
    "create_jobs",
    "deliveries",
    "disabled_steps",
    "encrypted_job_ids",
    "expire_wait",
    "expired_waits",
    "fail_attempt",
    "failure_summary",
    "finish_run",
    "forget_lease",
    "give_back_slot",
    "heartbeat",
    "hold_slot",
    "holds",
    "insert_jobs",
    "job_and_steps",
    "job_config",
    "leases_to_free",
    "mark_stalled",
    "newest_release",
    "note_flow_run",
    "prepare_job",
    "provide_input",
    "public_view",
    "publish_missing_views",
    "record_delivered",
    "record_dispatch",
    "record_dispatch_failure",
    "record_outcome",
    "reencrypt_config",
    "refuse_start",
    "releases_overview",
    "remember_release",
    "replace_unbegun_run",
    "retry_job",
    "room_for_active_jobs",
    "run_requests_waiting",
    "runs_to_dispatch",
    "set_progress",
    "skip_steps",
    "slots_held",
    "stalls",
    "start_attempt",
    "start_job",
    "step_states",
    "suspend_run",
    "upgrade_job",
    "waiting_queues",
    "waiting_steps",
    "walk_state",
]
