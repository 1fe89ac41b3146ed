"""Secrets at rest: the execution config is stored encrypted with the keys from settings.

`REGJOBS_SECRET_KEY` may list several Fernet keys (comma-separated): the first encrypts,
every one decrypts (cryptography's MultiFernet). To rotate, put a new key first, run

    regjobs db reencrypt    # or: python -m regjobs.commands reencrypt

which rewrites every stored config with the first key (one transaction per job), and then
drop the old key. Other uses of the secret key get a key derived for them alone
(:func:`derived_key`), never the encryption key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from regjobs.settings import Settings, get_settings


def _fernet(settings: Settings | None = None) -> MultiFernet:
    return _multi_fernet(tuple((settings or get_settings()).fernet_keys()))


@lru_cache(maxsize=16)
def _multi_fernet(keys: tuple[bytes, ...]) -> MultiFernet:
    """Built once per set of keys: a create encrypts a config, and a burst of creates
    should not parse the keys each time."""
    return MultiFernet([Fernet(key) for key in keys])


def encrypt_json(value: dict[str, Any], settings: Settings | None = None) -> str:
    return _fernet(settings).encrypt(json.dumps(value).encode()).decode()


def decrypt_json(token: str, settings: Settings | None = None) -> dict[str, Any]:
    try:
        data = json.loads(_fernet(settings).decrypt(token.encode()))
    except InvalidToken:
        raise ValueError("the stored config cannot be decrypted with any secret key") from None
    if not isinstance(data, dict):
        raise ValueError("the stored config is not an object")
    return data


def reencrypt(token: str, settings: Settings | None = None) -> str:
    """The same secret encrypted with the first key (decrypted with whichever key can)."""
    try:
        return _fernet(settings).rotate(token.encode()).decode()
    except InvalidToken:
        raise ValueError("the stored config cannot be decrypted with any secret key") from None


def derived_key(purpose: str, settings: Settings | None = None, *, key_index: int = 0) -> bytes:
    """A key for one purpose only (signing evidence links, say), derived from one of the
    secret keys (the first by default) with HMAC-SHA256 and a fixed label: knowing it tells
    nothing about the encryption key, nor about the key of another purpose."""
    return _derive((settings or get_settings()).fernet_keys()[key_index], purpose)


@lru_cache(maxsize=64)
def _derive(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, f"regjobs:{purpose}:v1".encode(), hashlib.sha256).digest()


def new_api_key() -> str:
    """A fresh API key: a recognisable prefix and 32 random bytes."""
    return "rj_" + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # Keys are long random strings, so a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(key.encode()).hexdigest()
