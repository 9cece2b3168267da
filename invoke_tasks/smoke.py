"""`invoke smoke` (generation test with a verdict and a JSON report) and `invoke chat`."""

from __future__ import annotations

from typing import Any

from invoke import task
from invoke.context import Context
from invoke.exceptions import Exit

from invoke_tasks._common import config_value, fails_cleanly, is_dry_run


def _rope(value: str) -> Any:
    from npulab.errors import ConfigError

    if value not in ("", "repair", "as-saved"):
        msg = f"--rope: expected repair or as-saved, got {value!r}"
        raise ConfigError(msg)
    return value or None


def _backend(value: str) -> str:
    from npulab.errors import ConfigError

    if value not in ("npu", "cpu"):
        msg = f"--backend: expected npu or cpu, got {value!r}"
        raise ConfigError(msg)
    return value


@task(
    help={
        "recipe": "recipe name or path (default: npulab.recipe in invoke.yaml)",
        "host": "inventory host to run on over WinRM (default: this machine)",
        "backend": "npu (the 1.1 stack, default) or cpu (plain transformers, no NPU)",
        "chip": "7940HS or 8845HS: selects the recipe's thresholds for the verdict",
        "model_dir": "model directory on the machine that runs (default here: model.fetch's)",
        "python": "interpreter of the 1.1 conda env (or NPULAB_SMOKE_PYTHON)",
        "dry_run": "print the config and the command; writes nothing",
        "rope": "repair or as-saved: override the recipe's model.rope.on_load (the RoPE A/B)",
    }
)
@fails_cleanly
def smoke(
    c: Context,
    recipe: str = "",
    host: str = "",
    backend: str = "npu",
    chip: str = "",
    model_dir: str = "",
    python: str = "",
    dry_run: bool = False,
    rope: str = "",
) -> None:
    """Generate text with the pinned model and judge it; writes build/smoke/<stamp>/report.json."""
    from npulab.recipe import find_recipe, load_recipe
    from npulab.smoke.run import smoke as run_smoke

    outcome = run_smoke(
        load_recipe(find_recipe(recipe or config_value(c, "recipe"))),
        host=host or None,
        backend=_backend(backend),  # type: ignore[arg-type]
        chip=chip or None,
        model_dir=model_dir or None,
        python=python or None,
        dry_run=is_dry_run(c, dry_run),
        rope=_rope(rope),
    )
    print(f"{outcome.verdict} {outcome.report_path}")


@task(
    help={
        "recipe": "recipe name or path (default: npulab.recipe in invoke.yaml)",
        "backend": "npu (default) or cpu",
        "model_dir": "model directory (default: model.fetch's)",
        "python": "interpreter of the 1.1 conda env (or NPULAB_SMOKE_PYTHON)",
        "dry_run": "print the command only",
    }
)
@fails_cleanly
def chat(
    c: Context,
    recipe: str = "",
    backend: str = "npu",
    model_dir: str = "",
    python: str = "",
    dry_run: bool = False,
) -> None:
    """Chat with the model on this machine: streamed answers, history, /reset, Ctrl-C safe."""
    from npulab.recipe import find_recipe, load_recipe
    from npulab.smoke.run import chat as run_chat

    code = run_chat(
        load_recipe(find_recipe(recipe or config_value(c, "recipe"))),
        backend=_backend(backend),  # type: ignore[arg-type]
        model_dir=model_dir or None,
        python=python or None,
        dry_run=is_dry_run(c, dry_run),
    )
    if code:
        # The runner's own exit status: a crashed chat is not a successful one.
        msg = f"chat: the runner exited with {code} (its message is above)"
        raise Exit(msg, code=code)


ROOT_TASKS = [smoke, chat]
