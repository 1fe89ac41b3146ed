"""Every operation of the API has an explicit OpenAPI operation id, named after its route,
so a generated client has `get_job`, not `get_api_registration_jobs__job_id__get`."""

from __future__ import annotations

from fastapi.routing import APIRoute


def test_every_route_names_its_operation() -> None:
    from api.main import create_app

    app = create_app()
    routes = [r for r in app.routes if isinstance(r, APIRoute) and r.include_in_schema]
    unnamed = [r.path for r in routes if not r.operation_id]
    assert unnamed == []
    ids = [
        operation["operationId"]
        for methods in app.openapi()["paths"].values()
        for operation in methods.values()
    ]
    assert len(ids) == len(set(ids))
    assert {"create_job", "get_job", "get_job_progress", "stream_job_events"} <= set(ids)
