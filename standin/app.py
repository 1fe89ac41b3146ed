"""The stand-in web service: platform API, onboarding service, image CDN, the app's per-step
endpoints, the admin portal's HTML pages (`standin.portal`), and the `/_control` interface
tests drive it with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from standin import schemas, services
from standin.faults import FaultCreate
from standin.gate import StepGate
from standin.portal import portal
from standin.routing import StateDep, serves, step_resolver
from standin.services import ServiceError
from standin.state import JSON, Reply, StandinState


def serve(
    state: StandinState, step: str, request: Request, operation: Callable[[], Reply]
) -> JSONResponse:
    """Run one step operation, replaying a stored answer for a known `Idempotency-Key`."""
    key = request.headers.get("idempotency-key")
    if key:
        stored = state.idempotency.get((step, key))
        if stored is not None:
            return JSONResponse(stored.body, stored.status, headers={"Idempotent-Replayed": "true"})
    try:
        reply = operation()
    except ServiceError as exc:
        reply = exc.reply
    if key and (200 <= reply.status < 300 or services.is_already_done(reply)):
        state.idempotency[(step, key)] = reply
    return JSONResponse(reply.body, reply.status)


def as_endpoint(reply: Reply, *fields: str) -> Reply:
    """The app endpoints' form of a success: 200 `{"success": true, ...}`."""
    return Reply(200, {"success": True, **{f: reply.body[f] for f in fields}})


# -- control ------------------------------------------------------------------------------

control = APIRouter(prefix="/_control", tags=["control"])


@control.post("/faults", status_code=201)
async def add_fault(body: FaultCreate, state: StateDep) -> JSON:
    return state.faults.add(body).public()


@control.get("/faults")
async def list_faults(state: StateDep) -> list[JSON]:
    return state.faults.public()


@control.delete("/faults")
async def clear_faults(state: StateDep) -> JSON:
    return {"cleared": state.faults.clear()}


@control.post("/release")
async def release_held(state: StateDep) -> JSON:
    """End the wait of every call a `slow` fault is holding now (they go on at once)."""
    state.release_held()
    return {"released": True}


@control.get("/effects")
async def effects(state: StateDep) -> dict[str, int]:
    return dict(state.effects)


@control.post("/reset")
async def reset(state: StateDep) -> JSON:
    state.reset()
    return {"reset": True}


@control.post("/accounts", status_code=201)
async def seed_account(body: schemas.AccountSeed, state: StateDep) -> JSONResponse:
    """An account that exists before the job (an owner's, from an earlier restaurant)."""
    try:
        reply = services.seed_account(state, body)
    except services.ServiceError as exc:
        reply = exc.reply
    return JSONResponse(reply.body, status_code=reply.status)


@control.get("/calls")
async def calls(state: StateDep) -> list[JSON]:
    return [c.public() for c in state.calls]


@control.get("/state")
async def full_state(state: StateDep) -> JSON:
    return state.public()


@control.get("/config")
async def get_config(state: StateDep) -> JSON:
    return state.config.public()


@control.post("/config")
async def set_config(body: schemas.ConfigUpdate, state: StateDep) -> JSON:
    for name, value in body.model_dump(exclude_none=True).items():
        setattr(state.config, name, value)
    return state.config.public()


# -- platform public API ------------------------------------------------------------------

platform = APIRouter(prefix="/platform/api/v1", tags=["platform"])


@platform.post("/accounts", openapi_extra=serves("account_registration"))
async def platform_create_account(
    body: schemas.AccountCreate, request: Request, state: StateDep
) -> JSONResponse:
    return serve(
        state, "account_registration", request, lambda: services.register_account(state, body)
    )


@platform.post("/sessions", openapi_extra=serves("account_registration"))
async def platform_log_in(
    body: schemas.PortalLogin, request: Request, state: StateDep
) -> JSONResponse:
    """Log in with an account's email and password: the account, or 401. What proves an
    account that already exists is the caller's."""
    return serve(
        state, "account_registration", request, lambda: services.log_in_account(state, body)
    )


@platform.post("/code-injections", openapi_extra=serves("code_generation"))
async def platform_code_injections(
    body: schemas.CodeInjectionRequest, request: Request, state: StateDep
) -> JSONResponse:
    return serve(state, "code_generation", request, lambda: services.generate_code(state, body))


# -- onboarding service -------------------------------------------------------------------

onboarding = APIRouter(prefix="/onboarding/api", tags=["onboarding"])


@onboarding.post("/users", openapi_extra=serves("onboarding_user"))
async def onboarding_create_user(
    body: schemas.OnboardingUserCreate, request: Request, state: StateDep
) -> JSONResponse:
    return serve(
        state, "onboarding_user", request, lambda: services.create_onboarding_user(state, body)
    )


@onboarding.post("/sessions", openapi_extra=serves("onboarding_user"))
async def onboarding_log_in(
    body: schemas.PortalLogin, request: Request, state: StateDep
) -> JSONResponse:
    """Log in as an onboarding user: the user, or 401. What proves a user that already
    exists is the caller's."""
    return serve(
        state, "onboarding_user", request, lambda: services.log_in_onboarding_user(state, body)
    )


@onboarding.put("/records/{subdomain}", openapi_extra=serves("onboarding_sync"))
async def onboarding_sync_record(
    subdomain: str, body: schemas.OnboardingRecordUpdate, request: Request, state: StateDep
) -> JSONResponse:
    return serve(
        state,
        "onboarding_sync",
        request,
        lambda: services.sync_onboarding_record(state, subdomain, body),
    )


# -- image CDN ----------------------------------------------------------------------------

cdn = APIRouter(prefix="/cdn/api", tags=["cdn"])


@cdn.post("/batches", openapi_extra=serves("image_upload"))
async def cdn_create_batch(
    body: schemas.BatchCreate, request: Request, state: StateDep
) -> JSONResponse:
    return serve(state, "image_upload", request, lambda: services.create_batch(state, body))


@cdn.get("/batches/{batch_id}", openapi_extra=serves("image_upload"))
async def cdn_get_batch(batch_id: str, state: StateDep) -> JSONResponse:
    try:
        reply = services.get_batch(state, batch_id)
    except ServiceError as exc:
        reply = exc.reply
    return JSONResponse(reply.body, reply.status)


# -- the app's existing per-step endpoints ------------------------------------------------

endpoints = APIRouter(prefix="/api/registration", tags=["app endpoints"])


@endpoints.post("/register-account", openapi_extra=serves("account_registration"))
async def register_account(
    body: schemas.AccountCreate, request: Request, state: StateDep
) -> JSONResponse:
    return serve(
        state,
        "account_registration",
        request,
        lambda: as_endpoint(services.register_account_checked(state, body), "account_id", "email"),
    )


@endpoints.post("/verify-account", openapi_extra=serves("account_registration"))
async def verify_account(
    body: schemas.PortalLogin, request: Request, state: StateDep
) -> JSONResponse:
    """The app's check of an account's credentials (a platform login): the account, or
    401. What proves an account or restaurant that already exists is the job's."""
    return serve(
        state,
        "account_registration",
        request,
        lambda: as_endpoint(services.log_in_account(state, body), "account_id", "email"),
    )


@endpoints.post("/verify-onboarding-user", openapi_extra=serves("onboarding_user"))
async def verify_onboarding_user(
    body: schemas.PortalLogin, request: Request, state: StateDep
) -> JSONResponse:
    """The app's check of an onboarding user's credentials: the user, or 401."""
    return serve(
        state,
        "onboarding_user",
        request,
        lambda: as_endpoint(
            services.log_in_onboarding_user(state, body), "user_id", "name", "email"
        ),
    )


@endpoints.post("/register-restaurant", openapi_extra=serves("restaurant_registration"))
async def register_restaurant(
    body: schemas.RestaurantRegister, request: Request, state: StateDep
) -> JSONResponse:
    base_url = str(request.base_url)
    return serve(
        state,
        "restaurant_registration",
        request,
        lambda: services.register_restaurant(state, body, base_url),
    )


@endpoints.post("/generate-code-injections", openapi_extra=serves("code_generation"))
async def generate_code_injections(
    body: schemas.CodeInjectionRequest, request: Request, state: StateDep
) -> JSONResponse:
    return serve(
        state,
        "code_generation",
        request,
        lambda: as_endpoint(
            services.generate_code(state, body), "head_injection", "body_injection"
        ),
    )


@endpoints.post("/configure-website", openapi_extra=serves("website_configuration"))
async def configure_website(
    body: schemas.WebsiteConfigure, request: Request, state: StateDep
) -> JSONResponse:
    return serve(
        state, "website_configuration", request, lambda: services.configure_website(state, body)
    )


@endpoints.post("/configure-services", openapi_extra=serves("services_configuration"))
async def configure_services(
    body: schemas.ServicesConfigure, request: Request, state: StateDep
) -> JSONResponse:
    return serve(
        state, "services_configuration", request, lambda: services.configure_services(state, body)
    )


@endpoints.post("/configure-payment", openapi_extra=serves("payment_configuration"))
async def configure_payment(
    body: schemas.PaymentConfigure, request: Request, state: StateDep
) -> JSONResponse:
    return serve(
        state, "payment_configuration", request, lambda: services.configure_payment(state, body)
    )


@endpoints.post("/import-menu-direct", openapi_extra=serves("menu_import"))
async def import_menu_direct(
    body: schemas.MenuImport, request: Request, state: StateDep
) -> JSONResponse:
    return serve(state, "menu_import", request, lambda: services.import_menu(state, body))


@endpoints.post("/add-option-sets", openapi_extra=serves("option_sets"))
async def add_option_sets(
    body: schemas.MenuStep, request: Request, state: StateDep
) -> JSONResponse:
    return serve(state, "option_sets", request, lambda: services.add_option_sets(state, body))


@endpoints.post("/add-item-tags", openapi_extra=serves("item_tags"))
async def add_item_tags(body: schemas.MenuStep, request: Request, state: StateDep) -> JSONResponse:
    return serve(state, "item_tags", request, lambda: services.add_item_tags(state, body))


@endpoints.post("/create-onboarding-user", openapi_extra=serves("onboarding_user"))
async def create_onboarding_user(
    body: schemas.OnboardingUserCreate, request: Request, state: StateDep
) -> JSONResponse:
    return serve(
        state,
        "onboarding_user",
        request,
        lambda: as_endpoint(
            services.create_onboarding_user(state, body), "user_id", "name", "email"
        ),
    )


@endpoints.post("/update-onboarding-record", openapi_extra=serves("onboarding_sync"))
async def update_onboarding_record(
    body: schemas.OnboardingRecordSync, request: Request, state: StateDep
) -> JSONResponse:
    return serve(
        state,
        "onboarding_sync",
        request,
        lambda: as_endpoint(
            services.sync_onboarding_record(state, body.subdomain, body),
            "record_id",
            "subdomain",
            "synced_at",
        ),
    )


menus = APIRouter(prefix="/menus", tags=["app endpoints"])


@menus.post("/{menu_id}/upload-images", openapi_extra=serves("image_upload"))
async def upload_images(
    menu_id: str, request: Request, state: StateDep, body: schemas.UploadImages | None = None
) -> JSONResponse:
    images = body or schemas.UploadImages()
    return serve(
        state, "image_upload", request, lambda: services.upload_images_now(state, menu_id, images)
    )


# -- the app ------------------------------------------------------------------------------


async def _validation_failed(request: Request, exc: Exception) -> JSONResponse:
    """422 in the stand-in's error shape; never echoes the input (it may hold a password)."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            problems.append({"field": "body", "message": "body: not valid JSON"})
            continue
        field = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        problems.append({"field": field, "message": f"{field}: {error.get('msg', 'invalid')}"})
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    return JSONResponse(
        {
            "detail": {
                "code": "validation_failed",
                "message": first["message"],
                "field": first["field"],
                "errors": problems,
            }
        },
        status_code=422,
    )


_STEP_ROUTERS: Final = (platform, onboarding, cdn, endpoints, menus, portal)


def create_app() -> FastAPI:
    """A fresh stand-in with empty state."""
    app = FastAPI(
        title="registration-jobs stand-in",
        description="Platform API, admin portal, onboarding service and image CDN, in memory.",
    )
    state = StandinState()
    app.state.standin = state
    for router in (control, *_STEP_ROUTERS):
        app.include_router(router)

    @app.get("/healthz", tags=["control"])
    async def healthz() -> JSON:
        return {"status": "ok"}

    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_middleware(StepGate, state=state, resolve=step_resolver(_STEP_ROUTERS))
    return app
