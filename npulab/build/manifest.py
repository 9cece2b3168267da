"""``build/<recipe>/manifest.json``: what a build produced, read by later steps and CI.

The manifest is plain JSON (``SCHEMA`` version 1)::

    {"schema": 1, "recipe": {name, path, digest}, "target": "stage"|"windows",
     "upstream": {repo_url, tag, commit, tree, origin, chosen_by},
     "staged": {mode, prefixes, tree, files}, "patches": [{name, sha256, subject,
     upstream_status, fixes, files}], "tools": {git, python, npulab},
     "started_at", "finished_at", "warnings": [{step, message}],
     "not_staged": [{path, reason}],
     "steps": {<name>: {status, digest, started_at, finished_at, seconds, detail}},
     "remaining": [text, ...]}

Other steps (Windows build, smoke, CI) add their own entries under ``steps`` with
:func:`record_step` and read facts with :func:`load` instead of recomputing them. Every write is
atomic (temp file + rename).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from npulab.errors import ConfigError

SCHEMA = 1
FILENAME = "manifest.json"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def load(path: Path) -> dict[str, Any]:
    """The manifest at ``path`` (a file or a build dir); ``{}`` when there is none yet."""
    if path.is_dir():
        path = path / FILENAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        msg = f"{path}: unreadable manifest ({exc}); delete it to rebuild"
        raise ConfigError(msg) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return {}
    return data


def save(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (never a half-written manifest)."""
    if path.is_dir():
        path = path / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"schema": SCHEMA, **{k: v for k, v in data.items() if k != "schema"}}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_step(path: Path, name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Add or replace one step's result (``status``, ``detail``, ...) and save atomically."""
    data = load(path)
    data.setdefault("steps", {})[name] = result
    save(path, data)
    return data
