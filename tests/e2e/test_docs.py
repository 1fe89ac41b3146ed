"""The API's documentation page works without the internet: its scripts come from the API."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Route, sync_playwright

from deployments.stack import Stack
from regjobs.settings import get_settings
from tasks.browser import CHROMIUM_ARGS

pytestmark = pytest.mark.e2e

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def test_docs_render_with_every_outside_request_blocked(stack: Stack) -> None:
    blocked: list[str] = []

    def only_loopback(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if host in LOOPBACK:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=get_settings().chromium_path(), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.route("**/*", only_loopback)
            page.goto(f"{stack.config.api_url}/docs")
            page.locator(".opblock").first.wait_for(timeout=20_000)
            listed = page.locator(".opblock-summary-path").all_inner_texts()
        finally:
            browser.close()
    paths = {text.replace("\u200b", "").strip() for text in listed}
    assert {
        "/api/registration-jobs",
        "/api/registration-jobs/{job_id}",
        "/api/registration-jobs/{job_id}/progress",
        "/api/registration-jobs/{job_id}/events",
    } <= paths, paths
    assert blocked == []  # it asked for nothing outside, so nothing had to be blocked
