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

Messages name the field and say what is wrong; they never repeat the value given (a
password typed into the wrong field would go wherever the message goes).

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
``input`` can hold the raw request (and so a password): its text never shows it (every model
sets ``hide_input_in_errors``), and errors are reported through :func:`public_errors`, which
leaves ``input`` out of the list too.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from regjobs.config_fields import (
    _REVEAL_SECRETS,
    _SUBDOMAIN_RE,
    MAX_INTERVALS_PER_DAY,
    MAX_SHORT_TEXT,
    SECRET_MASK,
    Colour,
    HttpUrlStr,
    Identifier,
    Secret,
    _Address,
    _Name,
    _none_to_blank,
    _Path,
    _PersonName,
    _Phone,
    _Problems,
    _raise_at,
    _ShortText,
    _TimeOfDay,
    no_nul,
    public_errors,
)

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
# Sections
# --------------------------------------------------------------------------------------------


class _Section(BaseModel):
    # A ValidationError's text never shows the values it was given: a password (or a
    # password typed into the wrong field) would go wherever the error goes.
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True, hide_input_in_errors=True)


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
                "must be letters, digits and inner hyphens, at most 63 characters",
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
    - ``onboarding.sync_record`` on needs ``onboarding.user_email`` (the record links the user),
      and with ``onboarding.create_user`` off ``onboarding.user_password`` too (the link to an
      existing user is made only once its password opens it).

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
        if (
            onboarding.sync_record
            and not onboarding.create_user
            and _blank(onboarding.user_password)
        ):
            # The record is linked to an existing user only once its password opens it.
            problems.require(
                "onboarding.user_password",
                "onboarding.sync_record links an existing user (onboarding.create_user is off)",
            )

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

    def public_values(self) -> list[str]:
        """Every non-empty string of the config but its secrets (the name, the derived or
        given subdomain, the address, the emails, the menu id, ...): what the job shows to
        anyone who can read it, so never masked as part of a secret (`regjobs.secrets`)."""
        found: list[str] = []

        def walk(value: object) -> None:
            if isinstance(value, str):
                if value.strip():
                    found.append(value)
            elif isinstance(value, Mapping):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(
            self.model_dump(
                mode="json", exclude={"account": {"password"}, "onboarding": {"user_password"}}
            )
        )
        return list(dict.fromkeys(found))


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


def merged(stored: Mapping[str, Any], partial: Mapping[str, Any]) -> dict[str, Any]:
    """A person's partial config (`POST .../input`) over the stored one: each section
    merged field by field (a value given replaces the stored one; opening hours and other
    nested values are replaced whole), the flat form's fields put in their sections first.
    Not validated: the caller validates the result as a create would."""
    given = dict(partial)
    for flat_key, (section, name) in _FLAT_FIELDS.items():
        if flat_key in given and isinstance(given.get(section, {}), Mapping):
            given[section] = {**given.get(section, {}), name: given.pop(flat_key)}
    result = {
        key: dict(value) if isinstance(value, Mapping) else value for key, value in stored.items()
    }
    for key, value in given.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = {**result[key], **value}
        else:
            result[key] = value
    return result


def field_value(config: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`account.password`) of a config dict; None if absent."""
    value: Any = config
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def secret_fields() -> frozenset[str]:
    """The dotted paths of the config's secrets (`account.password`, ...): what a form or
    a prompt never shows or echoes."""
    found: set[str] = set()
    for section, info in ExecutionConfig.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name, field in model.model_fields.items():
                if "Secret" in str(field.annotation):
                    found.add(f"{section}.{name}")
    return frozenset(found)
