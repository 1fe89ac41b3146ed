"""The one place the step mode is read: which implementation of each outside system's
interface a run uses, chosen once when the run starts."""

from __future__ import annotations

from typing import Any

import httpx

from regjobs.settings import Settings, StepMode
from tasks.browser import BrowserPool
from tasks.clients.endpoints import (
    AppEndpoints,
    EndpointsImages,
    EndpointsOnboarding,
    EndpointsPlatform,
    EndpointsPortal,
)
from tasks.clients.http import OutsideSystem
from tasks.clients.interfaces import Clients, Onboarding, Platform
from tasks.clients.systems import ImageCdn, OnboardingService, PlatformApi
from tasks.portal.client import BrowserPortal


def _system(http: httpx.AsyncClient, name: str, url: str, key: Any) -> OutsideSystem:
    return OutsideSystem(http, name=name, base_url=url, api_key=key)


def _endpoints(settings: Settings, http: httpx.AsyncClient) -> AppEndpoints:
    return AppEndpoints(
        _system(http, "app endpoint", settings.app_endpoints_url, settings.app_endpoints_api_key)
    )


def login_clients(settings: Settings, http: httpx.AsyncClient) -> tuple[Platform, Onboarding]:
    """The two systems with a login (the platform's account, which the portal shares, and
    the onboarding user), as the step mode reaches them: also what the API asks, before it
    takes a person's corrected credentials, whether they open the account now."""
    if settings.step_mode is StepMode.ENDPOINTS:
        endpoints = _endpoints(settings, http)
        return EndpointsPlatform(endpoints), EndpointsOnboarding(endpoints)
    return (
        PlatformApi(
            _system(http, "platform API", settings.platform_api_url, settings.platform_api_key)
        ),
        OnboardingService(
            _system(
                http, "onboarding service", settings.onboarding_url, settings.onboarding_api_key
            )
        ),
    )


def build_clients(settings: Settings, http: httpx.AsyncClient, browser: BrowserPool) -> Clients:
    """`direct`: the platform API, the onboarding service, the CDN and the admin portal in
    Chromium; `endpoints`: the app's per-step endpoint for every step."""
    platform, onboarding = login_clients(settings, http)
    if settings.step_mode is StepMode.ENDPOINTS:
        endpoints = _endpoints(settings, http)
        return Clients(
            platform=platform,
            onboarding=onboarding,
            images=EndpointsImages(endpoints),
            portal=EndpointsPortal(endpoints),
        )
    return Clients(
        platform=platform,
        onboarding=onboarding,
        images=ImageCdn(
            _system(http, "image CDN", settings.cdn_url, settings.cdn_api_key),
            settings.cdn_poll_seconds,
        ),
        portal=BrowserPortal(browser, settings.portal_url),
    )
