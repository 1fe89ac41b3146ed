"""The production units (deployments/systemd/*.service) as a test host runs them: each
unit's ExecStart, Environment= and Nice=, read from the unit file itself, with only what a
machine's own layout decides put in: where the project is (`/opt/registration-jobs`), the
runtime folder (`/run/regjobs`), the instance (`%i`) and host name (`%H`), and the
EnvironmentFile= contents (the settings files an operator writes: addresses and secrets).
What the unit says to run is run unchanged."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from regjobs.settings import PROJECT_DIR

UNITS = PROJECT_DIR / "deployments" / "systemd"
#: Where the units expect the project (README, Production): its releases under `releases/`,
#: the one in use as `current` (deployments/release.py).
OPT = "/opt/registration-jobs"


@dataclass
class Unit:
    name: str
    command: list[str]
    env: dict[str, str]
    env_files: list[str]
    nice: int
    #: WorkingDirectory= (the release's folder), "" if the unit names none.
    cwd: str


def read(unit: str, *, opt: str, instance: str = "", host: str = "", runtime_dir: str = "") -> Unit:
    """`unit` (e.g. "regjobs-worker@") with this host's project folder (`opt`, in place of
    /opt/registration-jobs), instance, name and runtime folder."""
    text = (UNITS / f"{unit}.service").read_text()

    def put(value: str) -> str:
        value = value.replace(OPT, opt).replace("%i", instance).replace("%H", host)
        return value.replace("/run/regjobs", runtime_dir) if runtime_dir else value

    command: list[str] = []
    env: dict[str, str] = {}
    files: list[str] = []
    nice = 0
    cwd = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if key == "ExecStart":
            command = [put(part) for part in shlex.split(value)]
        elif key == "Environment":
            for pair in shlex.split(value):
                k, v = pair.split("=", 1)
                env[k] = put(v)
        elif key == "EnvironmentFile":
            files.append(Path(value).name)
        elif key == "Nice":
            nice = int(value)
        elif key == "WorkingDirectory":
            cwd = put(value)
    if not command:
        raise ValueError(f"{unit}.service has no ExecStart")
    return Unit(unit, command, env, files, nice, cwd)
