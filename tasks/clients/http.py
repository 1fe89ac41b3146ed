"""The one place an HTTP answer from an outside system becomes a result or a step error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from regjobs.errors import AlreadyDone, NonRetryableStepError, OutsideSystemError, parse_retry_after

#: Names the job and step a request belongs to ("<job id>:<step id>").
TRACE_HEADER = "X-Registration-Step"

#: One TLS context for every client of the outside systems in this process (a flow run's
#: steps, the API's check of a corrected login): made when this module is imported (in the
#: warm pool, before its processes fork), not per client. An `httpx.AsyncClient` that makes
#: its own loads the CA bundle again: 49 ms of CPU a client here, against 1 ms given this
#: one (docs/figures.md).
TLS = httpx.create_ssl_context()


def segment(value: object, what: str) -> str:
    """`value` as one path segment of a URL, every reserved character percent-encoded (`/`,
    `?`, `#`, `%` included), so it cannot reach another path. Values a URL resolves away
    (empty, `.`, `..`) or with control characters are refused: an identifier from the config
    is validated already, but one from an outside system's answer is not."""
    text = str(value)
    if text in ("", ".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise NonRetryableStepError(f"{what} {text[:100]!r} cannot be used in a URL")
    return quote(text, safe="")


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
        trace: str | None = None,
    ) -> dict[str, Any]:
        """Send one request; `already_done` maps an answer's error code to the warning to give.

        The request body never appears in an error: it can hold passwords.
        """
        headers = {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
            # The key is "<job>:<step>:<generation>": the trace is its first two parts.
            trace = trace or idempotency_key.rsplit(":", 1)[0]
        if trace:
            headers[TRACE_HEADER] = trace
        response = await self.http.request(method, self.base_url + path, json=json, headers=headers)
        body = _json(response)
        if response.is_success:
            return body
        detail = body.get("detail")
        code = detail.get("code") if isinstance(detail, dict) else None
        named = detail.get("field") if isinstance(detail, dict) else None
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
        raise OutsideSystemError(
            f"{self.name} answered HTTP {response.status_code} to {method} {path}: "
            f"{_message(detail) or response.reason_phrase}",
            status_code=response.status_code,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            code=code if isinstance(code, str) else None,
            field=named if isinstance(named, str) else None,
        )


def _message(detail: Any) -> str:
    """A person-readable message from an error answer, without anything it echoes back.

    Only known message fields are taken: a validation error can echo the request (and so a
    password) in other fields.
    """
    if isinstance(detail, str):
        return detail[:300]
    if isinstance(detail, dict):
        text = detail.get("message") or detail.get("code")
        field = detail.get("field")
        if isinstance(text, str):
            return f"{text} (field: {field})" if isinstance(field, str) else text
        return ""
    if isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict) and isinstance(item.get("msg"), str):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item['msg']}" if loc else item["msg"])
        return "; ".join(parts)
    return ""


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        # Not JSON (a proxy's error page, say): its text, short, is the best message there is.
        return {"detail": " ".join(response.text.split())[:200]} if response.text else {}
    return data if isinstance(data, dict) else {"data": data}
