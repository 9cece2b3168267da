"""The model lock: sha256 of the files the recipe pins only by revision, recorded on first fetch.

The hub publishes a sha256 only for LFS files. The small git files (tokenizer, its config) carry a
git blob id, which the hub lists per commit. ``model.fetch`` verifies such a file on its first
download against the blob id listed at the pinned revision (computed locally: sha1 of
``"blob <size>\\0" + content``) and then records its sha256, size and blob id here, so every later
fetch and the smoke runner check it by sha256 like the pinned checkpoint.

The lock lives beside the recipe: ``<recipe dir>/locks/<recipe stem>.model-lock.json``. It holds
entries for one repository at one revision; a lock for another revision is ignored (and replaced
on the next fetch), never mixed in.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from npulab.errors import ConfigError
from npulab.recipe import Model, Recipe

VERSION = 1


@dataclass(frozen=True)
class Entry:
    sha256: str
    size: int
    #: The git blob id it was verified against (None: verified by a published sha256).
    blob_id: str | None = None


@dataclass(frozen=True)
class ModelLock:
    repo_id: str
    revision: str
    files: dict[str, Entry]

    def applies_to(self, model: Model) -> bool:
        return self.repo_id == model.repo_id and self.revision == model.revision


def lock_path(recipe_path: Path) -> Path:
    """Where the model lock of the recipe at ``recipe_path`` lives."""
    return recipe_path.parent / "locks" / f"{recipe_path.stem}.model-lock.json"


def load(path: Path) -> ModelLock | None:
    """The lock at ``path``; None when there is none. A malformed lock is a ConfigError."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        msg = f"{path}: unreadable model lock: {exc}"
        raise ConfigError(msg, hint=f"delete {path} and re-run `invoke model.fetch`") from None
    try:
        return ModelLock(
            repo_id=str(raw["repo_id"]),
            revision=str(raw["revision"]),
            files={name: Entry(**fields) for name, fields in raw["files"].items()},
        )
    except (KeyError, TypeError, AttributeError) as exc:
        msg = f"{path}: not a model lock (version {VERSION}): {exc!r}"
        raise ConfigError(msg, hint=f"delete {path} and re-run `invoke model.fetch`") from None


def save(path: Path, lock: ModelLock) -> None:
    """Write the lock through a temporary file and a rename (never half a lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": VERSION,
        "repo_id": lock.repo_id,
        "revision": lock.revision,
        "files": {k: dataclasses.asdict(v) for k, v in sorted(lock.files.items())},
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def apply(model: Model, lock: ModelLock | None) -> Model:
    """``model`` with the lock's sha256 and size filled in for files the recipe does not pin.

    A pin in the recipe always wins; a lock of another repository or revision changes nothing."""
    if lock is None or not lock.applies_to(model):
        return model
    files = []
    for f in model.files:
        entry = lock.files.get(f.path)
        if f.sha256 is None and entry is not None:
            f = dataclasses.replace(f, sha256=entry.sha256, size=entry.size)
        files.append(f)
    return dataclasses.replace(model, files=tuple(files))


def locked_model(recipe: Recipe) -> Model:
    """The recipe's model with its lock (beside the recipe file) applied."""
    if not recipe.source:
        return recipe.model
    return apply(recipe.model, load(lock_path(Path(recipe.source))))
