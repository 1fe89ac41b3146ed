"""Dependencies the routes receive: the caller's API key and organisation, a write session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated
from uuid import UUID

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api import reads
from regjobs.db import session_scope
from regjobs.settings import Settings, get_settings


def get_db() -> Iterator[Session]:
    with session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

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
