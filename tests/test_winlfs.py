"""LFS on the Windows host: which pointers the step lists, its script, and the fetch mechanism
(the same git commands lfs.ps1 runs, with the real git-lfs client against a local server)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from npulab.recipe import DEFAULT_RECIPE, Lfs, Recipe, load_recipe
from npulab.testing.lfs_server import LfsServer
from npulab.windows import lfs as winlfs
from npulab.windows import steps as winsteps
from npulab.windows.lfs import LfsObject, include_regex, pointer_objects
from tests.pwsh import bad_nodes, string_values

INCLUDED = "example/transformers/third_party/lib/tvm_ipu.dll"
DLL_PHX = "example/transformers/dll/phx/qlinear/libGemm.dll"
NOT_INCLUDED = "example/transformers/ext/smoothquant/act_scales/opt.pt"
REAL_FILE = "example/transformers/third_party/lib/real.dll"


@pytest.fixture
def recipe(project_root: Path) -> Recipe:
    return load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")


def pointer(data: bytes) -> str:
    return LfsObject(
        path="", oid=hashlib.sha256(data).hexdigest(), size=len(data), required=False
    ).pointer_text()


def make_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)
    return root


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("a/**", "a/b/c.dll", True),
        ("a/**", "a/c.dll", True),
        ("a/**", "ab/c.dll", False),
        ("a/*.dll", "a/c.dll", True),
        ("a/*.dll", "a/b/c.dll", False),
        ("a/?.dll", "a/c.dll", True),
        ("a/b", "a/b/c.dll", True),
        ("a.b/**", "axb/c", False),
        ("a/**/x.pt", "a/b/c/x.pt", True),
    ],
)
def test_include_patterns(pattern: str, path: str, hit: bool) -> None:
    assert bool(include_regex(pattern).fullmatch(path)) is hit


def test_pointer_objects_lists_included_and_required(recipe: Recipe, tmp_path: Path) -> None:
    required_elsewhere = "example/transformers/other/needed.dll"
    tree = make_tree(
        tmp_path,
        {
            INCLUDED: pointer(b"tvm"),
            DLL_PHX: pointer(b"gemm"),
            NOT_INCLUDED: pointer(b"scales"),
            REAL_FILE: b"MZ real content",
            required_elsewhere: pointer(b"needed"),
        },
    )
    r = dataclasses.replace(
        recipe,
        upstream=dataclasses.replace(
            recipe.upstream,
            lfs=Lfs(required=(INCLUDED, required_elsewhere), include=recipe.upstream.lfs.include),
        ),
    )
    objects = pointer_objects(tree, r)
    assert [o.path for o in objects] == [DLL_PHX, required_elsewhere, INCLUDED]
    assert [o.required for o in objects] == [False, True, True]
    assert objects[2].oid == hashlib.sha256(b"tvm").hexdigest()
    assert objects[2].size == 3


def _lfs_ps1(recipe: Recipe, objects: list[LfsObject]) -> str:
    """lfs.ps1 as the render step writes it for a tree holding ``objects``."""
    win_lfs = winsteps.STEPS_BY_NAME["win-lfs"]
    return winsteps.render_step(win_lfs, recipe, winsteps.TreeFacts(lfs_objects=tuple(objects)))


def test_lfs_script_table_and_rules(recipe: Recipe) -> None:
    hostile = "example/it's $(rm -rf)/`x`/a&b %PATH%.dll"
    objects = [
        LfsObject(path=INCLUDED, oid="a" * 64, size=12, required=True),
        LfsObject(path=hostile, oid="b" * 64, size=7, required=False),
    ]
    text = _lfs_ps1(recipe, objects)
    assert bad_nodes(text) == []
    values = string_values(text)
    assert INCLUDED.replace("/", "\\") in values
    assert hostile.replace("/", "\\") in values  # the literal round-trips exactly
    assert recipe.upstream.repo_url in values
    assert "Size = [long]12; Required = $true" in text
    assert "-ArgumentList 'lfs', 'smudge'" in text
    assert f"exit {winlfs.EXIT_NOT_FETCHED}" in text
    assert text.endswith("exit 0\r\n")
    assert "\n" not in text.replace("\r\n", "")
    empty = _lfs_ps1(recipe, [])
    assert "$objects = @()" in empty
    assert bad_nodes(empty) == []
    with pytest.raises(ValueError, match="not a sha256"):
        _lfs_ps1(recipe, [LfsObject(path="x", oid="'; evil", size=1, required=False)])


def _git(*args: str, cwd: Path, stdin: Path | None = None, stdout: Path | None = None) -> int:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"}
    with (
        stdin.open("rb") if stdin else open(os.devnull, "rb") as i,
        stdout.open("wb") if stdout else open(os.devnull, "wb") as o,
    ):
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            stdin=i,
            stdout=o,
            stderr=subprocess.PIPE,
            check=False,
            env=env,
            timeout=60,
        ).returncode


@pytest.mark.integration
@pytest.mark.skipif(
    shutil.which("git-lfs") is None, reason="git-lfs is not installed (apt install git-lfs)"
)
def test_smudge_by_oid_fetches_verifies_and_caches(tmp_path: Path) -> None:
    """What lfs.ps1 does per object, with the same git arguments: a scratch repository with
    only ``remote.origin.url`` fetches by oid, no commit needed; its store is the cache."""
    data = os.urandom(200_000)
    with LfsServer({"dll": data}) as server:
        repo = tmp_path / "lfs-repo"
        assert _git("init", "-q", str(repo), cwd=tmp_path) == 0
        assert _git("config", "remote.origin.url", server.repo_url("amd/RyzenAI-SW"), cwd=repo) == 0
        obj = LfsObject(
            path="x.dll", oid=hashlib.sha256(data).hexdigest(), size=len(data), required=True
        )
        ptr = tmp_path / "x.npulab-pointer"
        ptr.write_text(obj.pointer_text(), encoding="utf-8")
        part = tmp_path / "x.npulab-part"
        assert _git(*winlfs.SMUDGE_ARGS, cwd=repo, stdin=ptr, stdout=part) == 0
        assert part.read_bytes() == data
        assert server.downloads == 1
        # Unknown object: the server answers 404 per object; git-lfs fails, nothing is written.
        missing = LfsObject(path="y", oid="c" * 64, size=5, required=True)
        ptr.write_text(missing.pointer_text(), encoding="utf-8")
        other = tmp_path / "y.npulab-part"
        assert _git(*winlfs.SMUDGE_ARGS, cwd=repo, stdin=ptr, stdout=other) != 0
        assert other.read_bytes() != b"ccccc"
    # Server gone: the scratch repository's store answers (a re-uploaded tree costs no download).
    ptr.write_text(obj.pointer_text(), encoding="utf-8")
    again = tmp_path / "again.part"
    assert _git(*winlfs.SMUDGE_ARGS, cwd=repo, stdin=ptr, stdout=again) == 0
    assert again.read_bytes() == data


@pytest.mark.integration
@pytest.mark.skipif(
    shutil.which("git-lfs") is None, reason="git-lfs is not installed (apt install git-lfs)"
)
def test_smudge_of_corrupt_download_does_not_yield_the_object(tmp_path: Path) -> None:
    data = os.urandom(50_000)
    with LfsServer({"dll": data}) as server:
        obj = LfsObject(
            path="x", oid=hashlib.sha256(data).hexdigest(), size=len(data), required=True
        )
        server.corrupt.add(obj.oid)
        repo = tmp_path / "lfs-repo"
        _git("init", "-q", str(repo), cwd=tmp_path)
        _git("config", "remote.origin.url", server.repo_url("o/r"), cwd=repo)
        ptr = tmp_path / "p"
        ptr.write_text(obj.pointer_text(), encoding="utf-8")
        part = tmp_path / "part"
        _git(*winlfs.SMUDGE_ARGS, cwd=repo, stdin=ptr, stdout=part)
        # Whatever git-lfs did, the bytes are not the object: the script's own check refuses them.
        assert hashlib.sha256(part.read_bytes()).hexdigest() != obj.oid
