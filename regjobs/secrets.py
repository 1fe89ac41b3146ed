"""A job's secrets in text meant for people, and the check that data holds none.

Two rules, one per kind of text (docs/design.md, "Secrets and hostile input"):

**Data is never changed.** What a step returns, stores and hands to later steps is exactly
what the outside system answered. A handler returns no secret by construction;
:meth:`Scrubber.secret_in` finds one that got there anyway (a bug, ours or an outside
system's), and the step then fails instead of storing a changed value. A result "contains a
secret" when a secret occurs in it whole, in one of its exact forms (as given, JSON-, HTML-
or URL-escaped), anywhere but inside an occurrence of a public value of the job (below).

**Text for people is masked** (:meth:`Scrubber.text`: error messages, warnings, log lines,
progress texts, Prefect artifacts and events) by this fragment rule:

- Everything in the text that matches a secret is found: the whole secret in any of its
  forms, whatever its length, and every run of :data:`MIN_FRAGMENT` (8) or more of its
  characters in any form (a sliding window), so a password cut off by a truncation, or
  quoted in part by an outside system, is found too. Overlapping or touching matches make
  one *run*.
- A run is replaced by :data:`MASK` unless it is public text: its letters and digits all
  lie in occurrences of *public values* of the job, and so does the whole secret where the
  run holds it. The public values are the non-secret strings of the job's config (the
  restaurant's name, address, city, phones, its subdomain given or derived, the emails, the
  menu id, ...) and its restaurant id, found without regard to case, in the same escaped
  forms, and in the slug form the subdomain is derived with (so ``harbour-diner`` counts as
  the name "Harbour Diner"). Spaces and punctuation between them do not make a run secret
  (a password "Harbour Diner 2024" leaves "Harbour Diner opens" alone, though its window
  "r Diner " matches there).

So a password "Zq9-harbour-2024" leaves the subdomain ``harbour-diner`` readable in "no
restaurant with subdomain 'harbour-diner'", while "Zq9-harbour-20" (cut off) and
"...harbour-2024" are masked. A password *equal* to a public value (the name, the email) is
not masked where that value appears: it is no secret from anyone who can read the job, and
masking the name would itself tell every reader of the logs that it is the password. Such a
password quoted on its own in a message (an outside system echoing the request) is
therefore shown as the public value it is. A short password (under 8 characters) that is a
word of the name is masked where it stands alone and kept inside the whole name. Masking a
run whole (not only the windows outside public text) leaves no part of a cut-off password
beside the mask.

The same public exclusion decides whether a result contains a secret, so a password equal
to the restaurant's name does not make a result that names the restaurant a bug.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote, quote_plus

from regjobs.config import ExecutionConfig, derive_subdomain

#: What a secret (or any run of text matching it) is replaced with.
MASK: Final = "**********"
#: The shortest part of a secret that is masked on its own. A secret shorter than this is
#: masked where it appears whole.
MIN_FRAGMENT: Final = 8


def forms(value: str) -> set[str]:
    """`value` as given and as JSON, HTML and URLs escape it (as outside systems and browsers
    echo it)."""
    return {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        html.escape(value),
        html.escape(value, quote=False),
        quote(value),
        quote(value, safe=""),
        quote_plus(value, safe=""),
    }


def _occurrences(needle: str, text: str) -> Iterable[tuple[int, int]]:
    """Every (start, end) of `needle` in `text`, overlapping ones included."""
    start = text.find(needle)
    while start != -1:
        yield start, start + len(needle)
        start = text.find(needle, start + 1)


class Scrubber:
    """A job's secrets and public values: masks the secrets in text for people (see the
    module's fragment rule) and finds a secret in data."""

    def __init__(self, secrets: Iterable[str | None], public: Iterable[str | None] = ()) -> None:
        whole: set[str] = set()
        fragments: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            for form in forms(secret):
                whole.add(form)
                fragments.update(
                    form[i : i + MIN_FRAGMENT] for i in range(len(form) - MIN_FRAGMENT + 1)
                )
        #: Every form of every secret, whole.
        self._whole = sorted(whole, key=len, reverse=True)
        self._whole_set = frozenset(whole)
        #: What text is matched against: the whole forms and their windows.
        self._fragments = sorted(whole | fragments, key=len, reverse=True)
        needles: set[str] = set()
        for value in public:
            if value:
                needles.update(forms(value))
                needles.add(derive_subdomain(value))
        needles.discard("")
        #: The public values, in every form, found in any case.
        self._public = [re.compile(re.escape(n), re.IGNORECASE) for n in sorted(needles)]

    @classmethod
    def for_job(cls, config: ExecutionConfig, *also_public: str | None) -> Scrubber:
        """The scrubber of a job: its config's secrets, its config's other strings and
        `also_public` (its restaurant id) as public values."""
        return cls(config.secrets(), [*config.public_values(), *also_public])

    def __bool__(self) -> bool:
        return bool(self._fragments)

    # ----------------------------------------------------------------- text for people

    def text(self, text: str) -> str:
        """`text` with every run that matches a secret masked, unless the run is public text
        (the module's fragment rule)."""
        if not self._fragments or not text:
            return text
        matches = sorted(
            {span for fragment in self._fragments for span in _occurrences(fragment, text)}
        )
        if not matches:
            return text
        public = self._public_spans(text)
        covered = [False] * len(text)
        for start, end in public:
            covered[start:end] = [True] * (end - start)
        parts: list[str] = []
        position = 0
        runs: list[list[tuple[int, int]]] = []
        run_end = -1
        for span in matches:
            if span[0] > run_end:
                runs.append([])
            runs[-1].append(span)
            run_end = max(run_end, span[1])
        for run in runs:
            start, end = run[0][0], max(e for _, e in run)
            whole = (span for span in run if text[span[0] : span[1]] in self._whole_set)
            secret_text = any(not _inside(span, public) for span in whole) or any(
                text[i].isalnum() and not covered[i] for i in range(start, end)
            )
            if secret_text:
                parts += [text[position:start], MASK]
                position = end
        parts.append(text[position:])
        return "".join(parts)

    # ----------------------------------------------------------------------------- data

    def secret_in(self, value: Any, where: str = "") -> str | None:
        """Where in a JSON-like value (a path such as ``['echo'][0]``, masked like any text
        for people) a secret occurs whole, in any of its forms, outside public values; None
        if nowhere. Keys are searched too."""
        if not self._whole:
            return None
        if isinstance(value, str):
            return (where or "the value") if self._holds_secret(value) else None
        if isinstance(value, Mapping):
            for key, item in value.items():
                path = f"{where}[{self.text(repr(key))}]"
                if isinstance(key, str) and self._holds_secret(key):
                    return path + " (a key)"
                found = self.secret_in(item, path)
                if found:
                    return found
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                found = self.secret_in(item, f"{where}[{index}]")
                if found:
                    return found
        return None

    def _holds_secret(self, text: str) -> bool:
        spans = [span for form in self._whole for span in _occurrences(form, text)]
        if not spans:
            return False
        public = self._public_spans(text)
        return not all(_inside(span, public) for span in spans)

    def _public_spans(self, text: str) -> list[tuple[int, int]]:
        spans = []
        for pattern in self._public:
            found = pattern.search(text)
            while found:
                spans.append(found.span())
                found = pattern.search(text, found.start() + 1)
        return spans


def _inside(span: tuple[int, int], public: list[tuple[int, int]]) -> bool:
    """Whether `span` lies within one of the `public` spans."""
    start, end = span
    return any(p_start <= start and end <= p_end for p_start, p_end in public)


def scrub(text: str, secrets: Iterable[str | None], public: Iterable[str | None] = ()) -> str:
    """`text` (for people) with `secrets` masked (see :class:`Scrubber`); build a `Scrubber`
    once to mask many texts with the same secrets. There is no masking of data: a result
    is checked (:meth:`Scrubber.secret_in`), never changed."""
    return Scrubber(secrets, public).text(text)
