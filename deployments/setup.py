"""Create the work pool, the browser concurrency limit and the deployment; safe to run
again (idempotent). Reads the same settings as everything else.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.setup
"""

from __future__ import annotations

import subprocess
import sys

from regjobs.settings import PROJECT_DIR, Settings, get_settings

PREFECT = [sys.executable, "-m", "prefect"]


def _run(args: list[str]) -> str:
    result = subprocess.run(args, cwd=PROJECT_DIR, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result.stdout


def _exists(args: list[str]) -> bool:
    try:
        _run(args)
    except RuntimeError:
        return False
    return True


def set_up(settings: Settings) -> None:
    if not _exists([*PREFECT, "work-pool", "inspect", settings.work_pool]):
        _run([*PREFECT, "work-pool", "create", settings.work_pool, "--type", "process"])
    # One limit for the browser steps of every worker on every machine.
    limit = [settings.browser_limit_name, "--limit", str(settings.browser_limit)]
    if _exists([*PREFECT, "gcl", "inspect", settings.browser_limit_name]):
        _run([*PREFECT, "gcl", "update", *limit])
    else:
        _run([*PREFECT, "gcl", "create", *limit])
    _run([*PREFECT, "--no-prompt", "deploy", "--all"])


if __name__ == "__main__":
    current = get_settings()
    set_up(current)
    sys.stdout.write(
        f"work pool {current.work_pool!r}, browser limit {current.browser_limit_name!r} "
        f"({current.browser_limit}) and deployment 'registration-job' are ready\n"
    )
