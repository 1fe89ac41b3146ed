"""Fault instructions: which step misbehaves next, how, and how many more times.

Modes (`POST /_control/faults` `{"step", "mode", "times", ...}`; `times` absent: until cleared):

- `status`: answer HTTP `status` (with `Retry-After` when `retry_after` is given); JSON
  `{"detail": ...}`, or an HTML error page (`<h1>Internal Server Error</h1>`) when the request
  accepts `text/html`.
- `timeout`: hang past the caller's timeout (`seconds`, default 600), then answer 504.
- `reset`: start the answer, then drop the connection.
- `slow`: answer correctly after `seconds` (default 5), or at once when a test releases
  the calls held (`POST /_control/release`).
- `echo`: answer HTTP `status` with an error whose message repeats the request's body as
  received (passwords included), as a careless outside system does: `{"detail": {"code":
  "rejected", "message": "injected fault: rejected <body>"}}`, or an HTML page with it.
- `echo_ok`: answer HTTP 200 with the request's body as received (passwords included) as
  the result, `{"received": <body>}`: an outside system that puts what it was sent into a
  successful answer (the step must then fail as a bug, storing nothing).

The first six apply to every request that serves the step (the gate applies them). Two more
apply to the admin portal's pages only (`standin.portal` applies them), and never use up a
turn on a request they cannot apply to:

- `hide_element` with `"element": "#some-id"`: the next `times` GET pages of the step that
  contain the element with that id are rendered without it (so a browser waiting for it
  times out).
- `expire_session`: the next `times` logged-in portal requests of the step find their session
  expired: the session is deleted and the request, GET or POST, is redirected (303) to
  `/portal/login?next=<path>` without doing anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from regjobs.catalogue import STEP_IDS

FaultMode = Literal[
    "status", "timeout", "reset", "slow", "echo", "echo_ok", "hide_element", "expire_session"
]

#: The modes the gate applies to any request of a step.
NETWORK_MODES: Final = frozenset({"status", "timeout", "reset", "slow", "echo", "echo_ok"})
#: The modes only the admin portal's pages apply.
PORTAL_MODES: Final = frozenset({"hide_element", "expire_session"})

#: How long a `timeout` fault hangs when no `seconds` is given: past any caller's timeout.
DEFAULT_TIMEOUT_SECONDS: Final = 600.0
#: How long a `slow` fault delays the answer when no `seconds` is given.
DEFAULT_SLOW_SECONDS: Final = 5.0


class FaultCreate(BaseModel):
    """Body of `POST /_control/faults`; only `step` and `mode` are required."""

    model_config = ConfigDict(extra="forbid")

    step: str
    mode: FaultMode
    status: int = Field(503, ge=100, le=599)
    times: int | None = Field(None, ge=1)
    seconds: float | None = Field(None, ge=0)
    retry_after: int | None = Field(None, ge=0)
    #: `hide_element` only: the id of the element to leave out, as `#some-id`.
    element: str | None = Field(None, pattern=r"^#?[A-Za-z][A-Za-z0-9_:.-]*$")

    @field_validator("element")
    @classmethod
    def _as_css_id(cls, value: str | None) -> str | None:
        return None if value is None else "#" + value.removeprefix("#")

    @model_validator(mode="after")
    def _element_for_hide(self) -> FaultCreate:
        if self.mode == "hide_element" and self.element is None:
            raise ValueError("element: hide_element needs the element's id, like #save-website")
        return self

    @field_validator("step")
    @classmethod
    def _known_step(cls, value: str) -> str:
        if value not in STEP_IDS:
            raise ValueError(f"unknown step {value!r}; known: {', '.join(STEP_IDS)}")
        return value


@dataclass
class Fault:
    id: int
    step: str
    mode: FaultMode
    status: int
    #: Uses left; None means until cleared.
    times: int | None
    seconds: float | None
    retry_after: int | None
    element: str | None = None

    @property
    def element_id(self) -> str:
        """The id `hide_element` leaves out, without the `#`."""
        return (self.element or "").removeprefix("#")

    @property
    def delay(self) -> float:
        """Seconds a `timeout` or `slow` fault waits."""
        if self.seconds is not None:
            return self.seconds
        return DEFAULT_TIMEOUT_SECONDS if self.mode == "timeout" else DEFAULT_SLOW_SECONDS

    def public(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "step": self.step,
            "mode": self.mode,
            "status": self.status,
            "times": self.times,
            "seconds": self.seconds,
            "retry_after": self.retry_after,
        }
        if self.element is not None:
            data["element"] = self.element
        return data


class FaultBook:
    """Faults in the order they were given; the first active one for a step applies."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(self, spec: FaultCreate) -> Fault:
        fault = Fault(
            id=self._next_id,
            step=spec.step,
            mode=spec.mode,
            status=spec.status,
            times=spec.times,
            seconds=spec.seconds,
            retry_after=spec.retry_after,
            element=spec.element,
        )
        self._next_id += 1
        self._faults.append(fault)
        return fault

    def take(
        self,
        step: str,
        modes: Collection[str] | None = None,
        where: Callable[[Fault], bool] | None = None,
    ) -> Fault | None:
        """Use up one turn of the first fault for `step` (of one of `modes`, and for which
        `where` holds, when given), if any."""
        for fault in self._faults:
            if fault.step != step:
                continue
            if modes is not None and fault.mode not in modes:
                continue
            if where is not None and not where(fault):
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
            return fault
        return None

    def clear(self) -> int:
        cleared = len(self._faults)
        self._faults.clear()
        return cleared

    def public(self) -> list[dict[str, Any]]:
        return [f.public() for f in self._faults]
