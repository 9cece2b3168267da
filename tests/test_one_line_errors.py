"""Issue 15 findings 7-8: what the operating system refuses is one line (path, the system's
words, the step, the fixing command), never a traceback; and diagnoses say what happened."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

from invoke_tasks import build as build_tasks
from invoke_tasks import ci as ci_tasks
from invoke_tasks import patches as patch_tasks
from invoke_tasks import smoke as smoke_tasks
from invoke_tasks._common import fails_cleanly
from npulab import log
from npulab.build import executor as build
from npulab.build import plan
from npulab.errors import SourceError, SystemFailure
from npulab.source import sources
from tests import test_build
from tests.gitrepo import make_upstream
from tests.test_smoke_tasks import tiny_recipe

staged = test_build.staged


def _one_line(err: pytest.ExceptionInfo[Exit]) -> str:
    text = str(err.value.message)
    first, _, rest = text.partition("\n")
    assert first.startswith("error: ")
    assert "Traceback" not in text
    assert rest == "" or rest.startswith("  fix: ")
    return text


def test_an_oserror_becomes_one_line_with_path_words_step_and_fix() -> None:
    @fails_cleanly
    def task() -> None:
        with log.step("patch: stage the tree"):
            raise OSError(errno.ENOSPC, "No space left on device", "/b/r/tree/x")

    with pytest.raises(Exit) as err:
        task()
    text = _one_line(err)
    assert text.startswith("error: patch: cannot use /b/r/tree/x: No space left on device")
    assert "df -h" in text
    assert err.value.code == SystemFailure.exit_code

    @fails_cleanly
    def denied() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/b")

    with pytest.raises(Exit) as err:
        denied()
    assert "cannot use /b: Permission denied" in _one_line(err)
    assert "NPULAB_BUILD_DIR" in str(err.value.message)


@pytest.fixture
def small_mount(tmp_path: Path) -> Iterator[Any]:
    """Mount a tmpfs (root only; the suite runs as root here and in CI)."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _build_task(recipe: Any, origin: sources.Origin) -> None:
    build_tasks.build(Context(), recipe=recipe.source, source=origin.location)


@pytest.mark.integration
def test_a_full_disk_says_no_space_left(
    staged: Any, small_mount: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _up, _recipe, _origin = staged
    big = tmp_path / "bigup"
    files = {"example/transformers/models/llama2/modeling_llama_amd.py":
             "".join(f"line {i}\n" for i in range(1, 41)),
             "example/transformers/weights.bin": "w" * 3_000_000}  # fmt: skip
    make_upstream(big, files)
    commit = subprocess.run(["git", "-C", str(big), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    recipe_path = Path(_recipe.source)
    text = recipe_path.read_text().replace(_recipe.upstream.commit, commit)
    text = "\n".join(line for line in text.splitlines() if "tree:" not in line) + "\n"
    recipe_path.write_text(text)
    full = small_mount("full", "size=1m")
    monkeypatch.setenv("NPULAB_BUILD_DIR", str(full))
    with pytest.raises(Exit) as err:
        build_tasks.build(Context(), recipe=str(recipe_path), source=str(big))
    text = _one_line(err)
    assert "No space left on device" in text
    assert "df -h" in text
    assert text.count("unable to write") <= 1


@pytest.mark.integration
def test_a_read_only_build_dir_is_one_line(
    staged: Any, small_mount: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _up, recipe, origin = staged
    monkeypatch.setenv("NPULAB_BUILD_DIR", str(small_mount("ro", "ro,size=1m")))
    with pytest.raises(Exit) as err:
        _build_task(recipe, origin)
    text = _one_line(err)
    assert "Read-only file system" in text
    assert "NPULAB_BUILD_DIR" in text


@pytest.mark.integration
def test_a_cache_path_that_is_a_file_is_one_line(
    staged: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _up, recipe, origin = staged
    blocker = tmp_path / "cachefile"
    blocker.write_text("not a directory")
    monkeypatch.setenv("NPULAB_CACHE", str(blocker))
    with pytest.raises(Exit) as err:
        _build_task(recipe, origin)
    text = _one_line(err)
    assert str(blocker) in text
    assert "Not a directory" in text or "File exists" in text


@pytest.mark.integration
def test_a_non_git_source_is_named_as_such(staged: Any, tmp_path: Path) -> None:
    _up, recipe, _origin = staged
    plain = tmp_path / "plain"
    plain.mkdir()
    origin = sources.resolve_origin(recipe.upstream.repo_url, source=plain, environ={})
    with pytest.raises(SourceError, match="is not a git repository") as err:
        build.run(recipe, plan.Options(), origin)
    assert "fetch --tags" not in str(err.value)


@pytest.mark.integration
def test_a_stale_tree_pin_is_not_called_a_corrupt_cache(staged: Any, tmp_path: Path) -> None:
    _up, recipe, origin = staged
    path = Path(recipe.source)
    path.write_text(path.read_text().replace(recipe.upstream.tree, "f" * 40))
    from npulab.recipe import load_recipe

    with pytest.raises(SourceError) as err:
        build.run(load_recipe(path), plan.Options(), origin)
    text = str(err.value)
    assert "corrupt" not in text
    assert "rm -rf" not in text
    assert f"upstream.tree: {recipe.upstream.tree}" in text


def test_ci_report_history_at_a_binary_file_or_a_directory(tmp_path: Path) -> None:
    binary = tmp_path / "h.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    for history in (binary, tmp_path):
        with pytest.raises(Exit) as err:
            ci_tasks.report(Context(), reports=str(tmp_path / "none"), history=str(history),
                            out=str(tmp_path / "site"))  # fmt: skip
        assert "not a history file" in _one_line(err)


def test_ci_report_without_arguments_writes_no_tracked_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NPULAB_BUILD_DIR", str(tmp_path / "build"))
    with contextlib.suppress(Exit):
        ci_tasks.report(Context(), report_only=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]
    assert (tmp_path / "build" / "ci" / "history" / "history.jsonl").is_file()


def test_patches_refresh_with_a_missing_tree(tmp_path: Path, project_root: Path) -> None:
    recipe = str(project_root / "recipes/ryzenai-sw-1.1-llama3.1.yaml")
    with pytest.raises(Exit) as err:
        patch_tasks.refresh(Context(), patch="0001", tree=str(tmp_path / "gone"), recipe=recipe)
    text = _one_line(err)
    assert f"--tree {tmp_path / 'gone'}: no such directory" in text
    assert "invoke build --patch-only" in text


@pytest.mark.integration
def test_smoke_and_chat_with_a_python_that_does_not_exist(
    project_root: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    recipe = tiny_recipe(project_root, tmp_path)
    for task in (smoke_tasks.smoke, smoke_tasks.chat):
        with pytest.raises(Exit) as err:
            task(Context(), recipe=str(recipe), backend="cpu", model_dir="/m",
                 python="/nonexistent/python")  # fmt: skip
        assert "cannot run /nonexistent/python: it does not exist" in str(err.value.message)
        assert "Traceback" not in str(err.value.message)


@pytest.mark.integration
def test_an_offset_hunk_is_refused_and_an_empty_series_warned(
    staged: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from npulab.errors import PatchError
    from npulab.source import patches
    from tests.gitrepo import make_patch, write_series

    up, recipe, origin = staged
    modeling = test_build.MODELING
    text = make_patch(up, recipe.upstream.commit, modeling, "line 20\n", "line twenty\n")
    # The same change, its hunk header moved two lines away: git alone would apply it.
    moved = text.replace("@@ -17,7 +17,7 @@", "@@ -15,7 +15,7 @@")
    assert moved != text
    series_dir = recipe.patches.directory
    (series_dir / "0001-five.patch").write_text(moved)
    src = sources.ensure_source(repo_url=recipe.upstream.repo_url, commit=recipe.upstream.commit,
                                tag="v1.1", origin=origin)  # fmt: skip
    with pytest.raises(PatchError, match=r"does not apply exactly.*offset 2"):
        patches.check_series(patches.load_series(series_dir), src)
    empty = series_dir.parent / "empty"
    write_series(empty, {})
    patches.check_series(patches.load_series(empty), src)
    assert "series lists no patch" in capsys.readouterr().err
