"""Stage the real amd/RyzenAI-SW at the pinned commit (NPULAB_UPSTREAM) and apply the series."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from npulab.build import executor as build
from npulab.build import plan
from npulab.recipe import DEFAULT_RECIPE, load_recipe
from npulab.source import patches, sources
from npulab.source.gitutil import git
from npulab.source.lfs import parse_pointer
from npulab.windows.steps import TreeFacts

UPSTREAM = os.environ.get("NPULAB_UPSTREAM")
pytestmark = [
    pytest.mark.upstream,
    pytest.mark.skipif(
        not UPSTREAM,
        reason="NPULAB_UPSTREAM is not set (point it at a checkout or mirror of amd/RyzenAI-SW)",
    ),
]


def test_real_upstream_patch_only_staging(project_root: Path, isolated_cache: Path) -> None:
    recipe = load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")
    origin = sources.resolve_origin(recipe.upstream.repo_url)
    assert origin.chosen_by == "NPULAB_UPSTREAM"
    series = patches.load_series(recipe.patches.directory)
    result = build.run(recipe, plan.Options(patch_only=True), origin)
    data = result.manifest
    assert data["upstream"]["commit"] == recipe.upstream.commit
    assert data["upstream"]["tree"] == recipe.upstream.tree
    assert [p["name"] for p in data["patches"]] == [p.name for p in series.patches]
    tree = result.out / "tree"
    for patch in series.patches:
        for rel in patch.files:
            assert (tree / rel).exists() or "deleted file mode" in patch.diff, rel
    # Each patch also applies on its own check (a scratch sparse tree), and the stage is a no-op
    # when repeated.
    patches.check_series(
        series,
        sources.ensure_source(
            repo_url=recipe.upstream.repo_url,
            commit=recipe.upstream.commit,
            tag=recipe.upstream.tag,
            origin=origin,
        ),
    )
    again = build.run(recipe, plan.Options(patch_only=True), origin)
    assert not again.did_work
    # Refresh reproduces every shipped patch byte for byte from the staged tree (nothing written).
    src = sources.ensure_source(
        repo_url=recipe.upstream.repo_url,
        commit=recipe.upstream.commit,
        tag=recipe.upstream.tag,
        origin=origin,
    )
    for patch in series.patches:
        if any(f in q.files for q in series.patches if q is not patch for f in patch.files):
            continue  # files shared between patches: the diff would fold both
        diff = patches.diff_against_pinned(src, tree, patch.files)
        assert patch.header.encode() + diff == patch.path.read_bytes(), patch.name


def test_real_upstream_full_stage_names_missing_blobs(
    project_root: Path, isolated_cache: Path
) -> None:
    recipe = load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")
    origin = sources.resolve_origin(recipe.upstream.repo_url)
    src = sources.ensure_source(
        repo_url=recipe.upstream.repo_url,
        commit=recipe.upstream.commit,
        tag=recipe.upstream.tag,
        origin=origin,
        expected_tree=recipe.upstream.tree,
    )
    entries = sources.list_tree(src, [recipe.upstream.subdir])
    assert len(entries) > 700
    missing = sources.missing_files(entries)
    lib = "example/transformers/third_party/xrt-ipu/xrt/lib/xrt_phxcore_static.lib"
    if not missing:
        pytest.skip(f"{UPSTREAM} is a complete mirror: nothing to report as missing")
    assert lib in missing


def test_real_upstream_lfs_objects_for_the_windows_host(
    project_root: Path, isolated_cache: Path
) -> None:
    """Every file the 1.1 runtime loads at import time is an LFS pointer at the pinned commit and
    is in lfs.ps1's table, with the oid and size of the pointer git holds; the LFS files the
    Llama flow does not need (smoothquant act_scales, Strix DLLs) are not fetched."""
    recipe = load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")
    origin = sources.resolve_origin(recipe.upstream.repo_url)
    result = build.run(recipe, plan.Options(), origin)
    objects = {o.path: o for o in TreeFacts.read(recipe, result.out / "tree").lfs_objects}
    assert set(recipe.upstream.lfs.required) <= set(objects)
    assert all(objects[p].required for p in recipe.upstream.lfs.required)
    assert not [p for p in objects if "smoothquant" in p or "/dll/stx/" in p]
    assert any("/dll/phx/" in p for p in objects)
    src = sources.ensure_source(
        repo_url=recipe.upstream.repo_url,
        commit=recipe.upstream.commit,
        tag=recipe.upstream.tag,
        origin=origin,
    )
    for rel, obj in objects.items():
        blob = git("cat-file", "blob", f"{recipe.upstream.commit}:{rel}", git_dir=src.cache)
        assert parse_pointer(blob.stdout) == (obj.oid, obj.size), rel
    script = (result.out / "scripts" / "lfs.ps1").read_text()
    for obj in objects.values():
        assert f"Oid = '{obj.oid}'; Size = [long]{obj.size}" in script
