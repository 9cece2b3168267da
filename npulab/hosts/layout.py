"""The host layout (``npulab/data/host-layout.yaml``): where things live on a Windows lab machine.

One file, validated once into :class:`HostLayout`, is what the Ansible roles install to, what the
rendered scripts default to, what the probe looks at, what the npulab_stack role runs and what
the nightly workflow sets. :meth:`HostLayout.machine_env` is the set of machine-wide variables
the roles write, so WinRM shells, the runner service and a console all see the same values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from npulab.schema import check_nonempty, load_file

_WIN_ABS = re.compile(r"^[A-Za-z]:\\[^/\"<>|?*]*$")
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
#: npulab's own ``requires-python`` floor (pyproject.toml).
MIN_CONTROLLER_PYTHON = (3, 11)


def _check_win_path(value: str) -> None:
    if not _WIN_ABS.fullmatch(value) or value.endswith("\\"):
        msg = f"an absolute Windows path like C:\\dir (backslashes, no trailing one), got {value!r}"
        raise ValueError(msg)


def _check_no_spaces(value: str) -> None:
    _check_win_path(value)
    if " " in value:
        msg = f"a path without spaces (Miniconda's installer takes /D= unquoted), got {value!r}"
        raise ValueError(msg)


def _check_python_version(value: str) -> None:
    match = _VERSION.fullmatch(value)
    if not match or (int(match[1]), int(match[2])) < MIN_CONTROLLER_PYTHON:
        floor = ".".join(map(str, MIN_CONTROLLER_PYTHON))
        msg = f"a full Python version X.Y.Z >= {floor} (npulab's requires-python), got {value!r}"
        raise ValueError(msg)


def _check_relative(value: str) -> None:
    check_nonempty(value)
    if ":" in value or value.startswith(("\\", "/")) or ".." in value.split("\\"):
        msg = f"a directory name relative to runner_dir, got {value!r}"
        raise ValueError(msg)


@dataclass(frozen=True, kw_only=True)
class ControllerPython:
    """The Python 3.11+ that runs npulab on the host (not the 1.1 stack's conda Python)."""

    version: str = field(metadata={"check": _check_python_version})
    dir: str = field(metadata={"check": _check_win_path})

    @property
    def exe(self) -> str:
        return self.dir + "\\python.exe"


@dataclass(frozen=True, kw_only=True)
class HostLayout:
    conda_root: str = field(metadata={"check": _check_no_spaces})
    controller_python: ControllerPython
    cache: str = field(metadata={"check": _check_win_path})
    installer_cache: str = field(metadata={"check": _check_win_path})
    hf_home: str = field(metadata={"check": _check_win_path})
    model_root: str = field(metadata={"check": _check_win_path})
    build_root: str = field(metadata={"check": _check_win_path})
    stack_dir: str = field(metadata={"check": _check_win_path})
    runner_dir: str = field(metadata={"check": _check_win_path})
    runner_work: str = field(metadata={"check": _check_relative})

    def __post_init__(self) -> None:
        if "\\users\\" in (self.runner_dir + "\\").lower():
            msg = (
                "runner_dir must be outside C:\\Users (a service cannot start from a profile), "
                f"got {self.runner_dir!r}"
            )
            raise ValueError(msg)

    @property
    def conda_bat(self) -> str:
        return self.conda_root + "\\condabin\\conda.bat"

    @property
    def stack_venv_python(self) -> str:
        return self.stack_dir + "\\.venv\\Scripts\\python.exe"

    def build_dir(self, recipe: str) -> str:
        return f"{self.build_root}\\{recipe}"

    def model_dir(self, model_id: str, revision: str) -> str:
        """Where ``invoke model.fetch --host`` puts a pinned checkpoint."""
        return f"{self.model_root}\\{model_id.replace('/', '--')}\\{revision}"

    def machine_env(self) -> dict[str, str]:
        """The machine-wide variables the roles set and the scripts, probe and nightly read."""
        return {
            "NPULAB_CONDA_ROOT": self.conda_root,
            "NPULAB_PYTHON": self.controller_python.exe,
            "NPULAB_CACHE": self.cache,
            "HF_HOME": self.hf_home,
            "NPULAB_MODEL_ROOT": self.model_root,
            "NPULAB_BUILD_DIR": self.build_root,
        }


@dataclass(frozen=True, kw_only=True)
class _LayoutFile:
    npulab_host_layout: HostLayout


def default_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "host-layout.yaml"


@cache
def load(path: Path | None = None) -> HostLayout:
    """The validated layout (cached: the file ships with npulab and does not change under it)."""
    return load_file(_LayoutFile, path or default_path()).npulab_host_layout
