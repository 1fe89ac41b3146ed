"""What each outside system does for a step; both route sets (direct and app endpoints) call these.

An operation returns a `Reply` or raises `ServiceError`; it counts its own side effect.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from standin import schemas
from standin.state import (
    JSON,
    Account,
    Batch,
    Menu,
    OnboardingRecord,
    OnboardingUser,
    Reply,
    Restaurant,
    RestaurantMenu,
    Secret,
    StandinState,
    new_id,
)

#: Error codes that mean "already done": the answer is replayed for an idempotency key.
ALREADY_DONE_CODES: Final = frozenset({"account_exists", "restaurant_exists", "user_exists"})

SERVICES: Final = ("pickup", "delivery")

_DISHES: Final = (
    "Margherita Pizza",
    "Pepperoni Pizza",
    "Garlic Bread",
    "Caesar Salad",
    "Chicken Wings",
    "Beef Burger",
    "Veggie Burger",
    "Fries",
    "Onion Rings",
    "Fish Tacos",
    "Pad Thai",
    "Green Curry",
    "Tiramisu",
    "Chocolate Brownie",
    "Lemonade",
    "Iced Tea",
)
_OPTION_SETS: Final = (
    "Size",
    "Extra Toppings",
    "Sauce",
    "Sides",
    "Drink",
    "Spice Level",
    "Dressing",
    "Crust",
)
_TAGS: Final = ("Vegetarian", "Spicy", "Popular", "Gluten Free", "Vegan", "New")


class ServiceError(Exception):
    """An error answer: HTTP status and the `detail` object."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.detail: JSON = {"code": code, "message": message, **extra}

    @property
    def reply(self) -> Reply:
        return Reply(self.status, {"detail": self.detail})


def precondition_failed(message: str) -> ServiceError:
    return ServiceError(412, "precondition_failed", message)


def validation_failed(message: str, field: str) -> ServiceError:
    return ServiceError(422, "validation_failed", message, field=field)


def invalid_credentials() -> ServiceError:
    return ServiceError(401, "invalid_credentials", "the email or password is not correct")


def is_already_done(reply: Reply) -> bool:
    detail = reply.body.get("detail")
    return (
        reply.status == 409
        and isinstance(detail, dict)
        and detail.get("code") in ALREADY_DONE_CODES
    )


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def slugify(name: str) -> str:
    """Lowercase; every run of characters other than a-z and 0-9 becomes one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _received(body: schemas.Body) -> JSON:
    return body.model_dump(exclude={"password"})


# -- platform public API ------------------------------------------------------------------


def register_account(state: StandinState, body: schemas.AccountCreate) -> Reply:
    existing = state.accounts.get(body.email)
    if existing is not None:
        raise ServiceError(
            409,
            "account_exists",
            f"an account for {body.email} already exists",
            account=existing.public(),
        )
    account = _add_account(state, body.email, body.phone, body.password)
    state.effect("account_registration")
    return Reply(
        201, {"account_id": account.account_id, "email": account.email, "phone": account.phone}
    )


#: What the app's account endpoint answers when the email has an account with another password.
CREDENTIALS_MISMATCH: Final = "an account with this email exists and the credentials do not match"


def register_account_checked(state: StandinState, body: schemas.AccountCreate) -> Reply:
    """The app endpoint's account registration: like the platform's, but "already exists"
    only for the account's own credentials (the endpoint has them, so it checks them)."""
    existing = state.accounts.get(body.email)
    checked = state.config.endpoints_check_credentials
    if existing is not None and checked and not existing.secret.matches(body.password):
        raise ServiceError(401, "invalid_credentials", CREDENTIALS_MISMATCH)
    return register_account(state, body)


def log_in_account(state: StandinState, body: schemas.PortalLogin) -> Reply:
    """The platform API's login: the account these credentials open, or 401."""
    return Reply(200, login(state, body).public())


def generate_code(state: StandinState, body: schemas.CodeInjectionRequest) -> Reply:
    dark = body.theme == "dark"
    primary = (body.primary_color or ("#f97316" if dark else "#2563eb")).lower()
    secondary = (body.secondary_color or ("#111827" if dark else "#f3f4f6")).lower()
    background, text = ("#0b0f19", "#f9fafb") if dark else ("#ffffff", "#111827")
    head = (
        f'<style id="pumpd-theme">/* {html.escape(body.restaurant_name)} */'
        f":root{{--pumpd-primary:{primary};--pumpd-secondary:{secondary};"
        f"--pumpd-background:{background};--pumpd-text:{text};}}"
        "body{background:var(--pumpd-background);color:var(--pumpd-text);}</style>"
    )
    brand = json.dumps(
        {
            "name": body.restaurant_name,
            "theme": body.theme,
            "primary": primary,
            "secondary": secondary,
        },
        sort_keys=True,
    ).replace("</", "<\\/")
    script = f'<script id="pumpd-brand">window.PUMPD_BRAND={brand};</script>'
    state.code_generations.append(_received(body))
    state.effect("code_generation")
    return Reply(200, {"head_injection": head, "body_injection": script})


# -- onboarding service -------------------------------------------------------------------


def create_onboarding_user(state: StandinState, body: schemas.OnboardingUserCreate) -> Reply:
    existing = state.onboarding_users.get(body.email)
    if existing is not None:
        raise ServiceError(
            409,
            "user_exists",
            f"an onboarding user for {body.email} already exists",
            user=existing.public(),
        )
    user = OnboardingUser(
        user_id=new_id("user"),
        name=body.name,
        email=body.email,
        secret=Secret.of(body.password),
    )
    state.onboarding_users[user.email] = user
    state.effect("onboarding_user")
    return Reply(201, {"user_id": user.user_id, "name": user.name, "email": user.email})


def log_in_onboarding_user(state: StandinState, body: schemas.PortalLogin) -> Reply:
    """The onboarding service's login: the user these credentials open, or 401."""
    user = state.onboarding_users.get(body.email)
    if user is None or not user.secret.matches(body.password):
        raise invalid_credentials()
    return Reply(200, user.public())


def sync_onboarding_record(
    state: StandinState, subdomain: str, body: schemas.OnboardingRecordUpdate
) -> Reply:
    subdomain = subdomain.lower()
    if subdomain not in state.restaurants:
        raise precondition_failed(f"no restaurant with subdomain {subdomain!r}")
    record = state.onboarding_records.get(subdomain)
    synced_at = _now_iso()
    if record is None:
        record = OnboardingRecord(
            record_id=new_id("rec"),
            subdomain=subdomain,
            restaurant_name=body.restaurant_name,
            dashboard_url=body.dashboard_url,
            stripe_connect_url=body.stripe_connect_url,
            user_email=body.user_email,
            synced_at=synced_at,
        )
        state.onboarding_records[subdomain] = record
    else:
        record.restaurant_name = body.restaurant_name
        record.dashboard_url = body.dashboard_url
        record.stripe_connect_url = body.stripe_connect_url
        record.user_email = body.user_email
        record.synced_at = synced_at
        record.syncs += 1
    state.effect("onboarding_sync")
    return Reply(
        200, {"record_id": record.record_id, "subdomain": subdomain, "synced_at": synced_at}
    )


# -- image CDN ----------------------------------------------------------------------------


def _image_names(state: StandinState, menu_id: str, images: list[str]) -> list[str]:
    if images:
        return list(images)
    return [f"{menu_id}-image-{i + 1}.jpg" for i in range(state.config.invented_images)]


def create_batch(state: StandinState, body: schemas.BatchCreate) -> Reply:
    batch = Batch(
        batch_id=new_id("batch"),
        menu_id=body.menu_id,
        images=_image_names(state, body.menu_id, body.images),
        processing_seconds=state.config.cdn_processing_seconds,
    )
    state.batches[batch.batch_id] = batch
    state.images[body.menu_id] = list(batch.images)
    state.effect("image_upload")
    return Reply(
        202,
        {
            "batch_id": batch.batch_id,
            "status": "processing",
            "total": len(batch.images),
            "uploaded": 0,
        },
    )


def get_batch(state: StandinState, batch_id: str) -> Reply:
    batch = state.batches.get(batch_id)
    if batch is None:
        raise ServiceError(404, "not_found", f"no upload batch {batch_id!r}")
    return Reply(200, batch.progress())


def upload_images_now(state: StandinState, menu_id: str, body: schemas.UploadImages) -> Reply:
    images = _image_names(state, menu_id, body.images)
    state.images[menu_id] = images
    state.effect("image_upload")
    return Reply(200, {"success": True, "menu_id": menu_id, "uploaded": len(images)})


# -- admin portal -------------------------------------------------------------------------
#
# Each operation has two entry points: `op(state, body)` for the app endpoint, which logs in
# with the body's email and password first, and `op_as(state, account, body)` for a
# logged-in portal session. Both run the same code after the login.


def login(state: StandinState, body: schemas.PortalLogin) -> Account:
    """The account these credentials open; 401 `invalid_credentials` otherwise."""
    account = state.accounts.get(body.email)
    if account is None or not account.secret.matches(body.password):
        raise invalid_credentials()
    return account


def open_restaurant(state: StandinState, account: Account, subdomain: str) -> Restaurant:
    """The restaurant with this subdomain; it must exist under `account`."""
    restaurant = state.restaurants.get(subdomain.lower())
    if restaurant is None or restaurant.account_id != account.account_id:
        raise precondition_failed(
            f"no restaurant with subdomain {subdomain!r} under {account.email}"
        )
    return restaurant


def _record(restaurant: Restaurant, step: str, body: schemas.Body) -> None:
    restaurant.received.setdefault(step, []).append(_received(body))


def register_restaurant(
    state: StandinState, body: schemas.RestaurantRegister, base_url: str
) -> Reply:
    account = state.accounts.get(body.email)
    if account is None:
        raise precondition_failed(
            f"no account for {body.email}: register the account before the restaurant"
        )
    if not account.secret.matches(body.password):
        if state.config.endpoints_check_credentials:
            raise invalid_credentials()
        # A looser endpoint: "already registered" for the email alone, nothing else.
        already_registered(state, account, body)
        raise invalid_credentials()
    return register_restaurant_as(state, account, body, base_url)


def already_registered(
    state: StandinState, account: Account, body: schemas.RestaurantDetails
) -> list[Restaurant]:
    """409 `restaurant_exists` if `account` has this restaurant (or any, for a first
    restaurant); else the account's restaurants."""
    owned = [r for r in state.restaurants.values() if r.account_id == account.account_id]
    name = body.name.strip()
    same = next((r for r in owned if r.name.casefold() == name.casefold()), None)
    if same is not None:
        raise ServiceError(
            409,
            "restaurant_exists",
            f"{same.name!r} is already registered under {account.email}",
            restaurant=same.summary(),
        )
    if body.registration_mode == "existing_account_first_restaurant" and owned:
        raise ServiceError(
            409,
            "restaurant_exists",
            f"{account.email} already has a restaurant",
            restaurant=owned[0].summary(),
        )
    return owned


#: What the portal says of a value it rejects (`Config.rejected_values`), by field.
_REJECTED: Final[dict[str, str]] = {
    "phone": "the phone number cannot be reached; enter a number the restaurant answers",
    "address": "the address could not be found; check the street and number",
}


def rejected_value(state: StandinState, body: schemas.RestaurantDetails) -> None:
    """422 `validation_failed` naming the field whose value the portal rejects."""
    for name, values in state.config.rejected_values.items():
        value = getattr(body, name, None)
        if value is not None and value.strip() in {v.strip() for v in values}:
            message = _REJECTED.get(name, f"the portal does not accept this {name}")
            raise validation_failed(message, name)


def _add_account(state: StandinState, email: str, phone: str | None, password: str) -> Account:
    account = Account(
        account_id=new_id("acct"), email=email, phone=phone, secret=Secret.of(password)
    )
    state.accounts[account.email] = account
    return account


def seed_account(state: StandinState, body: schemas.AccountSeed) -> Reply:
    """An account that existed before (no side effect counted); 409 if the email has one."""
    if body.email in state.accounts:
        raise ServiceError(409, "account_exists", f"an account for {body.email} already exists")
    return Reply(201, _add_account(state, body.email, body.phone, body.password).public())


def register_restaurant_as(
    state: StandinState, account: Account, body: schemas.RestaurantDetails, base_url: str
) -> Reply:
    already_registered(state, account, body)
    rejected_value(state, body)
    name = body.name.strip()
    subdomain = slugify(body.subdomain or name)
    if not subdomain:
        field = "subdomain" if body.subdomain else "name"
        raise validation_failed(f"no subdomain can be made from {field}", field)
    if subdomain in state.restaurants:
        raise validation_failed(f"the subdomain {subdomain!r} is taken", "subdomain")
    restaurant = Restaurant(
        restaurant_id=new_id("rest"),
        account_id=account.account_id,
        email=account.email,
        name=name,
        subdomain=subdomain,
        dashboard_url=f"{base_url.rstrip('/')}/portal/r/{subdomain}/dashboard",
        registration_mode=body.registration_mode,
        address=body.address,
        city=body.city,
        phone=body.phone,
        cuisine=body.cuisine,
        opening_hours=body.opening_hours,
    )
    _record(restaurant, "restaurant_registration", body)
    state.restaurants[subdomain] = restaurant
    state.effect("restaurant_registration")
    return Reply(200, {"success": True, **restaurant.summary()})


def configure_website(state: StandinState, body: schemas.WebsiteConfigure) -> Reply:
    return configure_website_as(state, login(state, body), body)


def configure_website_as(
    state: StandinState, account: Account, body: schemas.WebsiteSettings
) -> Reply:
    restaurant = open_restaurant(state, account, body.subdomain)
    restaurant.website = {
        "head_injection": body.head_injection,
        "body_injection": body.body_injection,
        "settings": dict(body.website),
    }
    _record(restaurant, "website_configuration", body)
    state.effect("website_configuration")
    applied = {
        **body.website,
        "head_injection": body.head_injection is not None,
        "body_injection": body.body_injection is not None,
    }
    return Reply(200, {"success": True, "subdomain": restaurant.subdomain, "applied": applied})


def configure_services(state: StandinState, body: schemas.ServicesConfigure) -> Reply:
    return configure_services_as(state, login(state, body), body)


def configure_services_as(
    state: StandinState,
    account: Account,
    body: schemas.ServicesSettings,
    services: Sequence[str] | None = None,
) -> Reply:
    """Turn on `services` (all of them when None) and every other one off."""
    restaurant = open_restaurant(state, account, body.subdomain)
    if services is None:
        chosen = list(SERVICES)
    else:
        unknown = sorted(set(services) - set(SERVICES))
        if unknown:
            raise validation_failed(f"unknown services: {', '.join(unknown)}", "services")
        chosen = [s for s in SERVICES if s in services]
    restaurant.services = chosen
    restaurant.services_saved = True
    _record(restaurant, "services_configuration", body)
    state.effect("services_configuration")
    return Reply(200, {"success": True, "services": list(chosen)})


def configure_payment(state: StandinState, body: schemas.PaymentConfigure) -> Reply:
    return configure_payment_as(state, login(state, body), body)


def stripe_connect_url(restaurant: Restaurant) -> str:
    return f"https://connect.stripe.test/{restaurant.subdomain}"


def configure_payment_as(
    state: StandinState, account: Account, body: schemas.PaymentSettings
) -> Reply:
    restaurant = open_restaurant(state, account, body.subdomain)
    url = stripe_connect_url(restaurant) if body.include_stripe_link else None
    restaurant.stripe_connect_url = url
    restaurant.payment_saved = True
    _record(restaurant, "payment_configuration", body)
    state.effect("payment_configuration")
    return Reply(200, {"success": True, "stripe_connect_url": url})


def _pick(pool: tuple[str, ...], count: int, seed: int) -> list[str]:
    """`count` distinct names from `pool`, rotated by `seed`, numbered once the pool runs out."""
    names = []
    for i in range(count):
        name = pool[(seed + i) % len(pool)]
        names.append(name if i < len(pool) else f"{name} {i // len(pool) + 1}")
    return names


def synthesise_menu(state: StandinState, menu_id: str, source: JSON) -> Menu:
    seed = int(_digest(menu_id)[:8], 16)
    option_sets = _pick(_OPTION_SETS, state.config.menu_option_sets, seed)
    tags = _pick(_TAGS, state.config.menu_tags, seed)
    items = [
        {
            "name": name,
            "price": round(6 + (seed >> i) % 19 + 0.5, 2),
            "option_sets": option_sets[i % len(option_sets) :][:1] if option_sets else [],
            "tags": tags[i % len(tags) :][:1] if tags else [],
        }
        for i, name in enumerate(_pick(_DISHES, state.config.menu_items, seed))
    ]
    return Menu(menu_id=menu_id, source=source, items=items, option_sets=option_sets, tags=tags)


def import_menu(state: StandinState, body: schemas.MenuImport) -> Reply:
    return import_menu_as(state, login(state, body), body)


def import_menu_as(state: StandinState, account: Account, body: schemas.MenuSource) -> Reply:
    restaurant = open_restaurant(state, account, body.subdomain)
    if body.menu_id:
        menu_id = body.menu_id
    elif body.csv_path:
        menu_id = f"csv-{_digest(body.csv_path)[:12]}"
    else:
        raise validation_failed("a menu needs menu_id or csv_path", "menu_id")
    menu = state.menus.get(menu_id) or synthesise_menu(
        state, menu_id, {"menu_id": body.menu_id, "csv_path": body.csv_path}
    )
    state.menus[menu_id] = menu
    # Re-importing replaces the menu: what was added to the old copy is gone.
    old = restaurant.menus.pop(menu_id, None)
    held = RestaurantMenu(menu_id=menu_id, imports=(old.imports if old else 0) + 1)
    restaurant.menus[menu_id] = held  # last in order: the menu a null menu_id means
    _record(restaurant, "menu_import", body)
    state.effect("menu_import")
    return Reply(
        200,
        {
            "success": True,
            "menu_id": menu_id,
            "items": len(menu.items),
            "option_sets": len(menu.option_sets),
            "tags": len(menu.tags),
        },
    )


def imported_menu(restaurant: Restaurant, menu_id: str | None) -> RestaurantMenu:
    """The menu imported into `restaurant` (the last one when `menu_id` is None)."""
    if menu_id is None and restaurant.menus:
        return list(restaurant.menus.values())[-1]
    held = restaurant.menus.get(menu_id or "")
    if held is None:
        which = f"menu {menu_id!r}" if menu_id else "a menu"
        raise precondition_failed(f"import {which} into {restaurant.subdomain!r} first")
    return held


def require_option_sets(held: RestaurantMenu) -> None:
    """Item tags need the menu's option sets complete."""
    if not held.option_sets_added:
        raise precondition_failed(f"add the option sets of menu {held.menu_id!r} first")


def add_option_sets(state: StandinState, body: schemas.MenuStep) -> Reply:
    return add_option_sets_as(state, login(state, body), body)


def add_option_sets_as(state: StandinState, account: Account, body: schemas.MenuScope) -> Reply:
    """Create every option set the menu needs; those that exist are left as they are."""
    restaurant = open_restaurant(state, account, body.subdomain)
    held = imported_menu(restaurant, body.menu_id)
    menu = state.menus[held.menu_id]
    for name in menu.option_sets:
        _create_option_set(held, name, [])
    held.option_sets_added = True
    _record(restaurant, "option_sets", body)
    state.effect("option_sets")
    return Reply(
        200, {"success": True, "menu_id": held.menu_id, "option_sets": len(held.option_sets)}
    )


def _create_option_set(held: RestaurantMenu, name: str, choices: list[str]) -> bool:
    """Ask for one option set; True when it was created (it exists once, however often)."""
    held.option_set_requests[name] = held.option_set_requests.get(name, 0) + 1
    if name in held.option_sets:
        return False
    held.option_sets.append(name)
    held.option_set_choices[name] = list(choices)
    held.option_set_creations[name] = held.option_set_creations.get(name, 0) + 1
    return True


def add_option_set_as(
    state: StandinState, account: Account, body: schemas.OptionSetCreate
) -> Reply:
    """Create one option set of the menu (the portal's form does one at a time).

    The step's side effect is "the menu's option sets are complete": it is counted once, when
    the last missing set is created.
    """
    restaurant = open_restaurant(state, account, body.subdomain)
    held = imported_menu(restaurant, body.menu_id)
    menu = state.menus[held.menu_id]
    wanted = body.name.strip().casefold()
    name = next((n for n in menu.option_sets if n.casefold() == wanted), None)
    if name is None:
        raise validation_failed(
            f"menu {held.menu_id!r} has no option set {body.name.strip()!r}", "name"
        )
    choices = [c.strip() for c in body.choices if c.strip()]
    created = _create_option_set(held, name, choices)
    if not held.option_sets_added and all(n in held.option_sets for n in menu.option_sets):
        held.option_sets_added = True
        state.effect("option_sets")
    _record(restaurant, "option_sets", body)
    return Reply(
        201 if created else 200,
        {
            "success": True,
            "menu_id": held.menu_id,
            "name": name,
            "created": created,
            "complete": held.option_sets_added,
            "option_sets": len(held.option_sets),
        },
    )


def add_item_tags(state: StandinState, body: schemas.MenuStep) -> Reply:
    return add_item_tags_as(state, login(state, body), body)


def add_item_tags_as(
    state: StandinState,
    account: Account,
    body: schemas.MenuScope,
    tags: Sequence[str] | None = None,
) -> Reply:
    """Tag the menu's items with `tags` (every tag the menu needs when None)."""
    restaurant = open_restaurant(state, account, body.subdomain)
    held = imported_menu(restaurant, body.menu_id)
    menu = state.menus[held.menu_id]
    require_option_sets(held)
    if tags is None:
        chosen = list(menu.tags)
    else:
        unknown = sorted(set(tags) - set(menu.tags))
        if unknown:
            raise validation_failed(
                f"menu {held.menu_id!r} has no tag {', '.join(map(repr, unknown))}", "tag"
            )
        chosen = [t for t in menu.tags if t in tags]
    held.tags = chosen
    held.tags_saved = True
    _record(restaurant, "item_tags", body)
    state.effect("item_tags")
    return Reply(200, {"success": True, "menu_id": held.menu_id, "tags": len(held.tags)})
