"""Unit tests for the execution-config models (regjobs.config)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from regjobs.catalogue import STEPS
from regjobs.config import (
    EXAMPLE_CONFIG,
    SECRET_MASK,
    SWITCH_PATHS,
    AccountConfig,
    ExecutionConfig,
    MenuConfig,
    OnboardingConfig,
    PaymentConfig,
    RestaurantConfig,
    WebsiteConfig,
    derive_subdomain,
    public_errors,
)

PASSWORD = "DemoPizza#24"
USER_PASSWORD = "Onb0ard!ng-Secret"


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE_CONFIG)


def minimal(**sections: Any) -> dict[str, Any]:
    """The smallest valid config, with sections replaced/added by keyword."""
    data: dict[str, Any] = {
        "account": {"email": "owner@example.com", "password": PASSWORD},
        "restaurant": {"name": "Demo Pizza"},
        "menu": {"menu_id": "menu-demo"},
    }
    data.update(sections)
    return data


def errors_of(data: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        ExecutionConfig.model_validate(data)
    return public_errors(info.value)


def only_error(data: Any) -> dict[str, Any]:
    errors = errors_of(data)
    assert len(errors) == 1, errors
    return errors[0]


def locs(errors: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(error["loc"]) for error in errors]


# ------------------------------------------------------------------------------ example


def test_example_config_is_valid_and_realistic() -> None:
    config = ExecutionConfig.model_validate(example())
    assert config.restaurant.name == "Demo Pizza"
    assert config.account.email == "demo@example.com"
    assert config.account.password is not None
    assert len(config.account.password.get_secret_value()) == 12
    assert config.menu.menu_id == "menu-demo"
    assert set(config.restaurant.opening_hours) == {"mon", "tue", "wed", "thu", "fri"}
    assert config.restaurant.subdomain == "demo-pizza"


def test_validating_does_not_change_example_constant() -> None:
    before = copy.deepcopy(EXAMPLE_CONFIG)
    ExecutionConfig.model_validate(EXAMPLE_CONFIG)
    ExecutionConfig.model_validate({**EXAMPLE_CONFIG, "csv_path": "/menus/demo.csv"})
    assert before == EXAMPLE_CONFIG


# ------------------------------------------------------------------------------ defaults


def test_defaults_of_every_section() -> None:
    config = ExecutionConfig.model_validate(minimal())
    assert config.account.register_new_user is True
    assert config.account.phone == ""
    assert config.restaurant.registration_mode == "new_account_with_restaurant"
    assert config.restaurant.address == ""
    assert config.restaurant.city == ""
    assert config.restaurant.phone == ""
    assert config.restaurant.cuisine is None
    assert config.restaurant.opening_hours == {}
    assert config.menu == MenuConfig(menu_id="menu-demo")
    assert config.menu.csv_path is None
    assert config.menu.upload_images is True
    assert config.menu.import_ is True
    assert config.menu.add_option_sets is True
    assert config.menu.add_item_tags is True
    assert config.website == WebsiteConfig()
    assert config.website.theme == "light"
    assert config.website.item_layout == "list"
    assert config.website.disable_gradients is False
    assert config.website.configure_header is False
    assert config.website.primary_color is None
    assert config.website.favicon_url is None
    assert config.payment == PaymentConfig(include_stripe_link=False)
    assert config.onboarding == OnboardingConfig()
    assert config.onboarding.create_user is False
    assert config.onboarding.sync_record is False
    assert config.onboarding.user_password is None


def test_sections_with_only_defaults_can_be_omitted() -> None:
    config = ExecutionConfig.model_validate(
        {
            "account": {"email": "owner@example.com", "password": PASSWORD},
            "restaurant": {"name": "Demo Pizza"},
            "menu": {"menu_id": "menu-demo"},
        }
    )
    assert config.payment.include_stripe_link is False
    assert config.website.theme == "light"


def test_restaurant_is_required() -> None:
    data = minimal()
    del data["restaurant"]
    error = only_error(data)
    assert error["loc"] == ["restaurant"]
    assert error["type"] == "missing"


def test_restaurant_name_is_required_and_not_blank() -> None:
    error = only_error(minimal(restaurant={"city": "Auckland"}))
    assert error["loc"] == ["restaurant", "name"]
    assert error["type"] == "missing"
    error = only_error(minimal(restaurant={"name": "   "}))
    assert error["loc"] == ["restaurant", "name"]
    assert error["type"] == "string_too_short"


def test_restaurant_name_is_stripped() -> None:
    config = ExecutionConfig.model_validate(minimal(restaurant={"name": "  Demo Pizza "}))
    assert config.restaurant.name == "Demo Pizza"


# ------------------------------------------------------------------------------ unknown fields


def test_unknown_top_level_field_is_rejected() -> None:
    error = only_error({**minimal(), "colour_scheme": "red"})
    assert error["loc"] == ["colour_scheme"]
    assert error["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("account", "username"),
        ("restaurant", "postcode"),
        ("menu", "menuId"),
        ("website", "font"),
        ("payment", "stripe_key"),
        ("onboarding", "role"),
    ],
)
def test_unknown_field_inside_a_section_is_rejected(section: str, field: str) -> None:
    data = minimal()
    data.setdefault(section, {})[field] = "x"
    error = only_error(data)
    assert error["loc"] == [section, field]
    assert error["type"] == "extra_forbidden"


def test_unknown_field_inside_an_opening_interval_is_rejected() -> None:
    hours = {"mon": [{"open": "09:00", "close": "17:00", "note": "lunch"}]}
    error = only_error(minimal(restaurant={"name": "Demo", "opening_hours": hours}))
    assert error["loc"] == ["restaurant", "opening_hours", "mon", 0, "note"]


# ------------------------------------------------------------------------------ types


@pytest.mark.parametrize(
    ("path", "value", "error_type"),
    [
        (("account", "register_new_user"), "sometimes", "bool_parsing"),
        (("account", "email"), "not-an-email", "value_error"),
        (("account", "phone"), 21555, "string_type"),
        (("restaurant", "registration_mode"), "new_account", "literal_error"),
        (("restaurant", "cuisine"), ["pizza"], "string_type"),
        (("menu", "import"), "maybe", "bool_parsing"),
        (("menu", "menu_id"), 7, "string_type"),
        (("website", "theme"), "blue", "literal_error"),
        (("website", "item_layout"), "grid", "literal_error"),
        (("website", "header_logo_url"), "not a url", "url_format"),
        (("website", "nav_logo_url"), "ftp://cdn.example.com/logo.png", "url_format"),
        (("payment", "include_stripe_link"), "yes please", "bool_parsing"),
        (("onboarding", "user_email"), "nobody", "value_error"),
    ],
)
def test_wrong_types_are_rejected_at_the_field(
    path: tuple[str, str], value: object, error_type: str
) -> None:
    data = minimal()
    section, field = path
    data.setdefault(section, {})[field] = value
    error = only_error(data)
    assert error["loc"] == list(path)
    assert error["type"] == error_type


def test_section_of_wrong_type_is_rejected() -> None:
    error = only_error(minimal(website="dark"))
    assert error["loc"] == ["website"]
    assert error["type"] == "model_type"


def test_opening_hours_day_must_be_a_short_weekday() -> None:
    hours = {"monday": [{"open": "09:00", "close": "17:00"}]}
    error = only_error(minimal(restaurant={"name": "Demo", "opening_hours": hours}))
    assert error["loc"] == ["restaurant", "opening_hours", "monday", "[key]"]
    assert error["type"] == "literal_error"


def test_urls_are_plain_strings_in_attributes_and_dumps() -> None:
    website = {
        "header_image_url": "https://cdn.example.com/header.jpg",
        "header_logo_url": " https://cdn.example.com/logo.png ",
        "favicon_url": "http://cdn.example.com/favicon.ico",
    }
    config = ExecutionConfig.model_validate(minimal(website=website))
    assert config.website.header_image_url == "https://cdn.example.com/header.jpg"
    assert config.website.header_logo_url == "https://cdn.example.com/logo.png"
    dumped = config.public_dict()["website"]
    assert dumped["favicon_url"] == "http://cdn.example.com/favicon.ico"
    assert type(dumped["header_image_url"]) is str


def test_menu_import_is_spelled_import_in_json() -> None:
    config = ExecutionConfig.model_validate(minimal(menu={"menu_id": "m", "import": False}))
    assert config.menu.import_ is False
    assert config.public_dict()["menu"]["import"] is False
    assert "import_" not in config.public_dict()["menu"]
    schema = ExecutionConfig.model_json_schema()
    assert "import" in schema["$defs"]["MenuConfig"]["properties"]


def test_json_schema_marks_restaurant_required_and_forbids_extras() -> None:
    schema = ExecutionConfig.model_json_schema()
    assert schema["required"] == ["restaurant"]
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["RestaurantConfig"]["required"] == ["name"]
    assert schema["$defs"]["AccountConfig"]["additionalProperties"] is False


# ------------------------------------------------------------------------------ flat seed form


def test_flat_seed_form_moves_into_account_and_menu() -> None:
    config = ExecutionConfig.model_validate(
        {
            "email": "seed@example.com",
            "password": PASSWORD,
            "phone": "+64 21 555 0100",
            "csv_path": "/menus/demo.csv",
            "restaurant": {"name": "Demo Pizza"},
            "menu": {"menu_id": "menu-demo"},
        }
    )
    assert config.account.email == "seed@example.com"
    assert config.account.password == SecretStr(PASSWORD)
    assert config.account.phone == "+64 21 555 0100"
    assert config.menu.csv_path == "/menus/demo.csv"
    assert config.menu.menu_id == "menu-demo"
    assert "email" not in config.public_dict()


def test_flat_seed_form_merges_with_other_nested_fields() -> None:
    config = ExecutionConfig.model_validate(
        {
            "email": "seed@example.com",
            "password": PASSWORD,
            "account": {"phone": "+64 21 555 0100", "register_new_user": True},
            "restaurant": {"name": "Demo Pizza"},
            "menu": {"menu_id": "menu-demo"},
        }
    )
    assert config.account.email == "seed@example.com"
    assert config.account.phone == "+64 21 555 0100"


def test_flat_seed_form_null_values_are_ignored() -> None:
    config = ExecutionConfig.model_validate({**minimal(), "csv_path": None})
    assert config.menu.csv_path is None


@pytest.mark.parametrize(
    ("flat", "section", "field"),
    [
        ("email", "account", "email"),
        ("password", "account", "password"),
        ("phone", "account", "phone"),
        ("csv_path", "menu", "csv_path"),
    ],
)
def test_flat_and_nested_value_for_the_same_field_conflict(
    flat: str, section: str, field: str
) -> None:
    data = minimal()
    value = "x@example.com" if field == "email" else "value-1"
    data[section][field] = value
    data[flat] = value
    error = only_error(data)
    assert error["loc"] == [section, field]
    assert error["type"] == "config_conflict"
    assert error["msg"].startswith(f"{section}.{field} ")


def test_flat_password_conflict_does_not_echo_the_password() -> None:
    data = minimal()
    data["password"] = USER_PASSWORD
    with pytest.raises(ValidationError) as info:
        ExecutionConfig.model_validate(data)
    assert info.value.errors()[0]["input"] is None
    assert USER_PASSWORD not in str(info.value)


# ------------------------------------------------------------------------------ subdomain


@pytest.mark.parametrize(
    ("name", "subdomain"),
    [
        ("Demo Pizza", "demo-pizza"),
        ("  Joe's Bar & Grill!! ", "joe-s-bar-grill"),
        ("Café Lumière", "cafe-lumiere"),
        ("Pizza 4 U", "pizza-4-u"),
        ("--Sushi--Go--", "sushi-go"),
    ],
)
def test_subdomain_is_derived_from_the_name(name: str, subdomain: str) -> None:
    assert derive_subdomain(name) == subdomain
    config = ExecutionConfig.model_validate(minimal(restaurant={"name": name}))
    assert config.restaurant.subdomain == subdomain


def test_derived_subdomain_is_a_dns_label() -> None:
    derived = derive_subdomain("Pizza " * 30)
    assert len(derived) <= 63
    assert not derived.endswith("-")


def test_null_or_blank_subdomain_is_derived() -> None:
    for given in (None, "", "  "):
        config = ExecutionConfig.model_validate(
            minimal(restaurant={"name": "Demo Pizza", "subdomain": given})
        )
        assert config.restaurant.subdomain == "demo-pizza"


def test_given_subdomain_is_kept_lowercased() -> None:
    config = ExecutionConfig.model_validate(
        minimal(restaurant={"name": "Demo Pizza", "subdomain": "DemoPizzaNZ"})
    )
    assert config.restaurant.subdomain == "demopizzanz"
    assert config.public_dict()["restaurant"]["subdomain"] == "demopizzanz"


def test_invalid_subdomain_is_rejected() -> None:
    error = only_error(minimal(restaurant={"name": "Demo", "subdomain": "demo pizza"}))
    assert error["loc"] == ["restaurant", "subdomain"]
    assert error["type"] == "subdomain_format"


def test_subdomain_that_cannot_be_derived_is_required() -> None:
    error = only_error(minimal(restaurant={"name": "!!!"}))
    assert error["loc"] == ["restaurant", "subdomain"]
    assert error["msg"].startswith("restaurant.subdomain ")


# ------------------------------------------------------------------------------ cross-field rules


@pytest.mark.parametrize("field", ["email", "password"])
@pytest.mark.parametrize("register_new_user", [True, False])
def test_account_email_and_password_are_always_required(
    field: str, register_new_user: bool
) -> None:
    account: dict[str, Any] = {
        "email": "owner@example.com",
        "password": PASSWORD,
        "register_new_user": register_new_user,
    }
    del account[field]
    mode = (
        "new_account_with_restaurant" if register_new_user else "existing_account_first_restaurant"
    )
    error = only_error(
        minimal(account=account, restaurant={"name": "Demo", "registration_mode": mode})
    )
    assert error["loc"] == ["account", field]
    assert error["type"] == "config_required"
    assert error["msg"].startswith(f"account.{field} is required")


def test_blank_password_counts_as_missing() -> None:
    error = only_error(minimal(account={"email": "owner@example.com", "password": ""}))
    assert error["loc"] == ["account", "password"]
    assert error["msg"].startswith("account.password ")


def test_omitted_account_section_names_both_credentials() -> None:
    data = minimal()
    del data["account"]
    assert locs(errors_of(data)) == [("account", "email"), ("account", "password")]


def test_existing_account_mode_with_register_new_user_on_conflicts() -> None:
    error = only_error(
        minimal(
            restaurant={
                "name": "Demo",
                "registration_mode": "existing_account_additional_restaurant",
            }
        )
    )
    assert error["loc"] == ["restaurant", "registration_mode"]
    assert error["type"] == "config_conflict"
    assert error["msg"].startswith("restaurant.registration_mode ")


def test_new_account_mode_with_register_new_user_off_conflicts() -> None:
    error = only_error(
        minimal(
            account={"email": "owner@example.com", "password": PASSWORD, "register_new_user": False}
        )
    )
    assert error["loc"] == ["restaurant", "registration_mode"]
    assert error["msg"].startswith("restaurant.registration_mode ")


@pytest.mark.parametrize(
    "mode", ["existing_account_first_restaurant", "existing_account_additional_restaurant"]
)
def test_existing_account_modes_with_register_new_user_off_are_valid(mode: str) -> None:
    config = ExecutionConfig.model_validate(
        minimal(
            account={
                "email": "owner@example.com",
                "password": PASSWORD,
                "register_new_user": False,
            },
            restaurant={"name": "Demo", "registration_mode": mode},
        )
    )
    assert config.switches()["account.register_new_user"] is False
    assert config.restaurant.registration_mode == mode


def test_menu_import_needs_menu_id_or_csv_path() -> None:
    error = only_error(minimal(menu={"upload_images": False}))
    assert error["loc"] == ["menu", "menu_id"]
    assert error["msg"].startswith("menu.menu_id or menu.csv_path is required")


def test_menu_import_with_csv_path_only_is_valid() -> None:
    config = ExecutionConfig.model_validate(
        minimal(menu={"csv_path": "/menus/demo.csv", "upload_images": False})
    )
    assert config.menu.menu_id is None
    assert config.menu.csv_path == "/menus/demo.csv"


def test_menu_import_off_needs_no_menu() -> None:
    config = ExecutionConfig.model_validate(minimal(menu={"import": False, "upload_images": False}))
    assert config.switches()["menu.import"] is False


def test_upload_images_needs_menu_id() -> None:
    error = only_error(minimal(menu={"csv_path": "/menus/demo.csv"}))
    assert error["loc"] == ["menu", "menu_id"]
    assert error["msg"] == "menu.menu_id is required when menu.upload_images is on"


def test_blank_menu_id_counts_as_missing() -> None:
    errors = errors_of(minimal(menu={"menu_id": "  "}))
    assert locs(errors) == [("menu", "menu_id"), ("menu", "menu_id")]
    assert all(error["msg"].startswith("menu.menu_id") for error in errors)


def test_onboarding_create_user_needs_the_user_fields() -> None:
    errors = errors_of(minimal(onboarding={"create_user": True}))
    assert locs(errors) == [
        ("onboarding", "user_name"),
        ("onboarding", "user_email"),
        ("onboarding", "user_password"),
    ]
    for error in errors:
        field = ".".join(error["loc"])
        assert error["msg"] == f"{field} is required when onboarding.create_user is on"


def test_onboarding_create_user_with_the_user_fields_is_valid() -> None:
    config = ExecutionConfig.model_validate(
        minimal(
            onboarding={
                "create_user": True,
                "user_name": "Dee Mo",
                "user_email": "dee@example.com",
                "user_password": USER_PASSWORD,
            }
        )
    )
    assert config.onboarding.user_password == SecretStr(USER_PASSWORD)


def test_onboarding_sync_record_needs_user_email_and_password() -> None:
    errors = errors_of(minimal(onboarding={"sync_record": True}))
    assert locs(errors) == [("onboarding", "user_email"), ("onboarding", "user_password")]
    assert errors[0]["msg"] == (
        "onboarding.user_email is required when onboarding.sync_record is on"
    )
    assert "links an existing user" in errors[1]["msg"]


def test_onboarding_sync_record_of_an_existing_user_needs_its_password() -> None:
    error = only_error(minimal(onboarding={"sync_record": True, "user_email": "dee@example.com"}))
    assert error["loc"] == ["onboarding", "user_password"]


def test_onboarding_sync_record_with_user_email_and_password_is_valid() -> None:
    config = ExecutionConfig.model_validate(
        minimal(
            onboarding={
                "sync_record": True,
                "user_email": "dee@example.com",
                "user_password": USER_PASSWORD,
            }
        )
    )
    assert config.switches()["onboarding.sync_record"] is True


def test_one_missing_field_needed_by_two_switches_is_one_error() -> None:
    errors = errors_of(
        minimal(
            onboarding={
                "create_user": True,
                "sync_record": True,
                "user_name": "Dee",
                "user_password": USER_PASSWORD,
            }
        )
    )
    assert len(errors) == 1
    assert errors[0]["loc"] == ["onboarding", "user_email"]
    assert "onboarding.create_user" in errors[0]["msg"]
    assert "onboarding.sync_record" in errors[0]["msg"]


def test_all_rule_violations_are_reported_together() -> None:
    errors = errors_of({"restaurant": {"name": "Demo"}, "onboarding": {"sync_record": True}})
    assert set(locs(errors)) == {
        ("account", "email"),
        ("account", "password"),
        ("menu", "menu_id"),
        ("onboarding", "user_email"),
        ("onboarding", "user_password"),
    }
    for error in errors:
        assert error["msg"].startswith(".".join(error["loc"]))


def test_rule_errors_are_located_inside_an_enclosing_model() -> None:
    class Body(BaseModel):
        restaurant_id: str
        execution_config: ExecutionConfig

    data = minimal(onboarding={"sync_record": True})
    with pytest.raises(ValidationError) as info:
        Body.model_validate({"restaurant_id": "r1", "execution_config": data})
    assert [error["loc"] for error in info.value.errors()] == [
        ("execution_config", "onboarding", "user_email"),
        ("execution_config", "onboarding", "user_password"),
    ]


# ------------------------------------------------------------------------------ colours, hours


@pytest.mark.parametrize("colour", ["#000000", "#FFaa09", "#c0392b"])
def test_valid_colours_are_kept(colour: str) -> None:
    config = ExecutionConfig.model_validate(minimal(website={"primary_color": colour}))
    assert config.website.primary_color == colour


@pytest.mark.parametrize("colour", ["red", "#fff", "#12345g", "c0392b", "#c0392b0", " #c0392b"])
@pytest.mark.parametrize(
    "field", ["primary_color", "secondary_color", "nav_text_color", "card_text_color"]
)
def test_invalid_colours_are_rejected(field: str, colour: str) -> None:
    error = only_error(minimal(website={field: colour}))
    assert error["loc"] == ["website", field]
    assert error["type"] == "colour_format"


def test_valid_opening_hours() -> None:
    hours = {
        "sat": [{"open": "00:00", "close": "23:59"}],
        "sun": [{"open": "09:00", "close": "12:00"}, {"open": "12:00", "close": "15:00"}],
        "mon": [],
    }
    config = ExecutionConfig.model_validate(
        minimal(restaurant={"name": "D", "opening_hours": hours})
    )
    assert config.restaurant.opening_hours["sun"][1].open == "12:00"
    assert config.restaurant.opening_hours["mon"] == []


@pytest.mark.parametrize("time", ["24:00", "9:00", "09:60", "0900", "09:00:00", "noon", ""])
def test_invalid_times_are_rejected(time: str) -> None:
    hours = {"tue": [{"open": time, "close": "23:00"}]}
    error = only_error(minimal(restaurant={"name": "D", "opening_hours": hours}))
    assert error["loc"] == ["restaurant", "opening_hours", "tue", 0, "open"]
    assert error["type"] == "time_format"


@pytest.mark.parametrize(("open_", "close"), [("17:00", "09:00"), ("12:00", "12:00")])
def test_close_must_be_after_open(open_: str, close: str) -> None:
    hours = {"wed": [{"open": open_, "close": close}]}
    error = only_error(minimal(restaurant={"name": "D", "opening_hours": hours}))
    assert error["loc"] == ["restaurant", "opening_hours", "wed", 0, "close"]
    assert error["type"] == "opening_interval"


def test_interval_missing_close_is_rejected() -> None:
    hours = {"wed": [{"open": "09:00"}]}
    error = only_error(minimal(restaurant={"name": "D", "opening_hours": hours}))
    assert error["loc"] == ["restaurant", "opening_hours", "wed", 0, "close"]
    assert error["type"] == "missing"


def test_overlapping_intervals_are_rejected() -> None:
    hours = {"thu": [{"open": "17:00", "close": "22:00"}, {"open": "11:00", "close": "17:30"}]}
    error = only_error(minimal(restaurant={"name": "D", "opening_hours": hours}))
    assert error["loc"] == ["restaurant", "opening_hours", "thu"]
    assert error["type"] == "opening_hours_overlap"


# ------------------------------------------------------------------------------ secrets


def secret_config() -> ExecutionConfig:
    data = example()
    data["onboarding"] = {
        "create_user": True,
        "sync_record": True,
        "user_name": "Dee Mo",
        "user_email": "dee@example.com",
        "user_password": USER_PASSWORD,
    }
    return ExecutionConfig.model_validate(data)


def test_str_and_repr_hide_passwords() -> None:
    config = secret_config()
    for text in (str(config), repr(config), str(config.account), repr(config.onboarding)):
        assert PASSWORD not in text
        assert USER_PASSWORD not in text
    assert SECRET_MASK in repr(config)


def test_model_dump_json_hides_passwords() -> None:
    config = secret_config()
    dumped = config.model_dump_json()
    assert PASSWORD not in dumped
    assert USER_PASSWORD not in dumped
    assert json.loads(dumped)["account"]["password"] == SECRET_MASK


def test_public_dict_masks_passwords_and_is_json() -> None:
    config = secret_config()
    public = config.public_dict()
    text = json.dumps(public)
    assert PASSWORD not in text
    assert USER_PASSWORD not in text
    assert public["account"]["password"] == SECRET_MASK
    assert public["onboarding"]["user_password"] == SECRET_MASK
    assert public["account"]["email"] == "demo@example.com"


def test_public_dict_keeps_absent_secret_null() -> None:
    public = ExecutionConfig.model_validate(example()).public_dict()
    assert public["onboarding"]["user_password"] is None


def test_revalidating_a_public_dict_keeps_the_mask_not_the_secret() -> None:
    # The mask is not the password: re-validating a public dict keeps the mask, never the secret.
    config = ExecutionConfig.model_validate(secret_config().public_dict())
    assert config.account.password == SecretStr(SECRET_MASK)


def test_secret_dict_reveals_and_round_trips() -> None:
    config = secret_config()
    secret = config.secret_dict()
    assert secret["account"]["password"] == PASSWORD
    assert secret["onboarding"]["user_password"] == USER_PASSWORD
    restored = ExecutionConfig.from_secret_dict(json.loads(json.dumps(secret)))
    assert restored == config
    assert restored.secret_dict() == secret


def test_secret_dict_does_not_leak_into_later_dumps() -> None:
    config = secret_config()
    config.secret_dict()
    assert PASSWORD not in config.model_dump_json()
    assert (
        config.model_dump(mode="json", context={"reveal_secrets": True})["account"]["password"]
        == SECRET_MASK
    )


def test_secrets_lists_the_clear_values() -> None:
    assert secret_config().secrets() == [PASSWORD, USER_PASSWORD]
    assert ExecutionConfig.model_validate(example()).secrets() == [PASSWORD]


def test_public_errors_never_echo_the_input() -> None:
    data = minimal(account={"email": "bad", "password": PASSWORD}, website={"theme": "x"})
    with pytest.raises(ValidationError) as info:
        ExecutionConfig.model_validate(data)
    safe = public_errors(info.value)
    assert PASSWORD not in json.dumps(safe)
    assert all("input" not in error and "url" not in error for error in safe)
    assert [error["loc"] for error in safe] == [["account", "email"], ["website", "theme"]]


# ------------------------------------------------------------------------------ switches


def test_switches_default_values() -> None:
    config = ExecutionConfig.model_validate(minimal())
    assert config.switches() == {
        "account.register_new_user": True,
        "onboarding.create_user": False,
        "menu.upload_images": True,
        "onboarding.sync_record": False,
        "menu.import": True,
        "menu.add_option_sets": True,
        "menu.add_item_tags": True,
    }


def test_switches_follow_the_config() -> None:
    config = ExecutionConfig.model_validate(
        minimal(
            menu={
                "menu_id": "m",
                "import": False,
                "add_option_sets": False,
                "add_item_tags": False,
                "upload_images": False,
            }
        )
    )
    switches = config.switches()
    assert switches["menu.import"] is False
    assert switches["menu.add_option_sets"] is False
    assert switches["menu.add_item_tags"] is False
    assert switches["menu.upload_images"] is False


def test_switch_paths_match_the_step_catalogue() -> None:
    catalogue_switches = [step.switch for step in STEPS if step.switch is not None]
    assert list(SWITCH_PATHS) == catalogue_switches
    assert list(ExecutionConfig.model_validate(minimal()).switches()) == catalogue_switches


# ------------------------------------------------------------------------------ python construction


def test_models_can_be_built_in_python() -> None:
    config = ExecutionConfig(
        account=AccountConfig(email="owner@example.com", password=SecretStr(PASSWORD)),
        restaurant=RestaurantConfig(name="Demo Pizza"),
        menu=MenuConfig(menu_id="menu-demo", import_=False),
    )
    assert config.restaurant.subdomain == "demo-pizza"
    assert config.menu.import_ is False


# --- bounds ---------------------------------------------------------------------------------


def _schema_leaves(schema: dict[str, Any], defs: dict[str, Any], path: str = "") -> list[Any]:
    """(path, schema) of every string and array in the config's JSON schema."""
    if "$ref" in schema:
        return _schema_leaves(defs[schema["$ref"].split("/")[-1]], defs, path)
    found: list[Any] = []
    for key in ("anyOf", "allOf", "oneOf"):
        for option in schema.get(key, []):
            found += _schema_leaves(option, defs, path)
    kind = schema.get("type")
    if kind == "string":
        found.append((path, schema))
    elif kind == "array":
        found.append((path, schema))
        found += _schema_leaves(schema.get("items", {}), defs, f"{path}[]")
    elif kind == "object":
        for name, sub in schema.get("properties", {}).items():
            found += _schema_leaves(sub, defs, f"{path}.{name}".lstrip("."))
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            found += _schema_leaves(extra, defs, f"{path}.*")
    return found


def test_every_string_and_list_of_the_config_has_a_maximum() -> None:
    schema = ExecutionConfig.model_json_schema()
    leaves = _schema_leaves(schema, schema.get("$defs", {}))
    assert len(leaves) > 20
    unbounded = [
        path
        for path, leaf in leaves
        if leaf["type"] == "string"
        and "maxLength" not in leaf
        and "enum" not in leaf
        and "const" not in leaf
        and leaf.get("format") != "email"  # email-validator: at most 254 characters
    ]
    unbounded += [
        path for path, leaf in leaves if leaf["type"] == "array" and "maxItems" not in leaf
    ]
    assert unbounded == []


@pytest.mark.parametrize(
    ("section", "field", "length"),
    [
        ("restaurant", "name", 301),
        ("restaurant", "address", 10_000),
        ("restaurant", "city", 101),
        ("account", "phone", 51),
        ("account", "password", 257),
        ("menu", "menu_id", 101),
        ("menu", "csv_path", 1001),
        ("onboarding", "user_name", 201),
    ],
)
def test_a_value_past_its_bound_names_the_field(section: str, field: str, length: int) -> None:
    errors = errors_of(minimal(**{section: {field: "a" * length}}))
    assert (section, field) in locs(errors)


def test_an_email_past_its_bound_names_the_field() -> None:
    errors = errors_of(minimal(account={"email": "a" * 300 + "@example.com"}))
    assert ("account", "email") in locs(errors)


def test_too_many_opening_intervals_name_the_day() -> None:
    hours = {"mon": [{"open": f"{h:02d}:00", "close": f"{h:02d}:30"} for h in range(11)]}
    errors = errors_of(minimal(restaurant={"name": "R", "opening_hours": hours}))
    assert ("restaurant", "opening_hours", "mon") in locs(errors)


@pytest.mark.parametrize(
    ("section", "field"),
    [("restaurant", "name"), ("restaurant", "city"), ("menu", "csv_path"),
     ("account", "password")],
)  # fmt: skip
def test_a_nul_character_is_refused(section: str, field: str) -> None:
    errors = errors_of(minimal(**{section: {field: "a\x00b"}}))
    assert (section, field) in locs(errors)


@pytest.mark.parametrize(
    "menu_id",
    ["../../api/admin/x#", "..", "a/b", "a..b", ".hidden", "-x", "a b", "a%2Fb", "a?b", "é"],
)
def test_a_menu_id_that_could_leave_its_url_path_is_refused(menu_id: str) -> None:
    errors = errors_of(minimal(menu={"menu_id": menu_id}))
    assert locs(errors) == [("menu", "menu_id")]
    assert errors[0]["type"] == "identifier_format"


@pytest.mark.parametrize("menu_id", ["menu-42", "M.1_a-b", "x", "a" * 100])
def test_plain_menu_ids_are_accepted(menu_id: str) -> None:
    assert (
        ExecutionConfig.model_validate(minimal(menu={"menu_id": menu_id})).menu.menu_id == menu_id
    )
