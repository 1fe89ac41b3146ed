"""The stand-in's admin portal: HTML pages with the selectors the browser steps rely on,
sharing state, preconditions, effects, calls and faults with the JSON routes."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

with warnings.catch_warnings():
    # Starlette warns (a UserWarning) that it prefers `httpx2`; plain httpx works.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from standin.app import create_app
from standin.client import effects, fault

EMAIL = "owner@pizza.test"
PASSWORD = "correct-horse-1"
OTHER_EMAIL = "other@pizza.test"
HTML = {"accept": "text/html,application/xhtml+xml"}


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, and the text inside elements with ids."""

    VOID = frozenset({"input", "br", "meta", "img", "link", "hr"})

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.texts: dict[str, str] = {}
        self._stack: list[tuple[str, str | None]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        if tag in self.VOID:
            return
        self._stack.append((tag, values.get("id")))
        if "id" in values:
            self.texts.setdefault(values["id"], "")

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, element_id in self._stack:
            if element_id is not None:
                self.texts[element_id] += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        """Elements `tag` whose attributes include `attrs` (`class_` matches one class)."""
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        found = []
        for name, values in self.tags:
            if name != tag:
                continue
            ok = True
            for key, value in wanted.items():
                if key == "class":
                    ok = ok and value in values.get("class", "").split()
                else:
                    ok = ok and values.get(key) == value
            if ok:
                found.append(values)
        return found

    def one(self, tag: str, **attrs: str) -> dict[str, str]:
        found = self.find(tag, **attrs)
        assert len(found) == 1, (tag, attrs, found)
        return found[0]

    def text(self, element_id: str) -> str:
        return self.texts[element_id].strip()


def page(response: httpx.Response) -> Elements:
    assert response.headers["content-type"].startswith("text/html"), response.text
    return Elements(response.text)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(), follow_redirects=False) as c:
        yield c


def state(client: TestClient) -> dict[str, Any]:
    data: dict[str, Any] = client.get("/_control/state").json()
    return data


def create_account(client: TestClient, email: str = EMAIL) -> None:
    body = {"email": email, "password": PASSWORD, "phone": "1"}
    assert client.post("/platform/api/v1/accounts", json=body).status_code == 201


def login(
    client: TestClient, email: str = EMAIL, password: str = PASSWORD, next_path: str = ""
) -> httpx.Response:
    response: httpx.Response = client.post(
        "/portal/login", data={"email": email, "password": password, "next": next_path}
    )
    return response


def location(response: httpx.Response) -> str:
    assert response.status_code == 303, (response.status_code, response.text)
    return response.headers["location"]


def restaurant_form(**overrides: str) -> dict[str, str]:
    return {
        "name": "Joe's <Pizza> & Co",
        "address": "1 Queen St",
        "city": "Auckland",
        "phone": "+64 9 000 000",
        "cuisine": "pizza",
        "subdomain": "",
        "registration_mode": "new_account_with_restaurant",
        "hours_mon": "09:00-14:00, 17:00-22:00",
        "hours_tue": "09:00-17:00",
        **{f"hours_{d}": "" for d in ("wed", "thu", "fri", "sat", "sun")},
        **overrides,
    }


def register(client: TestClient, **overrides: str) -> httpx.Response:
    response: httpx.Response = client.post("/portal/restaurants", data=restaurant_form(**overrides))
    return response


def logged_in_with_restaurant(client: TestClient) -> str:
    create_account(client)
    location(login(client))
    dashboard = location(register(client))
    return dashboard.split("/")[3]


def with_menu(client: TestClient, menu_id: str = "menu-1") -> str:
    subdomain = logged_in_with_restaurant(client)
    response = client.post(f"/portal/r/{subdomain}/menu/import", data={"menu_id": menu_id})
    assert location(response) == f"/portal/r/{subdomain}/menu/{menu_id}"
    return subdomain


def create_option_sets(client: TestClient, subdomain: str, menu_id: str = "menu-1") -> list[str]:
    base = f"/portal/r/{subdomain}/menu/{menu_id}/option-sets"
    items = page(client.get(base)).find("li", class_="option-set")
    names = [item["data-name"] for item in items]
    for name in names:
        client.post(base, data={"name": name, "choices": "Small\r\nLarge"})
    return names


# -- sessions -----------------------------------------------------------------------------


def test_pages_need_a_session(client: TestClient) -> None:
    response = client.get("/portal/restaurants/new")
    target = urlsplit(location(response))
    assert target.path == "/portal/login"
    assert parse_qs(target.query) == {"next": ["/portal/restaurants/new"]}
    for path in ("/portal/", "/portal/r/x/settings/website", "/portal/r/x/menu/m/tags?a=1"):
        target = urlsplit(location(client.get(path)))
        assert target.path == "/portal/login" and parse_qs(target.query)["next"] == [path]
    posted = client.post("/portal/restaurants", data=restaurant_form())
    assert parse_qs(urlsplit(location(posted)).query)["next"] == ["/portal/restaurants/new"]
    assert effects(client)["restaurant_registration"] == 0


def test_login_page_and_login(client: TestClient) -> None:
    form = page(client.get("/portal/login", params={"next": "/portal/restaurants/new"}))
    form.one("form", id="login-form")
    form.one("input", name="email")
    assert form.one("input", name="password")["type"] == "password"
    form.one("button", id="login-submit")
    assert form.one("input", name="next")["value"] == "/portal/restaurants/new"

    create_account(client)
    done = login(client, EMAIL.upper(), next_path="/portal/restaurants/new")
    assert location(done) == "/portal/restaurants/new"
    assert "portal_session" in done.headers["set-cookie"]
    assert "httponly" in done.headers["set-cookie"].lower()
    assert client.get("/portal/restaurants/new").status_code == 200
    assert state(client)["portal"] == {"sessions": {EMAIL: 1}}
    assert location(login(client, next_path="https://evil.test/")) == "/portal/"
    assert location(login(client, next_path="//evil.test/portal")) == "/portal/"
    assert client.get("/_control/calls").json()[-1]["path"] == "/portal/restaurants/new"
    assert all(c["path"] != "/portal/login" for c in client.get("/_control/calls").json())


@pytest.mark.parametrize(
    ("email", "password"),
    [(EMAIL, "wrong-password"), ("nobody@pizza.test", PASSWORD), ("not-an-email", PASSWORD)],
)
def test_bad_login_is_401_without_the_password(
    client: TestClient, email: str, password: str
) -> None:
    create_account(client)
    response = login(client, email, password)
    assert response.status_code == 401
    shown = page(response)
    assert shown.text("login-form") and "Invalid email or password" in response.text
    assert shown.one("p", class_="login-error")
    assert shown.one("input", name="password").get("value", "") == ""
    assert password not in response.text
    assert "set-cookie" not in response.headers
    calls = client.get("/_control/calls").json()
    assert [c["step"] for c in calls] == ["account_registration"]  # a login is no step


def test_logout_ends_the_session(client: TestClient) -> None:
    create_account(client)
    location(login(client))
    assert location(client.post("/portal/logout")) == "/portal/login"
    assert state(client)["portal"]["sessions"] == {}
    assert urlsplit(location(client.get("/portal/"))).path == "/portal/login"


# -- restaurant registration --------------------------------------------------------------


def test_restaurant_form_has_the_contract_selectors(client: TestClient) -> None:
    create_account(client)
    login(client)
    form = page(client.get("/portal/restaurants/new"))
    form.one("form", id="restaurant-form")
    for name in ("name", "address", "city", "phone", "cuisine", "subdomain"):
        form.one("input", name=name)
    form.one("select", name="registration_mode")
    assert [o["value"] for o in form.find("option")] == [
        "new_account_with_restaurant",
        "existing_account_first_restaurant",
        "existing_account_additional_restaurant",
    ]
    for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"):
        form.one("input", name=f"hours_{day}")
    form.one("button", id="register-restaurant")


def test_register_restaurant_dashboard_and_duplicate(client: TestClient) -> None:
    create_account(client)
    login(client)
    created = register(client)
    assert location(created) == "/portal/r/joe-s-pizza-co/dashboard"
    dashboard = client.get(location(created))
    assert dashboard.status_code == 200
    shown = page(dashboard)
    stored = state(client)["restaurants"]["joe-s-pizza-co"]
    assert shown.text("restaurant-name") == "Joe's <Pizza> & Co"
    assert "Joe&#x27;s &lt;Pizza&gt; &amp; Co" in dashboard.text
    assert shown.text("subdomain") == "joe-s-pizza-co"
    assert shown.text("dashboard-url") == "http://testserver/portal/r/joe-s-pizza-co/dashboard"
    assert shown.text("restaurant-id") == stored["restaurant_id"]
    assert stored["opening_hours"]["mon"] == [
        {"open": "09:00", "close": "14:00"},
        {"open": "17:00", "close": "22:00"},
    ]
    assert stored["opening_hours"]["sun"] == [] and stored["cuisine"] == "pizza"
    assert stored["received"]["restaurant_registration"][0]["name"] == "Joe's <Pizza> & Co"
    assert effects(client)["restaurant_registration"] == 1

    again = register(client, name="JOE'S <PIZZA> & CO")
    assert again.status_code == 409
    alert = page(again).one("div", class_="alert-exists")
    assert alert["data-subdomain"] == "joe-s-pizza-co"
    assert alert["data-dashboard-url"] == stored["dashboard_url"]
    assert alert["data-restaurant-id"] == stored["restaurant_id"]
    assert "This restaurant is already registered" in again.text
    assert not page(again).find("div", class_="portal-error")

    # The JSON endpoint sees the same restaurant.
    json_again = client.post(
        "/api/registration/register-restaurant",
        json={"email": EMAIL, "password": PASSWORD, "name": "Joe's <Pizza> & Co"},
    )
    assert json_again.status_code == 409
    assert json_again.json()["detail"]["restaurant"]["restaurant_id"] == stored["restaurant_id"]
    first_only = register(
        client, name="Second", registration_mode="existing_account_first_restaurant"
    )
    assert first_only.status_code == 409
    assert effects(client)["restaurant_registration"] == 1

    calls = [(c["step"], c["method"], c["status"]) for c in client.get("/_control/calls").json()]
    assert calls[1:3] == [
        ("restaurant_registration", "POST", 303),
        ("restaurant_registration", "GET", 200),
    ]


def test_register_restaurant_validation_reshows_the_form(client: TestClient) -> None:
    create_account(client)
    login(client)
    bad = register(client, name=" ", hours_tue="9am-5pm", registration_mode="nope")
    assert bad.status_code == 422
    shown = page(bad)
    for field in ("name", "hours_tue", "registration_mode"):
        shown.one("p", class_="field-error", data_field=field)
    assert shown.one("input", name="hours_mon")["value"] == "09:00-14:00, 17:00-22:00"
    shown.one("button", id="register-restaurant")
    assert effects(client)["restaurant_registration"] == 0

    assert register(client, subdomain="joes").status_code == 303
    taken = register(
        client,
        name="Other",
        subdomain="Joes",
        registration_mode="existing_account_additional_restaurant",
    )
    assert taken.status_code == 422
    page(taken).one("p", class_="field-error", data_field="subdomain")


# -- settings -----------------------------------------------------------------------------


WEBSITE = {
    "head_injection": '<style id="x">body{}</style>',
    "body_injection": "<script>\r\nwindow.X=1;</script>",
    "theme": "dark",
    "primary_color": "#AA0000",
    "secondary_color": "",
    "disable_gradients": "on",
    "item_layout": "card",
    "header_image_url": "https://cdn.test/header.jpg",
    "header_logo_url": "",
    "nav_logo_url": "",
    "favicon_url": "https://cdn.test/favicon.ico",
    "nav_text_color": "#ffffff",
    "card_text_color": "",
}


def test_website_settings(client: TestClient) -> None:
    subdomain = logged_in_with_restaurant(client)
    path = f"/portal/r/{subdomain}/settings/website"
    form = page(client.get(path))
    form.one("form", id="website-form")
    form.one("textarea", name="head_injection")
    form.one("textarea", name="body_injection")
    form.one("select", name="theme")
    form.one("select", name="item_layout")
    assert {o["value"] for o in form.find("option")} == {"light", "dark", "list", "card"}
    for name in ("disable_gradients", "configure_header"):
        assert form.one("input", name=name)["type"] == "checkbox"
    for name in (
        "primary_color",
        "secondary_color",
        "header_image_url",
        "header_logo_url",
        "nav_logo_url",
        "favicon_url",
        "nav_text_color",
        "card_text_color",
    ):
        form.one("input", name=name)
    form.one("button", id="save-website")

    saved = client.post(path, data=WEBSITE)
    assert location(saved) == f"{path}?saved=1"
    after = client.get(location(saved))
    assert after.text.count("Website settings saved") == 1
    page(after).one("p", class_="flash-success")
    assert "&lt;style id=&quot;x&quot;&gt;" in after.text  # shown back, escaped
    assert page(after).one("input", name="disable_gradients").get("checked") == ""
    assert not page(client.get(path)).find("p", class_="flash-success")

    website = state(client)["restaurants"][subdomain]["website"]
    assert website["head_injection"] == WEBSITE["head_injection"]
    assert website["body_injection"] == "<script>\nwindow.X=1;</script>"
    assert website["settings"] == {
        "theme": "dark",
        "primary_color": "#AA0000",
        "secondary_color": None,
        "disable_gradients": True,
        "item_layout": "card",
        "configure_header": False,
        "header_image_url": "https://cdn.test/header.jpg",
        "header_logo_url": None,
        "nav_logo_url": None,
        "favicon_url": "https://cdn.test/favicon.ico",
        "nav_text_color": "#ffffff",
        "card_text_color": None,
    }
    received = state(client)["restaurants"][subdomain]["received"]["website_configuration"]
    assert received[0]["website"] == website["settings"]
    assert effects(client)["website_configuration"] == 1

    bad = client.post(path, data={**WEBSITE, "primary_color": "red", "favicon_url": "x"})
    assert bad.status_code == 422
    shown = page(bad)
    shown.one("p", class_="field-error", data_field="primary_color")
    shown.one("p", class_="field-error", data_field="favicon_url")
    assert shown.one("input", name="primary_color")["value"] == "red"
    assert effects(client)["website_configuration"] == 1


def test_services_settings(client: TestClient) -> None:
    subdomain = logged_in_with_restaurant(client)
    path = f"/portal/r/{subdomain}/settings/services"
    form = page(client.get(path))
    form.one("form", id="services-form")
    assert form.one("input", name="pickup")["type"] == "checkbox"
    assert form.one("input", name="delivery")["type"] == "checkbox"
    form.one("button", id="save-services")

    assert location(client.post(path, data={"pickup": "1"})) == f"{path}?saved=1"
    assert state(client)["restaurants"][subdomain]["services"] == ["pickup"]
    shown = page(client.get(f"{path}?saved=1"))
    shown.one("p", class_="flash-success")
    assert "checked" in shown.one("input", name="pickup")
    assert "checked" not in shown.one("input", name="delivery")
    client.post(path, data={"pickup": "1", "delivery": "1"})
    assert state(client)["restaurants"][subdomain]["services"] == ["pickup", "delivery"]
    assert effects(client)["services_configuration"] == 2


def test_payment_settings_with_and_without_stripe(client: TestClient) -> None:
    subdomain = logged_in_with_restaurant(client)
    path = f"/portal/r/{subdomain}/settings/payments"
    form = page(client.get(path))
    form.one("form", id="payments-form")
    assert form.one("input", name="include_stripe_link")["type"] == "checkbox"
    form.one("button", id="save-payments")
    assert not form.find("a", id="stripe-connect-url")

    saved = client.post(path, data={"include_stripe_link": "1"})
    shown = page(client.get(location(saved)))
    shown.one("p", class_="flash-success")
    href = shown.one("a", id="stripe-connect-url")["href"]
    json_route = client.post(
        "/api/registration/configure-payment",
        json={
            "email": EMAIL,
            "password": PASSWORD,
            "subdomain": subdomain,
            "include_stripe_link": True,
        },
    )
    assert href == json_route.json()["stripe_connect_url"]

    client.post(path, data={})
    shown = page(client.get(f"{path}?saved=1"))
    shown.one("p", class_="flash-success")
    assert not shown.find("a", id="stripe-connect-url")
    assert state(client)["restaurants"][subdomain]["stripe_connect_url"] is None
    assert effects(client)["payment_configuration"] == 3


# -- menu ---------------------------------------------------------------------------------


def test_menu_import(client: TestClient) -> None:
    subdomain = logged_in_with_restaurant(client)
    path = f"/portal/r/{subdomain}/menu/import"
    form = page(client.get(path))
    form.one("form", id="menu-import-form")
    form.one("input", name="menu_id")
    form.one("input", name="csv_path")
    form.one("button", id="import-menu")

    imported = client.post(path, data={"menu_id": "menu-1", "csv_path": ""})
    shown = page(client.get(location(imported)))
    assert shown.text("menu-id") == "menu-1" and shown.text("item-count") == "12"
    from_csv = client.post(path, data={"menu_id": "", "csv_path": "/data/menu.csv"})
    csv_menu = location(from_csv).rsplit("/", 1)[1]
    assert csv_menu.startswith("csv-")
    json_route = client.post(
        "/api/registration/import-menu-direct",
        json={
            "email": EMAIL,
            "password": PASSWORD,
            "subdomain": subdomain,
            "csv_path": "/data/menu.csv",
        },
    )
    assert json_route.json()["menu_id"] == csv_menu
    # The dashboard lists the restaurant's menus, and what a CSV import came from.
    listed = page(client.get(f"/portal/r/{subdomain}/dashboard")).find("li", class_="menu")
    assert [(m["data-menu-id"], m.get("data-csv-path")) for m in listed] == [
        ("menu-1", None),
        (csv_menu, "/data/menu.csv"),
    ]
    neither = client.post(path, data={"menu_id": "", "csv_path": ""})
    assert neither.status_code == 422
    page(neither).one("p", class_="field-error", data_field="menu_id")
    assert effects(client)["menu_import"] == 3
    assert client.get(f"/portal/r/{subdomain}/menu/never-imported").status_code == 412


def test_option_sets_one_at_a_time_counted_once_when_complete(client: TestClient) -> None:
    subdomain = with_menu(client)
    base = f"/portal/r/{subdomain}/menu/menu-1/option-sets"
    listing = page(client.get(base))
    items = listing.find("li", class_="option-set")
    assert len(items) == 5 and all(i["data-created"] == "false" for i in items)
    names = [i["data-name"] for i in items]
    links = listing.find("a", class_="new-option-set")
    assert len(links) == 5 and links[0]["href"].startswith(f"{base}/new?name=")

    form = page(client.get(links[0]["href"]))
    form.one("form", id="option-set-form")
    assert form.one("input", name="name")["value"] == names[0]
    form.one("textarea", name="choices")
    form.one("button", id="save-option-set")

    for i, name in enumerate(names):
        created = client.post(base, data={"name": name, "choices": "Small\r\nLarge\r\n"})
        assert urlsplit(location(created)).path == base
        expected = 1 if i == len(names) - 1 else 0
        assert effects(client)["option_sets"] == expected, name
    again = client.post(base, data={"name": names[0].upper(), "choices": "Other"})
    assert urlsplit(location(again)).path == base
    assert effects(client)["option_sets"] == 1

    listing = page(client.get(f"{base}?created={names[0]}"))
    assert all(i["data-created"] == "true" for i in listing.find("li", class_="option-set"))
    assert not listing.find("a", class_="new-option-set")
    listing.one("p", class_="flash-success")
    held = state(client)["restaurants"][subdomain]["menus"]["menu-1"]
    assert held["option_sets"] == names and held["option_sets_added"] is True
    assert held["option_set_creations"] == dict.fromkeys(names, 1)
    assert held["option_set_requests"] == {**dict.fromkeys(names, 1), names[0]: 2}
    assert held["option_set_choices"][names[0]] == ["Small", "Large"]

    unknown = client.post(base, data={"name": "Not A Set"})
    assert unknown.status_code == 422
    page(unknown).one("p", class_="field-error", data_field="name")
    empty = client.post(base, data={"name": ""})
    assert empty.status_code == 422
    page(empty).one("p", class_="field-error", data_field="name")


def test_many_option_sets(client: TestClient) -> None:
    client.post("/_control/config", json={"menu_option_sets": 73})
    subdomain = with_menu(client)
    names = create_option_sets(client, subdomain)
    assert len(names) == len(set(names)) == 73
    assert effects(client)["option_sets"] == 1
    held = state(client)["restaurants"][subdomain]["menus"]["menu-1"]
    assert sorted(held["option_sets"]) == sorted(names)


def test_item_tags(client: TestClient) -> None:
    subdomain = with_menu(client)
    path = f"/portal/r/{subdomain}/menu/menu-1/tags"
    assert client.get(path).status_code == 412
    early = client.post(path, data={"tag": "Spicy"})
    assert early.status_code == 412
    assert "option sets" in early.text
    page(early).one("div", class_="portal-error")

    create_option_sets(client, subdomain)
    form = page(client.get(path))
    assert form.one("form", id="tags-form")["data-saved"] == "false"
    tags = state(client)["menus"]["menu-1"]["tags"]
    for tag in tags:
        assert form.one("input", name="tag", value=tag)["type"] == "checkbox"
    form.one("button", id="save-tags")

    saved = client.post(path, data={"tag": tags})
    after = page(client.get(location(saved)))
    after.one("p", class_="flash-success")
    assert after.one("form", id="tags-form")["data-saved"] == "true"
    assert state(client)["restaurants"][subdomain]["menus"]["menu-1"]["tags"] == tags
    assert effects(client)["item_tags"] == 1
    unknown = client.post(path, data={"tag": "Nope"})
    assert unknown.status_code == 422
    page(unknown).one("p", class_="field-error", data_field="tag")
    assert effects(client)["item_tags"] == 1


def test_preconditions_are_412_pages(client: TestClient) -> None:
    subdomain = logged_in_with_restaurant(client)
    menu = f"/portal/r/{subdomain}/menu/menu-1"
    for response in (
        client.get(f"{menu}/option-sets"),
        client.get(f"{menu}/option-sets/new?name=Size"),
        client.post(f"{menu}/option-sets", data={"name": "Size"}),
        client.get("/portal/r/nowhere/settings/website"),
        client.post("/portal/r/nowhere/settings/services", data={"pickup": "1"}),
    ):
        assert response.status_code == 412, response.request.url
        page(response).one("div", class_="portal-error")

    # Another account cannot open this restaurant.
    create_account(client, OTHER_EMAIL)
    location(login(client, OTHER_EMAIL))
    for path in ("dashboard", "settings/website", "settings/payments", "menu/import"):
        response = client.get(f"/portal/r/{subdomain}/{path}")
        assert response.status_code == 412, path
    assert client.post(f"/portal/r/{subdomain}/settings/payments", data={}).status_code == 412
    counted = effects(client)
    assert counted["option_sets"] == counted["services_configuration"] == 0
    assert counted["payment_configuration"] == 0


# -- faults -------------------------------------------------------------------------------


def test_hide_element_leaves_the_element_out_of_the_next_pages(client: TestClient) -> None:
    subdomain = logged_in_with_restaurant(client)
    path = f"/portal/r/{subdomain}/settings/website"
    fault(
        client, step="website_configuration", mode="hide_element", element="#save-website", times=1
    )
    hidden = page(client.get(path))
    hidden.one("form", id="website-form")
    assert not hidden.find("button", id="save-website")
    hidden.one("input", name="card_text_color")  # the rest of the form is there
    page(client.get(path)).one("button", id="save-website")
    calls = client.get("/_control/calls").json()
    assert [c["fault"] for c in calls if c["path"] == path] == ["hide_element", None]

    # A page without the element does not use the fault up; a text element goes whole.
    fault(client, step="restaurant_registration", mode="hide_element", element="dashboard-url")
    page(client.get("/portal/restaurants/new")).one("form", id="restaurant-form")
    dashboard = client.get(f"/portal/r/{subdomain}/dashboard")
    assert "dashboard-url" not in dashboard.text and "/dashboard</dd>" not in dashboard.text
    page(dashboard).one("dd", id="restaurant-id")
    assert client.get("/_control/faults").json()[0]["element"] == "#dashboard-url"


def test_hide_element_needs_an_element(client: TestClient) -> None:
    response = client.post("/_control/faults", json={"step": "item_tags", "mode": "hide_element"})
    assert response.status_code == 422
    bad = client.post(
        "/_control/faults",
        json={"step": "item_tags", "mode": "hide_element", "element": "a b"},
    )
    assert bad.status_code == 422


def test_expire_session_sends_back_to_login_without_acting(client: TestClient) -> None:
    subdomain = logged_in_with_restaurant(client)
    path = f"/portal/r/{subdomain}/settings/services"
    fault(client, step="services_configuration", mode="expire_session", times=1)
    # A request of another step does not use it up.
    assert client.get(f"/portal/r/{subdomain}/settings/payments").status_code == 200
    expired = client.post(path, data={"pickup": "1"})
    target = urlsplit(location(expired))
    assert target.path == "/portal/login" and parse_qs(target.query)["next"] == [path]
    assert effects(client)["services_configuration"] == 0
    assert state(client)["portal"]["sessions"] == {}
    assert urlsplit(location(client.get(path))).path == "/portal/login"
    calls = client.get("/_control/calls").json()
    assert [c["fault"] for c in calls if c["method"] == "POST"][-1] == "expire_session"

    location(login(client, next_path=path))
    assert location(client.post(path, data={"pickup": "1"})) == f"{path}?saved=1"
    assert effects(client)["services_configuration"] == 1


def test_expire_session_on_a_page(client: TestClient) -> None:
    subdomain = with_menu(client)
    path = f"/portal/r/{subdomain}/menu/menu-1/option-sets/new?name=Size"
    fault(client, step="option_sets", mode="expire_session")
    target = urlsplit(location(client.get(path)))
    assert parse_qs(target.query)["next"] == [path]


def test_status_fault_renders_an_html_error_page(client: TestClient) -> None:
    subdomain = logged_in_with_restaurant(client)
    path = f"/portal/r/{subdomain}/settings/website"
    fault(client, step="website_configuration", mode="status", status=500, times=2)
    broken = client.get(path, headers=HTML)
    assert broken.status_code == 500
    assert broken.headers["content-type"].startswith("text/html")
    assert "<h1>Internal Server Error</h1>" in broken.text
    as_json = client.post(path, data=WEBSITE)
    assert as_json.status_code == 500 and as_json.json() == {"detail": "injected fault: HTTP 500"}
    assert effects(client)["website_configuration"] == 0
    assert client.get(path, headers=HTML).status_code == 200


def test_slow_fault_applies_to_portal_pages(client: TestClient) -> None:
    subdomain = logged_in_with_restaurant(client)
    fault(client, step="payment_configuration", mode="slow", seconds=0.05, times=1)
    assert client.get(f"/portal/r/{subdomain}/settings/payments").status_code == 200
    call = client.get("/_control/calls").json()[-1]
    assert call["fault"] == "slow" and call["step"] == "payment_configuration"
    assert call["end"] - call["start"] >= 0.05


def test_full_portal_walk_records_each_step(client: TestClient) -> None:
    subdomain = with_menu(client)
    r = f"/portal/r/{subdomain}"
    client.post(f"{r}/settings/website", data=WEBSITE)
    client.post(f"{r}/settings/services", data={"pickup": "1", "delivery": "1"})
    client.post(f"{r}/settings/payments", data={})
    create_option_sets(client, subdomain)
    client.post(f"{r}/menu/menu-1/tags", data={"tag": state(client)["menus"]["menu-1"]["tags"]})
    counted = effects(client)
    for step in (
        "restaurant_registration",
        "website_configuration",
        "services_configuration",
        "payment_configuration",
        "menu_import",
        "option_sets",
        "item_tags",
    ):
        assert counted[step] == 1, step
    steps = {c["step"] for c in client.get("/_control/calls").json()} - {"account_registration"}
    assert steps == {
        "restaurant_registration",
        "website_configuration",
        "services_configuration",
        "payment_configuration",
        "menu_import",
        "option_sets",
        "item_tags",
    }
    everything = client.get("/_control/state").text
    assert PASSWORD not in everything
    assert client.get("/portal/").status_code == 200


@pytest.mark.parametrize(
    ("page_name", "form_id", "data"),
    [
        ("website", "website-form", {"theme": "dark", "item_layout": "card"}),
        ("services", "services-form", {"pickup": "1"}),
        ("payments", "payments-form", {}),
    ],
)
def test_a_settings_form_says_whether_it_shows_saved_values(
    client: TestClient, page_name: str, form_id: str, data: dict[str, str]
) -> None:
    subdomain = logged_in_with_restaurant(client)
    path = f"/portal/r/{subdomain}/settings/{page_name}"
    assert page(client.get(path)).one("form", id=form_id)["data-saved"] == "false"
    client.post(path, data=data)
    assert page(client.get(path)).one("form", id=form_id)["data-saved"] == "true"


def test_the_password_field_can_be_rendered_disabled(client: TestClient) -> None:
    assert "disabled" not in page(client.get("/portal/login")).one("input", name="password")
    switched = client.post("/_control/config", json={"portal_password_disabled": True})
    assert switched.json()["portal_password_disabled"] is True
    field = page(client.get("/portal/login")).one("input", name="password")
    assert "disabled" in field
    client.post("/_control/reset")
    assert "disabled" not in page(client.get("/portal/login")).one("input", name="password")


def test_a_rejected_value_is_a_field_error_until_another_value_is_typed(
    client: TestClient,
) -> None:
    """`rejected_values` (the control interface): the portal's form and the app's endpoint
    reject that value of the field, naming the field; another value goes through."""
    create_account(client)
    login(client)
    refused = "+64 9 000 0000"
    set_to = client.post("/_control/config", json={"rejected_values": {"phone": [refused]}})
    assert set_to.json()["rejected_values"] == {"phone": [refused]}
    rejected = register(client, phone=f" {refused} ")
    assert rejected.status_code == 422
    page(rejected).one("p", class_="field-error", data_field="phone")
    endpoint = client.post(
        "/api/registration/register-restaurant",
        json={"email": "owner@pizza.test", "password": "correct-horse-1",
              "name": "Joe's Pizza & Co", "phone": refused},
    )  # fmt: skip
    assert endpoint.status_code == 422
    assert endpoint.json()["detail"]["field"] == "phone"
    assert effects(client)["restaurant_registration"] == 0
    assert register(client, phone="+64 9 379 1234").status_code == 303
    assert effects(client)["restaurant_registration"] == 1
    assert (
        client.post("/_control/config", json={"rejected_values": {"colour": []}}).status_code == 422
    )


def test_a_seeded_account_exists_without_an_effect_and_refuses_another_password(
    client: TestClient,
) -> None:
    """`POST /_control/accounts`: an owner's account from before; a login with another
    password is refused, with its own one accepted."""
    seeded = client.post(
        "/_control/accounts",
        json={"email": "Zoë@café.test", "password": "Café Zoë secret ☕ 1", "phone": None},
    )
    assert seeded.status_code == 201, seeded.text
    assert "password" not in seeded.text
    assert effects(client)["account_registration"] == 0
    email = seeded.json()["email"]
    sessions = "/platform/api/v1/sessions"
    assert (
        client.post(sessions, json={"email": email, "password": "Café Zoë secret"}).status_code
        == 401
    )
    ok = client.post(sessions, json={"email": email, "password": "Café Zoë secret ☕ 1"})
    assert ok.status_code == 200 and ok.json()["account_id"] == seeded.json()["account_id"]
    again = client.post("/_control/accounts", json={"email": email, "password": "another one"})
    assert again.status_code == 409
