"""What operators see in Prefect, as pure functions: run labels, event names, the summary."""

from __future__ import annotations

from datetime import UTC, datetime

from regjobs.catalogue import STEPS
from regjobs.observe import RunLabels, job_resource, one_line, step_resource, summary_markdown
from regjobs.schemas import EvidencePublic, JobPublic, StepPublic

T0 = datetime(2026, 11, 30, tzinfo=UTC)


def make_job(**steps: dict[str, object]) -> JobPublic:
    rows = []
    for s in STEPS:
        values: dict[str, object] = {
            "status": "completed",
            "attempts": 1,
            "duration_ms": 1500,
            "result_data": {"id": f"{s.id}-1"},
            "error_message": None,
            "warning": None,
        }
        values.update(steps.get(s.id, {}))
        rows.append(
            StepPublic(
                step_id=s.id,
                step_number=s.number,
                step_label=s.label,
                phase=s.phase,
                started_at=T0,
                completed_at=T0,
                **values,
            )
        )
    failed = any(r.status == "failed" for r in rows)
    return JobPublic(
        id="8f2c1d7e-0000-4000-8000-000000000001",
        restaurant_id="rest-1",
        restaurant_name="Demo Pizza",
        status="failed" if failed else "completed",
        current_phase="phase3",
        current_step=10,
        progress_percent=75 if failed else 100,
        created_at=T0,
        started_at=T0,
        completed_at=T0,
        error_message="Menu import: menu rejected" if failed else None,
        failed_step="menu_import" if failed else None,
        next_action="fix_config" if failed else None,
        steps=rows,
    )


def test_every_run_of_a_job_has_the_same_name_and_tags() -> None:
    labels = RunLabels("8f2c1d7e-aaaa", "rest-1", "Demo Pizza", "Acme")
    assert labels.name == "Demo Pizza · 8f2c1d7e"
    assert labels.tags == ["restaurant:rest-1", "organisation:Acme"]


def test_event_resources_name_the_job_and_the_step() -> None:
    assert job_resource("j1")["prefect.resource.id"] == "regjobs.job.j1"
    step = step_resource("j1", "menu_import", "Menu import")
    assert step["prefect.resource.id"] == "regjobs.job.j1.step.menu_import"
    assert (step["regjobs.job"], step["regjobs.step"]) == ("j1", "menu_import")


def test_one_line_is_short_and_flat() -> None:
    assert one_line(None) == ""
    assert one_line({"a": "x", "b": 2, "c": {"d": [1]}}) == 'a=x, b=2, c={"d": [1]}'
    long = one_line({"text": "y" * 500})
    assert len(long) == 120 and long.endswith("…")
    assert "\n" not in one_line({"a": "two\nlines"})


def test_summary_of_a_completed_job_has_a_row_per_step() -> None:
    text = summary_markdown(make_job(), "http://api/api/registration-jobs/x")
    assert text.startswith("# Demo Pizza: completed (100%)")
    assert "(http://api/api/registration-jobs/x)" in text
    for s in STEPS:
        assert f"| {s.number} | {s.label} | completed | 1 | 1.5 s | id={s.id}-1 |" in text
    assert "Failed step" not in text and "Screenshots" not in text


def test_summary_of_a_failed_job_names_the_error_the_skips_and_embeds_screenshots() -> None:
    job = make_job(
        menu_import={
            "status": "failed",
            "attempts": 3,
            "result_data": None,
            "error_message": "menu | rejected",
            "evidence": [EvidencePublic(attempt=3, evidence_id=41)],
        },
        option_sets={
            "status": "skipped",
            "attempts": 0,
            "duration_ms": None,
            "result_data": None,
            "skip_reason": "not run: Menu import failed",
        },
    )
    text = summary_markdown(job, "http://api/j", lambda eid: f"http://api/evidence/{eid}")
    assert "**Failed step**: menu_import · next: fix_config" in text
    assert "| 10 | Menu import | failed | 3 | 1.5 s | menu \\| rejected |" in text
    assert "| 11 | Option sets | skipped | 0 |  | not run: Menu import failed |" in text
    assert "![Menu import, attempt 3](http://api/evidence/41)" in text
