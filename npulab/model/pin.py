"""``model.pin``: read the revision and every file's sha256 and size from the hub into the recipe.

The hub gives sha256 for LFS files (``model_info(files_metadata=True)``); small git files only
carry a git blob id, so they are downloaded (at the resolved commit) and hashed. The recipe is
edited as text: only the ``revision:`` line of ``model:`` and the ``sha256:``/``size:`` lines of
each ``files:`` item change; comments and layout stay. The result is re-validated before it is
written (temporary file, then rename).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from npulab import log
from npulab.errors import ConfigError, SourceError
from npulab.model.fetch import endpoint
from npulab.recipe import Model, load_recipe


@dataclass(frozen=True)
class Pin:
    sha256: str
    size: int


def read_pins(model: Model, revision: str | None = None) -> tuple[str, dict[str, Pin]]:
    """(commit, {path: Pin}) for the recipe's files at ``revision`` (default: main)."""
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import http_get
    from requests import RequestException

    api = HfApi(endpoint=endpoint())
    try:
        info = api.model_info(model.repo_id, revision=revision or "main", files_metadata=True)
    except (HfHubHTTPError, RequestException) as exc:
        msg = f"cannot read {model.repo_id}@{revision or 'main'} from {endpoint()}: {exc}"
        raise SourceError(
            msg, hint="check the repo id, revision, HF_ENDPOINT and HF_TOKEN"
        ) from None
    commit = info.sha
    if commit is None:
        msg = f"{endpoint()} gave no commit for {model.repo_id}@{revision or 'main'}"
        raise SourceError(msg, hint="check HF_ENDPOINT points at a hub")
    siblings = {s.rfilename: s for s in info.siblings or []}
    pins: dict[str, Pin] = {}
    for f in model.files:
        sib = siblings.get(f.path)
        if sib is None:
            msg = f"{model.repo_id}@{commit} has no file {f.path!r}"
            raise SourceError(msg, hint="fix model.files in the recipe")
        if sib.lfs is not None:
            pins[f.path] = Pin(sib.lfs.sha256, sib.lfs.size)
            continue
        url = hf_hub_url(model.repo_id, f.path, revision=commit, endpoint=endpoint())
        with tempfile.TemporaryFile() as tmp:
            http_get(url, tmp, expected_size=sib.size, displayed_filename=f.path)
            tmp.seek(0)
            digest = hashlib.file_digest(tmp, "sha256")
            pins[f.path] = Pin(digest.hexdigest(), tmp.tell())
    return commit, pins


_KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$")
_ITEM = re.compile(r"^(?P<indent>\s*)- path:\s*(?P<path>.+?)\s*(#.*)?$")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def rewrite_model_pins(text: str, revision: str, pins: dict[str, Pin], *, where: str) -> str:
    """Set ``model.revision`` and each ``model.files[*].sha256/size`` in recipe ``text``."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "model:"), None)
    if start is None:
        msg = f"{where}: no top-level 'model:' block to pin"
        raise ConfigError(msg)
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i][:1] not in ("", " ", "#", "\n")),
        len(lines),
    )
    block = lines[start + 1 : end]
    keys = [(i, m) for i, line in enumerate(block) if (m := _KEY.match(line))]
    indent = min((len(m["indent"]) for _, m in keys), default=2)
    top = {m["key"]: i for i, m in keys if len(m["indent"]) == indent}
    if "repo_id" not in top or "files" not in top:
        msg = f"{where}: model block needs 'repo_id:' and 'files:' keys to pin"
        raise ConfigError(msg)
    pad = " " * indent
    out: list[str] = []
    seen: set[str] = set()
    item_pad: str | None = None
    for i, line in enumerate(block):
        m = _KEY.match(line)
        if m and len(m["indent"]) == indent and m["key"] == "revision":
            continue  # rewritten after repo_id
        if (
            item_pad is not None
            and m
            and m["indent"] == item_pad
            and m["key"] in {"sha256", "size"}
        ):
            continue  # old pin of the current item
        out.append(line)
        if i == top["repo_id"]:
            out.append(f"{pad}revision: {revision}\n")
        item = _ITEM.match(line)
        if item and i > top["files"]:
            path = _unquote(item["path"])
            if path not in pins:
                msg = f"{where}: model.files has {path!r} but the hub pins gave none"
                raise ConfigError(msg)
            item_pad = item["indent"] + "  "
            out.append(f"{item_pad}sha256: {pins[path].sha256}\n")
            out.append(f"{item_pad}size: {pins[path].size}\n")
            seen.add(path)
        elif m and len(m["indent"]) <= indent:
            item_pad = None
    if seen != set(pins):
        msg = f"{where}: could not find '- path:' lines for {sorted(set(pins) - seen)}"
        raise ConfigError(msg)
    return "".join([*lines[: start + 1], *out, *lines[end:]])


def pin(recipe_path: Path, *, revision: str | None = None, dry_run: bool = False) -> str:
    """Pin the recipe's model from the hub; returns the unified diff (empty: nothing changed)."""
    recipe = load_recipe(recipe_path)
    commit, pins = read_pins(recipe.model, revision)
    old = recipe_path.read_text(encoding="utf-8")
    new = rewrite_model_pins(old, commit, pins, where=str(recipe_path))
    diff = "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            str(recipe_path),
            str(recipe_path),
        )
    )
    if not diff or dry_run:
        return diff
    tmp = recipe_path.with_name(f".{recipe_path.name}.pin.tmp")
    tmp.write_text(new, encoding="utf-8")
    try:
        pinned = load_recipe(tmp).model
    except ConfigError:
        tmp.unlink()
        raise
    if not pinned.pinned or pinned.revision != commit:
        tmp.unlink()
        msg = f"{recipe_path}: pinning produced an incomplete model block"
        raise ConfigError(msg)
    tmp.replace(recipe_path)
    log.info(f"pinned {recipe.model.repo_id}@{commit} in {recipe_path}")
    return diff
