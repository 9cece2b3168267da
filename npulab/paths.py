"""Where things live: the project checkout, the build output and the download cache."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """The checkout holding recipes/, patches/ and ansible/ (overridable for tests)."""
    return Path(os.environ.get("NPULAB_ROOT", PROJECT_ROOT))


def build_root() -> Path:
    return Path(os.environ.get("NPULAB_BUILD_DIR", project_root() / "build"))


def cache_root() -> Path:
    """Content-addressed cache for sources and downloads; kept across nightly runs."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "npulab"
    return Path(os.environ.get("NPULAB_CACHE", default))


def recipes_dir() -> Path:
    return project_root() / "recipes"


def patches_dir() -> Path:
    return project_root() / "patches"
