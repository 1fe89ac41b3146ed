"""Dependencies the routes receive: the caller's API key and organisation (or a job view
token's), a write session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from fastapi import Depends, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api import reads
from regjobs import viewtokens
from regjobs.db import session_scope
from regjobs.settings import Settings, get_settings


def get_db() -> Iterator[Session]:
    with session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


async def settings() -> Settings:
    """The settings, as a dependency declared `async`: FastAPI runs a plain function
    dependency in a worker thread, a hand-off that cost a read more than the read itself
    (measured: docs/figures.md)."""
    return get_settings()


SettingsDep = Annotated[Settings, Depends(settings)]

bearer = HTTPBearer(auto_error=False, description="An API key of your organisation")
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

UNAUTHORIZED = "an API key is required (Authorization: Bearer <key>)"
INVALID_KEY = "the API key is not valid or was revoked"


def unauthorized(message: str = INVALID_KEY) -> HTTPException:
    challenge = "Bearer" if message == UNAUTHORIZED else 'Bearer error="invalid_token"'
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": challenge}
    )


async def api_key(credentials: CredentialsDep) -> str:
    """The bearer key as given (checked where it is used: in the read's own query)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise unauthorized(UNAUTHORIZED)
    return credentials.credentials


ApiKeyDep = Annotated[str, Depends(api_key)]


async def caller(key: ApiKeyDep) -> reads.Caller:
    try:
        return await reads.caller_of(key)
    except reads.Unauthorized:
        raise unauthorized() from None


CallerDep = Annotated[reads.Caller, Depends(caller)]


def not_found(job_id: UUID | str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"registration job {job_id} not found")


async def own_job(job_id: UUID, organisation: CallerDep) -> str:
    """The job's id, if it exists and belongs to the caller's organisation."""
    if not await reads.run(reads.job_exists, organisation.id, str(job_id)):
        raise not_found(job_id)
    return str(job_id)


OwnJobDep = Annotated[str, Depends(own_job)]


TokenQuery = Annotated[
    str | None,
    Query(
        description="A job view token (`POST .../view-token`), for a browser that cannot "
        "send an `Authorization` header (an `EventSource`, an `<img>`)"
    ),
]


@dataclass(frozen=True)
class Viewer:
    """Who reads one job: an API key of its organisation, or a view token of that job."""

    job_id: str
    organisation_id: str
    #: What the caller's event streams are counted against: the API key, or the token.
    holder: str


def token_organisation(settings: Settings, token: str, job_id: str) -> str:
    """The organisation a view token for this job names; 404 for any other token (another
    job's, expired, forged, signed with a key rotated out): a token tells nothing."""
    organisation_id = viewtokens.organisation_of(settings, token, job_id)
    if organisation_id is None:
        raise not_found(job_id)
    return organisation_id


async def job_viewer(
    job_id: UUID, credentials: CredentialsDep, settings: SettingsDep, token: TokenQuery = None
) -> Viewer:
    """The job's reader, by its bearer (an API key or a view token) or `?token=`; 401
    with neither, 404 for a job the credential does not open."""
    bearer = (
        credentials.credentials
        if credentials is not None and credentials.scheme.lower() == "bearer"
        else None
    )
    if bearer is not None and not viewtokens.looks_like(bearer):
        organisation = await caller(bearer)
        holder = bearer
    else:
        given = bearer or token
        if not given:
            raise unauthorized(UNAUTHORIZED)
        organisation = reads.Caller(token_organisation(settings, given, str(job_id)), "")
        holder = given
    if not await reads.run(reads.job_exists, organisation.id, str(job_id)):
        raise not_found(job_id)
    return Viewer(str(job_id), organisation.id, holder)


ViewerDep = Annotated[Viewer, Depends(job_viewer)]
