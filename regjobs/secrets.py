"""Scrubbing: the one function that masks a job's secrets wherever text leaves a step.

Every error message, warning, progress text and result a step produces passes through
:meth:`Scrubber.scrub` before it reaches the ledger, a log line or Prefect. It masks not
only a secret itself but any run of :data:`MIN_FRAGMENT` or more of its characters (a
sliding window over each secret), so a password cut off by a truncation, or quoted in part
by an outside system, is masked too. The same holds for the forms a secret takes when it is
escaped for JSON, HTML or a URL, as outside systems and browsers echo it.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote, quote_plus

#: What a secret (or any part of it) is replaced with.
MASK: Final = "**********"
#: The shortest part of a secret that is masked on its own. A secret shorter than this is
#: masked where it appears whole.
MIN_FRAGMENT: Final = 8


def _forms(secret: str) -> set[str]:
    """The secret as given and as JSON, HTML and URLs escape it."""
    return {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret),
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
    }


class Scrubber:
    """Masks the given secrets, and every part of them of `MIN_FRAGMENT` characters or more,
    in text and in JSON-like values (dicts, lists, tuples: their strings, keys included)."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        fragments: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            for form in _forms(secret):
                if len(form) < MIN_FRAGMENT:
                    fragments.add(form)
                else:
                    fragments.update(
                        form[i : i + MIN_FRAGMENT] for i in range(len(form) - MIN_FRAGMENT + 1)
                    )
        #: Longest first, so a whole short secret is found before any part of it.
        self._fragments = sorted(fragments, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._fragments)

    def text(self, text: str) -> str:
        """`text` with every character covered by a fragment of a secret masked; adjacent or
        overlapping matches make one mask."""
        if not self._fragments or not text:
            return text
        covered: list[tuple[int, int]] = []
        for fragment in self._fragments:
            start = text.find(fragment)
            while start != -1:
                covered.append((start, start + len(fragment)))
                start = text.find(fragment, start + 1)
        if not covered:
            return text
        covered.sort()
        parts: list[str] = []
        position = 0
        run_start, run_end = covered[0]
        for start, end in covered[1:]:
            if start <= run_end:
                run_end = max(run_end, end)
                continue
            parts += [text[position:run_start], MASK]
            position = run_end
            run_start, run_end = start, end
        parts += [text[position:run_start], MASK, text[run_end:]]
        return "".join(parts)

    def scrub(self, value: Any) -> Any:
        """The value with its secrets masked: strings directly, dicts (keys and values),
        lists and tuples recursively; anything else as it is."""
        if isinstance(value, str):
            return self.text(value)
        if not self._fragments:
            return value
        if isinstance(value, Mapping):
            return {
                (self.text(k) if isinstance(k, str) else k): self.scrub(v) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v) for v in value)
        return value


def scrub(value: Any, secrets: Iterable[str | None]) -> Any:
    """`value` with `secrets` masked (see :class:`Scrubber`); build a `Scrubber` once to
    scrub many values with the same secrets."""
    return Scrubber(secrets).scrub(value)
