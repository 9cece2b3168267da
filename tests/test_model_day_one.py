"""Day one with the published checkpoint: the real recipe against the hub double's real listing.

The double serves the published repository's listing (npulab/model/published.py: names, sizes,
the checkpoint's LFS pointer). Only the checkpoint's bytes are a stand-in (11 GB are not served in
a test), so the recipe copy carries the stand-in's sha256 and size; everything else is the real
recipe: the small files are pinned by revision only and verified by git blob id on first fetch.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants
from invoke.context import Context
from invoke.exceptions import Exit

from invoke_tasks import model as model_tasks
from npulab.ci import drift
from npulab.errors import ConfigError, VerificationError
from npulab.model import fetch as models
from npulab.model import lock as model_lock
from npulab.model import published
from npulab.recipe import load_recipe
from npulab.smoke import config as smoke_config
from npulab.testing.hub_server import HubServer, git_blob_sha1

STAND_IN = hashlib.sha256(b"stand-in checkpoint").digest() * 4096  # 128 KiB
SMALL = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
        yield server


@pytest.fixture
def recipe(project_root: Path, tmp_path: Path) -> Path:
    """The real recipe in tmp/recipes/, its checkpoint pin swapped for the stand-in's."""
    text = (project_root / "recipes" / "ryzenai-sw-1.1-llama3.1.yaml").read_text()
    real = published.FILES[0]
    assert real.lfs_sha256 is not None
    text = text.replace(real.lfs_sha256, hashlib.sha256(STAND_IN).hexdigest())
    text = text.replace(f"size: {real.size}", f"size: {len(STAND_IN)}")
    path = tmp_path / "recipes" / "r.yaml"
    shutil.copytree(project_root / "recipes" / "passages", path.parent / "passages")
    path.write_text(text)
    return path


def fetch_task(recipe: Path, dest: Path) -> None:
    model_tasks.fetch(Context(), recipe=str(recipe), dest=str(dest))


def test_the_recipe_names_the_published_files(project_root: Path) -> None:
    model = load_recipe(project_root / "recipes" / "ryzenai-sw-1.1-llama3.1.yaml").model
    listed = {f.path: f for f in published.FILES}
    assert model.repo_id == published.REPO_ID
    assert model.revision == published.REVISION
    assert model.checkpoint == published.CHECKPOINT
    assert {f.path for f in model.files} == {published.CHECKPOINT, *SMALL}
    assert set(listed) >= {f.path for f in model.files}
    checkpoint = next(f for f in model.files if f.path == model.checkpoint)
    assert (checkpoint.sha256, checkpoint.size) == (
        listed[model.checkpoint].lfs_sha256,
        listed[model.checkpoint].size,
    )
    assert all(f.sha256 is None for f in model.files if f.path in SMALL)  # no public sha256


def test_day_one_fetch_verifies_by_blob_id_locks_and_then_is_fully_pinned(
    hub: HubServer, recipe: Path, tmp_path: Path
) -> None:
    commit = hub.add_published(checkpoint=STAND_IN)
    lock_file = model_lock.lock_path(recipe)
    assert lock_file == tmp_path / "recipes" / "locks" / "r.model-lock.json"
    with pytest.raises(ConfigError, match=r"no sha256 recorded yet for tokenizer\.json"):
        smoke_config.render(load_recipe(recipe), model_dir="m")
    fetch_task(recipe, tmp_path / "m")
    served = {p: hub.file(published.REPO_ID, commit, p) for p in SMALL}
    for path, hub_file in served.items():
        assert (tmp_path / "m" / path).read_bytes() == hub_file.data
    assert (tmp_path / "m" / published.CHECKPOINT).read_bytes() == STAND_IN
    assert [r.path for r in hub.requests if r.method == "POST"] == [
        f"/api/models/{published.REPO_ID}/paths-info/{commit}"
    ]
    lock = json.loads(lock_file.read_text())
    assert (lock["repo_id"], lock["revision"]) == (published.REPO_ID, published.REVISION)
    assert lock["files"] == {
        p: {
            "sha256": hashlib.sha256(f.data).hexdigest(),
            "size": len(f.data),
            "blob_id": git_blob_sha1(f.data),
        }
        for p, f in served.items()
    }
    # The smoke config now carries a sha256 for every file.
    cfg = smoke_config.render(load_recipe(recipe), model_dir="m")
    assert cfg["files"]["tokenizer.json"]["sha256"] == lock["files"]["tokenizer.json"]["sha256"]
    # A later fetch (a fresh machine with the committed lock) is fully pinned: no listing asked,
    # and a file that differs from the locked sha256 is refused even though the hub serves it.
    before = len(hub.requests)
    fetch_task(recipe, tmp_path / "m2")
    assert not [r for r in hub.requests[before:] if r.method == "POST"]
    hub.corrupt("special_tokens_map.json", b"x" * 312)
    with pytest.raises(Exit) as err:
        fetch_task(recipe, tmp_path / "m3")
    assert "special_tokens_map.json: sha256 mismatch" in str(err.value.message)


def test_a_tampered_small_file_is_refused_naming_both_ids(
    hub: HubServer, recipe: Path, tmp_path: Path
) -> None:
    commit = hub.add_published(checkpoint=STAND_IN)
    real = hub.file(published.REPO_ID, commit, "tokenizer_config.json")
    listed = real.blob_id
    evil = b'{"chat_template": "{{ evil }}"}'.ljust(len(real.data))  # same size, other bytes
    hub.corrupt("tokenizer_config.json", evil)
    model = load_recipe(recipe).model
    with pytest.raises(VerificationError) as err:
        models.fetch(model, dest=tmp_path / "m", lock=model_lock.lock_path(recipe))
    message = str(err.value)
    assert f"the hub lists {listed}, the file is {git_blob_sha1(evil)}" in message
    assert "tokenizer_config.json: git blob id mismatch" in message
    assert not (tmp_path / "m" / "tokenizer_config.json").exists()
    assert list((tmp_path / "m" / ".npulab" / "rejected").iterdir())
    assert not model_lock.lock_path(recipe).exists()  # nothing learned from a bad download


def test_a_lock_of_another_revision_is_not_used(
    hub: HubServer, recipe: Path, tmp_path: Path
) -> None:
    hub.add_published(checkpoint=STAND_IN)
    lock_file = model_lock.lock_path(recipe)
    stale = model_lock.ModelLock(
        published.REPO_ID, "f" * 40, {"tokenizer.json": model_lock.Entry("0" * 64, 1, None)}
    )
    model_lock.save(lock_file, stale)
    fetch_task(recipe, tmp_path / "m")  # verified by blob id again, the stale entry not applied
    lock = model_lock.load(lock_file)
    assert lock is not None
    assert lock.revision == published.REVISION
    assert set(lock.files) == set(SMALL)


def test_a_recipe_without_revision_is_refused(recipe: Path, tmp_path: Path) -> None:
    text = re.sub(r"(?m)^  revision: .*\n", "", recipe.read_text())
    recipe.write_text(text)
    with pytest.raises(Exit) as err:
        fetch_task(recipe, tmp_path / "m")
    assert err.value.code == ConfigError.exit_code
    assert "invoke model.pin" in str(err.value.message)


def test_the_double_lists_the_real_checkpoint_and_drift_compares_listings(
    hub: HubServer, project_root: Path
) -> None:
    """The real recipe, unmodified, against the double's listing-only checkpoint: no drift; a
    listing that moved (a file gone, another LFS pointer) is reported."""
    hub.add_published()
    real = load_recipe(project_root / "recipes" / "ryzenai-sw-1.1-llama3.1.yaml").model
    assert drift.check_hub(real) == []
    info = HfApi(endpoint=hub.endpoint).model_info(
        published.REPO_ID, revision=published.REVISION, files_metadata=True
    )
    siblings = {s.rfilename: s for s in info.siblings or []}
    ckpt = siblings[published.CHECKPOINT]
    assert ckpt.lfs is not None
    assert (ckpt.lfs.sha256, ckpt.size) == (published.FILES[0].lfs_sha256, 11491208228)
    assert siblings["special_tokens_map.json"].size == 312
    assert "config.json" not in siblings
    moved = [s for name, s in siblings.items() if name != "llama-3.1.png"]
    found = [str(d) for d in drift.check_listing(real, moved)]
    assert len(found) == 1
    assert "names" in found[0]
    assert "llama-3.1.png" in found[0]
