"""Make the screenshots in docs/: a failed job's run page in the Prefect UI (its summary
artifact, then its graph), what `regjobs jobs watch` shows of a running job, and the job
status page (`/jobs/{id}?token=`) of a running job, a failed one and one waiting for input,
1280 and 360 px wide.

    .venv/bin/python docs/screenshots.py [--only prefect|page]

Starts its own system (as `make run` does, Prefect UI on) on free ports in a temporary
folder, runs two jobs in endpoints mode, takes the pictures with Chromium, stops it all.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import sync_playwright
from rich.console import Console

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from deployments.demo import DEMO_CONFIG  # noqa: E402
from deployments.stack import Stack, free_port  # noqa: E402
from deployments.stack_config import StackConfig  # noqa: E402
from regjobs.cli import _steps_table  # noqa: E402
from regjobs.settings import get_settings  # noqa: E402

KEY = "rj_docs_screenshots_key_0123456789"


def wait(check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.2)
    raise TimeoutError(check)


def create(api: httpx.Client, restaurant_id: str) -> str:
    body = {"restaurant_id": restaurant_id, "execution_config": DEMO_CONFIG}
    response = api.post("/api/registration-jobs", json=body)
    response.raise_for_status()
    return str(response.json()["job_id"])


def job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    return dict(api.get(f"/api/registration-jobs/{job_id}").json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["prefect", "page"], help="one set of pictures")
    only = parser.parse_args().only
    tmp = Path(tempfile.mkdtemp(prefix="regjobs-shots-"))
    config = StackConfig(
        state_dir=tmp,
        api_port=free_port(),
        prefect_port=free_port(),
        standin_port=free_port(),
        env={"REGJOBS_DEV_API_KEY": KEY, "REGJOBS_STEP_MODE": "endpoints"},
    )
    stack = Stack(config)
    try:
        stack.start_all()
        if only in (None, "prefect"):
            shoot(stack)
        if only in (None, "page"):
            shoot_page(stack)
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def shoot(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    api = httpx.Client(base_url=stack.config.api_url, headers=headers, timeout=30)
    standin = httpx.Client(base_url=stack.config.standin_url, timeout=30)
    standin.post("/_control/reset").raise_for_status()

    # A job caught running (option sets held), drawn as `regjobs jobs watch` draws it.
    standin.post(
        "/_control/faults", json={"step": "option_sets", "mode": "slow", "seconds": 6}
    ).raise_for_status()
    running = create(api, "rest-docs-watch")
    shown = wait(lambda: (j := job(api, running))["steps"][10]["status"] == "running" and j)
    console = Console(record=True, width=118, force_terminal=True, file=io.StringIO())
    console.print(_steps_table(shown))
    page_html = HERE / "jobs-watch.html"
    page_html.write_text(console.export_html(inline_styles=True))
    wait(lambda: job(api, running)["status"] == "completed", timeout=60)

    # A job that fails at menu import: the summary shows the error and the skipped steps.
    standin.post("/_control/reset").raise_for_status()
    standin.post(
        "/_control/faults", json={"step": "menu_import", "mode": "status", "status": 400}
    ).raise_for_status()
    failed_id = create(api, "rest-docs-failed")
    failed = wait(lambda: (j := job(api, failed_id))["status"] == "failed" and j)
    url = failed["flow_run_url"] or (
        f"{stack.config.prefect_url}/runs/flow-run/{failed['flow_run_id']}"
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=get_settings().chromium_path())
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # Nothing outside this machine (no fonts from a CDN, no telemetry).
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if (urlsplit(route.request.url).hostname or "") in ("127.0.0.1", "localhost", "")
                else route.abort()
            ),
        )
        page.goto(url, wait_until="networkidle")
        page.get_by_text("Menu import").first.wait_for(timeout=30_000)
        page.wait_for_timeout(2000)  # the graph draws after its data arrives
        page.screenshot(path=str(HERE / "prefect-run-graph.png"))
        # The summary: its latest version (one is written as steps end).
        latest = httpx.post(
            f"{stack.config.prefect_api_url}/artifacts/filter",
            json={
                "artifacts": {"key": {"any_": [f"job-{failed_id}"]}},
                "sort": "CREATED_DESC",
                "limit": 1,
            },
        ).json()[0]["id"]
        page.goto(f"{stack.config.prefect_url}/artifacts/artifact/{latest}")
        page.get_by_text("Failed step").first.wait_for(timeout=30_000)
        page.screenshot(path=str(HERE / "prefect-run-summary.png"), full_page=True)
        page.set_viewport_size({"width": 1000, "height": 560})
        page.goto(page_html.as_uri(), wait_until="load")
        page.screenshot(path=str(HERE / "jobs-watch.png"))
        browser.close()
    page_html.unlink()
    sys.stdout.write("wrote prefect-run-summary.png, prefect-run-graph.png, jobs-watch.png\n")


#: The page's widths: a laptop, and a phone.
WIDTHS = (1280, 360)


def shoot_page(stack: Stack) -> None:
    """The job status page of a running job (one step retried, option sets under way), of a
    failed one, and of one waiting for the owner's password, at each width."""
    headers = {"Authorization": f"Bearer {KEY}"}
    api = httpx.Client(base_url=stack.config.api_url, headers=headers, timeout=30)
    standin = httpx.Client(base_url=stack.config.standin_url, timeout=30)

    def page_url(job_id: str) -> str:
        made = api.post(f"/api/registration-jobs/{job_id}/view-token").json()
        return str(made["url"])

    standin.post("/_control/reset").raise_for_status()
    for spec in (
        {"step": "payment_configuration", "mode": "status", "status": 503, "times": 1},
        {"step": "option_sets", "mode": "slow", "seconds": 30, "times": 1},
    ):
        standin.post("/_control/faults", json=spec).raise_for_status()
    running = create(api, "rest-docs-page-running")
    wait(lambda: job(api, running)["steps"][10]["status"] == "running")
    option_sets_running = '[data-step="option_sets"][data-status="running"]'
    pictures = [("page-running", page_url(running), option_sets_running)]

    standin.post("/_control/reset").raise_for_status()
    standin.post(
        "/_control/faults", json={"step": "menu_import", "mode": "status", "status": 400}
    ).raise_for_status()
    failed = create(api, "rest-docs-page-failed")
    wait(lambda: job(api, failed)["status"] == "failed")
    pictures.append(("page-failed", page_url(failed), '#status[data-status="failed"]'))

    # The owner's account exists already, and the job has its password mistyped.
    standin.post("/_control/reset").raise_for_status()
    email = "owner.docs@example.com"
    standin.post(
        "/_control/accounts", json={"email": email, "password": "the-right-one-2026"}
    ).raise_for_status()
    config = {**DEMO_CONFIG, "account": {**DEMO_CONFIG["account"], "email": email,
                                          "password": "the-wrong-one-2026"}}  # fmt: skip
    response = api.post(
        "/api/registration-jobs",
        json={"restaurant_id": "rest-docs-page-input", "execution_config": config},
    )
    response.raise_for_status()
    waiting = str(response.json()["job_id"])
    wait(lambda: job(api, waiting).get("action_required"))
    pictures.append(("page-input", page_url(waiting), "#needs-you:not([hidden])"))

    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=get_settings().chromium_path())
        for name, url, ready in pictures:
            for width in WIDTHS:
                context = browser.new_context(viewport={"width": width, "height": 900})
                page = context.new_page()
                page.goto(url)
                page.locator(ready).first.wait_for(timeout=30_000)
                page.wait_for_timeout(500)  # the announcement and the bar settle
                path = HERE / f"{name}-{width}.png"
                page.screenshot(path=str(path), full_page=True)
                written.append(path.name)
                context.close()
        browser.close()
    sys.stdout.write("wrote " + ", ".join(written) + "\n")


if __name__ == "__main__":
    main()
