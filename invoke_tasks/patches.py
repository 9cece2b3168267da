"""`invoke patches.*`: the RyzenAI-SW patch series (list, check, apply, refresh)."""

from __future__ import annotations

from invoke import task
from invoke.collection import Collection
from invoke.context import Context

from invoke_tasks._common import config_value, fails_cleanly, is_dry_run

RECIPE_HELP = "recipe name or path (default: npulab.recipe in invoke.yaml)"
SOURCE_HELP = "local mirror or checkout of the upstream (else NPULAB_UPSTREAM / npulab.source)"


@task(help={"recipe": RECIPE_HELP})
@fails_cleanly
def list_(c: Context, recipe: str = "") -> None:
    """List the series: each patch, its upstream status, what it fixes and the files it touches."""
    from npulab.build.workflow import patches_list

    print(patches_list(recipe or config_value(c, "recipe")))


@task(help={"recipe": RECIPE_HELP, "source": SOURCE_HELP})
@fails_cleanly
def check(c: Context, recipe: str = "", source: str = "") -> None:
    """Check that every patch applies exactly (no fuzz) to the pinned commit."""
    from npulab.build.workflow import patches_check

    patches_check(recipe or config_value(c, "recipe"), source or None, config_value(c, "source"))


@task(
    help={
        "recipe": RECIPE_HELP,
        "source": SOURCE_HELP,
        "patch_only": "stage only the files the series touches",
        "dry_run": "print the plan and touch nothing",
    }
)
@fails_cleanly
def apply(
    c: Context, recipe: str = "", source: str = "", patch_only: bool = False, dry_run: bool = False
) -> None:
    """Stage the pinned tree with the series applied into build/<recipe>/tree (all or nothing)."""
    from npulab.build.workflow import run_build

    run_build(
        recipe or config_value(c, "recipe"),
        source=source or None,
        config_source=config_value(c, "source"),
        target="stage",
        patch_only=patch_only,
        dry_run=is_dry_run(c, dry_run),
    )


@task(
    help={
        "patch": "patch file name (with or without .patch)",
        "tree": "edited tree to diff (default: build/<recipe>/tree)",
        "files": "extra upstream paths to include, comma-separated (e.g. a new file)",
        "recipe": RECIPE_HELP,
        "source": SOURCE_HELP,
    }
)
@fails_cleanly
def refresh(
    c: Context, patch: str, tree: str = "", files: str = "", recipe: str = "", source: str = ""
) -> None:
    """Regenerate a patch's diff from an edited tree, keeping its header."""
    from npulab.build.workflow import patches_refresh

    patches_refresh(
        recipe or config_value(c, "recipe"),
        patch,
        tree or None,
        tuple(f for f in files.split(",") if f),
        source or None,
        config_value(c, "source"),
    )


ns = Collection("patches")
ns.add_task(list_, name="list")
ns.add_task(check)
ns.add_task(apply)
ns.add_task(refresh)
