"""Render the smoke runner's JSON settings from the recipe (the runner itself reads no YAML).

The runner (``npulab/smoke/runner.py``) runs inside the 1.1 conda env, so everything it needs is
in one JSON file: where the model is, every file's pinned (or locked) sha256 and size, the
prompts and generation settings, and the chip's thresholds.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from npulab import paths
from npulab.errors import ConfigError
from npulab.model.fetch import require_pinned
from npulab.model.lock import locked_model
from npulab.recipe import Device, Recipe, Rope, RopeOnLoad

Backend = Literal["npu", "cpu"]
#: Warm-up answers only need to exercise the kernels, not to finish.
WARMUP_MAX_NEW_TOKENS = 16


def render(
    recipe: Recipe,
    *,
    model_dir: str,
    backend: Backend = "npu",
    chip: str | None = None,
    report: str | None = None,
    rope: RopeOnLoad | None = None,
) -> dict[str, Any]:
    """The runner's settings. ``model_dir`` is a path on the machine that runs the runner;
    ``rope`` overrides the recipe's ``model.rope.on_load`` (``invoke smoke --rope as-saved``)."""
    # Files the recipe pins by revision only get their sha256 from the model lock.
    model = locked_model(recipe)
    revision = require_pinned(model)
    smoke = recipe.smoke
    if chip is not None:
        recipe.device_for(chip)  # a ConfigError naming the targets if it is not one
    return {
        "version": 1,
        "recipe": recipe.name,
        "recipe_digest": recipe.digest,
        "repo_id": model.repo_id,
        "revision": revision,
        "backend": backend,
        "model_dir": model_dir,
        "checkpoint": model.checkpoint,
        "rope": _rope(model.rope, rope),
        "files": {f.path: {"sha256": f.sha256, "size": f.size} for f in model.files},
        # None: the runner recognises the chip in the CPU name ("AMD Ryzen 7 7940HS ...").
        "chip": chip,
        "chips": {d.chip: _chip(recipe, d) for d in recipe.devices},
        "warmup_prompts": list(smoke.warmup_prompts),
        "warmup_max_new_tokens": min(WARMUP_MAX_NEW_TOKENS, smoke.max_new_tokens),
        "prompts": [
            {"text": p.text, "max_new_tokens": p.max_new_tokens, "expect": list(p.expect)}
            for p in smoke.prompts
        ],
        "passage": _passage(recipe),
        "max_new_tokens": smoke.max_new_tokens,
        "seed": smoke.seed,
        "do_sample": smoke.do_sample,
        "temperature": smoke.temperature,
        "top_p": smoke.top_p,
        "cpu_threads": smoke.cpu_threads,
        "require_stop_token": smoke.require_stop_token,
        "report": report,
    }


def _passage(recipe: Recipe) -> dict[str, Any] | None:
    """The fixed passage's text (read here: the runner gets everything in its config)."""
    passage = recipe.smoke.passage
    if passage is None:
        return None
    base = Path(recipe.source).parent if recipe.source else paths.recipes_dir()
    path = base / passage.path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"smoke.passage: cannot read {path}: {exc}"
        raise ConfigError(msg, hint="the path is relative to the recipe's directory") from None
    return {"name": passage.path, "text": text, "max_perplexity": passage.max_perplexity}


def _rope(rope: Rope | None, on_load: RopeOnLoad | None) -> dict[str, Any] | None:
    if rope is None:
        if on_load is not None:
            msg = f"--rope {on_load}: the recipe's model has no rope settings to check against"
            raise ConfigError(msg, hint="add model.rope to the recipe (recipes/README.md)")
        return None
    settings = dataclasses.asdict(rope)
    if on_load is not None:
        settings["on_load"] = on_load
    return settings


def _chip(recipe: Recipe, device: Device) -> dict[str, Any]:
    limits = recipe.smoke.thresholds.get(device.chip)
    return {
        "device": device.device,
        "assumption": device.assumption,
        "thresholds": (
            {
                "min_tokens_per_s": limits.min_tokens_per_s,
                "max_time_to_first_token_s": limits.max_time_to_first_token_s,
            }
            if limits is not None
            else None
        ),
    }


def write(settings: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
