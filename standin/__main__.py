"""`python -m standin --host 127.0.0.1 --port 8100`: serve the stand-in."""

from __future__ import annotations

import argparse
import os

import uvicorn

from standin.app import create_app
from standin.gate import quiet_injected_resets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m standin", description="The stand-in for every outside system."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("REGJOBS_STANDIN_PORT", "8100"))
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    config = uvicorn.Config(
        create_app(),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # A `timeout` fault can hold a request for minutes: do not wait for it on Ctrl-C.
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    quiet_injected_resets()  # after Config, which sets logging up
    server.run()


if __name__ == "__main__":
    main()
