"""`invoke model.*`: pinned, verified model download (fetch) and pinning from the hub (pin)."""

from __future__ import annotations

from pathlib import Path

from invoke import Collection, task
from invoke.context import Context

from invoke_tasks._common import config_value, fails_cleanly, is_dry_run


@task(
    help={
        "recipe": "recipe name or path (default: npulab.recipe in invoke.yaml)",
        "dest": "model directory, e.g. a lab share (default: the HF hub cache snapshot; with "
        "--host, the host layout's model_root)",
        "host": "inventory host that downloads it itself (npulab_stack's checkout runs "
        "model.fetch there)",
        "verify": "hash every file again instead of trusting the size+mtime record",
        "dry_run": "print what would be downloaded or verified; touch nothing",
    }
)
@fails_cleanly
def fetch(
    c: Context,
    recipe: str = "",
    dest: str = "",
    host: str = "",
    verify: bool = False,
    dry_run: bool = False,
) -> None:
    """Download the pinned model files; verify by sha256 (small files: git blob id, then locked)."""
    from npulab.model import fetch as models
    from npulab.model.lock import lock_path
    from npulab.recipe import find_recipe, load_recipe

    path = find_recipe(recipe or config_value(c, "recipe"))
    if host:
        from npulab.model.host import fetch_on_host
        from npulab.transport import connect

        loaded = load_recipe(path)
        where_on_host = fetch_on_host(
            loaded,
            host,
            connect(host),
            dest=dest or None,
            verify=verify,
            dry_run=is_dry_run(c, dry_run),
        )
        print(where_on_host)
        return
    where = models.fetch(
        load_recipe(path).model,
        dest=Path(dest) if dest else None,
        verify=verify,
        dry_run=is_dry_run(c, dry_run),
        lock=lock_path(path),
    )
    print(where)


@task(
    help={
        "recipe": "recipe name or path (default: npulab.recipe in invoke.yaml)",
        "revision": "branch, tag or commit to pin (default: main)",
        "dry_run": "print the recipe diff without writing it",
    }
)
@fails_cleanly
def pin(c: Context, recipe: str = "", revision: str = "", dry_run: bool = False) -> None:
    """Write the hub revision and every model file's sha256 and size into the recipe."""
    from npulab.model import pin as model_pin
    from npulab.recipe import find_recipe

    diff = model_pin.pin(
        find_recipe(recipe or config_value(c, "recipe")),
        revision=revision or None,
        dry_run=is_dry_run(c, dry_run),
    )
    print(diff or "already pinned: no change")


ns = Collection("model")
ns.add_task(fetch)
ns.add_task(pin)
