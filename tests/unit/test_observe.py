"""What operators see in Prefect, as pure functions: run labels, event names, the summary."""

from __future__ import annotations

import html as html_module
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regjobs.catalogue import STEPS
from regjobs.observe import RunLabels, job_resource, one_line, step_resource, summary_markdown
from regjobs.observe import markdown_text as md
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
        row = f"| {s.number} | {md(s.label)} | completed | 1 | 1.5 s | {md(f'id={s.id}-1')} |"
        assert row in text
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
    assert "**Failed step**: menu\\_import · next: fix_config" in text
    assert "| 10 | Menu import | failed | 3 | 1.5 s | menu \\| rejected |" in text
    assert "| 11 | Option sets | skipped | 0 |  | not run\\: Menu import failed |" in text
    assert "![Menu import\\, attempt 3](http://api/evidence/41)" in text


# ------------------------------------------------------- text from outside, escaped

HOSTILE = [
    "![x](http://evil/)",
    "<img src=x onerror=alert(1)>",
    "[link](javascript:alert(1))",
    "<script>alert(1)</script>",
    "`code` and ``more``",
    "a | b || c",
    "http://evil.example/x www.evil.example owner@evil.example",
    "# heading\n\n    indented\n1. list\n> quote\n***",
    "&lt;b&gt; &#60;i&#62; \\*not\\* \\",
    "Café Zoë 東京 *bold* _it_ ~~gone~~",
]


def render(markdown: str) -> str:
    """HTML as a CommonMark renderer with GitHub's tables and raw HTML on makes it."""
    from markdown_it import MarkdownIt

    return str(MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown))


def tags(html: str) -> set[str]:
    return set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", html))


@pytest.mark.parametrize("text", HOSTILE)
def test_outside_text_is_literal_text_in_markdown(text: str) -> None:
    html = render(md(text))
    assert tags(html) == {"p"}, html
    shown = html_module.unescape(re.sub(r"</?p>", "", html)).strip()
    assert shown == " ".join(text.split())


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80))
@settings(max_examples=300, deadline=None)
def test_any_text_renders_as_itself_and_nothing_else(text: str) -> None:
    html = render(md(text))
    assert tags(html) <= {"p"}, (text, html)
    shown = html_module.unescape(re.sub(r"</?p>", "", html)).strip()
    assert shown == _plain(text)


def _plain(text: str) -> str:
    return re.sub(r"[\s\x00-\x1f\x7f-\x9f]+", " ", text).strip()


def test_a_job_of_markup_makes_a_summary_with_no_link_image_or_html_of_its_own() -> None:
    job = make_job(
        restaurant_registration={
            "status": "failed",
            "result_data": None,
            "error_message": "portal said: " + " ".join(HOSTILE),
        },
        menu_import={"result_data": {"menu": HOSTILE[0], "note": HOSTILE[2], "n": "a|b"}},
        option_sets={"status": "completed", "warning": HOSTILE[1]},
    ).model_copy(
        update={"restaurant_name": HOSTILE[0] + " " + HOSTILE[1], "restaurant_id": "r-`x`|<b>"}
    )
    text = summary_markdown(job, "http://api/j", lambda eid: f"http://api/evidence/{eid}")
    html = render(text)
    # Our own link to the job is the only link; no image, no HTML from the job's text.
    assert re.findall(r'<a href="([^"]*)"', html) == ["http://api/j"]
    assert tags(html) <= {"h1", "p", "a", "code", "strong", "table", "thead", "tbody", "tr",
                          "th", "td"}  # fmt: skip
    assert "evil" not in "".join(re.findall(r'(?:href|src)="([^"]*)"', html))
    # Every step still has its row: the pipes in the texts split no cell.
    assert html.count("<tr>") == len(STEPS) + 1
    assert all(row.count("<td") == 6 for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)[1:])
    heading = html_module.unescape(re.search(r"<h1>(.*?)</h1>", html).group(1))  # type: ignore[union-attr]
    assert heading.startswith(HOSTILE[0] + " " + HOSTILE[1])
