"""The execution config of a registration job: what the job needs, validated on create.

The sections follow the app's Yolo dialog (``account``, ``restaurant``, ``menu``, ``website``,
``payment``, ``onboarding``). Every model rejects unknown fields. Every section has defaults and
may be left out, except ``restaurant``, whose ``name`` is required.

Errors
------
Every error is a pydantic ``ValidationError`` (so FastAPI answers 422). Field errors carry the
field's ``loc`` as usual. The cross-field rules (see :class:`ExecutionConfig`) and the flat-form
conflicts are reported the same way: each error's ``loc`` is the field at fault, relative to the
config (e.g. ``("account", "email")``, so ``("body", "execution_config", "account", "email")``
in a FastAPI request), and its ``msg`` *starts with the dotted field name*
(``"account.email is required: ..."``), so a client can show it without reading ``loc``.
Their ``type`` is ``"config_required"`` or ``"config_conflict"``.

Bounds
------
Every string has a maximum length and every list a maximum number of items (see the
``MAX_*`` constants); no string may hold a NUL character (PostgreSQL refuses them). A value
past a bound is a field error like any other (``string_too_long``, ``too_long``,
``nul_character``). Identifiers that go into URLs of outside systems have a pattern of their
own (:data:`IDENTIFIER_PATTERN`: ``menu.menu_id``), and ``restaurant.subdomain`` is a DNS
label.

Secrets
-------
``account.password`` and ``onboarding.user_password`` are :class:`pydantic.SecretStr`:
``str()``, ``repr()``, ``model_dump_json()`` and :meth:`ExecutionConfig.public_dict` show
``"**********"``. Only :meth:`ExecutionConfig.secret_dict` reveals them, for encryption at rest;
:meth:`ExecutionConfig.from_secret_dict` reads that form back. A ``ValidationError``'s
``input`` can hold the raw request (and so a password): report errors through
:func:`public_errors`, which leaves ``input`` out.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import AfterValidator
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = [
    "EXAMPLE_CONFIG",
    "SECRET_MASK",
    "SWITCH_PATHS",
    "AccountConfig",
    "Colour",
    "Day",
    "ExecutionConfig",
    "HttpUrlStr",
    "MenuConfig",
    "OnboardingConfig",
    "OpeningInterval",
    "PaymentConfig",
    "RegistrationMode",
    "RestaurantConfig",
    "WebsiteConfig",
    "derive_subdomain",
    "no_nul",
    "public_errors",
]

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

#: Dotted paths of the optional-step switches, in step order (see ``regjobs.catalogue``).
SWITCH_PATHS: Final[tuple[str, ...]] = (
    "account.register_new_user",
    "onboarding.create_user",
    "menu.upload_images",
    "onboarding.sync_record",
    "menu.import",
    "menu.add_option_sets",
    "menu.add_item_tags",
)

RegistrationMode = Literal[
    "new_account_with_restaurant",
    "existing_account_first_restaurant",
    "existing_account_additional_restaurant",
]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

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
        raise PydanticCustomError(
            "colour_format", "must be a colour written #rrggbb, got '{value}'", {"value": value}
        )
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
            "time_format",
            "must be a time of day written HH:MM between 00:00 and 23:59, got '{value}'",
            {"value": value},
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
        raise ValidationError.from_exception_data(self._title, details)


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


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True)


class AccountConfig(_Section):
    """The platform account the restaurant is registered under.

    ``email`` and ``password`` are optional here only so the section can be left out (e.g. in
    the flat form); :class:`ExecutionConfig` requires both, always.
    """

    register_new_user: bool = True
    email: EmailStr | None = None
    password: Secret | None = None
    phone: _Phone = ""


class OpeningInterval(_Section):
    """One opening interval within a day, ``open`` < ``close`` (no interval spans midnight)."""

    open: _TimeOfDay
    close: _TimeOfDay

    @model_validator(mode="after")
    def _open_before_close(self) -> Self:
        # "HH:MM" strings compare like the times they denote.
        if self.open >= self.close:
            _raise_at(
                type(self).__name__,
                ("close",),
                "opening_interval",
                "close must be later than open, got open {open} and close {close}",
                {"open": self.open, "close": self.close},
                self.close,
            )
        return self


def derive_subdomain(name: str) -> str:
    """The subdomain derived from a restaurant name.

    Accents are dropped (``"Café"`` -> ``"cafe"``), the result lowercased, every run of
    characters other than ``a-z0-9`` replaced by one ``"-"``, leading and trailing ``"-"``
    stripped, and the whole cut to 63 characters (a DNS label). ``""`` when nothing is left.
    """
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    slug = re.sub(r"[^a-z0-9]+", "-", plain.lower()).strip("-")
    return slug[:63].rstrip("-")


class RestaurantConfig(_Section):
    """The restaurant to register.

    ``subdomain`` is always a ``str`` after validation: given, it is lowercased and must be a
    DNS label (``a-z``, ``0-9``, inner ``-``, at most 63 characters); null or blank, it is
    derived from ``name`` with :func:`derive_subdomain`.
    """

    registration_mode: RegistrationMode = "new_account_with_restaurant"
    name: _Name
    address: _Address = ""
    city: _ShortText = ""
    phone: _Phone = ""
    cuisine: _ShortText | None = None
    subdomain: Annotated[
        str,
        StringConstraints(max_length=MAX_SHORT_TEXT),
        BeforeValidator(
            _none_to_blank,
            json_schema_input_type=Annotated[str, StringConstraints(max_length=63)] | None,
        ),
    ] = Field(default=None, validate_default=True)
    opening_hours: dict[
        Day, Annotated[list[OpeningInterval], Field(max_length=MAX_INTERVALS_PER_DAY)]
    ] = Field(default_factory=dict)

    @field_validator("subdomain")
    @classmethod
    def _check_subdomain(cls, value: str) -> str:
        value = value.strip().lower()
        if value and not _SUBDOMAIN_RE.fullmatch(value):
            raise PydanticCustomError(
                "subdomain_format",
                "must be letters, digits and inner hyphens, at most 63 characters, got '{value}'",
                {"value": value},
            )
        return value

    @field_validator("opening_hours")
    @classmethod
    def _no_overlaps(
        cls, value: dict[Day, list[OpeningInterval]]
    ) -> dict[Day, list[OpeningInterval]]:
        for day, intervals in value.items():
            ordered = sorted(intervals, key=lambda interval: interval.open)
            for before, after in itertools.pairwise(ordered):
                if after.open < before.close:
                    _raise_at(
                        cls.__name__,
                        (day,),
                        "opening_hours_overlap",
                        "intervals of {day} overlap: {a_open}-{a_close} and {b_open}-{b_close}",
                        {
                            "day": day,
                            "a_open": before.open,
                            "a_close": before.close,
                            "b_open": after.open,
                            "b_close": after.close,
                        },
                        None,
                    )
        return value

    @model_validator(mode="after")
    def _fill_subdomain(self) -> Self:
        if not self.subdomain:
            derived = derive_subdomain(self.name)
            if not derived:
                problems = _Problems(type(self).__name__)
                problems.add(
                    "restaurant.subdomain",
                    "config_required",
                    f"restaurant.subdomain is required: it cannot be derived from "
                    f"restaurant.name {self.name!r}, which has no letters or digits",
                )
                problems.raise_if_any(strip_prefix=1)
            self.subdomain = derived
        return self


class MenuConfig(_Section):
    """The menu to import. ``import`` is a Python keyword: the attribute is ``import_``, the
    field in JSON (input and output) is ``"import"``."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    menu_id: Identifier | None = None
    csv_path: _Path | None = None
    upload_images: bool = True
    import_: bool = Field(default=True, alias="import")
    add_option_sets: bool = True
    add_item_tags: bool = True


class WebsiteConfig(_Section):
    theme: Literal["light", "dark"] = "light"
    primary_color: Colour | None = None
    secondary_color: Colour | None = None
    disable_gradients: bool = False
    item_layout: Literal["list", "card"] = "list"
    configure_header: bool = False
    header_image_url: HttpUrlStr | None = None
    header_logo_url: HttpUrlStr | None = None
    nav_logo_url: HttpUrlStr | None = None
    favicon_url: HttpUrlStr | None = None
    nav_text_color: Colour | None = None
    card_text_color: Colour | None = None


class PaymentConfig(_Section):
    include_stripe_link: bool = False


class OnboardingConfig(_Section):
    create_user: bool = False
    sync_record: bool = False
    user_name: _PersonName | None = None
    user_email: EmailStr | None = None
    user_password: Secret | None = None


# --------------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------------

#: The seed's flat form: top-level key -> (section, field).
_FLAT_FIELDS: Final[dict[str, tuple[str, str]]] = {
    "email": ("account", "email"),
    "password": ("account", "password"),
    "phone": ("account", "phone"),
    "csv_path": ("menu", "csv_path"),
}
_SECRET_FLAT_FIELDS: Final = frozenset({"password"})


def _blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return isinstance(value, str) and not value.strip()


class ExecutionConfig(_Section):
    """What a registration job needs.

    Accepts the seed's flat form too: ``email``, ``password`` and ``phone`` at the top level
    become ``account.*`` and ``csv_path`` becomes ``menu.csv_path``; giving a field both ways
    is an error (``config_conflict``) even when the values agree.

    Cross-field rules (each a ``config_required`` / ``config_conflict`` error whose ``loc`` is
    the field and whose message starts with its dotted name):

    - ``account.email`` and ``account.password`` are **always** required: the restaurant
      registration step (which cannot be switched off) logs into the admin portal with them,
      and account registration, when ``account.register_new_user`` is on, creates the account
      with them.
    - ``restaurant.registration_mode`` must agree with ``account.register_new_user``:
      ``"new_account_with_restaurant"`` needs it on, the ``existing_account_*`` modes need it
      off.
    - ``menu.import`` on needs ``menu.menu_id`` or ``menu.csv_path``.
    - ``menu.upload_images`` on needs ``menu.menu_id`` (images go to a stored menu).
    - ``onboarding.create_user`` on needs ``onboarding.user_name``, ``onboarding.user_email``
      and ``onboarding.user_password``.
    - ``onboarding.sync_record`` on needs ``onboarding.user_email`` (the record links the user).

    Blank strings count as missing.
    """

    account: AccountConfig = Field(default_factory=AccountConfig)
    restaurant: RestaurantConfig
    menu: MenuConfig = Field(default_factory=MenuConfig)
    website: WebsiteConfig = Field(default_factory=WebsiteConfig)
    payment: PaymentConfig = Field(default_factory=PaymentConfig)
    onboarding: OnboardingConfig = Field(default_factory=OnboardingConfig)

    @model_validator(mode="before")
    @classmethod
    def _accept_flat_form(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not any(key in data for key in _FLAT_FIELDS):
            return data
        data = dict(data)
        sections: dict[str, Any] = {}
        problems = _Problems(cls.__name__)
        for flat_key, (section_name, field_name) in _FLAT_FIELDS.items():
            if flat_key not in data:
                continue
            section = sections.get(section_name, data.get(section_name))
            if section is None:
                section = {}
            elif isinstance(section, BaseModel):
                section = {name: getattr(section, name) for name in section.model_fields_set}
            elif isinstance(section, Mapping):
                section = dict(section)
            else:
                continue  # not a section: leave both for the usual errors to name
            flat_value = data.pop(flat_key)
            if flat_value is None:
                continue
            if section.get(field_name) is not None:
                path = f"{section_name}.{field_name}"
                problems.add(
                    path,
                    "config_conflict",
                    f"{path} is given twice, as {path} and as {flat_key!r} at the top level "
                    f"(the flat form); give it once",
                    None if flat_key in _SECRET_FLAT_FIELDS else flat_value,
                )
                continue
            section[field_name] = flat_value
            sections[section_name] = section
        problems.raise_if_any()
        data.update(sections)
        return data

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> Self:
        problems = _Problems(type(self).__name__)
        account, restaurant = self.account, self.restaurant
        menu, onboarding = self.menu, self.onboarding

        why = "restaurant registration always logs into the admin portal with it"
        if account.register_new_user:
            why += ", and account.register_new_user is on"
        for name in ("email", "password"):
            if _blank(getattr(account, name)):
                path = f"account.{name}"
                problems.add(path, "config_required", f"{path} is required: {why}")

        mode = restaurant.registration_mode
        if not account.register_new_user and mode == "new_account_with_restaurant":
            problems.add(
                "restaurant.registration_mode",
                "config_conflict",
                "restaurant.registration_mode 'new_account_with_restaurant' needs "
                "account.register_new_user on; with it off, choose "
                "'existing_account_first_restaurant' or 'existing_account_additional_restaurant'",
                mode,
            )
        if account.register_new_user and mode != "new_account_with_restaurant":
            problems.add(
                "restaurant.registration_mode",
                "config_conflict",
                f"restaurant.registration_mode {mode!r} registers under an existing account, "
                f"but account.register_new_user is on; turn it off or choose "
                f"'new_account_with_restaurant'",
                mode,
            )

        if menu.import_ and _blank(menu.menu_id) and _blank(menu.csv_path):
            problems.add(
                "menu.menu_id",
                "config_required",
                "menu.menu_id or menu.csv_path is required when menu.import is on",
            )
        if menu.upload_images and _blank(menu.menu_id):
            problems.require("menu.menu_id", "menu.upload_images is on")

        if onboarding.create_user:
            for name in ("user_name", "user_email", "user_password"):
                if _blank(getattr(onboarding, name)):
                    problems.require(f"onboarding.{name}", "onboarding.create_user is on")
        if onboarding.sync_record and _blank(onboarding.user_email):
            problems.require("onboarding.user_email", "onboarding.sync_record is on")

        problems.raise_if_any()
        return self

    # ---------------------------------------------------------------------------- helpers

    def switches(self) -> dict[str, bool]:
        """The optional-step switches by dotted path (the keys of :data:`SWITCH_PATHS`)."""
        return {
            "account.register_new_user": self.account.register_new_user,
            "onboarding.create_user": self.onboarding.create_user,
            "menu.upload_images": self.menu.upload_images,
            "onboarding.sync_record": self.onboarding.sync_record,
            "menu.import": self.menu.import_,
            "menu.add_option_sets": self.menu.add_option_sets,
            "menu.add_item_tags": self.menu.add_item_tags,
        }

    def public_dict(self) -> dict[str, Any]:
        """JSON-able dict for responses, logs and flow-run parameters: secrets are
        ``"**********"`` (:data:`SECRET_MASK`), null secrets stay null."""
        return self.model_dump(mode="json")

    def secret_dict(self) -> dict[str, Any]:
        """JSON-able dict with the secrets in clear. Only to be encrypted at rest; read it back
        with :meth:`from_secret_dict`."""
        return self.model_dump(mode="json", context={_REVEAL_SECRETS: True})

    @classmethod
    def from_secret_dict(cls, data: Mapping[str, Any]) -> Self:
        """The config :meth:`secret_dict` was made from."""
        return cls.model_validate(data)

    def secrets(self) -> list[str]:
        """The non-empty secret values in clear (e.g. to scrub them from log lines)."""
        return [
            secret.get_secret_value()
            for secret in (self.account.password, self.onboarding.user_password)
            if secret is not None and secret.get_secret_value()
        ]


#: A minimal, realistic valid config, for docs and tests (copy it before changing it).
EXAMPLE_CONFIG: Final[dict[str, object]] = {
    "account": {
        "register_new_user": True,
        "email": "demo@example.com",
        "password": "DemoPizza#24",
        "phone": "+64 21 555 0100",
    },
    "restaurant": {
        "registration_mode": "new_account_with_restaurant",
        "name": "Demo Pizza",
        "address": "12 Queen Street",
        "city": "Auckland",
        "phone": "+64 9 555 0100",
        "cuisine": "pizza",
        "opening_hours": {
            day: [{"open": "11:00", "close": "14:00"}, {"open": "17:00", "close": "21:30"}]
            for day in ("mon", "tue", "wed", "thu", "fri")
        },
    },
    "menu": {"menu_id": "menu-demo"},
    "website": {"theme": "light", "primary_color": "#c0392b"},
}
