"""An LM Studio-compatible websocket server for tests (see README.md)."""

from simulator.cli import main
from simulator.config import SimConfig, load_config
from simulator.server import Simulator, serve_forever

__all__ = ["SimConfig", "Simulator", "load_config", "main", "serve_forever"]
