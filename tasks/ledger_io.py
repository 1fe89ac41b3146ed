"""The ledger from a flow run: each call in its own transaction (a write) or read session,
off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from regjobs.db import read, transaction

R = TypeVar("R")


async def ledger_write(fn: Callable[..., R], /, **kwargs: Any) -> R:
    """A ledger write in its own transaction, off the event loop."""
    return await asyncio.to_thread(transaction, fn, **kwargs)


async def ledger_read(fn: Callable[..., R], /, **kwargs: Any) -> R:
    """A ledger read, off the event loop; it never takes the write lock; run again if
    the database drops its connection midway."""
    return await asyncio.to_thread(read, fn, **kwargs)
