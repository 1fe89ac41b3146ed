"""`python -m deployments.warm [pool | serve]` (the package's docstring)."""

from __future__ import annotations

import os
import sys

from deployments.warm import FORK_ENV, SIZE_ENV, SOCKET_ENV


def main(argv: list[str]) -> None:
    if argv[:1] == ["serve"]:
        from deployments.warm.handover import serve

        serve(os.environ[SOCKET_ENV])
    elif argv[:1] == ["pool"]:
        # Whatever the pool and its warm processes (the flow runs) create is 0600 / 0700.
        from deployments.warm.pool import pool
        from regjobs.private import restrict_umask

        restrict_umask()
        fork = os.environ.get(FORK_ENV, "true").lower() not in ("0", "false", "no")
        pool(os.environ[SOCKET_ENV], int(os.environ.get(SIZE_ENV, "2")), fork)
    else:
        from deployments.warm.handover import launch

        launch(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
