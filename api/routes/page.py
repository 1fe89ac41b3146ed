"""The job status page (SPEC "The job status page"): `GET /jobs/{job_id}?token=`.

Plain files in `api/page/`, served as they are: the page reads the job with its view token
from the API (`job.js`), so no job data is ever in its HTML. A link whose token does not
open the job gets `404` and a page that says so, and nothing about the job.

Headers: a Content-Security-Policy that allows scripts, styles, images and requests from
this origin only (no inline script or style), and framing by this origin and the CORS
origins (`REGJOBS_CORS_ORIGINS`: the frontend that embeds it); `Referrer-Policy:
no-referrer`, as the token is in the address; `Cache-Control: no-store`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Final
from uuid import UUID

from fastapi import APIRouter, Query, status
from fastapi.responses import Response

from api import reads
from api.deps import SettingsDep
from regjobs import viewtokens
from regjobs.settings import Settings

PAGE_DIR: Final = Path(__file__).resolve().parent.parent / "page"
#: The files the page loads, with their media types (nothing else is served from there).
ASSETS: Final = {
    "job.js": "text/javascript; charset=utf-8",
    "job.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
#: What a CORS origin must look like to be named in `frame-ancestors` (no `;`, no spaces).
_ORIGIN: Final = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")

router = APIRouter(prefix="/jobs", tags=["job status page"], include_in_schema=False)


@lru_cache
def _file(name: str) -> bytes:
    return (PAGE_DIR / name).read_bytes()


def frame_ancestors(origins: list[str]) -> str:
    """`frame-ancestors` of the page: this origin and each CORS origin that is one."""
    if "*" in origins:
        return "*"
    return " ".join(["'self'", *(o.rstrip("/") for o in origins if _ORIGIN.match(o.rstrip("/")))])


def page_headers(settings: Settings) -> dict[str, str]:
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; "
        f"frame-ancestors {frame_ancestors(settings.cors_origins)}"
    )
    return {
        "Content-Security-Policy": policy,
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }


def _html(settings: Settings, name: str, code: int) -> Response:
    return Response(
        _file(name),
        status_code=code,
        media_type="text/html; charset=utf-8",
        headers=page_headers(settings),
    )


@router.get("/assets/{name}", operation_id="get_job_page_asset")
async def asset(name: str) -> Response:
    if name not in ASSETS:
        return Response("not found", status_code=status.HTTP_404_NOT_FOUND)
    # Revalidated on every load (a new release's page never runs an old script).
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return Response(_file(name), media_type=ASSETS[name], headers=headers)


@router.get("/{job_id}", operation_id="get_job_page")
async def job_page(
    job_id: str, settings: SettingsDep, token: Annotated[str | None, Query()] = None
) -> Response:
    """The page, if the token opens the job; else 404 and a page that says the link is
    not valid."""
    try:
        job = str(UUID(job_id))
    except ValueError:
        return _html(settings, "gone.html", status.HTTP_404_NOT_FOUND)
    organisation_id = viewtokens.organisation_of(settings, token, job) if token else None
    if organisation_id is None or not await reads.run(reads.job_exists, organisation_id, job):
        return _html(settings, "gone.html", status.HTTP_404_NOT_FOUND)
    return _html(settings, "job.html", status.HTTP_200_OK)
