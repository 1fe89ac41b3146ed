"""Small HTML helpers for the admin portal's server-rendered pages.

Every value that came from a user goes through `esc` (`html.escape`, quotes included).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from html.parser import HTMLParser
from typing import Final

#: Elements without an end tag.
_VOID: Final = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)

_CSS: Final = """
body{font-family:system-ui,sans-serif;margin:0;color:#111827;background:#f9fafb}
header.portal-header{display:flex;gap:1rem;align-items:center;padding:.75rem 1.5rem;
background:#111827;color:#f9fafb}
header.portal-header a{color:#f9fafb}
main{max-width:48rem;margin:1.5rem auto;padding:0 1.5rem}
.field{margin:.75rem 0}.field label{display:block;font-weight:600;margin-bottom:.25rem}
.field input[type=text],.field input[type=email],.field input[type=password],
.field select,.field textarea{width:100%;box-sizing:border-box;padding:.4rem}
.field textarea{min-height:6rem;font-family:monospace}
.field-error,.login-error,.portal-error{color:#b91c1c}
.flash-success{color:#166534;background:#dcfce7;padding:.5rem 1rem}
.alert-exists{background:#fef3c7;padding:.75rem 1rem}
"""


def esc(value: object) -> str:
    """`value` as HTML text or attribute content; None is empty."""
    return "" if value is None else html.escape(str(value), quote=True)


def attrs(**values: object) -> str:
    """` name="value"` pairs; `False`/None leave the attribute out, `True` writes it bare.
    A trailing `_` is dropped and `_` becomes `-` (`class_` -> `class`, `data_x` -> `data-x`)."""
    parts = []
    for key, value in values.items():
        name = key.rstrip("_").replace("_", "-")
        if value is None or value is False:
            continue
        parts.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return "".join(parts)


def field_error(name: str, errors: Mapping[str, str]) -> str:
    message = errors.get(name)
    if message is None:
        return ""
    return f'<p class="field-error" data-field="{esc(name)}">{esc(message)}</p>'


def text_field(
    name: str,
    label: str,
    value: str | None,
    errors: Mapping[str, str],
    *,
    type_: str = "text",
    required: bool = False,
    placeholder: str | None = None,
) -> str:
    control = (
        f"<input{attrs(type=type_, id=name, name=name, value=value or '', required=required)}"
        f"{attrs(placeholder=placeholder)}>"
    )
    return (
        f'<div class="field"><label for="{esc(name)}">{esc(label)}</label>{control}'
        f"{field_error(name, errors)}</div>"
    )


def password_field(
    name: str, label: str, errors: Mapping[str, str], *, disabled: bool = False
) -> str:
    """A password input: always empty, whatever was sent (`disabled`: it takes no input)."""
    control = (
        f"<input{attrs(type='password', id=name, name=name, required=True, disabled=disabled)}>"
    )
    return (
        f'<div class="field"><label for="{esc(name)}">{esc(label)}</label>{control}'
        f"{field_error(name, errors)}</div>"
    )


def textarea_field(name: str, label: str, value: str | None, errors: Mapping[str, str]) -> str:
    # A parser drops the one newline right after `<textarea>`: this one, not the value's.
    return (
        f'<div class="field"><label for="{esc(name)}">{esc(label)}</label>'
        f"<textarea{attrs(id=name, name=name)}>\n{esc(value)}</textarea>"
        f"{field_error(name, errors)}</div>"
    )


def select_field(
    name: str,
    label: str,
    options: Iterable[tuple[str, str]],
    selected: str | None,
    errors: Mapping[str, str],
) -> str:
    rendered = "".join(
        f"<option{attrs(value=value, selected=value == selected)}>{esc(text)}</option>"
        for value, text in options
    )
    return (
        f'<div class="field"><label for="{esc(name)}">{esc(label)}</label>'
        f"<select{attrs(id=name, name=name)}>{rendered}</select>"
        f"{field_error(name, errors)}</div>"
    )


def checkbox_field(
    name: str,
    label: str,
    checked: bool,
    errors: Mapping[str, str],
    *,
    value: str = "1",
    id_: str | None = None,
) -> str:
    element_id = id_ or name
    control = (
        f"<input{attrs(type='checkbox', id=element_id, name=name, value=value, checked=checked)}>"
    )
    return (
        f'<div class="field checkbox">{control} <label for="{esc(element_id)}">{esc(label)}'
        f"</label>{field_error(name, errors)}</div>"
    )


def document(title: str, body: str, *, user: str | None = None) -> str:
    """A whole page: header (with a logout button for a logged-in `user`) and `body`."""
    who = ""
    if user is not None:
        who = (
            f'<span id="portal-user">{esc(user)}</span>'
            '<form id="logout-form" method="post" action="/portal/logout">'
            '<button type="submit" id="logout-submit">Log out</button></form>'
        )
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)} · Pumpd admin</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header class="portal-header"><a href="/portal/">Pumpd admin</a>{who}</header>\n'
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


class _ElementFinder(HTMLParser):
    """Finds the source span of the element with a given id."""

    def __init__(self, text: str, element_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self._text = text
        self._target = element_id
        self._line_starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
        self._tag: str | None = None
        self._depth = 0
        self._start = 0
        self.span: tuple[int, int] | None = None

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def _is_target(self, attributes: list[tuple[str, str | None]]) -> bool:
        return (
            self.span is None and self._tag is None and dict(attributes).get("id") == self._target
        )

    def _whole_tag(self) -> None:
        start = self._offset()
        self.span = (start, start + len(self.get_starttag_text() or ""))

    def handle_startendtag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        if self._is_target(attributes):
            self._whole_tag()

    def handle_starttag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        if self._is_target(attributes):
            if tag in _VOID:
                self._whole_tag()
            else:
                self._tag, self._depth, self._start = tag, 1, self._offset()
        elif self._tag == tag and self.span is None:
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self._tag != tag or self.span is not None:
            return
        self._depth -= 1
        if self._depth == 0:
            self.span = (self._start, self._text.index(">", self._offset()) + 1)


def _find(text: str, element_id: str) -> tuple[int, int] | None:
    finder = _ElementFinder(text, element_id)
    finder.feed(text)
    finder.close()
    return finder.span


def has_element(text: str, element_id: str) -> bool:
    return f' id="{esc(element_id)}"' in text and _find(text, element_id) is not None


def remove_element(text: str, element_id: str) -> str:
    """`text` without the element whose id is `element_id` (and all it holds)."""
    span = _find(text, element_id)
    if span is None:
        return text
    start, end = span
    return text[:start] + text[end:]
