"""Secrets at rest: the execution config is stored encrypted with a key from settings."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from regjobs.settings import Settings, get_settings


def _fernet(settings: Settings | None = None) -> Fernet:
    return Fernet((settings or get_settings()).fernet_key())


def encrypt_json(value: dict[str, Any], settings: Settings | None = None) -> str:
    return _fernet(settings).encrypt(json.dumps(value).encode()).decode()


def decrypt_json(token: str, settings: Settings | None = None) -> dict[str, Any]:
    try:
        data = json.loads(_fernet(settings).decrypt(token.encode()))
    except InvalidToken:
        raise ValueError("the stored config cannot be decrypted with this secret key") from None
    if not isinstance(data, dict):
        raise ValueError("the stored config is not an object")
    return data


def new_api_key() -> str:
    """A fresh API key: a recognisable prefix and 32 random bytes."""
    return "rj_" + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # Keys are long random strings, so a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(key.encode()).hexdigest()
