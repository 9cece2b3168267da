"""Session fixtures for `upstream` tests: the pinned amd/RyzenAI-SW source and our patched files.

Skipped with a reason when NPULAB_UPSTREAM is unset. The files the series touches are checked out
of the pinned commit (issue 2's source cache and patch engine) into a session temp dir, once
unpatched and once with the whole series applied.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from npulab import paths
from npulab.recipe import DEFAULT_RECIPE, Recipe, find_recipe, load_recipe
from npulab.source import patches, sources


@dataclass(frozen=True)
class UpstreamTrees:
    recipe: Recipe
    source: sources.Source
    series: patches.Series
    pristine: Path
    patched: Path


@pytest.fixture(scope="session")
def upstream_trees(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamTrees]:
    mirror = os.environ.get(sources.ENV_VAR)
    if not mirror:
        pytest.skip("NPULAB_UPSTREAM is unset (point it at a checkout or mirror of amd/RyzenAI-SW)")
    recipe = load_recipe(find_recipe(DEFAULT_RECIPE))
    series = patches.load_series(paths.patches_dir() / "ryzenai-sw" / "1.1")
    base = tmp_path_factory.mktemp("upstream")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NPULAB_CACHE", str(base / "cache"))
        origin = sources.resolve_origin(recipe.upstream.repo_url, source=mirror)
        source = sources.ensure_source(
            repo_url=recipe.upstream.repo_url,
            commit=recipe.upstream.commit,
            tag=recipe.upstream.tag,
            origin=origin,
        )
        entries = sources.list_tree(source, series.files)
        pristine, patched = base / "pristine", base / "patched"
        sources.checkout(source, entries, pristine)
        sources.checkout(source, entries, patched)
        patches.apply_series(series, patched, source)
        yield UpstreamTrees(recipe, source, series, pristine, patched)
