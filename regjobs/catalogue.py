"""The twelve registration steps and the walk over their dependency graph.

This module is the only place the step graph is written down. The flow, the API and the
stand-in all read it from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final


class StepKind(StrEnum):
    API = "api"
    BROWSER = "browser"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    #: Waiting for a person's corrected input (SPEC "Waiting for a person"): not final.
    ACTION_REQUIRED = "action_required"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STEP_STATUSES


FINAL_STEP_STATUSES: Final = frozenset(
    {StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)


class JobStatus(StrEnum):
    """A job's status (SPEC.md): the one vocabulary every module uses."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_JOB_STATUSES

    @property
    def is_final(self) -> bool:
        return self in FINAL_JOB_STATUSES


#: A restaurant has at most one job in these (a unique index in the database).
ACTIVE_JOB_STATUSES: Final = frozenset({JobStatus.PENDING, JobStatus.IN_PROGRESS})
FINAL_JOB_STATUSES: Final = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class NextAction(StrEnum):
    """What a person can do about a failed or cancelled job (SPEC.md `next_action`)."""

    RETRY = "retry"
    RETRY_FROM_STEP = "retry_from_step"
    FIX_CONFIG = "fix_config"
    #: A step waits for a person's corrected input (`POST .../input`); the job is active.
    PROVIDE_INPUT = "provide_input"


#: The reason recorded on a step that is switched off in the execution config.
DISABLED_REASON: Final = "disabled"


@dataclass(frozen=True)
class Step:
    number: int
    id: str
    label: str
    phase: str
    needs: tuple[str, ...]
    kind: StepKind
    #: How long one attempt may take (Prefect's task timeout; settings may scale it).
    timeout_seconds: int
    #: Dotted path of the execution-config switch that turns the step off, if any.
    switch: str | None = None
    #: The fields of the step's result, whichever implementation of its outside system
    #: answered (`tasks.clients`); the later steps read their inputs from these.
    gives: tuple[str, ...] = ()
    #: Retries after the first attempt (SPEC: 3, so 4 attempts), decided by Prefect.
    retries: int = 3
    #: The first retry's delay; each further retry doubles it (Prefect adds jitter).
    retry_delay_seconds: float = 2.0


STEPS: Final[tuple[Step, ...]] = (
    Step(
        1,
        "account_registration",
        "Account registration",
        "phase1",
        (),
        StepKind.API,
        180,
        "account.register_new_user",
        gives=("account_id", "email"),
    ),
    Step(
        2,
        "code_generation",
        "Code generation",
        "phase1",
        (),
        StepKind.API,
        120,
        gives=("head_injection", "body_injection"),
    ),
    Step(
        3,
        "onboarding_user",
        "Onboarding user",
        "phase1",
        (),
        StepKind.API,
        120,
        "onboarding.create_user",
        gives=("user_id", "name", "email"),
    ),
    Step(
        4,
        "image_upload",
        "Image upload",
        "phase1",
        (),
        StepKind.API,
        600,
        "menu.upload_images",
        gives=("menu_id", "uploaded"),
    ),
    Step(
        5,
        "restaurant_registration",
        "Restaurant registration",
        "phase2",
        ("account_registration",),
        StepKind.BROWSER,
        180,
        gives=("restaurant_id", "subdomain", "dashboard_url"),
    ),
    Step(
        6,
        "website_configuration",
        "Website configuration",
        "phase2",
        ("restaurant_registration", "code_generation"),
        StepKind.BROWSER,
        180,
        gives=("subdomain", "applied"),
    ),
    Step(
        7,
        "services_configuration",
        "Services configuration",
        "phase2",
        ("restaurant_registration",),
        StepKind.BROWSER,
        180,
        gives=("subdomain", "services"),
    ),
    Step(
        8,
        "payment_configuration",
        "Payment configuration",
        "phase2",
        ("restaurant_registration",),
        StepKind.BROWSER,
        180,
        gives=("subdomain", "stripe_connect_url"),
    ),
    Step(
        9,
        "onboarding_sync",
        "Onboarding sync",
        "phase2",
        ("restaurant_registration", "onboarding_user", "payment_configuration"),
        StepKind.API,
        120,
        "onboarding.sync_record",
        gives=("record_id", "subdomain", "synced_at"),
    ),
    Step(
        10,
        "menu_import",
        "Menu import",
        "phase3",
        ("restaurant_registration", "image_upload"),
        StepKind.BROWSER,
        300,
        "menu.import",
        gives=("menu_id", "items"),
    ),
    Step(
        11,
        "option_sets",
        "Option sets",
        "phase3",
        ("menu_import",),
        StepKind.BROWSER,
        3600,
        "menu.add_option_sets",
        gives=("menu_id", "option_sets"),
    ),
    Step(
        12,
        "item_tags",
        "Item tags",
        "phase4",
        ("option_sets",),
        StepKind.BROWSER,
        600,
        "menu.add_item_tags",
        gives=("menu_id", "tags"),
    ),
)

BY_ID: Final[Mapping[str, Step]] = {s.id: s for s in STEPS}
STEP_IDS: Final[tuple[str, ...]] = tuple(s.id for s in STEPS)
PHASES: Final[tuple[str, ...]] = ("phase1", "phase2", "phase3", "phase4")


class StepId(StrEnum):
    """The step ids as a type: the flow's `from_step` parameter (a dropdown in the Prefect
    UI's custom run). Written out for the type checker; checked against STEPS below."""

    ACCOUNT_REGISTRATION = "account_registration"
    CODE_GENERATION = "code_generation"
    ONBOARDING_USER = "onboarding_user"
    IMAGE_UPLOAD = "image_upload"
    RESTAURANT_REGISTRATION = "restaurant_registration"
    WEBSITE_CONFIGURATION = "website_configuration"
    SERVICES_CONFIGURATION = "services_configuration"
    PAYMENT_CONFIGURATION = "payment_configuration"
    ONBOARDING_SYNC = "onboarding_sync"
    MENU_IMPORT = "menu_import"
    OPTION_SETS = "option_sets"
    ITEM_TAGS = "item_tags"


if tuple(StepId) != STEP_IDS:  # pragma: no cover - a catalogue edit that missed StepId
    raise RuntimeError("StepId must list the ids of STEPS, in order")


def shaped(step_id: str, answer: Mapping[str, Any]) -> dict[str, Any]:
    """A step's result: the fields it gives, as the outside system answered them (values
    unchanged, other fields left out), so the result has one shape in either step mode."""
    return {f: answer[f] for f in step(step_id).gives if f in answer}


def step(step_id: str) -> Step:
    """The step with this id; KeyError names it when unknown."""
    try:
        return BY_ID[step_id]
    except KeyError:
        raise KeyError(f"unknown step {step_id!r}") from None


def ancestors(step_id: str) -> frozenset[str]:
    """Every step that ``step_id`` needs, directly or through other steps."""
    found: set[str] = set()
    frontier = list(step(step_id).needs)
    while frontier:
        current = frontier.pop()
        if current not in found:
            found.add(current)
            frontier.extend(BY_ID[current].needs)
    return frozenset(found)


def dependents(step_id: str) -> frozenset[str]:
    """Every step that needs ``step_id``, directly or through other steps."""
    found: set[str] = set()
    frontier = [step_id]
    while frontier:
        current = frontier.pop()
        for s in STEPS:
            if current in s.needs and s.id not in found:
                found.add(s.id)
                frontier.append(s.id)
    return frozenset(found)


@dataclass(frozen=True)
class Plan:
    """What to do next: steps to start now and steps that will never run (with why)."""

    ready: tuple[str, ...] = ()
    skipped: Mapping[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.ready and not self.skipped


_ENDED_AS: Final[Mapping[StepStatus, str]] = {
    StepStatus.FAILED: "failed",
    StepStatus.CANCELLED: "was cancelled",
    StepStatus.SKIPPED: "was skipped",
}


def walk(
    statuses: Mapping[str, StepStatus],
    disabled: frozenset[str] | set[str] = frozenset(),
    skip_reasons: Mapping[str, str | None] | None = None,
) -> Plan:
    """Decide which pending steps start now and which pending steps are skipped.

    ``statuses`` holds every step's current status; ``disabled`` the steps switched off in
    the config; ``skip_reasons`` the reason already recorded on skipped steps (a step
    skipped as disabled satisfies its dependents, one skipped for a failure does not).
    Only pending steps are ever put in the plan. Pure: the flow applies the plan and calls
    again until it is empty and nothing runs.
    """
    reasons: dict[str, str | None] = dict(skip_reasons or {})
    current = {sid: statuses.get(sid, StepStatus.PENDING) for sid in STEP_IDS}
    ready: list[str] = []
    skipped: dict[str, str] = {}
    #: For steps skipped in this walk, the failed or cancelled steps behind the skip.
    roots: dict[str, tuple[str, ...]] = {}

    def standing(sid: str) -> tuple[str, tuple[str, ...]]:
        """("ok", ()), ("wait", ()) or ("blocked", the steps that did not complete).

        A step skipped as disabled stands in for its own needs, so that it neither lets
        its dependents start early nor hides a failure above it.
        """
        status = current[sid]
        if status is StepStatus.COMPLETED:
            return "ok", ()
        if status is StepStatus.SKIPPED and reasons.get(sid) == DISABLED_REASON:
            return combined(BY_ID[sid].needs)
        if status is StepStatus.SKIPPED:
            return "blocked", roots.get(sid, (sid,))
        if status in (StepStatus.FAILED, StepStatus.CANCELLED):
            return "blocked", (sid,)
        return "wait", ()

    def combined(needs: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        results = [standing(n) for n in needs]
        blocked = tuple(dict.fromkeys(b for kind, names in results for b in names))
        if blocked:
            return "blocked", blocked
        return ("ok" if all(kind == "ok" for kind, _ in results) else "wait"), ()

    # STEPS is in topological order, so a skip decided here is seen by later steps at once.
    for s in STEPS:
        if current[s.id] is not StepStatus.PENDING:
            continue
        if s.id in disabled:
            skipped[s.id] = DISABLED_REASON
        else:
            kind, blocked = combined(s.needs)
            if kind == "wait":
                continue
            if kind == "ok":
                ready.append(s.id)
                continue
            roots[s.id] = blocked
            skipped[s.id] = "not run: " + "; ".join(
                f"{BY_ID[n].label} {_ENDED_AS.get(current[n], 'was not completed')}"
                for n in blocked
            )
        current[s.id] = StepStatus.SKIPPED
        reasons[s.id] = skipped[s.id]
    return Plan(ready=tuple(ready), skipped=skipped)
