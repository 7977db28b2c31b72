"""Prediction presets (`fuzzyPresetIdentifier`), as LM Studio resolves them.

A preset is a named bundle of prediction config fields (`[presets."id"]` in the config).
A predict that names one gets its fields under the request's own (the request wins);
naming none that exists fails the prediction with LM Studio's `generic.presetNotFound`
error (the SDK raises LMStudioPresetNotFoundError). The simulator has no presets unless
the config declares them, like a fresh LM Studio.
"""

from __future__ import annotations

from typing import Any

from simulator.config import PresetConfig
from simulator.errors import SimError

_SAMPLE = 10


def find_preset(presets: dict[str, PresetConfig], fuzzy: str) -> PresetConfig | None:
    """By identifier, else by name or identifier ignoring case."""
    if fuzzy in presets:
        return presets[fuzzy]
    wanted = fuzzy.casefold()
    return next((p for ident, p in presets.items()
                 if wanted in (ident.casefold(), (p.name or ident).casefold())), None)


def preset_fields(presets: dict[str, PresetConfig], fuzzy: str | None) -> dict[str, Any]:
    """The named preset's prediction fields ({} when none is named); SimError if unknown."""
    if fuzzy is None:
        return {}
    preset = find_preset(presets, fuzzy)
    if preset is None:
        raise preset_not_found(presets, fuzzy)
    return dict(preset.fields)


def preset_not_found(presets: dict[str, PresetConfig], fuzzy: str) -> SimError:
    sample = [{"identifier": ident, "name": p.name or ident}
              for ident, p in list(presets.items())[:_SAMPLE]]
    return SimError({
        "title": f"Cannot find a preset with identifier \"{fuzzy}\"",
        "displayData": {"code": "generic.presetNotFound",
                        "specifiedFuzzyPresetIdentifier": fuzzy,
                        "availablePresetsSample": sample,
                        "totalAvailablePresets": len(presets)},
    })
