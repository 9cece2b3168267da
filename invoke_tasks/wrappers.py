"""`invoke wrappers`: render the chcp 65001 .cmd wrappers for concrete Windows paths."""

from __future__ import annotations

from invoke import task
from invoke.context import Context

from invoke_tasks._common import config_value, fails_cleanly


@task(
    help={
        "out": "folder to write python.cmd, pip.cmd (and smoke.cmd) into",
        "transformers_dir": "Windows path of the patched <tree>\\example\\transformers",
        "conda_root": "Windows path of the Miniconda root (holds condabin\\conda.bat)",
        "smoke_runner": "Windows path of the smoke runner.py (adds smoke.cmd)",
        "recipe": "recipe name or path (default: npulab.recipe in invoke.yaml)",
    }
)
@fails_cleanly
def wrappers(
    c: Context,
    out: str,
    transformers_dir: str,
    conda_root: str,
    smoke_runner: str = "",
    recipe: str = "",
) -> None:
    """Write the chcp 65001 wrappers for a stack at the given Windows paths (CRLF, UTF-8)."""
    from pathlib import Path

    from npulab.errors import ConfigError
    from npulab.recipe import find_recipe, load_recipe
    from npulab.windows import wrappers as w

    loaded = load_recipe(find_recipe(recipe or config_value(c, "recipe")))
    env = w.RuntimeEnv(
        transformers_dir=transformers_dir, conda_root=conda_root, env_name=loaded.env.name
    )
    try:
        files = w.render_all(w.default_entry_points(smoke_runner or None), env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for path in w.write_all(files, Path(out)):
        print(path)


ROOT_TASKS = [wrappers]
