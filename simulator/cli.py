"""Command line: `python -m simulator --host 127.0.0.1 --port 1234 [--config sim.toml]`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from simulator.engine_choice import ENGINE_NAMES
from simulator.server import serve_forever


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator",
                                     description="LM Studio-compatible websocket simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1234, help="0 picks a free port.")
    parser.add_argument("--config", default=None, help="TOML (or .json) config file.")
    parser.add_argument("--engine", default=None, choices=ENGINE_NAMES,
                        help="Generation engine (default: the config's, else deterministic); "
                             "real = small real models on the CPU (local-models extra).")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def run(host: str, port: int, config_path: str | None,
        engine: str | None = None) -> None:
    serve_forever(host, port, config_path, engine)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    run(args.host, args.port, args.config, args.engine)
