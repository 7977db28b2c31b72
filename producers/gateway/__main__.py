"""`python -m producers.gateway [--host H] [--port P]`: the same as `lmq serve`."""

from __future__ import annotations

import argparse
import sys

from producers.gateway.server import run
from workers.error import LmqError
from workers.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m producers.gateway",
                                     description="OpenAI-compatible gateway to the pool.")
    parser.add_argument("--host", help="address to listen on (default LMQ_GATEWAY_HOST)")
    parser.add_argument("--port", type=int, help="port (default LMQ_GATEWAY_PORT)")
    args = parser.parse_args(argv)
    try:
        run(get_settings(), args.host, args.port)
    except LmqError as exc:  # a setting to fix: one line, no traceback
        print(f"lmq serve: {exc}", file=sys.stderr)
        return 78
    return 0


if __name__ == "__main__":
    sys.exit(main())
