"""``invoke model.fetch --host NAME``: the lab host downloads the pinned model from the hub itself.

The host runs npulab's own ``model.fetch`` (the same pins, the same sha256 / git blob id checks,
the same resumable, verified-before-visible download) from the npulab checkout the
``npulab_stack`` role put at the host layout's ``stack_dir``, into the layout's ``model_root``
(or ``--dest``). Nothing is copied through the controller: an 11 GB checkpoint would otherwise
cross WinRM twice.
"""

from __future__ import annotations

from npulab import log
from npulab.errors import CommandError, ConfigError
from npulab.hosts import layout
from npulab.recipe import Recipe
from npulab.transport import Transport


def host_model_dir(recipe: Recipe, host: str) -> str:
    """Where the host layout keeps the pinned model on a lab host (``model_root``)."""
    if recipe.model.revision is None:
        msg = f"model {recipe.model.repo_id} has no pinned revision: no place for it on {host}"
        raise ConfigError(msg, hint=f"invoke model.pin, or --model-dir <dir on {host}>")
    return layout.load().model_dir(recipe.model.repo_id, recipe.model.revision)


def fetch_argv(recipe: Recipe, host: str, dest: str | None, *, verify: bool = False) -> list[str]:
    lay = layout.load()
    invoke = lay.stack_dir + "\\.venv\\Scripts\\invoke.exe"
    flags = ["--verify"] if verify else []
    return [invoke, "model.fetch", "--recipe", recipe.name, *flags,
            "--dest", dest or host_model_dir(recipe, host)]  # fmt: skip


def fetch_on_host(
    recipe: Recipe, host: str, transport: Transport, *, dest: str | None = None,
    verify: bool = False, dry_run: bool = False,
) -> str:  # fmt: skip
    """Run ``model.fetch`` on ``host`` into ``dest`` (default: the layout's place); returns it."""
    argv = fetch_argv(recipe, host, dest, verify=verify)
    lay = layout.load()
    env = {"NPULAB_CACHE": lay.cache, "HF_HOME": lay.hf_home, "PYTHONUTF8": "1"}
    try:
        transport.run(argv, cwd=lay.stack_dir, env=env, dry_run=dry_run, timeout=6 * 3600.0)
    except CommandError as exc:
        exc.hint = (
            f"see the output above; npulab must be on {host} at {lay.stack_dir} "
            f"(invoke lab.provision --hosts {host} --tags npulab_stack)"
        )
        raise
    log.info(f"{host}: model at {argv[-1]}")
    return argv[-1]
