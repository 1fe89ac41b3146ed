"""What every route module shares: the stand-in's state as a dependency, and the step a
route serves, declared on the route and read by the gate."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from starlette.routing import compile_path
from starlette.types import Scope

from regjobs.catalogue import STEP_IDS
from standin.state import StandinState

STEP_KEY: Final = "x-standin-step"


def serves(step: str) -> dict[str, Any]:
    """Route metadata naming the step a route serves; the gate reads it."""
    assert step in STEP_IDS, step
    return {STEP_KEY: step}


def get_state(request: Request) -> StandinState:
    state = request.app.state.standin
    assert isinstance(state, StandinState)
    return state


StateDep = Annotated[StandinState, Depends(get_state)]


def step_resolver(routers: Iterable[APIRouter]) -> Callable[[Scope], str | None]:
    """Which step a request serves, from the step each route was declared with; the first
    matching route in declaration order decides."""
    table = [
        (route.methods or set(), compile_path(route.path)[0], route.openapi_extra[STEP_KEY])
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and route.openapi_extra and STEP_KEY in route.openapi_extra
    ]

    def resolve(scope: Scope) -> str | None:
        for methods, pattern, step in table:
            if scope["method"] in methods and pattern.match(scope["path"]):
                assert isinstance(step, str)
                return step
        return None

    return resolve
