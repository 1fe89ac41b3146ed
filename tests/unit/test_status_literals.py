"""One status vocabulary: no product module spells a job or step status; each names it
through `StepStatus`/`JobStatus` (and the sets `FINAL_STEP_STATUSES`, `FINAL_JOB_STATUSES`,
`ACTIVE_JOB_STATUSES`) of `regjobs.catalogue`, the one module that defines them.

Every string constant of the product's source (docstrings included) that equals a status
value is flagged, wherever it is: a comparison, a dict key, a default, an argument.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from regjobs.catalogue import JobStatus, StepStatus

ROOT = Path(__file__).resolve().parents[2]
#: The product's source; not the migrations (history, written once), the tests or the
#: stand-in (it plays the outside systems, whose vocabulary is their own).
SOURCES = ("api", "deployments", "flows", "regjobs", "tasks", "benchmarks")
SKIPPED = (ROOT / "regjobs" / "migrations",)
#: Where the statuses are defined.
DEFINITIONS = ROOT / "regjobs" / "catalogue.py"
STATUSES = frozenset({*StepStatus, *JobStatus})

#: A word that is a status of ours and also another system's own, with why it is allowed.
ALLOWED: dict[tuple[str, str], str] = {
    ("tasks/clients/systems.py", "completed"): "the image CDN's batch status, not ours",
    ("regjobs/cli.py", "action_required"): "the job's `action_required` object (SPEC), a "
    "field of the API's answer named as the step status it reports",
}


def _constants() -> Iterator[tuple[str, int, str]]:
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == DEFINITIONS or any(path.is_relative_to(s) for s in SKIPPED):
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    yield path.relative_to(ROOT).as_posix(), node.lineno, node.value


def test_no_status_is_spelled_outside_its_enum() -> None:
    spelled = [
        f"{where}:{line}: {value!r}"
        for where, line, value in _constants()
        if value in STATUSES and (where, value) not in ALLOWED
    ]
    assert spelled == [], "use StepStatus/JobStatus (regjobs.catalogue):\n" + "\n".join(spelled)


def test_every_allowed_word_is_still_there() -> None:
    """An allowance whose literal went away goes too."""
    found = {(where, value) for where, _, value in _constants()}
    assert set(ALLOWED) <= found, set(ALLOWED) - found
