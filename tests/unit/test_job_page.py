"""The job status page's files and headers, without a server: no inline script or style,
nothing from another origin, and a policy that only names well-formed origins."""

from __future__ import annotations

import re

import pytest

from api.routes.page import ASSETS, PAGE_DIR, frame_ancestors, page_headers
from regjobs.settings import Settings

PAGES = ["job.html", "gone.html"]


@pytest.mark.parametrize("name", PAGES)
def test_pages_have_no_inline_script_or_style(name: str) -> None:
    html = (PAGE_DIR / name).read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S | re.I)
    assert all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html, flags=re.I)


@pytest.mark.parametrize("name", [*PAGES, *ASSETS])
def test_nothing_comes_from_another_origin(name: str) -> None:
    text = (PAGE_DIR / name).read_text()
    # The SVG's XML namespace is a name, not a request.
    text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.search(r"https?://|(?:src|href)=[\"']//|url\(", text), name


def test_the_script_never_writes_markup() -> None:
    script = (PAGE_DIR / "job.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", script)


def test_frame_ancestors_are_this_origin_and_the_cors_origins() -> None:
    assert frame_ancestors([]) == "'self'"
    assert (
        frame_ancestors(["https://app.example.com", "http://localhost:3000/"])
        == "'self' https://app.example.com http://localhost:3000"
    )
    assert frame_ancestors(["*"]) == "*"
    # Anything that is not an origin (it would add a directive) is left out.
    assert frame_ancestors(["https://a.example; script-src *", "javascript:x"]) == "'self'"


def test_the_headers_are_strict() -> None:
    headers = page_headers(Settings(cors_origins=["https://app.example.com"]))
    policy = headers["Content-Security-Policy"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert policy.endswith("frame-ancestors 'self' https://app.example.com")
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"
