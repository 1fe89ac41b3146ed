"""The test hosts' system, once for the whole `hosts` suite (`make test-hosts`): made before
the first test, torn down after the last, also when a test or the start fails."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.hosts.harness import APIS, HostSystem


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/hosts/" in str(item.fspath):
            item.add_marker(pytest.mark.hosts)


@pytest.fixture(scope="session")
def hosts() -> Iterator[HostSystem]:
    if os.geteuid() != 0:
        pytest.fail("the test hosts are network namespaces: run `make test-hosts` as root")
    system = HostSystem()
    try:
        system.start()
        yield system
    finally:
        system.teardown()


@pytest.fixture
def apis(hosts: HostSystem) -> Iterator[dict[str, httpx.Client]]:
    """A client of each API host (the organisation's key)."""
    headers = {"Authorization": f"Bearer {hosts.api_key}"}
    clients = {
        name: httpx.Client(base_url=hosts.api_url(name), headers=headers, timeout=15)
        for name in APIS
    }
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def standin(hosts: HostSystem) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hosts.standin_url, timeout=15) as client:
        client.delete("/_control/faults").raise_for_status()
        yield client
        client.delete("/_control/faults")
