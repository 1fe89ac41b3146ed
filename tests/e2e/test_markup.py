"""A job whose every text is markup, run through the real system: the summary artifact
Prefect stores for it, rendered as the Prefect UI's markdown renderer would, shows the
text as text, with no link, image or HTML of the tenant's making."""

from __future__ import annotations

import html as html_module
import re
import uuid
from typing import Any
from uuid import UUID

import httpx
import pytest
from markdown_it import MarkdownIt
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from deployments.stack import Stack
from tests.helpers import create, fault, steps_by_id, wait_for, watch_job

pytestmark = pytest.mark.e2e

NAME = "![x](http://evil/) <img src=x onerror=alert(1)> [link](javascript:alert(1)) `t` a|b"
OWNER = "<script>alert(1)</script> *Zoë* | www.evil.example"


def render(markdown: str) -> str:
    return str(MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown))


def test_a_job_of_markup_shows_as_text_in_its_prefect_artifacts(
    api: httpx.Client, standin: httpx.Client, stack: Stack
) -> None:
    restaurant_id = f"r-`x`|![i](javascript:alert(1))<b>-{uuid.uuid4().hex[:8]}"
    # The onboarding service refuses the user and quotes the request (its name included)
    # in its error, as careless outside systems do.
    fault(standin, step="onboarding_user", mode="echo", status=400)
    job_id = create(
        api,
        restaurant_id,
        restaurant={"name": NAME, "address": "<b>1</b> [Queen](http://evil/) St", "city": "`x`"},
        onboarding={"user_name": OWNER},
    )
    job = watch_job(api, job_id, timeout=180).job
    assert job["status"] == "failed"
    assert job["restaurant_id"] == restaurant_id
    assert steps_by_id(job)["onboarding_user"]["status"] == "failed"
    assert "<script>" in steps_by_id(job)["onboarding_user"]["error_message"]

    def read() -> tuple[Any, list[Any]] | None:
        # The final summary is written just after the job ends (and at most every
        # REGJOBS_ARTIFACT_SECONDS before): read once it is there.
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(job["flow_run_id"]))
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
        found = [a for a in artifacts if a.key == f"job-{job_id}" and a.type == "markdown"]
        return (run, found) if any("Failed step" in str(a.data) for a in found) else None

    run, summaries = wait_for(read, timeout=15, what="the job's final summary artifact")
    assert f"restaurant:{restaurant_id}" in run.tags
    assert summaries
    final = summaries[-1]
    assert isinstance(final.data, str)
    shown_error = False
    for artifact in summaries:
        assert isinstance(artifact.data, str)
        html = render(artifact.data)
        links = re.findall(r'<a href="([^"]*)"', html)
        assert len(links) == 1 and links[0].endswith(f"/api/registration-jobs/{job_id}"), links
        assert "<img" not in html and "<script" not in html and "<b>" not in html
        tags = set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", html))
        assert tags <= {"h1", "p", "a", "code", "strong", "table", "thead", "tbody", "tr",
                        "th", "td"}, tags  # fmt: skip
        # The name and the id read as typed.
        text = html_module.unescape(re.sub(r"<[^>]+>", "", html))
        assert NAME in text and restaurant_id in text
        shown_error = shown_error or "injected fault: rejected" in text
        for description in (artifact.description or "",):
            assert not set(re.findall(r"<([a-zA-Z]+)", render(description))) - {"p"}
    assert shown_error, final.data
