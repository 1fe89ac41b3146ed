"""The two polled reads take the request alone (`api.routes.jobs._polled`): what they
refuse before any read (no bearer key, a malformed id, an `If-None-Match` past its bound)
is answered as a route with those parameters declared answers it, and OpenAPI describes
them as it describes declared ones."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any
from uuid import UUID

import pytest
from fastapi import FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from api.deps import ApiKeyDep
from api.headers import IF_NONE_MATCH_MAX
from regjobs.config import public_errors

ID = "0b7f6a2e-8a3c-4a8e-9d43-1f2e3d4c5b6a"
KEY = ("Authorization", "Bearer rj_some_key")
LONG = ("If-None-Match", "x" * (IF_NONE_MATCH_MAX + 1))
#: (path, headers): each refused before the database is asked.
REFUSED: list[tuple[str, list[tuple[str, str]]]] = [
    (ID, []),
    (ID, [("Authorization", "Basic abc")]),
    (ID, [("Authorization", "Bearer")]),
    (ID, [("Authorization", "Bearer   ")]),
    ("not-a-uuid", []),
    ("not-a-uuid", [KEY]),
    (ID.replace("-", "")[:-1], [KEY]),
    (ID, [KEY, LONG]),
    ("not-a-uuid", [KEY, LONG]),
    ("not-a-uuid", [LONG]),
]


def declared() -> FastAPI:
    """The reads as ordinary routes with declared parameters, answering nothing else."""
    app = FastAPI()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": public_errors(exc.errors())}, status_code=422)

    async def read(
        job_id: UUID,
        key: ApiKeyDep,
        if_none_match: Annotated[str | None, Header(max_length=IF_NONE_MATCH_MAX)] = None,
    ) -> Response:
        raise AssertionError("every case is refused before the read")

    app.add_api_route("/api/registration-jobs/{job_id}", read)
    app.add_api_route("/api/registration-jobs/{job_id}/progress", read)
    return app


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[TestClient, TestClient]]:
    from api.main import create_app

    # No lifespan (no `with`): nothing here reaches the database.
    yield TestClient(create_app()), TestClient(declared())


def answer(client: TestClient, path: str, headers: list[tuple[str, str]]) -> tuple[Any, ...]:
    got = client.get(path, headers=headers)
    return got.status_code, got.headers.get("www-authenticate"), got.json()


@pytest.mark.parametrize("case", range(len(REFUSED)))
@pytest.mark.parametrize("suffix", ["", "/progress"])
def test_a_refused_read_is_answered_as_declared_parameters_answer_it(
    clients: tuple[TestClient, TestClient], case: int, suffix: str
) -> None:
    job_id, headers = REFUSED[case]
    path = f"/api/registration-jobs/{job_id}{suffix}"
    polled, plain = (answer(client, path, headers) for client in clients)
    assert polled == plain
    assert polled[0] in (401, 422)


def test_openapi_describes_the_polled_reads_parameters() -> None:
    from api.main import create_app

    paths = create_app().openapi()["paths"]
    for path in ("/api/registration-jobs/{job_id}", "/api/registration-jobs/{job_id}/progress"):
        operation = paths[path]["get"]
        assert operation["security"] == [{"HTTPBearer": []}]
        names = {(p["name"], p["in"]) for p in operation["parameters"]}
        assert names == {("job_id", "path"), ("if-none-match", "header"), ("token", "query")}
        assert {"200", "304", "401", "404", "422"} <= set(operation["responses"])
