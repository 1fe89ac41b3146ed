"""Request bodies the stand-in accepts, one model per operation."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _email(value: str) -> str:
    value = value.strip()
    if not _EMAIL.fullmatch(value):
        raise ValueError("not a valid email address")
    return value.lower()


# Deliberately looser than EmailStr: the stand-in must not refuse what a caller's own
# validation let through (for example reserved `.test` domains).
Email = Annotated[str, AfterValidator(_email)]
Color = Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")]
RegistrationMode = Literal[
    "new_account_with_restaurant",
    "existing_account_first_restaurant",
    "existing_account_additional_restaurant",
]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AccountCreate(Body):
    email: Email
    password: str = Field(min_length=8, repr=False)
    phone: str | None = None


class CodeInjectionRequest(Body):
    restaurant_name: str = Field(min_length=1)
    theme: Literal["light", "dark"] = "light"
    primary_color: Color | None = None
    secondary_color: Color | None = None


class OnboardingUserCreate(Body):
    name: str = Field(min_length=1)
    email: Email
    password: str = Field(min_length=1, repr=False)


class OnboardingRecordUpdate(Body):
    restaurant_name: str = Field(min_length=1)
    dashboard_url: str = Field(min_length=1)
    stripe_connect_url: str | None = None
    user_email: Email | None = None


class OnboardingRecordSync(OnboardingRecordUpdate):
    """The app endpoint's form: the subdomain travels in the body."""

    subdomain: str = Field(min_length=1)


class BatchCreate(Body):
    menu_id: str = Field(min_length=1)
    images: list[str] = Field(default_factory=list)


class UploadImages(Body):
    images: list[str] = Field(default_factory=list)


class PortalLogin(Body):
    """The admin-portal login every browser step starts with."""

    email: Email
    password: str = Field(min_length=1, repr=False)


#: The restaurant form's fields the portal can reject a value of (`rejected_values`).
RejectableField = Literal["name", "address", "city", "phone", "cuisine", "subdomain"]


class AccountSeed(AccountCreate):
    """Body of `POST /_control/accounts`: an account that exists before the test (an
    owner's, from an earlier restaurant); no side effect is counted."""


class RestaurantDetails(Body):
    """What registering a restaurant needs besides the login (the portal form's fields)."""

    registration_mode: RegistrationMode = "new_account_with_restaurant"
    name: str = Field(min_length=1)
    address: str | None = None
    city: str | None = None
    phone: str | None = None
    cuisine: str | None = None
    subdomain: str | None = None
    opening_hours: dict[str, Any] | None = None


class RestaurantRegister(RestaurantDetails, PortalLogin):
    pass


# Each restaurant-scoped operation has a body without the login (what a logged-in portal
# session sends) and the app endpoint's body, the same plus `email` and `password`. Fields
# of the second come in the order email, password, subdomain, ... (pydantic collects them
# from the most basic class up).


class InRestaurant(Body):
    subdomain: str = Field(min_length=1)


class RestaurantScoped(InRestaurant, PortalLogin):
    pass


class WebsiteSettings(InRestaurant):
    head_injection: str | None = None
    body_injection: str | None = None
    website: dict[str, Any] = Field(default_factory=dict)


class WebsiteConfigure(WebsiteSettings, PortalLogin):
    pass


class ServicesSettings(InRestaurant):
    pass


class ServicesConfigure(ServicesSettings, PortalLogin):
    pass


class PaymentSettings(InRestaurant):
    include_stripe_link: bool = False


class PaymentConfigure(PaymentSettings, PortalLogin):
    pass


class MenuSource(InRestaurant):
    menu_id: str | None = None
    csv_path: str | None = None


class MenuImport(MenuSource, PortalLogin):
    pass


class MenuScope(InRestaurant):
    """Option sets and item tags: `menu_id` null means the restaurant's last imported menu."""

    menu_id: str | None = None


class MenuStep(MenuScope, PortalLogin):
    pass


class OptionSetCreate(MenuScope):
    """One option set, as the portal's option-set form creates it."""

    name: str = Field(min_length=1)
    choices: list[str] = Field(default_factory=list)


_URL: Final = r"^https?://\S+$"


class WebsiteForm(Body):
    """The portal's website settings form, checked field by field."""

    model_config = ConfigDict(extra="forbid")

    theme: Literal["light", "dark"] = "light"
    primary_color: Color | None = None
    secondary_color: Color | None = None
    disable_gradients: bool = False
    item_layout: Literal["list", "card"] = "list"
    configure_header: bool = False
    header_image_url: Annotated[str, Field(pattern=_URL)] | None = None
    header_logo_url: Annotated[str, Field(pattern=_URL)] | None = None
    nav_logo_url: Annotated[str, Field(pattern=_URL)] | None = None
    favicon_url: Annotated[str, Field(pattern=_URL)] | None = None
    nav_text_color: Color | None = None
    card_text_color: Color | None = None


class ConfigUpdate(Body):
    """Body of `POST /_control/config`; absent fields keep their value."""

    model_config = ConfigDict(extra="forbid")

    cdn_processing_seconds: float | None = Field(None, ge=0)
    menu_items: int | None = Field(None, ge=0)
    menu_option_sets: int | None = Field(None, ge=0)
    menu_tags: int | None = Field(None, ge=0)
    invented_images: int | None = Field(None, ge=0)
    portal_password_disabled: bool | None = None
    endpoints_check_credentials: bool | None = None
    rejected_values: dict[RejectableField, list[str]] | None = None
