"""`invoke lock`: the hash-locked win_amd64 / cp39 pip requirements of the stack."""

from __future__ import annotations

from invoke import task
from invoke.context import Context

from invoke_tasks._common import config_value, fails_cleanly, is_dry_run


@task(
    help={
        "recipe": "recipe name or path (default: npulab.recipe in invoke.yaml)",
        "check": "only verify (offline) that the committed lock follows the recipe",
        "dry_run": "print the uv command and write nothing",
    }
)
@fails_cleanly
def lock(c: Context, recipe: str = "", check: bool = False, dry_run: bool = False) -> None:
    """Regenerate recipes/locks/<recipe>.win_amd64-cp39.txt with uv (or --check it)."""
    from npulab.recipe import find_recipe, load_recipe
    from npulab.source import envlock as lockmod

    loaded = load_recipe(find_recipe(recipe or config_value(c, "recipe")))
    if check:
        lockmod.verify(loaded)
        print(f"{loaded.env.lock} follows {loaded.source}")
        return
    lockmod.generate(loaded, dry_run=is_dry_run(c, dry_run))


ROOT_TASKS = [lock]
