"""The thin `invoke build` / `invoke patches.*` adapters, run as a user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
INVOKE = str(Path(sys.executable).parent / "invoke")


def _invoke(project_root: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "NPULAB_CACHE": str(tmp_path / "cache"),
        "NPULAB_BUILD_DIR": str(tmp_path / "build"),
    }
    env.pop("NPULAB_UPSTREAM", None)
    return subprocess.run(
        [INVOKE, *args], cwd=project_root, env=env, capture_output=True, text=True, timeout=60
    )


def test_build_dry_run_prints_plan(project_root: Path, tmp_path: Path) -> None:
    (tmp_path / "mirror").mkdir()
    done = _invoke(
        project_root, tmp_path, "build", "--dry-run", "--source", str(tmp_path / "mirror")
    )
    assert done.returncode == 0, done.stderr
    assert "1. fetch" in done.stdout
    assert "(dry run: nothing was fetched" in done.stdout
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (("build", "--target", "linux"), 2, "--target: expected auto, stage or windows"),
        # A patch-only tree is two files: uploading it would replace the host's whole tree\.
        (("build", "--patch-only", "--host", "phx-01"), 2, "--patch-only stages only"),
        (("build", "--patch-only", "--target", "windows"), 2, "the windows target needs"),
        (("build", "--host", "phx-01", "--target", "stage"), 2, "--target stage never reaches"),
        (("build", "--source", "/nonexistent/mirror"), 3, "does not exist"),
        (("build", "--recipe", "nope"), 2, "no recipe named 'nope'"),
        (
            ("patches.refresh", "--patch", "9999-nope", "--source", "/nonexistent"),
            3,
            "does not exist",
        ),
    ],
)
def test_errors_exit_with_code_and_one_message(
    project_root: Path, tmp_path: Path, args: tuple[str, ...], code: int, expected: str
) -> None:
    done = _invoke(project_root, tmp_path, *args)
    assert done.returncode == code, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_patches_list(project_root: Path, tmp_path: Path) -> None:
    done = _invoke(project_root, tmp_path, "patches.list")
    assert done.returncode == 0, done.stderr
    assert "patches/ryzenai-sw/1.1/series" in done.stdout


def test_build_windows_dry_run_prints_windows_plan(project_root: Path, tmp_path: Path) -> None:
    (tmp_path / "mirror").mkdir()
    done = _invoke(
        project_root,
        tmp_path,
        "build",
        "--target",
        "windows",
        "--dry-run",
        "--source",
        str(tmp_path / "mirror"),
    )
    assert done.returncode == 0, done.stderr
    names = re.findall(r"^ ?\d+\. ([^:]+):", done.stdout, flags=re.MULTILINE)
    assert names == [
        "fetch",
        "verify",
        "patch",
        "render",
        "win-prereqs [windows]",
        "win-lfs [windows]",
        "win-conda-env [windows]",
        "win-pip-lock [windows]",
        "win-ops-cpp [windows]",
        "win-import-check [windows]",
        "manifest",
    ]
    assert "pip install ops\\cpp --force-reinstall" in done.stdout
    assert not (tmp_path / "build").exists()


def test_user_invoke_yaml_source_is_read(project_root: Path, tmp_path: Path) -> None:
    """~/.invoke.yaml's npulab.source reaches the build: the project's config does not hide it."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".invoke.yaml").write_text("npulab:\n  source: /nonexistent/user-mirror\n")
    env = {**os.environ, "HOME": str(home), "NPULAB_CACHE": str(tmp_path / "cache")}
    env.pop("NPULAB_UPSTREAM", None)
    done = subprocess.run(
        [INVOKE, "build", "--dry-run"],
        cwd=project_root, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert "npulab.source: upstream mirror /nonexistent/user-mirror does not exist" in done.stderr
