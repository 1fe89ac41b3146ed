"""The one place an HTTP answer from an outside system becomes a result or a step error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import SecretStr

from regjobs.errors import AlreadyDone, OutsideSystemError, parse_retry_after


class OutsideSystem:
    """A JSON HTTP API with a bearer key; errors raised as classified step errors."""

    def __init__(
        self, http: httpx.AsyncClient, *, name: str, base_url: str, api_key: SecretStr
    ) -> None:
        self.http = http
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        already_done: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send one request; `already_done` maps an answer's error code to the warning to give.

        The request body never appears in an error: it can hold passwords.
        """
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        response = await self.http.request(method, self.base_url + path, json=json, headers=headers)
        body = _json(response)
        if response.is_success:
            return body
        detail = body.get("detail")
        code = detail.get("code") if isinstance(detail, dict) else None
        if (
            response.status_code == 409
            and already_done
            and isinstance(code, str)
            and code in already_done
            and isinstance(detail, dict)
        ):
            existing = next(
                (v for k, v in detail.items() if isinstance(v, dict) and k != "code"), {}
            )
            raise AlreadyDone(already_done[code], existing)
        if isinstance(detail, dict):
            message = str(detail.get("message") or detail.get("code") or detail)
        else:
            message = str(detail) if detail else response.reason_phrase
        raise OutsideSystemError(
            f"{self.name} answered HTTP {response.status_code} to {method} {path}: {message}",
            status_code=response.status_code,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {"detail": response.text[:200]} if response.text else {}
    return data if isinstance(data, dict) else {"data": data}
