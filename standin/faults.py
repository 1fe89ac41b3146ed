"""Fault instructions: which step misbehaves next, how, and how many more times."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from regjobs.catalogue import STEP_IDS

FaultMode = Literal["status", "timeout", "reset", "slow"]

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

    @property
    def delay(self) -> float:
        """Seconds a `timeout` or `slow` fault waits."""
        if self.seconds is not None:
            return self.seconds
        return DEFAULT_TIMEOUT_SECONDS if self.mode == "timeout" else DEFAULT_SLOW_SECONDS

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "step": self.step,
            "mode": self.mode,
            "status": self.status,
            "times": self.times,
            "seconds": self.seconds,
            "retry_after": self.retry_after,
        }


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
        )
        self._next_id += 1
        self._faults.append(fault)
        return fault

    def take(self, step: str) -> Fault | None:
        """Use up one turn of the first fault for `step`, if any."""
        for fault in self._faults:
            if fault.step != step:
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
