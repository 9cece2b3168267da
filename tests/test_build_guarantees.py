"""Issue 15 findings 1, 2, 5, 6: locks, a cache entry vouched for by its marker, the up-to-date
check by tree hash, and no scratch left behind. Real git against a temp upstream."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from npulab.build import executor as build
from npulab.build import plan
from npulab.errors import SourceError
from npulab.recipe import Recipe
from npulab.source import dirlock, patches, sources
from tests import test_build
from tests.gitrepo import git, make_patch
from tests.test_build import MODELING

staged = test_build.staged  # the fixture: a temp upstream, a one-patch series, a recipe

Staged = tuple[Path, Recipe, sources.Origin]


def _tree_hash_of_dir(cache: Path, tree: Path, tmp: Path) -> str:
    """What git says ``tree`` holds (a fresh index, not npulab's)."""
    env = {**os.environ, "GIT_DIR": str(cache), "GIT_WORK_TREE": str(tree),
           "GIT_INDEX_FILE": str(tmp / "check.index")}  # fmt: skip
    subprocess.run(["git", "add", "-A", "-f", "."], cwd=tree, env=env, check=True)
    done = subprocess.run(["git", "write-tree"], cwd=tree, env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip()


@pytest.mark.integration
def test_a_held_build_directory_is_refused_with_no_wait_and_waited_for_otherwise(
    staged: Staged, capsys: pytest.CaptureFixture[str]
) -> None:
    _up, recipe, origin = staged
    out = build.output_dir(recipe)
    with dirlock.locked(out, "build"):
        with pytest.raises(SourceError, match="is in use by another build") as err:
            build.run(recipe, plan.Options(), origin, wait=False)
        assert f"pid {os.getpid()}" in str(err.value)
        assert not (out / "tree").exists()
        done: list[build.Result] = []
        waiter = threading.Thread(
            target=lambda: done.append(build.run(recipe, plan.Options(), origin))
        )
        waiter.start()
        time.sleep(0.5)
        assert not done  # still waiting for us
    waiter.join(timeout=60)
    assert done
    assert done[0].steps["patch"] == "done"
    err_text = capsys.readouterr().err
    assert f"Blocking waiting for file lock on build directory {out}" in err_text
    assert err_text.count("Blocking waiting") == 1


@pytest.mark.integration
def test_manifest_naming_another_series_than_tree_is_never_verified(
    staged: Staged, tmp_path: Path
) -> None:
    """The end state finding 1 reached by a race: manifest.json from series A, tree/ from B."""
    up, recipe, origin = staged
    first = build.run(recipe, plan.Options(), origin)
    manifest_a = (first.out / "manifest.json").read_text()
    series = recipe.patches.directory
    (series / "0001-five.patch").write_text(
        make_patch(up, recipe.upstream.commit, MODELING, "line 6\n", "line six\n")
    )
    build.run(recipe, plan.Options(), origin)
    assert "line six" in (first.out / "tree" / MODELING).read_text()
    # Back to series A, with A's manifest in place as the race left it.
    (series / "0001-five.patch").write_text(
        make_patch(up, recipe.upstream.commit, MODELING, "line 5\n", "line five\n")
    )
    (first.out / "manifest.json").write_text(manifest_a)
    again = build.run(recipe, plan.Options(), origin)
    assert again.steps["patch"] == "done"
    text = (first.out / "tree" / MODELING).read_text()
    assert "line five" in text
    assert "line six" not in text
    recorded = json.loads((first.out / "manifest.json").read_text())["staged"]["tree"]
    assert recorded == _tree_hash_of_dir(
        again.manifest["upstream"]["cache"] and Path(again.manifest["upstream"]["cache"]),
        first.out / "tree",
        tmp_path,
    )


@pytest.mark.integration
def test_a_cache_entry_without_its_marker_is_fetched_again(
    staged: Staged, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding 2's poisoned cache: the commit object is there (has_commit true), its trees are
    not, no marker vouches for it (a kill -9 during the cold fetch)."""
    up, recipe, origin = staged
    commit = recipe.upstream.commit
    cache = sources.cache_dir_for(recipe.upstream.repo_url)
    cache.parent.mkdir(parents=True)
    git(cache.parent, "init", "-q", "--bare", str(cache))
    pack = cache / "objects" / "pack"
    pack.mkdir(parents=True, exist_ok=True)
    git(up, "pack-objects", "-q", str(pack / "partial"), stdin=commit + "\n")
    assert sources.has_commit(cache, commit)
    result = build.run(recipe, plan.Options(), origin)
    assert result.steps["patch"] == "done"
    assert "has no completion marker" in capsys.readouterr().err
    assert (cache / "npulab-complete" / commit).is_file()


@pytest.mark.integration
def test_scratch_of_killed_builds_is_swept_under_the_lock(
    staged: Staged, capsys: pytest.CaptureFixture[str]
) -> None:
    _up, recipe, origin = staged
    out = build.run(recipe, plan.Options(), origin).out
    for name in (".tree.new-abc123", ".tree.old-4242", ".scripts.new-x", ".scripts.old-77"):
        (out / name / "deep").mkdir(parents=True)
        (out / name / "deep" / "blob").write_bytes(b"x" * 1000)
    (out / ".manifest.json.tmpq").write_text("{")
    build.run(recipe, plan.Options(), origin)
    assert sorted(p.name for p in out.iterdir()) == [".npulab", "manifest.json", "scripts", "tree"]
    assert "swept 5 leftover(s) of an interrupted build" in capsys.readouterr().err


def test_a_failed_swap_puts_the_previous_result_back(tmp_path: Path) -> None:
    dest = tmp_path / "scripts"
    dest.mkdir()
    (dest / "keep").write_text("previous")
    with pytest.raises(FileNotFoundError):
        patches.promote(tmp_path / "vanished-scratch", dest)
    assert (dest / "keep").read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["scripts"]


def test_a_lock_of_a_dead_process_is_taken_over_and_a_live_one_is_not(tmp_path: Path) -> None:
    import socket

    path = tmp_path / ".npulab" / "build.lock"
    path.parent.mkdir()
    path.write_text(f"{socket.gethostname()} pid 999999999 since 2026-12-08T00:00:00Z\n")
    with dirlock.locked(tmp_path, "build") as held:
        assert f"pid {os.getpid()}" in held.read_text()
        assert dirlock.is_held(tmp_path, "build")
    assert not path.exists()
    path.write_text("")  # created, never written (killed in between), long ago
    old = time.time() - 60
    os.utime(path, (old, old))
    with dirlock.locked(tmp_path, "build"):
        pass
    shutil.rmtree(tmp_path / ".npulab")
