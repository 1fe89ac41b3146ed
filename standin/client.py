"""The stand-in's control API (`/_control`, standin/app.py) from a caller's side: the one
place tests and tools add a fault or read the effects counted, over HTTP or through
Starlette's TestClient (an `httpx.Client` too)."""

from __future__ import annotations

from typing import Any

import httpx


def fault(standin: httpx.Client, **spec: Any) -> dict[str, Any]:
    """Add a fault (`standin.faults.FaultCreate`: `step`, `mode`, `times`, ...); the fault
    as the stand-in stored it."""
    response = standin.post("/_control/faults", json=spec)
    if response.status_code != 201:
        raise AssertionError(f"the stand-in refused the fault {spec}: {response.text}")
    stored: dict[str, Any] = response.json()
    return stored


def effects(standin: httpx.Client) -> dict[str, int]:
    """Each step's effects counted by the stand-in since its last reset."""
    response = standin.get("/_control/effects")
    response.raise_for_status()
    return {str(step): int(count) for step, count in response.json().items()}


def release_held(standin: httpx.Client) -> None:
    """Let every call a `slow` fault holds now go on at once (a hold of any length can so
    end when the test is ready, not when its delay says)."""
    standin.post("/_control/release").raise_for_status()
