"""The admin portal as server-rendered HTML forms, under `/portal`: what the browser steps drive.

The pages share the stand-in's state and its per-step operations (`services.*_as`, the same
code the app endpoints run after their login): the same accounts, restaurants and menus, the
same preconditions and duplicate answers, the same effect counts. Every page that serves a
step is declared with `serves(step)`, so the gate records it in `/_control/calls` and applies
that step's network faults; this module applies the portal's own fault modes
(`hide_element`, `expire_session`, see `standin.faults`).

Sessions: `POST /portal/login` sets the cookie `portal_session` (a random token standing for
the account's email); every other page without a live session answers 303 to
`/portal/login?next=<path>`. A form POST sends the visitor back to the form's page after
logging in (`POST /portal/restaurants` to `/portal/restaurants/new`, the others to their own
path). Passwords are never rendered: password inputs are always empty.

Forms are posted `application/x-www-form-urlencoded` and parsed with `urllib.parse`.
Answers: success 303 (to the next page, or back with `?saved=1`); validation failure 422 with
the form again and `.field-error[data-field=<name>]`; a missing precondition 412 with
`.portal-error`; an already registered restaurant 409 with `div.alert-exists`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, Final
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from standin import markup, schemas, services
from standin.gate import request_call
from standin.markup import esc
from standin.routing import StateDep, serves
from standin.services import ServiceError
from standin.state import Account, Menu, Restaurant, RestaurantMenu, StandinState

COOKIE: Final = "portal_session"
COOKIE_PATH: Final = "/portal"
HOME: Final = "/portal/"
LOGIN: Final = "/portal/login"

DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES: Final = {
    "mon": "Monday",
    "tue": "Tuesday",
    "wed": "Wednesday",
    "thu": "Thursday",
    "fri": "Friday",
    "sat": "Saturday",
    "sun": "Sunday",
}
_REGISTRATION_MODES: Final = (
    ("new_account_with_restaurant", "New account with restaurant"),
    ("existing_account_first_restaurant", "Existing account, first restaurant"),
    ("existing_account_additional_restaurant", "Existing account, additional restaurant"),
)
_RESTAURANT_TEXT: Final = (
    ("name", "Restaurant name"),
    ("address", "Address"),
    ("city", "City"),
    ("phone", "Phone"),
    ("cuisine", "Cuisine"),
    ("subdomain", "Subdomain (derived from the name when empty)"),
)
_INTERVAL: Final = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)\s*-\s*([01]\d|2[0-3]):([0-5]\d)$")
_WEBSITE_TEXT: Final = (
    ("primary_color", "Primary colour (#rrggbb)"),
    ("secondary_color", "Secondary colour (#rrggbb)"),
)
_WEBSITE_HEADER: Final = (
    ("header_image_url", "Header image URL"),
    ("header_logo_url", "Header logo URL"),
    ("nav_logo_url", "Navigation logo URL"),
    ("favicon_url", "Favicon URL"),
    ("nav_text_color", "Navigation text colour (#rrggbb)"),
    ("card_text_color", "Card text colour (#rrggbb)"),
)
_WEBSITE_CHECKBOXES: Final = ("disable_gradients", "configure_header")

portal = APIRouter(prefix="/portal", tags=["admin portal"], include_in_schema=False)

Form = dict[str, list[str]]
Errors = dict[str, str]


# -- sessions, pages and faults -----------------------------------------------------------


def _here(request: Request) -> str:
    """Where to come back to after logging in: this page (a form's page for a POST)."""
    if request.method == "GET" and request.url.query:
        return f"{request.url.path}?{request.url.query}"
    return request.url.path


def _safe_next(value: str | None) -> str:
    """`value` when it is a portal path on this server; the portal's home otherwise."""
    if value and value.startswith("/portal") and not value.startswith("//") and "\\" not in value:
        return value
    return HOME


def _to_login(next_path: str) -> RedirectResponse:
    return RedirectResponse(f"{LOGIN}?{urlencode({'next': next_path})}", status_code=303)


def _session(
    request: Request, state: StandinState, next_path: str | None = None
) -> Account | Response:
    """The logged-in account, or the redirect to the login page.

    An `expire_session` fault for the step this request serves ends the session here.
    """
    target = _safe_next(next_path or _here(request))
    token = request.cookies.get(COOKIE)
    email = state.portal_sessions.get(token) if token else None
    account = state.accounts.get(email) if email else None
    if token is None or account is None:
        response = _to_login(target)
        if token is not None:
            response.delete_cookie(COOKIE, path=COOKIE_PATH)
        return response
    call = request_call(request.scope)
    if call is not None:
        fault = state.faults.take(call.step, ("expire_session",))
        if fault is not None:
            call.fault = fault.mode
            state.portal_sessions.pop(token, None)
            response = _to_login(target)
            response.delete_cookie(COOKIE, path=COOKIE_PATH)
            return response
    return account


def _hide(request: Request, state: StandinState, text: str) -> str:
    """Apply a `hide_element` fault of this page's step whose element is on the page."""
    call = request_call(request.scope)
    if call is None or request.method != "GET":
        return text
    fault = state.faults.take(
        call.step, ("hide_element",), where=lambda f: markup.has_element(text, f.element_id)
    )
    if fault is None:
        return text
    call.fault = fault.mode
    return markup.remove_element(text, fault.element_id)


def _page(
    request: Request,
    state: StandinState,
    title: str,
    body: str,
    *,
    account: Account | None = None,
    status: int = 200,
) -> HTMLResponse:
    text = markup.document(title, body, user=account.email if account else None)
    return HTMLResponse(_hide(request, state, text), status_code=status)


def _error_page(
    request: Request, state: StandinState, exc: ServiceError, account: Account | None
) -> HTMLResponse:
    code = str(exc.detail.get("code", "error"))
    message = str(exc.detail.get("message", "something went wrong"))
    title = "Not possible yet" if exc.status == 412 else HTTPStatus(exc.status).phrase
    body = (
        f"<h1>{esc(title)}</h1>\n"
        f'<div class="portal-error" role="alert"{markup.attrs(data_status=exc.status)}'
        f"{markup.attrs(data_code=code)}>{esc(message)}</div>\n"
        f'<p><a href="{HOME}">Back to your restaurants</a></p>'
    )
    return _page(request, state, title, body, account=account, status=exc.status)


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _saved(saved: bool) -> str:
    """A settings form says whether it shows saved values or the portal's defaults."""
    return markup.attrs(data_saved="true" if saved else "false")


def _flash(message: str, shown: bool) -> str:
    if not shown:
        return ""
    return f'<p id="flash" class="flash-success" role="status">{esc(message)}</p>\n'


def _form_errors(errors: Mapping[str, str], rendered: set[str]) -> str:
    """Errors about fields the form does not show, at its top."""
    return "".join(markup.field_error(name, errors) for name in errors if name not in rendered)


# -- forms --------------------------------------------------------------------------------


async def _form(request: Request) -> Form:
    """The posted form; 415 for anything but an urlencoded form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("", "application/x-www-form-urlencoded"):
        raise ServiceError(
            415, "unsupported_media_type", "send the form as application/x-www-form-urlencoded"
        )
    raw = await request.body()
    return parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)


def _text(form: Form, name: str) -> str:
    return (form.get(name) or [""])[0].strip()


def _optional(form: Form, name: str) -> str | None:
    return _text(form, name) or None


def _multiline(form: Form, name: str) -> str:
    """A textarea's text as typed (browsers send CRLF line ends)."""
    return (form.get(name) or [""])[0].replace("\r\n", "\n")


def _checked(form: Form, name: str) -> bool:
    return any(v.strip().lower() not in ("", "0", "false", "off") for v in form.get(name, []))


def _problem(error: Mapping[str, Any]) -> str:
    field = str(error["loc"][0]) if error.get("loc") else ""
    kind = error.get("type")
    if kind == "string_too_short" or kind == "missing":
        return "required"
    if kind == "string_pattern_mismatch":
        if field.endswith("_color"):
            return "must be a colour like #1a2b3c"
        if field.endswith("_url"):
            return "must be an http:// or https:// URL"
    return str(error.get("msg", "invalid"))


def _errors(exc: ValidationError) -> Errors:
    """One message per field; never the input (a form may hold what must not be shown)."""
    errors: Errors = {}
    for error in exc.errors():
        name = str(error["loc"][0]) if error.get("loc") else "form"
        errors.setdefault(name, _problem(error))
    return errors


def _service_field_error(exc: ServiceError) -> Errors:
    return {str(exc.detail.get("field") or "form"): str(exc.detail.get("message", "invalid"))}


def _hours(form: Form) -> tuple[dict[str, list[dict[str, str]]], Errors]:
    """`hours_mon` .. `hours_sun`: comma-separated `HH:MM-HH:MM` intervals, empty = closed."""
    hours: dict[str, list[dict[str, str]]] = {}
    errors: Errors = {}
    for day in DAYS:
        name = f"hours_{day}"
        intervals = []
        for part in (p.strip() for p in _text(form, name).split(",")):
            if not part:
                continue
            match = _INTERVAL.match(part)
            if match is None:
                errors[name] = f"{part!r} is not an interval like 09:00-17:00"
                break
            opens, closes = f"{match[1]}:{match[2]}", f"{match[3]}:{match[4]}"
            if opens == closes:
                errors[name] = f"{part!r} opens and closes at the same time"
                break
            intervals.append({"open": opens, "close": closes})
        hours[day] = intervals
    return hours, errors


# -- restaurants and menus ----------------------------------------------------------------


def _r(restaurant: Restaurant | str) -> str:
    """The path of a restaurant's pages."""
    subdomain = restaurant if isinstance(restaurant, str) else restaurant.subdomain
    return f"/portal/r/{quote(subdomain, safe='')}"


def _m(restaurant: Restaurant, menu_id: str) -> str:
    return f"{_r(restaurant)}/menu/{quote(menu_id, safe='')}"


@dataclass
class _Open:
    account: Account
    restaurant: Restaurant


@dataclass
class _OpenMenu(_Open):
    held: RestaurantMenu
    menu: Menu


def _open(
    request: Request, state: StandinState, subdomain: str, next_path: str | None = None
) -> _Open | Response:
    """Log in (from the session) and open the restaurant, or the page that says why not."""
    account = _session(request, state, next_path)
    if isinstance(account, Response):
        return account
    try:
        restaurant = services.open_restaurant(state, account, subdomain)
    except ServiceError as exc:
        return _error_page(request, state, exc, account)
    return _Open(account, restaurant)


def _open_menu(
    request: Request, state: StandinState, subdomain: str, menu_id: str
) -> _OpenMenu | Response:
    opened = _open(request, state, subdomain)
    if isinstance(opened, Response):
        return opened
    try:
        held = services.imported_menu(opened.restaurant, menu_id)
    except ServiceError as exc:
        return _error_page(request, state, exc, opened.account)
    return _OpenMenu(opened.account, opened.restaurant, held, state.menus[held.menu_id])


def _nav(restaurant: Restaurant) -> str:
    base = _r(restaurant)
    links = [
        ("nav-dashboard", f"{base}/dashboard", "Dashboard"),
        ("nav-website", f"{base}/settings/website", "Website"),
        ("nav-services", f"{base}/settings/services", "Services"),
        ("nav-payments", f"{base}/settings/payments", "Payments"),
        ("nav-menu-import", f"{base}/menu/import", "Import a menu"),
    ]
    items = "".join(
        f"<li><a{markup.attrs(id=i, href=href)}>{esc(text)}</a></li>" for i, href, text in links
    )
    return f'<nav class="restaurant-nav"><ul>{items}</ul></nav>\n'


# -- login --------------------------------------------------------------------------------


def _login_form(next_path: str, email: str, error: bool, password_disabled: bool = False) -> str:
    message = '<p class="login-error" role="alert">Invalid email or password</p>\n'
    return (
        "<h1>Log in to Pumpd admin</h1>\n"
        f"{message if error else ''}"
        f'<form id="login-form" method="post" action="{LOGIN}" novalidate>\n'
        f"<input{markup.attrs(type='hidden', name='next', value=next_path)}>\n"
        f"{markup.text_field('email', 'Email', email, {})}\n"
        f"{markup.password_field('password', 'Password', {}, disabled=password_disabled)}\n"
        '<button type="submit" id="login-submit">Log in</button>\n</form>'
    )


@portal.get("/login")
async def login_page(
    request: Request,
    state: StateDep,
    next_path: Annotated[str | None, Query(alias="next")] = None,
) -> Response:
    disabled = state.config.portal_password_disabled
    body = _login_form(_safe_next(next_path), "", False, disabled)
    return _page(request, state, "Log in", body)


@portal.post("/login")
async def log_in(request: Request, state: StateDep) -> Response:
    try:
        form = await _form(request)
    except ServiceError as exc:
        return _error_page(request, state, exc, None)
    next_path = _safe_next(_text(form, "next"))
    email = _text(form, "email")
    try:
        credentials = schemas.PortalLogin.model_validate(
            {"email": email, "password": (form.get("password") or [""])[0]}
        )
        account = services.login(state, credentials)
    except (ValidationError, ServiceError):
        body = _login_form(next_path, email, True, state.config.portal_password_disabled)
        return _page(request, state, "Log in", body, status=401)
    token = secrets.token_urlsafe(24)
    state.portal_sessions[token] = account.email
    response = _redirect(next_path)
    response.set_cookie(COOKIE, token, path=COOKIE_PATH, httponly=True, samesite="lax")
    return response


@portal.post("/logout")
async def log_out(request: Request, state: StateDep) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        state.portal_sessions.pop(token, None)
    response = _redirect(LOGIN)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


@portal.get("/")
async def home(request: Request, state: StateDep) -> Response:
    account = _session(request, state)
    if isinstance(account, Response):
        return account
    owned = [r for r in state.restaurants.values() if r.account_id == account.account_id]
    items = "".join(
        f'<li class="restaurant"{markup.attrs(data_subdomain=r.subdomain)}>'
        f'<a href="{esc(_r(r))}/dashboard">{esc(r.name)}</a></li>'
        for r in owned
    )
    body = (
        "<h1>Your restaurants</h1>\n"
        f'<ul id="restaurants">{items}</ul>\n'
        '<p><a id="new-restaurant" href="/portal/restaurants/new">Register a restaurant</a></p>'
    )
    return _page(request, state, "Your restaurants", body, account=account)


# -- restaurant registration --------------------------------------------------------------


def _restaurant_form(values: Mapping[str, str], errors: Mapping[str, str]) -> str:
    rendered = {name for name, _ in _RESTAURANT_TEXT} | {"registration_mode"}
    rendered |= {f"hours_{day}" for day in DAYS}
    fields = "\n".join(
        markup.text_field(name, label, values.get(name), errors) for name, label in _RESTAURANT_TEXT
    )
    mode = markup.select_field(
        "registration_mode",
        "Registration mode",
        _REGISTRATION_MODES,
        values.get("registration_mode") or _REGISTRATION_MODES[0][0],
        errors,
    )
    hours = "\n".join(
        markup.text_field(
            f"hours_{day}",
            _DAY_NAMES[day],
            values.get(f"hours_{day}"),
            errors,
            placeholder="09:00-17:00, 18:00-22:00",
        )
        for day in DAYS
    )
    return (
        "<h1>Register a restaurant</h1>\n"
        f"{_form_errors(errors, rendered)}"
        '<form id="restaurant-form" method="post" action="/portal/restaurants" novalidate>\n'
        f"{fields}\n{mode}\n"
        '<fieldset id="opening-hours"><legend>Opening hours: HH:MM-HH:MM, comma-separated; '
        f"empty = closed</legend>\n{hours}\n</fieldset>\n"
        '<button type="submit" id="register-restaurant">Register restaurant</button>\n</form>'
    )


def _already_registered(found: Mapping[str, Any]) -> str:
    subdomain = str(found.get("subdomain", ""))
    return (
        "<h1>Register a restaurant</h1>\n"
        '<div class="alert-exists" role="alert"'
        f"{markup.attrs(data_subdomain=subdomain)}"
        f"{markup.attrs(data_dashboard_url=found.get('dashboard_url'))}"
        f"{markup.attrs(data_restaurant_id=found.get('restaurant_id'))}>"
        "This restaurant is already registered: "
        f'<a class="dashboard-link" href="{esc(_r(subdomain))}/dashboard">'
        f"{esc(found.get('name'))}</a></div>"
    )


@portal.get("/restaurants/new", openapi_extra=serves("restaurant_registration"))
async def restaurant_form(request: Request, state: StateDep) -> Response:
    account = _session(request, state)
    if isinstance(account, Response):
        return account
    body = _restaurant_form({}, {})
    return _page(request, state, "Register a restaurant", body, account=account)


@portal.post("/restaurants", openapi_extra=serves("restaurant_registration"))
async def register_restaurant(request: Request, state: StateDep) -> Response:
    account = _session(request, state, "/portal/restaurants/new")
    if isinstance(account, Response):
        return account
    try:
        form = await _form(request)
    except ServiceError as exc:
        return _error_page(request, state, exc, account)
    names = [name for name, _ in _RESTAURANT_TEXT] + ["registration_mode"]
    values = {name: _text(form, name) for name in names}
    values |= {f"hours_{day}": _text(form, f"hours_{day}") for day in DAYS}
    hours, errors = _hours(form)
    details: schemas.RestaurantDetails | None = None
    try:
        details = schemas.RestaurantDetails.model_validate(
            {
                "registration_mode": values["registration_mode"] or _REGISTRATION_MODES[0][0],
                "name": values["name"],
                **{n: values[n] or None for n in ("address", "city", "phone", "cuisine")},
                "subdomain": values["subdomain"] or None,
                "opening_hours": hours,
            }
        )
    except ValidationError as exc:
        errors = {**_errors(exc), **errors}
    if details is not None and not errors:
        try:
            reply = services.register_restaurant_as(state, account, details, str(request.base_url))
        except ServiceError as exc:
            if exc.detail.get("code") == "restaurant_exists":
                body = _already_registered(exc.detail.get("restaurant") or {})
                return _page(
                    request, state, "Already registered", body, account=account, status=409
                )
            if exc.status != 422:
                return _error_page(request, state, exc, account)
            errors = _service_field_error(exc)
        else:
            return _redirect(f"{_r(str(reply.body['subdomain']))}/dashboard")
    body = _restaurant_form(values, errors)
    return _page(request, state, "Register a restaurant", body, account=account, status=422)


@portal.get("/r/{subdomain}/dashboard", openapi_extra=serves("restaurant_registration"))
async def dashboard(subdomain: str, request: Request, state: StateDep) -> Response:
    opened = _open(request, state, subdomain)
    if isinstance(opened, Response):
        return opened
    r = opened.restaurant
    menus = "".join(
        f'<li class="menu"'
        f"{markup.attrs(data_menu_id=m, data_csv_path=state.menus[m].source.get('csv_path'))}>"
        f'<a href="{esc(_m(r, m))}">{esc(m)}</a></li>'
        for m in r.menus
    )
    body = (
        f'{_nav(r)}<h1 id="restaurant-name">{esc(r.name)}</h1>\n<dl>\n'
        f'<dt>Subdomain</dt><dd id="subdomain">{esc(r.subdomain)}</dd>\n'
        f'<dt>Dashboard URL</dt><dd id="dashboard-url">{esc(r.dashboard_url)}</dd>\n'
        f'<dt>Restaurant id</dt><dd id="restaurant-id">{esc(r.restaurant_id)}</dd>\n'
        f'<dt>Registration mode</dt><dd id="registration-mode">{esc(r.registration_mode)}</dd>\n'
        f'</dl>\n<h2>Menus</h2>\n<ul id="menus">{menus}</ul>'
    )
    return _page(request, state, r.name, body, account=opened.account)


# -- website ------------------------------------------------------------------------------


def _website_values(restaurant: Restaurant) -> dict[str, Any]:
    website = restaurant.website or {}
    settings = website.get("settings")
    return {
        **(settings if isinstance(settings, dict) else {}),
        "head_injection": website.get("head_injection"),
        "body_injection": website.get("body_injection"),
    }


def _website_form(
    restaurant: Restaurant, values: Mapping[str, Any], errors: Mapping[str, str], saved: bool
) -> str:
    def text(name: str, label: str) -> str:
        value = values.get(name)
        return markup.text_field(name, label, None if value is None else str(value), errors)

    def box(name: str, label: str) -> str:
        return markup.checkbox_field(name, label, bool(values.get(name)), errors)

    rendered = {"head_injection", "body_injection", "theme", "item_layout"}
    rendered |= {n for n, _ in _WEBSITE_TEXT} | {n for n, _ in _WEBSITE_HEADER}
    rendered |= set(_WEBSITE_CHECKBOXES)
    theme = (("light", "Light"), ("dark", "Dark"))
    layout = (("list", "List"), ("card", "Card"))
    return (
        f"{_nav(restaurant)}<h1>Website settings</h1>\n"
        f"{_flash('Website settings saved', saved)}{_form_errors(errors, rendered)}"
        f'<form id="website-form" method="post"{_saved(restaurant.website is not None)}'
        f' action="{esc(_r(restaurant))}/settings/website" novalidate>\n'
        + markup.textarea_field(
            "head_injection", "Head code injection", values.get("head_injection"), errors
        )
        + markup.textarea_field(
            "body_injection", "Body code injection", values.get("body_injection"), errors
        )
        + markup.select_field("theme", "Theme", theme, values.get("theme") or "light", errors)
        + "".join(text(n, label) for n, label in _WEBSITE_TEXT)
        + box("disable_gradients", "Disable gradients")
        + markup.select_field(
            "item_layout", "Item layout", layout, values.get("item_layout") or "list", errors
        )
        + box("configure_header", "Configure the header")
        + "".join(text(n, label) for n, label in _WEBSITE_HEADER)
        + '\n<button type="submit" id="save-website">Save website settings</button>\n</form>'
    )


@portal.get("/r/{subdomain}/settings/website", openapi_extra=serves("website_configuration"))
async def website_page(
    subdomain: str, request: Request, state: StateDep, saved: str | None = None
) -> Response:
    opened = _open(request, state, subdomain)
    if isinstance(opened, Response):
        return opened
    r = opened.restaurant
    body = _website_form(r, _website_values(r), {}, saved == "1")
    return _page(request, state, "Website settings", body, account=opened.account)


@portal.post("/r/{subdomain}/settings/website", openapi_extra=serves("website_configuration"))
async def save_website(subdomain: str, request: Request, state: StateDep) -> Response:
    opened = _open(request, state, subdomain)
    if isinstance(opened, Response):
        return opened
    r = opened.restaurant
    try:
        form = await _form(request)
    except ServiceError as exc:
        return _error_page(request, state, exc, opened.account)
    texts = [n for n, _ in _WEBSITE_TEXT] + [n for n, _ in _WEBSITE_HEADER]
    values: dict[str, Any] = {
        "head_injection": _multiline(form, "head_injection"),
        "body_injection": _multiline(form, "body_injection"),
        "theme": _text(form, "theme") or "light",
        "item_layout": _text(form, "item_layout") or "list",
        **{n: _text(form, n) for n in texts},
        **{n: _checked(form, n) for n in _WEBSITE_CHECKBOXES},
    }
    try:
        website = schemas.WebsiteForm.model_validate(
            {
                **{n: values[n] or None for n in texts},
                **{n: values[n] for n in ("theme", "item_layout", *_WEBSITE_CHECKBOXES)},
            }
        )
    except ValidationError as exc:
        body = _website_form(r, values, _errors(exc), False)
        return _page(request, state, "Website settings", body, account=opened.account, status=422)
    settings = schemas.WebsiteSettings(
        subdomain=r.subdomain,
        head_injection=values["head_injection"] or None,
        body_injection=values["body_injection"] or None,
        website=website.model_dump(),
    )
    try:
        services.configure_website_as(state, opened.account, settings)
    except ServiceError as exc:
        return _error_page(request, state, exc, opened.account)
    return _redirect(f"{_r(r)}/settings/website?saved=1")


# -- services -----------------------------------------------------------------------------


@portal.get("/r/{subdomain}/settings/services", openapi_extra=serves("services_configuration"))
async def services_page(
    subdomain: str, request: Request, state: StateDep, saved: str | None = None
) -> Response:
    opened = _open(request, state, subdomain)
    if isinstance(opened, Response):
        return opened
    r = opened.restaurant
    boxes = "".join(
        markup.checkbox_field(s, s.capitalize(), s in r.services, {}) for s in services.SERVICES
    )
    body = (
        f"{_nav(r)}<h1>Services</h1>\n{_flash('Services saved', saved == '1')}"
        f'<form id="services-form" method="post"{_saved(r.services_saved)}'
        f' action="{esc(_r(r))}/settings/services" novalidate>\n{boxes}\n'
        '<button type="submit" id="save-services">Save services</button>\n</form>'
    )
    return _page(request, state, "Services", body, account=opened.account)


@portal.post("/r/{subdomain}/settings/services", openapi_extra=serves("services_configuration"))
async def save_services(subdomain: str, request: Request, state: StateDep) -> Response:
    opened = _open(request, state, subdomain)
    if isinstance(opened, Response):
        return opened
    try:
        form = await _form(request)
        chosen = [s for s in services.SERVICES if _checked(form, s)]
        services.configure_services_as(
            state,
            opened.account,
            schemas.ServicesSettings(subdomain=opened.restaurant.subdomain),
            chosen,
        )
    except ServiceError as exc:
        return _error_page(request, state, exc, opened.account)
    return _redirect(f"{_r(opened.restaurant)}/settings/services?saved=1")


# -- payments -----------------------------------------------------------------------------


@portal.get("/r/{subdomain}/settings/payments", openapi_extra=serves("payment_configuration"))
async def payments_page(
    subdomain: str, request: Request, state: StateDep, saved: str | None = None
) -> Response:
    opened = _open(request, state, subdomain)
    if isinstance(opened, Response):
        return opened
    r = opened.restaurant
    link = ""
    if r.stripe_connect_url:
        link = (
            '<p>Finish connecting Stripe: <a id="stripe-connect-url"'
            f"{markup.attrs(href=r.stripe_connect_url)}>{esc(r.stripe_connect_url)}</a></p>\n"
        )
    box = markup.checkbox_field(
        "include_stripe_link", "Create a Stripe Connect link", r.stripe_connect_url is not None, {}
    )
    body = (
        f"{_nav(r)}<h1>Payments</h1>\n{_flash('Payment settings saved', saved == '1')}{link}"
        f'<form id="payments-form" method="post"{_saved(r.payment_saved)}'
        f' action="{esc(_r(r))}/settings/payments" novalidate>\n{box}\n'
        '<button type="submit" id="save-payments">Save payment settings</button>\n</form>'
    )
    return _page(request, state, "Payments", body, account=opened.account)


@portal.post("/r/{subdomain}/settings/payments", openapi_extra=serves("payment_configuration"))
async def save_payments(subdomain: str, request: Request, state: StateDep) -> Response:
    opened = _open(request, state, subdomain)
    if isinstance(opened, Response):
        return opened
    try:
        form = await _form(request)
        settings = schemas.PaymentSettings(
            subdomain=opened.restaurant.subdomain,
            include_stripe_link=_checked(form, "include_stripe_link"),
        )
        services.configure_payment_as(state, opened.account, settings)
    except ServiceError as exc:
        return _error_page(request, state, exc, opened.account)
    return _redirect(f"{_r(opened.restaurant)}/settings/payments?saved=1")


# -- menu import --------------------------------------------------------------------------


def _import_form(restaurant: Restaurant, values: Mapping[str, str], errors: Errors) -> str:
    return (
        f"{_nav(restaurant)}<h1>Import a menu</h1>\n"
        f"{_form_errors(errors, {'menu_id', 'csv_path'})}"
        f'<form id="menu-import-form" method="post"'
        f' action="{esc(_r(restaurant))}/menu/import" novalidate>\n'
        f"{markup.text_field('menu_id', 'Menu id', values.get('menu_id'), errors)}\n"
        f"{markup.text_field('csv_path', 'CSV file path', values.get('csv_path'), errors)}\n"
        '<button type="submit" id="import-menu">Import menu</button>\n</form>'
    )


@portal.get("/r/{subdomain}/menu/import", openapi_extra=serves("menu_import"))
async def import_page(subdomain: str, request: Request, state: StateDep) -> Response:
    opened = _open(request, state, subdomain)
    if isinstance(opened, Response):
        return opened
    body = _import_form(opened.restaurant, {}, {})
    return _page(request, state, "Import a menu", body, account=opened.account)


@portal.post("/r/{subdomain}/menu/import", openapi_extra=serves("menu_import"))
async def import_menu(subdomain: str, request: Request, state: StateDep) -> Response:
    opened = _open(request, state, subdomain)
    if isinstance(opened, Response):
        return opened
    r = opened.restaurant
    try:
        form = await _form(request)
    except ServiceError as exc:
        return _error_page(request, state, exc, opened.account)
    values = {"menu_id": _text(form, "menu_id"), "csv_path": _text(form, "csv_path")}
    source = schemas.MenuSource(
        subdomain=r.subdomain,
        menu_id=values["menu_id"] or None,
        csv_path=values["csv_path"] or None,
    )
    try:
        reply = services.import_menu_as(state, opened.account, source)
    except ServiceError as exc:
        if exc.status != 422:
            return _error_page(request, state, exc, opened.account)
        body = _import_form(r, values, _service_field_error(exc))
        return _page(request, state, "Import a menu", body, account=opened.account, status=422)
    return _redirect(_m(r, str(reply.body["menu_id"])))


@portal.get("/r/{subdomain}/menu/{menu_id}", openapi_extra=serves("menu_import"))
async def menu_page(subdomain: str, menu_id: str, request: Request, state: StateDep) -> Response:
    opened = _open_menu(request, state, subdomain, menu_id)
    if isinstance(opened, Response):
        return opened
    r, menu = opened.restaurant, opened.menu
    rows = "".join(
        f'<tr class="menu-item"><td>{esc(item["name"])}</td><td>{esc(item["price"])}</td></tr>'
        for item in menu.items
    )
    base = _m(r, menu.menu_id)
    body = (
        f'{_nav(r)}<h1>Menu <span id="menu-id">{esc(menu.menu_id)}</span></h1>\n'
        f'<p>Items: <span id="item-count">{len(menu.items)}</span></p>\n'
        f'<table id="menu-items"><tr><th>Item</th><th>Price</th></tr>{rows}</table>\n'
        f'<p><a id="option-sets-link" href="{esc(base)}/option-sets">Option sets</a> · '
        f'<a id="tags-link" href="{esc(base)}/tags">Item tags</a></p>'
    )
    return _page(request, state, f"Menu {menu.menu_id}", body, account=opened.account)


# -- option sets --------------------------------------------------------------------------


@portal.get("/r/{subdomain}/menu/{menu_id}/option-sets", openapi_extra=serves("option_sets"))
async def option_sets_page(
    subdomain: str,
    menu_id: str,
    request: Request,
    state: StateDep,
    created: str | None = None,
) -> Response:
    opened = _open_menu(request, state, subdomain, menu_id)
    if isinstance(opened, Response):
        return opened
    r, held, menu = opened.restaurant, opened.held, opened.menu
    base = f"{_m(r, menu.menu_id)}/option-sets"
    items = []
    for name in menu.option_sets:
        done = name in held.option_sets
        href = f"{base}/new?{urlencode({'name': name})}"
        action = (
            '<span class="option-set-done">created</span>'
            if done
            else f'<a class="new-option-set"{markup.attrs(href=href)}>Create</a>'
        )
        items.append(
            f'<li class="option-set"{markup.attrs(data_name=name)}'
            f' data-created="{"true" if done else "false"}">'
            f'<span class="option-set-name">{esc(name)}</span> {action}</li>'
        )
    made = sum(1 for name in menu.option_sets if name in held.option_sets)
    complete = "true" if held.option_sets_added else "false"
    flash = _flash(f"Option set {created} saved", bool(created))
    body = (
        f'{_nav(r)}<h1>Option sets of menu <span id="menu-id">{esc(menu.menu_id)}</span></h1>\n'
        f'{flash}<p id="option-sets-progress" data-total="{len(menu.option_sets)}"'
        f' data-created="{made}">{made} of {len(menu.option_sets)} option sets created</p>\n'
        f'<ul id="option-sets" data-complete="{complete}">\n' + "\n".join(items) + "\n</ul>"
    )
    return _page(request, state, "Option sets", body, account=opened.account)


def _option_set_form(
    restaurant: Restaurant, menu_id: str, values: Mapping[str, str], errors: Errors
) -> str:
    action = f"{_m(restaurant, menu_id)}/option-sets"
    return (
        f"{_nav(restaurant)}<h1>New option set</h1>\n"
        f"{_form_errors(errors, {'name', 'choices'})}"
        f'<form id="option-set-form" method="post" action="{esc(action)}" novalidate>\n'
        f"{markup.text_field('name', 'Name', values.get('name'), errors)}\n"
        + markup.textarea_field("choices", "Choices, one per line", values.get("choices"), errors)
        + '\n<button type="submit" id="save-option-set">Save option set</button>\n</form>'
    )


@portal.get("/r/{subdomain}/menu/{menu_id}/option-sets/new", openapi_extra=serves("option_sets"))
async def option_set_form(
    subdomain: str,
    menu_id: str,
    request: Request,
    state: StateDep,
    name: str | None = None,
) -> Response:
    opened = _open_menu(request, state, subdomain, menu_id)
    if isinstance(opened, Response):
        return opened
    body = _option_set_form(opened.restaurant, opened.menu.menu_id, {"name": name or ""}, {})
    return _page(request, state, "New option set", body, account=opened.account)


@portal.post("/r/{subdomain}/menu/{menu_id}/option-sets", openapi_extra=serves("option_sets"))
async def create_option_set(
    subdomain: str, menu_id: str, request: Request, state: StateDep
) -> Response:
    opened = _open_menu(request, state, subdomain, menu_id)
    if isinstance(opened, Response):
        return opened
    r, menu = opened.restaurant, opened.menu
    try:
        form = await _form(request)
    except ServiceError as exc:
        return _error_page(request, state, exc, opened.account)
    values = {"name": _text(form, "name"), "choices": _multiline(form, "choices")}
    errors: Errors = {}
    try:
        body = schemas.OptionSetCreate.model_validate(
            {
                "subdomain": r.subdomain,
                "menu_id": menu.menu_id,
                "name": values["name"],
                "choices": values["choices"].splitlines(),
            }
        )
        reply = services.add_option_set_as(state, opened.account, body)
    except ValidationError as exc:
        errors = _errors(exc)
    except ServiceError as exc:
        if exc.status != 422:
            return _error_page(request, state, exc, opened.account)
        errors = _service_field_error(exc)
    else:
        query = urlencode({"created": reply.body["name"]})
        return _redirect(f"{_m(r, menu.menu_id)}/option-sets?{query}")
    page = _option_set_form(r, menu.menu_id, values, errors)
    return _page(request, state, "New option set", page, account=opened.account, status=422)


# -- item tags ----------------------------------------------------------------------------


def _tags_form(
    restaurant: Restaurant, held: RestaurantMenu, menu: Menu, errors: Errors, saved: bool
) -> str:
    boxes = "".join(
        markup.checkbox_field("tag", tag, tag in held.tags, {}, value=tag, id_=f"tag-{i + 1}")
        for i, tag in enumerate(menu.tags)
    )
    action = f"{_m(restaurant, menu.menu_id)}/tags"
    return (
        f"{_nav(restaurant)}<h1>Item tags of menu "
        f'<span id="menu-id">{esc(menu.menu_id)}</span></h1>\n'
        f"{_flash('Item tags saved', saved)}"
        f'<form id="tags-form" method="post"{_saved(held.tags_saved)}'
        f' action="{esc(action)}" novalidate>\n{boxes}\n'
        f"{markup.field_error('tag', errors)}"
        '<button type="submit" id="save-tags">Save item tags</button>\n</form>'
    )


@portal.get("/r/{subdomain}/menu/{menu_id}/tags", openapi_extra=serves("item_tags"))
async def tags_page(
    subdomain: str, menu_id: str, request: Request, state: StateDep, saved: str | None = None
) -> Response:
    opened = _open_menu(request, state, subdomain, menu_id)
    if isinstance(opened, Response):
        return opened
    try:
        services.require_option_sets(opened.held)
    except ServiceError as exc:
        return _error_page(request, state, exc, opened.account)
    body = _tags_form(opened.restaurant, opened.held, opened.menu, {}, saved == "1")
    return _page(request, state, "Item tags", body, account=opened.account)


@portal.post("/r/{subdomain}/menu/{menu_id}/tags", openapi_extra=serves("item_tags"))
async def save_tags(subdomain: str, menu_id: str, request: Request, state: StateDep) -> Response:
    opened = _open_menu(request, state, subdomain, menu_id)
    if isinstance(opened, Response):
        return opened
    r, menu = opened.restaurant, opened.menu
    try:
        form = await _form(request)
        scope = schemas.MenuScope(subdomain=r.subdomain, menu_id=menu.menu_id)
        services.add_item_tags_as(state, opened.account, scope, form.get("tag", []))
    except ServiceError as exc:
        if exc.status != 422:
            return _error_page(request, state, exc, opened.account)
        errors = _service_field_error(exc)
        body = _tags_form(r, opened.held, menu, errors, False)
        return _page(request, state, "Item tags", body, account=opened.account, status=422)
    return _redirect(f"{_m(r, menu.menu_id)}/tags?saved=1")
