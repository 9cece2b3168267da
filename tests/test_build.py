"""`invoke build` planning (pure) and execution against a temporary upstream and series."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from npulab import paths
from npulab.build import executor as build
from npulab.build import plan, workflow
from npulab.build.runners import RUNNERS
from npulab.errors import BuildStepError, PatchError, SourceError
from npulab.recipe import DEFAULT_RECIPE, Recipe, load_recipe
from npulab.source import sources
from npulab.windows.steps import WIN_STEPS
from tests.gitrepo import (
    LFS_CONTENT,
    LFS_POINTER,
    drop_blob,
    git,
    make_patch,
    make_upstream,
    write_series,
)
from tests.pwsh import string_values

MODELING = "example/transformers/models/llama2/modeling_llama_amd.py"
DLL = "example/transformers/third_party/lib/tvm_ipu.dll"


def _recipe(tmp_path: Path, project_root: Path, **upstream: Any) -> Path:
    data = yaml.safe_load((project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml").read_text())
    data["upstream"].update(upstream)
    data["upstream"]["lfs"]["required"] = [DLL]
    data["patches"] = {"component": "test", "version": "1"}
    path = tmp_path / "root" / "recipes" / "t.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_plan_orders_staging_steps(project_root: Path) -> None:
    recipe = load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")
    steps = plan.plan(recipe, plan.Options())
    assert [s.name for s in steps] == ["fetch", "verify", "patch", "render", "manifest"]
    assert "series" in steps[2].inputs
    assert "step:patch" in steps[3].inputs
    assert "example/transformers" in steps[2].description
    only = plan.plan(recipe, plan.Options(patch_only=True))
    assert "files the patch series touches" in only[2].description
    assert plan.staged_prefixes(recipe, plan.Options(patch_only=True), ["a/b"]) == ("a/b",)


def test_windows_steps_come_from_the_records(project_root: Path) -> None:
    """The plan's Windows part is WIN_STEPS in order, between render and manifest; every kind it
    names has a runner in the one wiring table."""
    recipe = load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")
    steps = plan.plan(recipe, plan.Options(target="windows"))
    names = [s.name for s in steps]
    assert names == [
        "fetch",
        "verify",
        "patch",
        "render",
        *[w.name for w in WIN_STEPS],
        "manifest",
    ]
    assert not [s for s in plan.plan(recipe, plan.Options(target="stage")) if s.where != "local"]
    remote = plan.plan(recipe, plan.Options(target="windows", extra={"host": "phx-01"}))
    assert {s.kind for s in remote} <= set(RUNNERS)
    assert plan.resolve_target("auto", os_name="nt") == "windows"
    assert plan.resolve_target("auto", os_name="posix") == "stage"


def test_dry_run_touches_nothing(
    tmp_path: Path, project_root: Path, isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mirror").mkdir()
    result = workflow.run_build(DEFAULT_RECIPE, source=str(tmp_path / "mirror"), dry_run=True)
    assert result is None
    out = capsys.readouterr().out
    assert "1. fetch" in out
    assert "5. manifest" in out
    assert str(tmp_path / "mirror") in out
    assert not isolated_cache.exists()
    assert not (tmp_path / "build").exists()


@pytest.fixture
def staged(
    tmp_path: Path, project_root: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Recipe, sources.Origin]:
    up = tmp_path / "up"
    commit = make_upstream(up)
    tree = git(up, "rev-parse", "HEAD^{tree}")
    monkeypatch.setenv("NPULAB_ROOT", str(tmp_path / "root"))
    patch = make_patch(up, commit, MODELING, "line 5\n", "line five\n")
    write_series(tmp_path / "root/patches/test/1", {"0001-five.patch": patch})
    recipe = load_recipe(_recipe(tmp_path, project_root, commit=commit, tree=tree))
    origin = sources.resolve_origin(recipe.upstream.repo_url, source=up, environ={})
    return up, recipe, origin


@pytest.mark.integration
def test_build_then_incremental(staged: tuple[Path, Recipe, sources.Origin]) -> None:
    up, recipe, origin = staged
    first = build.run(recipe, plan.Options(), origin)
    assert first.steps == dict.fromkeys(["fetch", "verify", "patch", "render", "manifest"], "done")
    out = first.out
    assert "line five" in (out / "tree" / MODELING).read_text()
    data = json.loads((out / "manifest.json").read_text())
    assert data["upstream"]["commit"] == recipe.upstream.commit
    assert data["recipe"]["digest"] == recipe.digest
    assert data["patches"][0]["sha256"] == recipe_patch_sha(recipe)
    assert len(data["staged"]["tree"]) == 40
    assert data["tools"]["git"]
    assert {"path": DLL, "reason": "Git LFS pointer"} in data["not_staged"]

    second = build.run(recipe, plan.Options(), origin)
    assert not second.did_work
    assert second.steps["patch"] == second.steps["render"] == "up-to-date"
    assert "nothing changed" in workflow.summary(second)

    # A hand edit in tree/ is noticed and never silently undone (issue 15 finding 5): refused
    # with the file and the ways on; --discard-edits keeps a copy and restages.
    (out / "tree" / MODELING).write_text("tampered\n")
    with pytest.raises(BuildStepError, match=MODELING) as refused:
        build.run(recipe, plan.Options(), origin)
    assert "patches.refresh" in str(refused.value)
    assert "--discard-edits" in str(refused.value)
    assert (out / "tree" / MODELING).read_text() == "tampered\n"
    third = build.run(recipe, plan.Options(), origin, discard_edits=True)
    assert third.steps["patch"] == "done"
    assert "line five" in (out / "tree" / MODELING).read_text()
    (kept,) = out.glob("edits-*")
    assert (kept / MODELING).read_text() == "tampered\n"

    # A changed patch rebuilds the patch step and what depends on it.
    series_dir = recipe.patches.directory
    (series_dir / "0001-five.patch").write_text(
        make_patch(up, recipe.upstream.commit, MODELING, "line 6\n", "line six\n")
    )
    fourth = build.run(recipe, plan.Options(), origin)
    assert fourth.steps["patch"] == fourth.steps["render"] == "done"
    text = (out / "tree" / MODELING).read_text()
    assert "line six" in text
    assert "line five" not in text


def recipe_patch_sha(recipe: Recipe) -> str:
    import hashlib

    return hashlib.sha256((recipe.patches.directory / "0001-five.patch").read_bytes()).hexdigest()


@pytest.mark.integration
def test_changed_recipe_rerenders_only(
    tmp_path: Path, project_root: Path, staged: tuple[Path, Recipe, sources.Origin]
) -> None:
    _up, recipe, origin = staged
    build.run(recipe, plan.Options(), origin)
    path = Path(recipe.source)
    path.write_text(path.read_text().replace("seed: 1234", "seed: 99"))
    changed = load_recipe(path)
    again = build.run(changed, plan.Options(), origin)
    assert again.steps["patch"] == "up-to-date"
    assert again.steps["render"] == "done"


@pytest.mark.integration
def test_failed_patch_keeps_previous_tree(staged: tuple[Path, Recipe, sources.Origin]) -> None:
    _up, recipe, origin = staged
    result = build.run(recipe, plan.Options(), origin)
    patch_file = recipe.patches.directory / "0001-five.patch"
    patch_file.write_text(patch_file.read_text().replace(" line 4\n", " line four\n"))
    with pytest.raises(PatchError, match=r"0001-five\.patch"):
        build.run(recipe, plan.Options(), origin)
    assert "line five" in (result.out / "tree" / MODELING).read_text()
    data = json.loads((result.out / "manifest.json").read_text())
    assert data["last_failure"]["steps"]["patch"]["status"] == "failed"
    assert data["steps"]["patch"]["status"] == "done"  # the good build's record stays


@pytest.mark.integration
def test_patch_only_and_windows_refusal(staged: tuple[Path, Recipe, sources.Origin]) -> None:
    up, recipe, origin = staged
    drop_blob(up, "example/transformers/ops/cpp/big.lib")
    only = build.run(recipe, plan.Options(patch_only=True), origin)
    files = sorted(str(p.relative_to(only.out / "tree")) for p in (only.out / "tree").rglob("*"))
    assert MODELING in files
    assert "example/transformers/setup.bat" not in files
    full = build.run(recipe, plan.Options(), origin)
    missing = {"path": "example/transformers/ops/cpp/big.lib", "reason": f"missing from {up}"}
    assert missing in full.manifest["not_staged"]
    with pytest.raises(SourceError, match=r"big\.lib"):
        build.run(recipe, plan.Options(target="windows"), origin)


@pytest.mark.integration
def test_series_order_is_an_input(staged: tuple[Path, Recipe, sources.Origin]) -> None:
    up, recipe, origin = staged
    extra = make_patch(up, recipe.upstream.commit, "README.md", "upstream", "the upstream")
    series_dir = recipe.patches.directory
    (series_dir / "0002-readme.patch").write_text(extra)
    (series_dir / "series").write_text("0001-five.patch\n0002-readme.patch\n")
    build.run(recipe, plan.Options(patch_only=True), origin)
    again = build.run(recipe, plan.Options(patch_only=True), origin)
    assert again.steps["patch"] == "up-to-date"
    (series_dir / "series").write_text("0002-readme.patch\n0001-five.patch\n")
    swapped = build.run(recipe, plan.Options(patch_only=True), origin)
    assert swapped.steps["patch"] == "done"
    assert [p["name"] for p in swapped.manifest["patches"]] == [
        "0002-readme.patch",
        "0001-five.patch",
    ]


@pytest.mark.integration
def test_patch_only_with_empty_series_stages_nothing(
    staged: tuple[Path, Recipe, sources.Origin],
) -> None:
    _up, recipe, origin = staged
    (recipe.patches.directory / "0001-five.patch").unlink()
    (recipe.patches.directory / "series").write_text("# empty\n")
    result = build.run(recipe, plan.Options(patch_only=True), origin)
    assert list((result.out / "tree").iterdir()) == []
    assert result.manifest["staged"]["files"] == 0


@pytest.mark.integration
def test_lfs_pointers_are_listed_for_the_windows_host(
    staged: tuple[Path, Recipe, sources.Origin],
) -> None:
    """The staged tree keeps the pointer; lfs.ps1 carries its oid and size for the host. Once
    a Windows build on this machine filled it with exactly that object, the tree still counts as
    intact; any other content is a modification: refused, or staged again with --discard-edits."""
    _up, recipe, origin = staged
    first = build.run(recipe, plan.Options(), origin)
    dll = first.out / "tree" / DLL
    assert dll.read_text() == LFS_POINTER
    lfs_script = (first.out / "scripts" / "lfs.ps1").read_text()
    oid = hashlib.sha256(LFS_CONTENT).hexdigest()
    assert f"Oid = '{oid}'; Size = [long]{len(LFS_CONTENT)}; Required = $true" in lfs_script
    assert DLL.replace("/", "\\") in string_values(lfs_script)
    dll.write_bytes(LFS_CONTENT)
    again = build.run(recipe, plan.Options(), origin)
    assert again.steps["patch"] == "up-to-date"
    assert dll.read_bytes() == LFS_CONTENT
    dll.write_bytes(LFS_CONTENT[:-1] + b"!")
    with pytest.raises(BuildStepError, match="hand-edited"):
        build.run(recipe, plan.Options(), origin)
    third = build.run(recipe, plan.Options(), origin, discard_edits=True)
    assert third.steps["patch"] == "done"
    assert dll.read_text() == LFS_POINTER


@pytest.mark.integration
def test_changed_lock_content_renders_again(staged: tuple[Path, Recipe, sources.Origin]) -> None:
    """scripts/ carries a copy of the lock and pip-lock.cmd its digest: a lock regenerated by
    `invoke lock` (same path, same recipe) must not leave the old ones there."""
    _up, recipe, origin = staged
    lock = paths.project_root() / recipe.env.lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("a==1 \\\n    --hash=sha256:00\n")
    first = build.run(recipe, plan.Options(), origin)
    lock.write_text("a==2 \\\n    --hash=sha256:11\n")
    again = build.run(recipe, plan.Options(), origin)
    assert again.steps["render"] == "done"
    assert (again.out / "scripts" / lock.name).read_text() == lock.read_text()
    new_sha = hashlib.sha256(lock.read_bytes()).hexdigest()
    assert f"sha256 {new_sha}" in (first.out / "scripts" / "pip-lock.cmd").read_text()


@pytest.mark.integration
def test_a_hand_edited_script_is_noticed_and_rendered_again(
    staged: tuple[Path, Recipe, sources.Origin],
) -> None:
    _up, recipe, origin = staged
    out = build.run(recipe, plan.Options(), origin).out
    rendered = {p: p.read_bytes() for p in sorted((out / "scripts").rglob("*")) if p.is_file()}
    assert rendered
    edited = next(iter(rendered))
    edited.write_bytes(rendered[edited] + b"\r\nrem a hand edit\r\n")
    again = build.run(recipe, plan.Options(), origin)
    assert again.steps["render"] == "done"
    assert again.steps["patch"] == "up-to-date"
    assert {p: p.read_bytes() for p in rendered} == rendered
    extra = out / "scripts" / "stray.cmd"
    extra.write_text("echo stray\r\n")
    assert build.run(recipe, plan.Options(), origin).steps["render"] == "done"
    assert not extra.exists()


@pytest.mark.integration
def test_the_manifest_on_disk_is_complete_after_a_build(
    staged: tuple[Path, Recipe, sources.Origin],
) -> None:
    _up, recipe, origin = staged
    for _run in range(2):  # a first build and one with nothing to do
        result = build.run(recipe, plan.Options(), origin)
        data = json.loads((result.out / "manifest.json").read_text())
        assert set(data["steps"]) == set(result.steps)
        assert {name: s["status"] for name, s in data["steps"].items()} == result.steps
        assert data["steps"]["manifest"]["status"] == "done"
        assert data["started_at"] <= data["finished_at"]
        assert data["steps"]["manifest"]["finished_at"] == data["finished_at"]
        assert any("needs a Windows host" in r for r in data["remaining"])
        assert data["staged"]["tree"]
