"""Small helpers around git, run through :mod:`npulab.cmd`.

Every git call that touches a staged tree names its git dir, work tree and index explicitly:
the build directory lives inside this project's own checkout, and a bare ``git apply`` there
would resolve paths against *our* repository and silently skip the upstream files.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path

from npulab import cmd
from npulab.cmd import Completed

#: Settings that make checkouts and applies byte-exact and offline whatever the user's config says
#: (no LFS smudge downloads, no CRLF conversion).
NEUTRAL_CONFIG = (
    "-c",
    "core.autocrlf=false",
    "-c",
    "core.safecrlf=false",
    "-c",
    "filter.lfs.smudge=",
    "-c",
    "filter.lfs.process=",
    "-c",
    "filter.lfs.required=false",
    "-c",
    "core.hooksPath=/dev/null",
)


def git(
    *args: str | os.PathLike[str],
    git_dir: Path | None = None,
    work_tree: Path | None = None,
    index: Path | None = None,
    cwd: Path | None = None,
    check: bool = True,
    input_text: str | None = None,
    timeout: float | None = None,
    hint: str | None = None,
    quiet: bool = True,
    env: Mapping[str, str] | None = None,
    capture: bool = True,
) -> Completed:
    """Run ``git`` with an explicit git dir / work tree / index (each optional)."""
    full_env = {"GIT_TERMINAL_PROMPT": "0", "GIT_LFS_SKIP_SMUDGE": "1", **(env or {})}
    if git_dir is not None:
        full_env["GIT_DIR"] = str(git_dir)
    if work_tree is not None:
        full_env["GIT_WORK_TREE"] = str(work_tree)
    if index is not None:
        full_env["GIT_INDEX_FILE"] = str(index)
    return cmd.run(
        "git",
        *NEUTRAL_CONFIG,
        *args,
        cwd=cwd or work_tree,
        env=full_env,
        check=check,
        input_text=input_text,
        timeout=timeout,
        hint=hint,
        quiet=quiet,
        capture=capture,
    )


@functools.cache
def version() -> str:
    """``git version 2.39.5`` -> ``2.39.5``."""
    out = cmd.run("git", "--version", quiet=True).stdout.strip()
    return out.removeprefix("git version ").strip()
