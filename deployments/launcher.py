"""`make run`: the whole system on this machine, a demo job, then serve until Ctrl-C.

Ports: REGJOBS_API_PORT (8000), REGJOBS_PREFECT_PORT (4200), REGJOBS_STANDIN_PORT (8100).
REGJOBS_DEMO=0 skips the demo job. State (Prefect's SQLite database, the job database,
logs, the development key) lives in REGJOBS_STATE_DIR (.state).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from deployments.demo import run_demo
from deployments.stack import Stack, StackConfig
from regjobs.settings import PROJECT_DIR


def main() -> int:
    state_dir = Path(os.environ.get("REGJOBS_STATE_DIR", PROJECT_DIR / ".state")).resolve()
    config = StackConfig(
        state_dir=state_dir,
        api_port=int(os.environ.get("REGJOBS_API_PORT", "8000")),
        prefect_port=int(os.environ.get("REGJOBS_PREFECT_PORT", "4200")),
        standin_port=int(os.environ.get("REGJOBS_STANDIN_PORT", "8100")),
    )
    stack = Stack(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.monotonic()
    print(f"starting registration-jobs (state in {state_dir}, logs in {stack.logs_dir})")
    try:
        stack.start_all()
        print(f"up in {time.monotonic() - started:.1f} s")
        print(f"  API         {config.api_url}  (docs: {config.api_url}/docs)")
        print(f"  Prefect UI  {config.prefect_url}")
        print(f"  stand-in    {config.standin_url}")
        print(f"  API key     {stack.dev_api_key()}  (organisation: demo-organisation)")
        if os.environ.get("REGJOBS_DEMO", "1") != "0":
            run_demo(config.api_url, stack.dev_api_key(), stop)
        print("serving; Ctrl-C stops everything")
        while not stop.wait(1):
            for name, child in stack.children.items():
                if child.process.poll() is not None:
                    print(
                        f"{name} exited ({child.process.returncode}); see "
                        f"{stack.logs_dir / (name + '.log')}"
                    )
                    return 1
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...")
        stack.stop()
        print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
