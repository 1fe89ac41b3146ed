"""What operators see of a job in Prefect: the flow run's name and tags, the events of step
and job transitions, and the job summary artifact. Pure: the flow, the steps and the
reconciler hand these to Prefect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from regjobs import catalogue
from regjobs.schemas import JobPublic, StepPublic

#: A one-line result is cut to this many characters.
ONE_LINE: Final = 120


@dataclass(frozen=True)
class RunLabels:
    """How every flow run of a job is named and tagged, whoever started it (the API's
    dispatcher, Prefect's Retry, `prefect deployment run`, the UI's custom run)."""

    job_id: str
    restaurant_id: str
    restaurant_name: str
    organisation_name: str

    @property
    def name(self) -> str:
        return f"{self.restaurant_name} · {self.job_id[:8]}"

    @property
    def tags(self) -> list[str]:
        return [f"restaurant:{self.restaurant_id}", f"organisation:{self.organisation_name}"]


# ------------------------------------------------------------------------------ events


def job_resource(job_id: str) -> dict[str, str]:
    """The Prefect event resource of a job (automations match on it)."""
    return {"prefect.resource.id": f"regjobs.job.{job_id}", "prefect.resource.role": "job"}


def step_resource(job_id: str, step_id: str, label: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"regjobs.job.{job_id}.step.{step_id}",
        "prefect.resource.name": label,
        "regjobs.job": job_id,
        "regjobs.step": step_id,
    }


def step_event(status: str) -> str:
    """`regjobs.step.running`, `.retrying`, `.completed`, `.failed`, `.skipped`, ..."""
    return f"regjobs.step.{status}"


def job_event(status: str) -> str:
    """`regjobs.job.completed`, `.failed`, `.cancelled`, `.stalled`."""
    return f"regjobs.job.{status}"


# ---------------------------------------------------------------------- the summary


def one_line(result: Mapping[str, Any] | None, limit: int = ONE_LINE) -> str:
    """A step's result in one short line: `key=value` pairs, nested values as JSON."""
    if not result:
        return ""
    parts = []
    for key, value in result.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        parts.append(f"{key}={text}")
    line = ", ".join(parts).replace("\n", " ")
    return line if len(line) <= limit else line[: limit - 1] + "…"


#: ASCII punctuation: each may be backslash-escaped in markdown (CommonMark, and marked,
#: the Prefect UI's renderer), and each escaped one shows as itself.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")


def markdown_text(text: str | None) -> str:
    """Text from outside (a tenant's restaurant name, ids, config text, an outside system's
    error) as literal markdown text, on one line: every ASCII punctuation character
    backslash-escaped, so nothing in it starts a link, an image, HTML, an autolink
    (`http://`, `www.`, an email address), emphasis, code, a heading or a table cell; every
    run of spaces, line breaks and control characters is one space (no indented code
    block, no second line). Every artifact's text from outside goes through it."""
    flat = _SPACE.sub(" ", text or "").strip()
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", flat)


def _duration(step: StepPublic) -> str:
    return "" if step.duration_ms is None else f"{step.duration_ms / 1000:.1f} s"


def _what(step: StepPublic) -> str:
    if step.error_message:
        return step.error_message
    if step.skip_reason:
        return step.skip_reason
    if step.warning:
        return f"warning: {step.warning}"
    return one_line(step.result_data) or (step.progress or "")


#: Where a person's corrected value comes from (never the Prefect UI: a run input is kept
#: in plain text, and the value may be a password).
INPUT_HOW: Final = (
    "Give the value in the app, on the job's status page, or with "
    "`regjobs jobs input {job_id}`; the flow run resumes by itself."
)
#: The event a job waiting for a person emits (automations notify someone on it).
WAITING_EVENT: Final = "regjobs.job.waiting-for-input"


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC" if at else "—"


def summary_markdown(
    job: JobPublic, job_url: str, evidence_url: Callable[[int], str] | None = None
) -> str:
    """The job summary artifact: the job, then one row per step (status, attempts,
    duration, error or skip reason or a one-line result), then the screenshots of failed
    browser attempts, embedded (`evidence_url` turns an evidence id into a link)."""
    text = markdown_text
    lines = [
        f"# {text(job.restaurant_name)}: {job.status.value} ({job.progress_percent}%)",
        "",
        f"Job [`{job.id}`]({job_url}) · restaurant {text(job.restaurant_id)}"
        + (f" · release {text(job.code_version)}" if job.code_version else ""),
    ]
    if job.error_message:
        lines += ["", f"**Error**: {text(job.error_message)}"]
    if job.failed_step:
        lines += [f"**Failed step**: {text(job.failed_step)} · next: {job.next_action or '—'}"]
    if job.action_required is not None:
        waiting = job.action_required
        lines += [
            "",
            f"**Waiting for a person** since {_when(waiting.since)}: "
            f"{text(catalogue.step(waiting.step_id).label)} needs "
            f"{', '.join(f'`{f}`' for f in waiting.fields)} corrected "
            f"({text(waiting.reason)}). {INPUT_HOW.format(job_id=job.id)} "
            f"The job fails with `fix_config` at {_when(waiting.expires_at)}.",
        ]
    lines += [
        "",
        "| # | Step | Status | Attempts | Duration | Result, error or reason |",
        "|---|---|---|---|---|---|",
    ]
    for step in job.steps:
        status = step.status.value + (" (stalled)" if step.stalled_since else "")
        lines.append(
            f"| {step.step_number} | {text(step.step_label)} | {status} | {step.attempts} | "
            f"{_duration(step)} | {text(_what(step))} |"
        )
    shots = [(s, e) for s in job.steps for e in s.evidence]
    if shots and evidence_url is not None:
        lines += ["", "## Screenshots of failed attempts", ""]
        for step, shot in shots:
            url = evidence_url(shot.evidence_id)
            caption = text(f"{step.step_label}, attempt {shot.attempt}")
            lines += [f"**{caption}** ([open]({url}))", "", f"![{caption}]({url})", ""]
    return "\n".join(lines) + "\n"
