"""Metadata of patches/ryzenai-sw/1.1 (no upstream needed)."""

from __future__ import annotations

import re
from pathlib import Path

from npulab.recipe import DEFAULT_RECIPE, find_recipe, load_recipe
from npulab.source import patches

SERIES_DIR = Path(__file__).resolve().parent.parent / "patches" / "ryzenai-sw" / "1.1"


def _listed() -> list[str]:
    lines = (SERIES_DIR / "series").read_text(encoding="utf-8").splitlines()
    return [s for s in (raw.split("#", 1)[0].strip() for raw in lines) if s]


def test_recipe_points_at_this_series() -> None:
    recipe = load_recipe(find_recipe(DEFAULT_RECIPE))
    assert recipe.patches.directory.resolve() == SERIES_DIR.resolve()


def test_every_listed_patch_exists_once_and_every_patch_is_listed() -> None:
    listed = _listed()
    assert listed, "empty series"
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(p.name for p in SERIES_DIR.glob("*.patch"))
    assert listed == sorted(listed), "numbered in application order"


def test_every_patch_has_a_header_and_a_full_index_diff() -> None:
    series = patches.load_series(SERIES_DIR)
    for patch in series.patches:
        assert patch.subject
        assert patch.fixes
        assert patch.upstream_status.split()[0] in patches.STATUSES
        assert re.search(r"\[.+\]", patch.upstream_status), "give the reason in brackets"
        assert patch.files
        assert all(f.startswith("example/transformers/") for f in patch.files)
        assert re.search(r"^index [0-9a-f]{40}\.\.[0-9a-f]{40} ", patch.diff, re.MULTILINE)
    # Each upstream file is touched by one patch only, so refresh of one patch is independent.
    touched = [f for p in series.patches for f in p.files]
    assert len(touched) == len(set(touched))


def test_the_modeling_patch_names_the_failure_it_fixes() -> None:
    series = patches.load_series(SERIES_DIR)
    modeling = series.get("0002-llama3-rope-modeling")
    assert "KeyError: 'type'" in modeling.fixes
    assert "ROPE_CACHE_MAX_POSITIONS = 8192" in modeling.diff
