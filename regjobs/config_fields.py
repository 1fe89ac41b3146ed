"""The field types, bounds and errors of the execution config (`regjobs.config`).

Bounds: every string has a maximum length and every list a maximum number of items (the
``MAX_*`` constants); no string may hold a NUL character (PostgreSQL refuses them).
Errors: the cross-field rules raise through :class:`_Problems`, whose messages start with the
dotted field name; :func:`public_errors` is how any validation error leaves the process
(never its ``input``, which can hold a password).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final

from pydantic import (
    AnyHttpUrl,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic.functional_validators import AfterValidator
from pydantic_core import InitErrorDetails, PydanticCustomError

#: What a secret looks like in every public rendering of the config.
SECRET_MASK: Final = "**********"

#: Bounds of every string and list of the config (characters, items).
MAX_NAME: Final = 200
MAX_SHORT_TEXT: Final = 100
MAX_PHONE: Final = 50
MAX_ADDRESS: Final = 500
MAX_PATH: Final = 1000
MAX_URL: Final = 2000
MAX_SECRET: Final = 256
MAX_INTERVALS_PER_DAY: Final = 10
#: An identifier that goes into the path of an outside system's URL: letters, digits, `_`,
#: `.` and `-`, starting with a letter or digit, at most 100 characters, never `..`.
IDENTIFIER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"

# --------------------------------------------------------------------------------------------
# Reusable field types
# --------------------------------------------------------------------------------------------

# Serialisation context key that makes secrets serialise in clear; private on purpose.
_REVEAL_SECRETS: Final = object()


def _serialise_secret(value: SecretStr, info: SerializationInfo) -> str:
    context = info.context
    if isinstance(context, dict) and context.get(_REVEAL_SECRETS) is True:
        return value.get_secret_value()
    return SECRET_MASK


def no_nul(value: str) -> str:
    """`value`, unless it holds a NUL character (PostgreSQL cannot store one)."""
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain a NUL character")
    return value


def _secret_no_nul(value: SecretStr) -> SecretStr:
    no_nul(value.get_secret_value())
    return value


#: A password: masked everywhere except in :meth:`ExecutionConfig.secret_dict`.
Secret = Annotated[
    SecretStr,
    Field(max_length=MAX_SECRET),
    AfterValidator(_secret_no_nul),
    PlainSerializer(_serialise_secret, return_type=str, when_used="json"),
]


_NoNul = AfterValidator(no_nul)
# Strings of at most so many characters, without NUL.
_PersonName = Annotated[str, StringConstraints(max_length=MAX_NAME), _NoNul]
_ShortText = Annotated[str, StringConstraints(max_length=MAX_SHORT_TEXT), _NoNul]
_Phone = Annotated[str, StringConstraints(max_length=MAX_PHONE), _NoNul]
_Address = Annotated[str, StringConstraints(max_length=MAX_ADDRESS), _NoNul]
_Path = Annotated[str, StringConstraints(max_length=MAX_PATH), _NoNul]
_IDENTIFIER_RE: Final = re.compile(IDENTIFIER_PATTERN)


def _check_identifier(value: str) -> str:
    # Blank counts as missing: the cross-field rules name it.
    if value.strip() and (not _IDENTIFIER_RE.fullmatch(value) or ".." in value):
        raise PydanticCustomError(
            "identifier_format",
            "must be 1 to 100 letters, digits, '_', '.' or '-', starting with a letter or "
            "digit, without '..' (it goes into the path of a URL)",
        )
    return value


#: An identifier an outside system's URL path is built from (see IDENTIFIER_PATTERN).
Identifier = Annotated[
    str,
    StringConstraints(max_length=100),
    AfterValidator(_check_identifier),
    WithJsonSchema({"type": "string", "pattern": IDENTIFIER_PATTERN, "maxLength": 100}),
]

_COLOUR_RE: Final = re.compile(r"^#[0-9a-fA-F]{6}$")
_TIME_RE: Final = re.compile(r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$")
_SUBDOMAIN_RE: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_URL_ADAPTER: Final = TypeAdapter(AnyHttpUrl)


def _check_colour(value: str) -> str:
    if not _COLOUR_RE.fullmatch(value):
        raise PydanticCustomError("colour_format", "must be a colour written #rrggbb")
    return value


#: A colour ``#rrggbb`` (hex digits in either case, kept as given).
Colour = Annotated[
    str,
    AfterValidator(_check_colour),
    WithJsonSchema({"type": "string", "pattern": _COLOUR_RE.pattern, "maxLength": 7}),
]


def _check_url(value: str) -> str:
    value = value.strip()
    try:
        _URL_ADAPTER.validate_python(value)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise PydanticCustomError(
            "url_format", "must be an http(s) URL: {reason}", {"reason": reason}
        ) from None
    return value


#: An http(s) URL, validated as :class:`pydantic.AnyHttpUrl` and kept as the (stripped) string
#: given, so attributes and ``model_dump(mode="json")`` are plain strings.
HttpUrlStr = Annotated[
    str,
    StringConstraints(max_length=MAX_URL),
    AfterValidator(_check_url),
    WithJsonSchema({"type": "string", "format": "uri", "minLength": 1, "maxLength": MAX_URL}),
]


def _check_time(value: str) -> str:
    if not _TIME_RE.fullmatch(value):
        raise PydanticCustomError(
            "time_format", "must be a time of day written HH:MM between 00:00 and 23:59"
        )
    return value


_TimeOfDay = Annotated[
    str,
    AfterValidator(_check_time),
    WithJsonSchema({"type": "string", "pattern": _TIME_RE.pattern, "maxLength": 5}),
]

_Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME),
    _NoNul,
]


def _none_to_blank(value: object) -> object:
    return "" if value is None else value


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class _Problems:
    """Collects rule violations, in the order found, and raises them as one
    ``ValidationError``."""

    def __init__(self, title: str) -> None:
        self._title = title
        # Each entry: (loc, error type, message, input); "required" ones merge their reasons.
        self._errors: list[tuple[tuple[str, ...], str, str, object]] = []
        self._reasons: dict[tuple[str, ...], list[str]] = {}

    def require(self, path: str, reason: str) -> None:
        """``path`` is missing although ``reason`` needs it (reasons per path are merged)."""
        loc = tuple(path.split("."))
        if loc not in self._reasons:
            self._reasons[loc] = []
            self._errors.append((loc, "config_required", "", None))
        self._reasons[loc].append(reason)

    def add(self, path: str, error_type: str, message: str, input_value: object = None) -> None:
        """Any other error; ``message`` must start with ``path``."""
        if not message.startswith(path):
            raise AssertionError(f"message must start with {path!r}: {message!r}")
        self._errors.append((tuple(path.split(".")), error_type, message, input_value))

    def raise_if_any(self, strip_prefix: int = 0) -> None:
        """Raise the collected errors; ``strip_prefix`` drops leading loc parts (for sections,
        whose errors pydantic prefixes with the section name itself)."""
        if not self._errors:
            return
        details: list[InitErrorDetails] = []
        for loc, error_type, message, input_value in self._errors:
            if not message:
                message = f"{'.'.join(loc)} is required when " + " and when ".join(
                    self._reasons[loc]
                )
            details.append(
                InitErrorDetails(
                    type=PydanticCustomError(error_type, message),
                    loc=loc[strip_prefix:],
                    input=input_value,
                )
            )
        raise ValidationError.from_exception_data(self._title, details, hide_input=True)


def _raise_at(
    title: str,
    loc: tuple[str | int, ...],
    error_type: str,
    message: str,
    ctx: dict[str, Any],
    input_value: object,
) -> None:
    """Raise a one-error ``ValidationError`` at ``loc`` (relative to the model validated)."""
    raise ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError(error_type, message, ctx), loc=loc, input=input_value
            )
        ],
        hide_input=True,
    )


def public_errors(exc: ValidationError | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The errors of ``exc`` (or a list of error dicts) safe to put in a response or a log line.

    Leaves out ``input`` (which can hold the raw config, passwords included) and the
    documentation URL, and turns context values into JSON-able ones.
    """
    result: list[dict[str, Any]] = []
    errors = (
        exc.errors(include_url=False, include_input=False)
        if isinstance(exc, ValidationError)
        else exc
    )
    for error in errors:
        item: dict[str, Any] = {
            "type": error["type"],
            "loc": list(error["loc"]),
            "msg": error["msg"],
        }
        ctx = error.get("ctx")
        if ctx:
            item["ctx"] = {
                key: value
                if isinstance(value, str | int | float | bool) or value is None
                else str(value)
                for key, value in ctx.items()
            }
        result.append(item)
    return result
