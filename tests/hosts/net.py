"""Test hosts on this machine: Linux network namespaces on a private bridge.

Each host is a namespace with one interface (`eth0`, an end of a veth pair whose other end
is on the bridge) and one address on a /24 of its own; the bridge has the first address, so
this (the test) process reaches every host. No namespace has a default route: a host
reaches the other test hosts and its own loopback, nothing else.

Every name carries a token of this run (`rjh-<token>...`), so `teardown` removes exactly
what this run made: the processes in its namespaces (SIGKILL), the namespaces (their veth
ends go with them) and the bridge. `python -m tests.hosts.net clean` removes what a run
killed before its teardown left behind (every `rjh-` namespace and bridge).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "rjh-"
#: The start of a test hosts' folder's name, in the temporary folder (`HostSystem.root`).
FOLDER_PREFIX = "regjobs-hosts-"
#: The private subnet of the test hosts (a /24; the bridge is .1).
SUBNET = "10.231.0"


def ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    #: The veth end on the bridge (this host's "cable").
    link: str

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def pids(self) -> list[int]:
        """Every process in the namespace."""
        out = ip("netns", "pids", self.namespace, check=False)
        return [int(p) for p in out.split()]

    def cut(self) -> None:
        """The host's network cable pulled: its link on the bridge down."""
        ip("link", "set", self.link, "down")

    def mend(self) -> None:
        ip("link", "set", self.link, "up")

    def kill_all(self) -> list[int]:
        """SIGKILL every process of the host (as when the machine dies); their PIDs."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        return pids


@dataclass
class Network:
    token: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.token}"

    @property
    def gateway(self) -> str:
        """The bridge's address: where this process talks to the hosts from."""
        return f"{SUBNET}.1"

    def up(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add(self, name: str, octet: int) -> Host:
        namespace = f"{PREFIX}{self.token}-{name}"
        link = f"{PREFIX}{self.token}-{len(self.hosts)}"  # (15 characters at most)
        host = Host(name, namespace, f"{SUBNET}.{octet}", link)
        self.hosts[name] = host
        ip("netns", "add", namespace)
        ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        ip("link", "set", link, "master", self.bridge, "up")
        ip("-n", namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        return host

    def teardown(self) -> None:
        """Every process of every host, the namespaces, the bridge: whatever state it is in."""
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                host.kill_all()
            ip("netns", "delete", host.namespace, check=False)
        ip("link", "delete", self.bridge, check=False)


def clean() -> None:
    """Remove every `rjh-` namespace (killing its processes) and bridge on the machine, and
    the test hosts' folders a run ended at its bound left (`harness.HostSystem.root`; kept
    where REGJOBS_HOSTS_KEEP asks for them)."""
    if not os.environ.get("REGJOBS_HOSTS_KEEP"):
        for folder in Path(tempfile.gettempdir()).glob(f"{FOLDER_PREFIX}*"):
            shutil.rmtree(folder, ignore_errors=True)
    for line in ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            for pid in ip("netns", "pids", name, check=False).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "delete", name, check=False)
    for line in ip("-o", "link", "show", "type", "bridge", check=False).splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX):
            ip("link", "delete", name, check=False)


if __name__ == "__main__":
    if sys.argv[1:] == ["clean"]:
        clean()
    else:
        sys.exit("usage: python -m tests.hosts.net clean")
