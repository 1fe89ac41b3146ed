"""Which code this is: the release a process runs, and the names derived from it.

A release is an immutable folder with its own environment, made once from a clean checkout
by `python -m deployments.release make` (README, "Redeploying while jobs run"). The folder
holds `RELEASE.json` (its version: the git commit, `-dirty.<hash>` for a tree with
uncommitted changes). Code run from any other folder (a checkout, `make run`, the tests) is
the single implicit release, `dev`, so nothing changes for a developer.

Every job is pinned to the release its first run began on (`registration_jobs.code_version`);
its later runs are created on that release's work queue (`queue_for`), which only that
release's workers poll.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from regjobs.catalogue import STEP_IDS
from regjobs.settings import PROJECT_DIR

#: The release of code run from a folder that is not a release (a checkout).
IMPLICIT = "dev"
#: The implicit release's work queue (the pool's own default queue).
IMPLICIT_QUEUE = "default"
#: Written into a release's folder when it is made; its presence makes the folder a release.
RELEASE_FILE = "RELEASE.json"
#: Where each step's code lives (one function per step id), for `fingerprints`.
HANDLERS_FILE = Path("tasks") / "handlers.py"
#: A version: letters, digits, `.`, `-`, `_` (a work queue's name and a folder's).
VERSION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


def queue_for(version: str) -> str:
    """The work queue of a release's flow runs (in the one work pool)."""
    return IMPLICIT_QUEUE if version == IMPLICIT else f"release-{version}"


def version_of_queue(queue: str) -> str:
    """The release whose work queue `queue` is (`queue_for`'s inverse)."""
    return IMPLICIT if queue == IMPLICIT_QUEUE else queue.removeprefix("release-")


def no_live_worker(job_id: str, queue: str, limit: float, ever: bool) -> str:
    """What a job waiting on a release no worker serves says: the release, and the ways
    out (the same words while it waits: a change of them is an event)."""
    version = version_of_queue(queue)
    seen = f"no worker has polled it for over {limit:.0f} s" if ever else "no worker polls it"
    return (
        f"waiting for a worker of release {version} (work queue {queue}): {seen}. Start a "
        f"worker of release {version}, or move the job to a newer release, reusing its "
        f"completed steps: regjobs jobs upgrade {job_id}"
    )


def valid_version(version: str) -> bool:
    return 0 < len(version) <= 64 and set(version) <= VERSION_CHARS


@dataclass(frozen=True)
class Release:
    version: str
    #: The git commit it was made from (empty for the implicit release).
    commit: str = ""
    #: The release's folder (the code's own).
    folder: Path = PROJECT_DIR
    #: When it was made (ISO 8601; empty for the implicit release).
    made_at: str = ""
    #: step id -> a hash of that step's code (`fingerprints`).
    steps: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def queue(self) -> str:
        return queue_for(self.version)

    @property
    def implicit(self) -> bool:
        return self.version == IMPLICIT


def _data(folder: Path) -> dict[str, str]:
    path = folder / RELEASE_FILE
    if not path.is_file():
        return {"version": IMPLICIT}
    data = json.loads(path.read_text())
    if not valid_version(str(data.get("version", ""))):
        raise ValueError(f"{path}: {data.get('version')!r} is not a release version")
    return {k: str(v) for k, v in data.items()}


def version_in(folder: Path) -> str:
    """The version of the release whose folder is `folder` (`IMPLICIT` for a checkout)."""
    return _data(folder)["version"]


def read(folder: Path) -> Release:
    """The release whose folder is `folder`; the implicit one if it is no release."""
    data = _data(folder)
    version = data["version"]
    if version == IMPLICIT:
        return Release(IMPLICIT, folder=folder, steps=fingerprints(folder))
    return Release(
        version,
        commit=str(data.get("commit", "")),
        folder=folder,
        made_at=str(data.get("made_at", "")),
        steps=fingerprints(folder),
    )


@cache
def current() -> Release:
    """The release of the code this process runs (the folder `regjobs` was imported from)."""
    return read(PROJECT_DIR)


def fingerprints(folder: Path) -> dict[str, str]:
    """Each step's code, as a short hash of its handler's source (the function named by the
    step id in tasks/handlers.py, read without importing it): two releases whose hashes of
    a step differ run that step differently. Empty where the file is missing."""
    path = folder / HANDLERS_FILE
    try:
        source = path.read_text()
    except OSError:
        return {}
    found: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in STEP_IDS:
            text = ast.get_source_segment(source, node) or ""
            found[node.name] = hashlib.sha256(text.encode()).hexdigest()[:12]
    return found


def changed_steps(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The steps whose code differs between two releases' fingerprints (catalogue order); a
    step either side does not know counts as changed."""
    return [s for s in STEP_IDS if not before.get(s) or before.get(s) != after.get(s)]
