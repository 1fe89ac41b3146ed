"""The job status page (`/jobs/{job_id}?token=`) in headless Chromium against the real
system: live by its event stream (no polling while that is up), resuming after the stream
is dropped, polling when the stream is refused, view tokens that do not open the job, and
a clean console. Each test has a browser context of its own."""

from __future__ import annotations

import html
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from deployments.stack import Stack, free_port
from regjobs import viewtokens
from regjobs.catalogue import STEP_IDS
from regjobs.settings import get_settings
from tasks.browser import CHROMIUM_ARGS
from tests.helpers import (
    create,
    fault,
    occurrences,
    read_events,
    serve_in_thread,
    wait_for,
)

pytestmark = pytest.mark.e2e

#: Shares words with the restaurant's name, and is not ASCII.
NAME = "Café <b>Ünïcode</b> & Grill «Harbour»"
PASSWORD = "Ünïcode-Grill-Harbour-pässwörd-2026!"


# ----------------------------------------------------------------------------- helpers


@dataclass
class Watched:
    """What one browser context asked for and heard."""

    requests: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    console: list[ConsoleMessage] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    #: (path, status) of every answer.
    answers: list[tuple[str, int]] = field(default_factory=list)
    navigations: int = 0

    def to(self, part: str) -> list[tuple[float, str, dict[str, str]]]:
        return [r for r in self.requests if part in urlsplit(r[1]).path]

    def errors(self, *, allowed: Callable[[ConsoleMessage], bool] = lambda _: False) -> list[str]:
        found = [
            f"{m.type}: {m.text} ({m.location.get('url')})"
            for m in self.console
            if m.type in ("error", "warning") and not allowed(m)
        ]
        return found + self.page_errors


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=get_settings().chromium_path(), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser context (no cache, no cookies, no earlier page's state), phone-wide."""
    fresh = browser.new_context(viewport={"width": 360, "height": 780})
    try:
        yield fresh
    finally:
        fresh.close()


def open_page(context: BrowserContext, url: str) -> tuple[Page, Watched]:
    page = context.new_page()
    watched = Watched()
    page.on(
        "request",
        lambda r: watched.requests.append((time.monotonic(), r.url, dict(r.headers))),
    )
    page.on("console", lambda m: watched.console.append(m))
    page.on("pageerror", lambda e: watched.page_errors.append(str(e)))
    page.on("response", lambda r: watched.answers.append((urlsplit(r.url).path, r.status)))

    def navigated(frame: Any) -> None:
        if frame == page.main_frame:
            watched.navigations += 1

    page.on("framenavigated", navigated)
    page.goto(url)
    return page, watched


def started(page: Page, part: str) -> list[float]:
    """When the page began each request whose path holds `part`, in seconds by the
    browser's own clock (Resource Timing): Playwright hands its request events to the test
    late, in batches, so their arrival says little about when the page asked."""
    found: list[float] = page.evaluate(
        """part => performance.getEntriesByType("resource")
            .filter(e => new URL(e.name).pathname.includes(part))
            .map(e => e.startTime / 1000)""",
        part,
    )
    return found


def view_url(api: httpx.Client, job_id: str, base: str | None = None) -> str:
    """The job's page with a new view token, on `base` (the API, or a proxy before it)."""
    response = api.post(f"/api/registration-jobs/{job_id}/view-token")
    assert response.status_code == 201, response.text
    made = response.json()
    assert made["url"].endswith(f"/jobs/{job_id}?token={made['token']}")
    return f"{base or str(api.base_url).rstrip('/')}/jobs/{job_id}?token={made['token']}"


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def shown_statuses(page: Page) -> dict[str, str]:
    """Each step row's status on the page (a repeated row would fail here)."""
    rows = page.locator("li.step").evaluate_all(
        "rows => rows.map(r => [r.dataset.step, r.dataset.status])"
    )
    ids = [step_id for step_id, _ in rows]
    assert sorted(ids) == sorted(STEP_IDS), f"rows missing or repeated: {ids}"
    return dict(rows)


def job_of(api: httpx.Client, job_id: str) -> dict[str, Any]:
    response = api.get(f"/api/registration-jobs/{job_id}")
    response.raise_for_status()
    return dict(response.json())


def wait_job_shown(page: Page, status: str, timeout: float = 90) -> None:
    page.locator(f'#status[data-status="{status}"]').wait_for(timeout=timeout * 1000)


def assert_shows_final_job(page: Page, api: httpx.Client, job_id: str) -> None:
    job = job_of(api, job_id)
    assert shown_statuses(page) == {s["step_id"]: s["status"] for s in job["steps"]}
    assert page.locator("#bar").evaluate("bar => bar.value") == job["progress_percent"]


# ----------------------------------------------------------------------------- a proxy


class StreamCutter:
    """A proxy before the API that ends the first `cuts` event streams after `after` events
    each: to the browser, the server dropped the stream. Records each stream request's
    `Last-Event-ID`."""

    def __init__(self, target: str, *, cuts: int, after: int) -> None:
        self.target = target
        self.cuts = cuts
        self.after = after
        self.last_event_ids: list[str | None] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [
            (k, v)
            for k, v in scope["headers"]
            if k.lower() not in (b"host", b"content-length", b"accept-encoding", b"connection")
        ]
        query = scope["query_string"].decode()
        url = self.target + scope["path"] + (f"?{query}" if query else "")
        async with httpx.AsyncClient(timeout=None) as client:
            request = client.build_request(scope["method"], url, headers=headers, content=body)
            response = await client.send(request, stream=True)
            try:
                streaming = response.headers.get("content-type", "").startswith("text/event-stream")
                limit = None
                if streaming:
                    self.last_event_ids.append(
                        dict(scope["headers"]).get(b"last-event-id", b"").decode() or None
                    )
                    if self.cuts > 0:
                        self.cuts -= 1
                        limit = self.after
                passed = [
                    (k.encode(), v.encode())
                    for k, v in response.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                ]
                await send(
                    {"type": "http.response.start", "status": response.status_code,
                     "headers": passed}
                )  # fmt: skip
                async for chunk in self._body(response, limit):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                await response.aclose()

    @staticmethod
    async def _body(response: httpx.Response, limit: int | None) -> AsyncIterator[bytes]:
        if limit is None:
            async for chunk in response.aiter_raw():
                yield chunk
            return
        buffered, events = b"", 0
        async for chunk in response.aiter_raw():
            buffered += chunk
            while b"\n\n" in buffered:
                block, buffered = buffered.split(b"\n\n", 1)
                yield block + b"\n\n"
                if b"\nid:" in b"\n" + block:
                    events += 1
                    if events >= limit:
                        return


# ----------------------------------------------------------------------------- tests


def test_the_page_is_live_without_reloads_and_never_polls_while_the_stream_is_up(
    api: httpx.Client, standin: httpx.Client, context: BrowserContext, restaurant_id: str
) -> None:
    # Option sets held a few seconds: the page is open while steps are still moving.
    fault(standin, step="option_sets", mode="slow", seconds=4, times=1)
    created = api.post(
        "/api/registration-jobs",
        json={
            "restaurant_id": restaurant_id,
            "execution_config": _config(restaurant_id),
        },
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    url = created.json()["view_url"]
    page, watched = open_page(context, url)

    page.locator('li.step[data-step="option_sets"][data-status="running"]').wait_for(timeout=60_000)
    running_seen_at = time.monotonic()
    wait_job_shown(page, "completed")
    wait_for(
        lambda: "complete" in page.locator("#announce").inner_text(),
        timeout=5,
        what="the job's end announced",
    )

    assert watched.navigations == 1  # never reloaded
    assert time.monotonic() > running_seen_at  # it moved on from running, on the same page
    assert_shows_final_job(page, api, job_id)
    assert watched.to("/events"), "the page never opened the event stream"
    assert watched.to("/progress") == []  # no poll while the stream was up
    assert page.locator("#stopped").is_hidden()
    assert page.locator("#needs-you").is_hidden()
    # Usable at a phone's width: nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert watched.errors() == []

    # The password is in no answer the page had, nor its HTML or script.
    haystacks = {"page html": page.content().encode()}
    for name in ("job.js", "job.css"):
        haystacks[name] = httpx.get(f"{api.base_url}/jobs/assets/{name}").content
    token = token_of(url)
    for path in ("", "/progress"):
        haystacks[f"GET{path}"] = httpx.get(
            f"{api.base_url}/api/registration-jobs/{job_id}{path}", params={"token": token}
        ).content
    stream = read_events(httpx.Client(base_url=str(api.base_url), params={"token": token}), job_id)
    haystacks["events"] = json.dumps([e["data"] for e in stream.events]).encode()
    assert occurrences(PASSWORD, haystacks, public=[NAME]) == {}


def test_the_page_resumes_after_the_server_drops_the_stream(
    stack: Stack,
    api: httpx.Client,
    standin: httpx.Client,
    context: BrowserContext,
    restaurant_id: str,
) -> None:
    # Steps spread over seconds, so events happen while a stream is down.
    fault(standin, step="menu_import", mode="slow", seconds=3, times=1)
    fault(standin, step="option_sets", mode="slow", seconds=3, times=1)
    cutter = StreamCutter(stack.config.api_url, cuts=2, after=3)
    with serve_in_thread(cutter) as proxy:
        job_id = create(api, restaurant_id, **_sections(restaurant_id))
        page, watched = open_page(context, view_url(api, job_id, base=proxy))
        wait_job_shown(page, "completed", timeout=120)
        assert_shows_final_job(page, api, job_id)
    resumed = [last for last in cutter.last_event_ids if last is not None]
    assert len(cutter.last_event_ids) >= 3 and len(resumed) >= 2, cutter.last_event_ids
    assert [int(last) for last in resumed] == sorted(int(last) for last in resumed)
    assert watched.to("/progress") == []  # reconnected; never fell back to polling
    assert watched.navigations == 1
    assert watched.errors() == []


def test_the_page_polls_when_the_event_stream_is_refused(
    api: httpx.Client, standin: httpx.Client, context: BrowserContext, restaurant_id: str
) -> None:
    # (`standin`: reset, so no earlier test's restaurant of the same name is in the way.)
    refused: list[str] = []

    def refuse(route: Any) -> None:
        refused.append(route.request.url)
        route.abort()

    context.route("**/api/registration-jobs/*/events*", refuse)
    # Made parked: the page has fallen back to polling, and seen nothing change (304),
    # before the job starts.
    job_id = _parked(api, restaurant_id)
    page, watched = open_page(context, view_url(api, job_id))
    # (Playwright hands events over only while the test is in one of its calls: waited
    # for by Playwright, not by a loop of this thread.)
    page.wait_for_event(
        "response",
        lambda r: r.status == 304 and urlsplit(r.url).path.endswith(f"{job_id}/progress"),
        timeout=30_000,
    )
    assert "every 3 seconds" in page.locator("#connection").inner_text()
    api.post(f"/api/registration-jobs/{job_id}/start").raise_for_status()
    ended = wait_for(
        lambda: (
            (job := job_of(api, job_id))["status"] in ("completed", "failed", "cancelled") and job
        ),
        timeout=120,
        what=f"job {job_id} to end",
    )
    assert ended["status"] == "completed", ended
    try:
        wait_job_shown(page, "completed", timeout=15)
    except Exception as exc:
        raise AssertionError(
            f"the page did not show the end: {page.locator('#status').inner_text()!r}, "
            f"{page.locator('#connection').inner_text()!r}, answers {watched.answers[-6:]}"
        ) from exc
    assert_shows_final_job(page, api, job_id)

    polls = watched.to("/progress")
    assert refused and len(polls) >= 2
    # Never both at once: no stream was asked for once polling began.
    assert max(t for t, _, _ in watched.to("/events")) < polls[0][0]
    # Every 3 s (not faster), and with the last ETag after the first.
    began = started(page, f"{job_id}/progress")
    assert len(began) == len(polls), (began, len(polls))
    gaps = [b - a for a, b in itertools.pairwise(began)]
    assert min(gaps) >= 2.5, gaps
    assert all("if-none-match" in headers for _, _, headers in polls[1:])
    assert "every 3 seconds" not in page.locator("#connection").inner_text()  # ended: quiet
    assert watched.errors(allowed=lambda m: "/events" in (m.location.get("url") or "")) == []


def test_tokens_that_do_not_open_the_job_get_a_404_page_with_no_job_data(
    api: httpx.Client, other_org: httpx.Client, context: BrowserContext
) -> None:
    job_id, other_job, foreign_job = _parked(api), _parked(api), _parked(other_org)
    try:
        _refused_tokens(api, other_org, context, job_id, other_job, foreign_job)
    finally:
        api.post(f"/api/registration-jobs/{job_id}/cancel")
        api.post(f"/api/registration-jobs/{other_job}/cancel")
        other_org.post(f"/api/registration-jobs/{foreign_job}/cancel")


def _refused_tokens(
    api: httpx.Client,
    other_org: httpx.Client,
    context: BrowserContext,
    job_id: str,
    other_job: str,
    foreign_job: str,
) -> None:
    settings = get_settings()
    organisation = token_of(view_url(api, job_id)).split(".")[1]
    foreign_token = token_of(view_url(other_org, foreign_job))
    foreign_org = foreign_token.split(".")[1]
    good = token_of(view_url(api, job_id))
    bad = {
        "expired": viewtokens.issue(
            settings, job_id, organisation, ttl_seconds=60, now=time.time() - 3600
        ).token,
        "forged": good[:-1] + ("A" if good[-1] != "A" else "B"),
        "another job's": token_of(view_url(api, other_job)),
        "another organisation's": foreign_token,
        "signed for this job, bound to another organisation": viewtokens.issue(
            settings, job_id, foreign_org
        ).token,
        "none": "",
    }
    base = str(api.base_url).rstrip("/")
    for what, token in bad.items():
        page, watched = open_page(context, f"{base}/jobs/{job_id}?token={token}")
        answer = httpx.get(f"{base}/jobs/{job_id}", params={"token": token})
        assert answer.status_code == 404, what
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["referrer-policy"] == "no-referrer"
        html = page.content()
        assert "does not open" in page.locator("h1").inner_text(), what
        for data in (job_id, "Ünïcode", "Account registration", organisation):
            assert data not in html and data not in answer.text, (what, data)
        # Only the 404 document itself is reported (Chromium logs a failed load).
        assert watched.errors(allowed=lambda m: "Failed to load resource" in m.text) == []
        page.close()
        if token:
            for path in ("", "/progress", "/events", "/evidence/1"):
                read = httpx.get(
                    f"{base}/api/registration-jobs/{job_id}{path}", params={"token": token}
                )
                assert read.status_code == 404, (what, path, read.text)
                assert job_id in read.json()["detail"] or path == "/evidence/1"
                assert "Ünïcode" not in read.text
                as_bearer = httpx.get(
                    f"{base}/api/registration-jobs/{job_id}{path}",
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert as_bearer.status_code == 404, (what, path)
            given = httpx.post(
                f"{base}/api/registration-jobs/{job_id}/input",
                params={"token": token},
                json={"execution_config": {"account": {"password": PASSWORD}}},
            )
            assert given.status_code == 404, (what, given.text)

    # The good token opens the job's reads and /input (409: nothing waits), and nothing
    # that needs the key.
    for path in ("", "/progress"):
        read = httpx.get(f"{base}/api/registration-jobs/{job_id}{path}", params={"token": good})
        assert read.status_code == 200
    given = httpx.post(
        f"{base}/api/registration-jobs/{job_id}/input",
        params={"token": good},
        json={"execution_config": {"account": {"password": PASSWORD}}},
    )
    assert given.status_code == 409, given.text
    for method, path in [
        ("POST", f"/api/registration-jobs/{job_id}/cancel"),
        ("POST", f"/api/registration-jobs/{job_id}/retry"),
        ("POST", f"/api/registration-jobs/{job_id}/start"),
        ("POST", f"/api/registration-jobs/{job_id}/view-token"),
        ("GET", "/api/registration-jobs"),
        ("GET", "/api/restaurants/x/registration-jobs/active"),
    ]:
        for how in ({"params": {"token": good}}, {"headers": {"Authorization": f"Bearer {good}"}}):
            refused = httpx.request(method, base + path, **how)  # type: ignore[arg-type]
            assert refused.status_code == 401, (method, path, how, refused.text)
    assert job_of(api, job_id)["status"] == "pending"  # nothing the token did changed it


# ----------------------------------------------------------------------------- data


def _sections(tag: str) -> dict[str, Any]:
    """A job of its own (account, restaurant, onboarding user) with a password that shares
    words with the restaurant's name."""
    return {
        "account": {"email": f"{tag}@example.com", "password": PASSWORD},
        "restaurant": {"name": NAME},
        "onboarding": {"user_email": f"owner-{tag}@example.com"},
    }


def _config(tag: str) -> dict[str, Any]:
    from tests.helpers import full_config

    return full_config(**_sections(tag))


def _parked(client: httpx.Client, restaurant_id: str | None = None) -> str:
    """A job that waits for `start` (auto_start false), named as every job here is."""
    created = client.post(
        "/api/registration-jobs",
        json={
            "restaurant_id": restaurant_id or f"page-{uuid.uuid4().hex[:10]}",
            "auto_start": False,
            "execution_config": _config(uuid.uuid4().hex[:8]),
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["job_id"])


# ----------------------------------------------------------------------------- input

#: What the owner first typed, and a second wrong guess (both share words with the name).
MISTYPED = "Ünïcode-Grill-Harbour-pässwörd-2025!"
WRONG_AGAIN = "Ünïcode-Grill-Harbour-pässwörd-2024!"


def test_the_page_asks_for_the_password_and_goes_on_with_the_right_one(
    api: httpx.Client, standin: httpx.Client, context: BrowserContext, restaurant_id: str
) -> None:
    # The owner's account exists (their first restaurant); the job has the password mistyped.
    email = f"owner.{uuid.uuid4().hex[:8]}@example.com"
    seeded = standin.post("/_control/accounts", json={"email": email, "password": PASSWORD})
    assert seeded.status_code == 201, seeded.text
    sections = _sections(restaurant_id)
    sections["account"] = {"email": email, "password": MISTYPED}
    job_id = create(api, restaurant_id, **sections)
    page, watched = open_page(context, view_url(api, job_id))

    page.locator("#needs-you").wait_for(state="visible", timeout=90_000)
    asked = job_of(api, job_id)["action_required"]
    assert job_of(api, job_id)["next_action"] == "provide_input"
    fields = page.locator("#input-fields input")
    assert fields.evaluate_all("all => all.map(i => i.name)") == asked["fields"]
    password = page.locator('input[name="account.password"]')
    assert password.get_attribute("type") == "password"
    assert password.get_attribute("autocomplete") == "new-password"
    assert password.input_value() == ""  # nothing shown back

    # The keyboard alone: Tab to the field, type, Enter (other fields asked filled first).
    for other in asked["fields"]:
        if other != "account.password":
            page.locator(f'input[name="{other}"]').fill(email if "email" in other else "x")
    for _ in range(40):
        if page.evaluate("document.activeElement && document.activeElement.name") == (
            "account.password"
        ):
            break
        page.keyboard.press("Tab")
    else:
        raise AssertionError("the password field cannot be reached with Tab")
    page.keyboard.type(WRONG_AGAIN)
    with page.expect_response(lambda r: r.url.split("?")[0].endswith("/input")) as sent:
        page.keyboard.press("Enter")
    refused = sent.value
    assert refused.status == 422
    detail = refused.json()["detail"]
    named = [e for e in detail if ".".join(map(str, e["loc"])).endswith("account.password")]
    error = page.locator("#field-account-password-error")
    if named:
        wait_for(lambda: error.inner_text() == named[0]["msg"], timeout=5, what="the 422 shown")
        assert password.get_attribute("aria-invalid") == "true"
    else:
        wait_for(lambda: page.locator("#form-message").inner_text(), timeout=5, what="the 422")
    assert password.input_value() == ""  # cleared once sent, never kept on the page
    assert job_of(api, job_id)["action_required"] is not None  # still waiting

    password.focus()
    page.keyboard.type(PASSWORD)
    with page.expect_response(lambda r: r.url.split("?")[0].endswith("/input")) as sent:
        page.keyboard.press("Enter")
    assert sent.value.status == 200, sent.value.text()
    wait_job_shown(page, "completed", timeout=120)
    assert page.locator("#needs-you").is_hidden()
    assert_shows_final_job(page, api, job_id)
    assert watched.navigations == 1
    # Chromium reports the wrong password's 422 (an answer the page expects) on the console.
    assert (
        watched.errors(
            allowed=lambda m: "status of 422" in m.text and "/input" in m.location.get("url", "")
        )
        == []
    )

    haystacks = {"page html": page.content().encode()}
    haystacks.update({"422": refused.body(), "200": sent.value.body()})
    for secret in (PASSWORD, MISTYPED, WRONG_AGAIN):
        assert occurrences(secret, haystacks, public=[NAME]) == {}, secret


# ------------------------------------------------------------------------- in a frame


async def _app_page(request: Request) -> HTMLResponse:
    """The frontend's page: the job page (`?src=`) in an iframe, 360 px wide."""
    src = html.escape(request.query_params.get("src", ""))
    return HTMLResponse(
        f'<!doctype html><title>onboarding</title><iframe id="job" title="job" src="{src}" '
        'width="360" height="700"></iframe>'
    )


@pytest.fixture(scope="module")
def framing(stack: Stack) -> Iterator[tuple[str, str]]:
    """The frontend's pages on a loopback port, and another API process of the test system
    set as a deployment embedding the page sets it: that origin allowed (CORS, and so
    `frame-ancestors`). (The frontend's base URL, the API's.) The same pages as
    `localhost` are another origin, not allowed."""
    with serve_in_thread(Starlette(routes=[Route("/onboarding", _app_page)])) as app:
        port = free_port()
        stack.start_api({"REGJOBS_CORS_ORIGINS": app}, name="api-framing", port=port)
        try:
            yield app, f"http://127.0.0.1:{port}"
        finally:
            stack.stop_child("api-framing")


def test_the_page_shows_in_a_frame_of_an_allowed_origin_and_nowhere_else(
    api: httpx.Client, context: BrowserContext, framing: tuple[str, str], restaurant_id: str
) -> None:
    app, framing_api = framing
    job_id = _parked(api, restaurant_id)
    query = urlencode({"src": view_url(api, job_id, framing_api)})

    allowed = context.new_page()
    allowed.goto(f"{app}/onboarding?{query}")
    framed = allowed.frame_locator("#job")
    framed.locator('#status[data-status="pending"]').wait_for(timeout=30_000)
    assert framed.locator("li.step").count() == len(STEP_IDS)

    # Another origin's page (the same pages by another host name) gets no job page in its
    # frame: Chromium refuses to render it (frame-ancestors) and says so.
    elsewhere = context.new_page()
    other = app.replace("127.0.0.1", "localhost")
    with elsewhere.expect_console_message(
        lambda m: "frame-ancestors" in m.text, timeout=30_000
    ) as refusal:
        elsewhere.goto(f"{other}/onboarding?{query}")
    assert "has been blocked" in refusal.value.text, refusal.value.text
    frame = next(f for f in elsewhere.frames if f is not elsewhere.main_frame)
    assert frame.evaluate("() => document.querySelector('#status') === null")
