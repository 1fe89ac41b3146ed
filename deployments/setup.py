"""Create the work pool and apply prefect.yaml; safe to run again (idempotent).

PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.setup
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from regjobs.settings import PROJECT_DIR

PREFECT = [sys.executable, "-m", "prefect"]
WORK_POOL = "registration-jobs"

Runner = Callable[[list[str]], str]


def _run(args: list[str]) -> str:
    result = subprocess.run(args, cwd=PROJECT_DIR, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result.stdout


def set_up(run: Runner = _run) -> None:
    try:
        run([*PREFECT, "work-pool", "inspect", WORK_POOL])
    except RuntimeError:
        run([*PREFECT, "work-pool", "create", WORK_POOL, "--type", "process"])
    run([*PREFECT, "--no-prompt", "deploy", "--all"])


if __name__ == "__main__":
    set_up()
    sys.stdout.write(f"work pool {WORK_POOL!r} and deployment 'registration-job' are ready\n")
