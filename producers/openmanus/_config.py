"""OpenManus configuration: the `[llm]` snippet to paste, and the values we honour from it.

Nothing here imports OpenManus, so `lmq models` can print `config_snippet(model)` on a machine
where OpenManus is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_TOKENS = 4096  # OpenManus' own default for [llm] max_tokens
DEFAULT_TEMPERATURE = 1.0  # OpenManus' own default for [llm] temperature


@dataclass(frozen=True)
class LLMValues:
    """The `[llm]` values the LM Studio providers read from OpenManus' config.toml."""

    model: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = DEFAULT_TEMPERATURE
    max_input_tokens: int | None = None  # newer OpenManus only: a cumulative input budget


def config_snippet(model: str, *, host: str = "localhost:1234", max_tokens: int = 2048,
                   temperature: float = 0.0) -> str:
    """The text to put in OpenManus' `config/config.toml` to run agents on `model`.

    `base_url`/`api_key` only matter to a stock (non-adapter) OpenManus, which reaches LM Studio
    through its OpenAI-compatible endpoint; `[daytona]` is required by newer OpenManus' loader.
    """
    return (
        "[llm]\n"
        'api_type = "lmstudio"\n'
        f'model = "{model}"            # LM Studio model key\n'
        f'base_url = "http://{host}/v1"\n'
        'api_key = "lm-studio"         # LM Studio ignores it; OpenManus wants one\n'
        f"max_tokens = {max_tokens}\n"
        f"temperature = {temperature}\n"
        "\n"
        "[daytona]                      # needed by OpenManus >= 2025-07, unused here\n"
        'daytona_api_key = "unused"\n'
    )


def values_from_settings(settings: Any) -> LLMValues:
    """Read an OpenManus `LLMSettings` (any version) into `LLMValues`."""
    return LLMValues(
        model=getattr(settings, "model", None) or None,
        max_tokens=int(getattr(settings, "max_tokens", None) or DEFAULT_MAX_TOKENS),
        temperature=float(_or(getattr(settings, "temperature", None), DEFAULT_TEMPERATURE)),
        max_input_tokens=getattr(settings, "max_input_tokens", None),
    )


def openmanus_llm_values(config_name: str = "default", llm_config: Any = None) -> LLMValues:
    """The `[llm]` (or `[llm.<config_name>]`) values, from `llm_config` or OpenManus' config.

    `llm_config` follows OpenManus' (mis-typed) convention: a dict of name -> LLMSettings.
    Returns defaults when OpenManus has no config file.
    """
    table = llm_config
    if table is None:
        table = _loaded_llm_table()
    if not table:
        return LLMValues()
    if not isinstance(table, dict):  # a single LLMSettings passed directly
        return values_from_settings(table)
    settings = table.get(config_name, table.get("default"))
    return values_from_settings(settings) if settings is not None else LLMValues()


def _loaded_llm_table() -> dict[str, Any] | None:
    try:
        from app.config import config  # OpenManus: reads config/config.toml on import
    except (ImportError, FileNotFoundError):
        return None
    try:
        return dict(config.llm)
    except Exception:  # noqa: BLE001 - a half-valid config must not break the adapter
        return None


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value
