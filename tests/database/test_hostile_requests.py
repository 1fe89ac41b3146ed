"""Headers as an outsider sends them, over a real socket to the real API app (in this
process, its reconciler off) on the session's job database: an empty `Idempotency-Key`, a
header sent twice, an `If-None-Match` past its bound."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import Engine, func, select

from api import service
from regjobs import ledger
from regjobs.db import transaction
from regjobs.models import RegistrationJob
from regjobs.settings import get_settings
from tests.helpers import full_config, send_raw, serve_in_thread

pytestmark = pytest.mark.database


@pytest.fixture(scope="module")
def server(stack_env: dict[str, str]) -> Iterator[str]:
    """The API app as it runs, its reconciler off: its base URL."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REGJOBS_RECONCILER", "false")
        get_settings.cache_clear()
        from api.main import create_app

        try:
            with serve_in_thread(create_app()) as app:
                yield app
        finally:
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def key(stack_env: dict[str, str]) -> str:
    return stack_env["REGJOBS_DEV_API_KEY"]


def job_count(db: Engine) -> int:
    with db.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(RegistrationJob)).scalar_one()
        )


def create_body(restaurant_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "restaurant_id": f"hdr-{uuid.uuid4().hex[:10]}"
            if restaurant_id is None
            else restaurant_id,
            "auto_start": False,
            "execution_config": full_config(),
        }
    ).encode()


@pytest.fixture(scope="module")
def parked(server: str, key: str) -> dict[str, Any]:
    """A job created with auto_start false: its id and ETag."""
    auth = [("Authorization", f"Bearer {key}"), ("Content-Type", "application/json")]
    created = send_raw(server, "POST", "/api/registration-jobs", auth, create_body())
    assert created.status == 201, created.body
    job_id = created.json()["job_id"]
    got = httpx.get(
        f"{server}/api/registration-jobs/{job_id}",
        headers={"Authorization": f"Bearer {key}"},
    )
    return {"id": job_id, "etag": got.headers["etag"]}


# ------------------------------------------------------------------- Idempotency-Key


@pytest.mark.parametrize("value", ["", "   ", "\t", " \t ", "\xa0"])
def test_an_empty_or_blank_idempotency_key_is_422_naming_it(
    server: str, key: str, db: Engine, value: str
) -> None:
    """Two restaurants: each create 422 naming the header (never the 409 that the first's
    stored "" gave the second), and nothing created."""
    before = job_count(db)
    for _ in range(2):
        answer = send_raw(
            server,
            "POST",
            "/api/registration-jobs",
            [
                ("Authorization", f"Bearer {key}"),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", value),
            ],
            create_body(),
        )
        assert answer.status == 422, answer.body
        (error,) = answer.json()["detail"]
        assert error["loc"] == ["header", "idempotency-key"]
        assert "empty" in error["msg"]
    assert job_count(db) == before


def test_a_key_repeated_gives_the_first_job(server: str, key: str) -> None:
    idem = f"order-{uuid.uuid4().hex}"
    headers = [("Authorization", f"Bearer {key}"), ("Content-Type", "application/json"),
               ("Idempotency-Key", idem)]  # fmt: skip
    body = create_body()
    first = send_raw(server, "POST", "/api/registration-jobs", headers, body)
    again = send_raw(server, "POST", "/api/registration-jobs", headers, body)
    assert (first.status, again.status) == (201, 200)
    assert first.json()["job_id"] == again.json()["job_id"]


def test_a_create_refused_by_a_job_that_ended_meanwhile_is_made(
    server: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race behind `409 {"active_job_id": "unknown"}`: the database refuses a create
    because the restaurant has an active job, and that job ends before the refusal is
    read. The create is made again and succeeds; "unknown" is never an answer."""
    restaurant = f"race-{uuid.uuid4().hex[:10]}"
    headers = [("Authorization", f"Bearer {key}"), ("Content-Type", "application/json")]
    first = send_raw(server, "POST", "/api/registration-jobs", headers,
                     create_body(restaurant))  # fmt: skip
    assert first.status == 201
    blocked = send_raw(server, "POST", "/api/registration-jobs", headers,
                       create_body(restaurant))  # fmt: skip
    assert blocked.status == 409
    assert blocked.json()["detail"]["active_job_id"] == first.json()["job_id"]

    refused = service._refused
    ended: list[str] = []

    def cancelled_first(new: ledger.NewJob) -> Any:
        if not ended:  # the active job ends between the refusal and its reading
            transaction(ledger.cancel_job, job_id=first.json()["job_id"])
            ended.append(first.json()["job_id"])
        return refused(new)

    monkeypatch.setattr(service, "_refused", cancelled_first)
    made = send_raw(server, "POST", "/api/registration-jobs", headers,
                    create_body(restaurant))  # fmt: skip
    assert made.status == 201, made.body
    assert ended
    assert made.json()["job_id"] != first.json()["job_id"]


# ---------------------------------------------------------------- headers sent twice


def auth(key: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {key}")


JSON = ("Content-Type", "application/json")


def twice_cases(key: str) -> list[tuple[str, list[tuple[str, str]], str]]:
    """(case, headers, the header the 422 names) for a create."""
    bogus = ("Authorization", "Bearer bogus")
    return [
        ("bogus then valid key", [bogus, auth(key), JSON], "authorization"),
        ("valid then bogus key", [auth(key), bogus, JSON], "authorization"),
        ("valid key twice", [auth(key), auth(key), JSON], "authorization"),
        ("json then text", [auth(key), JSON, ("Content-Type", "text/plain")], "content-type"),
        ("text then json", [auth(key), ("Content-Type", "text/plain"), JSON], "content-type"),
        (
            "two keys",
            [auth(key), JSON, ("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
            "idempotency-key",
        ),
    ]


@pytest.mark.parametrize("case", range(6))
def test_a_create_with_a_header_sent_twice_is_422_naming_it(
    server: str, key: str, db: Engine, case: int
) -> None:
    name, headers, header = twice_cases(key)[case]
    before = job_count(db)
    answer = send_raw(server, "POST", "/api/registration-jobs", headers, create_body())
    assert answer.status == 422, (name, answer.body)
    assert [e["loc"] for e in answer.json()["detail"]] == [["header", header]]
    assert "sent 2 times" in answer.json()["detail"][0]["msg"]
    assert job_count(db) == before


@pytest.mark.parametrize("path", ["", "/progress"])
def test_a_read_with_the_key_sent_twice_is_422(
    server: str, key: str, parked: dict[str, Any], path: str
) -> None:
    url = f"/api/registration-jobs/{parked['id']}{path}"
    for headers in (
        [("Authorization", "Bearer bogus"), auth(key)],
        [auth(key), ("Authorization", "Bearer bogus")],
    ):
        answer = send_raw(server, "GET", url, headers)
        assert answer.status == 422
        assert answer.json()["detail"][0]["loc"] == ["header", "authorization"]


def test_last_event_id_twice_is_422(server: str, key: str, parked: dict[str, Any]) -> None:
    url = f"/api/registration-jobs/{parked['id']}/events"
    answer = send_raw(
        server, "GET", url, [auth(key), ("Last-Event-ID", "1"), ("Last-Event-ID", "9")]
    )
    assert answer.status == 422
    assert answer.json()["detail"][0]["loc"] == ["header", "last-event-id"]


# ---------------------------------------------------------------------- If-None-Match


@pytest.mark.parametrize("path", ["", "/progress"])
def test_if_none_match_is_one_list_and_bounded(
    server: str, key: str, parked: dict[str, Any], path: str
) -> None:
    url = f"/api/registration-jobs/{parked['id']}{path}"
    etag = parked["etag"]
    cases = {
        # The job's tag on a second line is still in the list: 304.
        "second line": ([auth(key), ("If-None-Match", '"0"'), ("If-None-Match", etag)], 304),
        "one line": ([auth(key), ("If-None-Match", f'"0", {etag}')], 304),
        "no match": ([auth(key), ("If-None-Match", '"0"'), ("If-None-Match", '"1"')], 200),
        "too long": ([auth(key), ("If-None-Match", '"' + "9" * 2000 + '"')], 422),
        # Each line within the bound, the list past it.
        "too long joined": (
            [
                auth(key),
                ("If-None-Match", '"' + "9" * 600 + '"'),
                ("If-None-Match", etag + ', "' + "8" * 600 + '"'),
            ],
            422,
        ),
        "a megabyte": ([auth(key), ("If-None-Match", "W/" + "x" * 60_000)], 422),
    }
    for name, (headers, expected) in cases.items():
        answer = send_raw(server, "GET", url, headers)
        assert answer.status == expected, (name, answer.body[:300])
        if expected == 422:
            assert answer.json()["detail"][0]["loc"] == ["header", "if-none-match"], name


# --------------------------------------------------------- any header list an answer


def header_lists(key: str) -> list[list[tuple[str, str]]]:
    """Header lists an outsider might send with a create or a read."""
    return [
        [auth(key), JSON],
        [("Authorization", f"bearer {key}"), JSON],
        [("Authorization", f"Bearer   {key}  "), JSON],
        [("Authorization", f"Basic {key}"), JSON],
        [("Authorization", "Bearer " + "k" * 5000), JSON],
        [JSON],
        [auth(key)],
        [auth(key), ("Content-Type", "application/json; charset=utf-8")],
        [auth(key), ("Content-Type", "APPLICATION/JSON")],
        [auth(key), ("Content-Type", "application/json; " + "x" * 300)],
        [auth(key), ("Content-Type", "text/plain")],
        [auth(key), JSON, ("Idempotency-Key", "k" * 200)],
        [auth(key), JSON, ("Idempotency-Key", "k" * 201)],
        [auth(key), JSON, ("Idempotency-Key", "")],
        [auth(key), JSON, ("If-None-Match", "*")],
        [auth(key), JSON, ("If-None-Match", "x" * 1001)],
        *(headers for _, headers, _ in twice_cases(key)),
    ]


def own_key(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers with each `Idempotency-Key` made one of a kind (its length kept), so no
    create meets another's."""
    return [
        (name, value[: max(len(value) - 8, 0)] + uuid.uuid4().hex[:8]
         if name == "Idempotency-Key" and value else value)
        for name, value in headers
    ]  # fmt: skip


def test_every_header_list_gets_an_answer_of_the_api(
    server: str, key: str, parked: dict[str, Any]
) -> None:
    """Creates (each with a new restaurant and, if any, a new key) and both reads: never a
    server error, and every refusal in the API's one error shape (`detail`)."""
    for n, headers in enumerate(header_lists(key)):
        answers = [send_raw(server, "POST", "/api/registration-jobs", own_key(headers),
                            create_body())]  # fmt: skip
        for path in ("", "/progress"):
            url = f"/api/registration-jobs/{parked['id']}{path}"
            answers.append(send_raw(server, "GET", url, headers))
        for answer in answers:
            assert answer.status < 500, (n, headers[:3], answer.body[:300])
            if answer.status >= 400:
                assert "detail" in answer.json(), (n, headers[:3], answer.body[:300])


# -------------------------------------------------------------------- restaurant ids


@pytest.mark.parametrize(
    "restaurant_id",
    ["a/b", "a\\b", "", " ", " r-1", "r-1 ", "r\n1", "r\t1", "r\x00", "r\u202e1", "r\u200b1",
     ".", "..", "x" * 101],
)  # fmt: skip
def test_a_restaurant_id_that_is_no_path_segment_is_422_naming_it(
    server: str, key: str, db: Engine, restaurant_id: str
) -> None:
    before = job_count(db)
    headers = [auth(key), JSON]
    answer = send_raw(server, "POST", "/api/registration-jobs", headers,
                      create_body(restaurant_id))  # fmt: skip
    assert answer.status == 422, (restaurant_id, answer.body)
    assert [e["loc"] for e in answer.json()["detail"]] == [["body", "restaurant_id"]]
    listed = httpx.get(
        f"{server}/api/registration-jobs",
        params={"restaurant_id": restaurant_id},
        headers={"Authorization": f"Bearer {key}"},
    )
    if restaurant_id:  # (an empty filter is a filter left out)
        assert listed.status_code == 422, listed.text
        assert listed.json()["detail"][0]["loc"] == ["query", "restaurant_id"]
    assert job_count(db) == before


@pytest.mark.parametrize("segment", ["a%5Cb", "r%0A1", "%20r", "r%E2%80%AE1", "x" * 101])
def test_the_active_job_of_a_bad_restaurant_id_is_422(server: str, key: str, segment: str) -> None:
    answer = send_raw(server, "GET", f"/api/restaurants/{segment}/registration-jobs/active",
                      [auth(key)])  # fmt: skip
    assert answer.status == 422, answer.body
    assert answer.json()["detail"][0]["loc"] == ["path", "restaurant_id"]


@pytest.mark.parametrize(
    "name",
    [
        "Café Zoë 東京",
        "![x](http:evil)",
        "<img src=x onerror=alert(1)>",
        "a?b#c%d",
        "...",
        "x" * 100,
    ],
)
def test_a_restaurant_id_users_type_is_reachable_by_its_urls(
    server: str, key: str, name: str
) -> None:
    restaurant_id = name if len(name) == 100 else f"{name} {uuid.uuid4().hex[:6]}"
    created = send_raw(server, "POST", "/api/registration-jobs", [auth(key), JSON],
                       create_body(restaurant_id))  # fmt: skip
    assert created.status == 201, created.body
    job_id = created.json()["job_id"]
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {key}"}) as client:
        segment = quote(restaurant_id, safe="")
        active = client.get(f"/api/restaurants/{segment}/registration-jobs/active")
        assert active.status_code == 200, active.text
        assert active.json()["job"]["id"] == job_id
        assert active.json()["job"]["restaurant_id"] == restaurant_id
        listed = client.get("/api/registration-jobs", params={"restaurant_id": restaurant_id})
        assert [j["id"] for j in listed.json()["jobs"]] == [job_id]
        assert client.post(f"/api/registration-jobs/{job_id}/cancel").status_code == 200


# ------------------------------------------------------------- 422s echo no value


def test_a_422_names_each_field_and_echoes_no_value(server: str, key: str) -> None:
    password = "Zq9-harbour-2024"
    config = full_config(account={"password": (password + "-") * 20, "pin": password},
                         website={"primary_color": password})  # fmt: skip
    body = json.dumps(
        {"restaurant_id": f"h-{uuid.uuid4().hex[:8]}", "execution_config": config}
    ).encode()
    answer = send_raw(server, "POST", "/api/registration-jobs", [auth(key), JSON], body)
    assert answer.status == 422
    errors = answer.json()["detail"]
    assert {".".join(map(str, e["loc"])) for e in errors} == {
        "body.execution_config.account.password",
        "body.execution_config.account.pin",
        "body.execution_config.website.primary_color",
    }
    assert all(e["msg"] and "input" not in e for e in errors)
    assert b"harbour" not in answer.body.lower()
