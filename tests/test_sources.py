"""Pinned source fetch and verification against temporary git repositories."""

from __future__ import annotations

from pathlib import Path

import pytest

from npulab.errors import SourceError
from npulab.source import lfs, sources
from tests.gitrepo import drop_blob, git, make_upstream

URL = "https://example.invalid/amd/RyzenAI-SW.git"
pytestmark = pytest.mark.integration


def _ensure(origin_path: Path, commit: str, tag: str = "v1.1", **kw: str) -> sources.Source:
    origin = sources.resolve_origin(URL, source=origin_path, environ={})
    return sources.ensure_source(repo_url=URL, commit=commit, tag=tag, origin=origin, **kw)


def test_fetch_verify_and_checkout(tmp_path: Path, isolated_cache: Path) -> None:
    commit = make_upstream(tmp_path / "up")
    tree = git(tmp_path / "up", "rev-parse", "HEAD^{tree}")
    src = _ensure(tmp_path / "up", commit, expected_tree=tree)
    assert src.fetched
    assert src.cache.is_relative_to(isolated_cache / "sources")
    entries = sources.list_tree(src, ["example/transformers"])
    assert {e.path for e in entries} == {
        "example/transformers/setup.bat",
        "example/transformers/models/llama2/modeling_llama_amd.py",
        "example/transformers/third_party/lib/tvm_ipu.dll",
        "example/transformers/ops/cpp/big.lib",
    }
    dest = tmp_path / "stage"
    sources.checkout(src, entries, dest)
    # byte exact: CRLF kept, no LFS smudge
    assert (dest / "example/transformers/setup.bat").read_bytes().count(b"\r\n") == 2
    assert not (dest / "demo").exists()
    # the second call finds the commit in the cache and does not fetch
    again = _ensure(tmp_path / "up", commit)
    assert not again.fetched


def test_moved_tag_is_refused_with_both_shas(tmp_path: Path, isolated_cache: Path) -> None:
    up = tmp_path / "up"
    commit = make_upstream(up)
    (up / "README.md").write_text("changed\n")
    git(up, "commit", "-qam", "later")
    git(up, "tag", "-f", "-a", "v1.1", "-m", "moved")
    moved_to = git(up, "rev-parse", "HEAD")
    with pytest.raises(SourceError, match=r"tag v1\.1 moved") as info:
        _ensure(up, commit)
    assert commit in str(info.value)
    assert moved_to in str(info.value)


def test_missing_tag_and_missing_commit(tmp_path: Path, isolated_cache: Path) -> None:
    up = tmp_path / "up"
    commit = make_upstream(up)
    with pytest.raises(SourceError, match="tag v9 does not exist"):
        _ensure(up, commit, tag="v9")
    with pytest.raises(SourceError, match=r"does not have the pinned commit 0{40}") as info:
        _ensure(up, "0" * 40)
    assert "fetch" in (info.value.hint or "")


def test_wrong_tree_is_refused(tmp_path: Path, isolated_cache: Path) -> None:
    commit = make_upstream(tmp_path / "up")
    with pytest.raises(SourceError, match=r"but the recipe pins tree 1{40}"):
        _ensure(tmp_path / "up", commit, expected_tree="1" * 40)


def test_offline_without_mirror_says_how_to_give_one(tmp_path: Path, isolated_cache: Path) -> None:
    origin = sources.resolve_origin("file:///nonexistent/RyzenAI-SW.git", environ={})
    with pytest.raises(SourceError, match="cannot fetch pinned commit") as info:
        sources.ensure_source(
            repo_url="file:///nonexistent/RyzenAI-SW.git",
            commit="a" * 40,
            tag="v1.1",
            origin=origin,
        )
    assert "--source PATH" in str(info.value)
    assert "NPULAB_UPSTREAM" in str(info.value)


def test_partial_mirror_names_missing_blob_and_lfs_pointer(
    tmp_path: Path, isolated_cache: Path
) -> None:
    up = tmp_path / "up"
    commit = make_upstream(up)
    drop_blob(up, "example/transformers/ops/cpp/big.lib")
    src = _ensure(up, commit)  # the copy works although a blob is missing
    entries = sources.list_tree(src, ["example/transformers"])
    missing = sources.missing_files(entries)
    assert missing == ["example/transformers/ops/cpp/big.lib"]
    dest = tmp_path / "stage"
    sources.checkout(src, entries, dest)
    assert not (dest / missing[0]).exists()
    assert (dest / "example/transformers/setup.bat").exists()
    required = [
        "example/transformers/third_party/lib/tvm_ipu.dll",
        "example/transformers/setup.bat",
    ]
    pointers = lfs.pointers_in_tree(dest, required)
    assert pointers == ["example/transformers/third_party/lib/tvm_ipu.dll"]
    err = sources.incomplete_source_error(missing, pointers, src)
    text = str(err)
    assert "example/transformers/ops/cpp/big.lib" in text
    assert 'git lfs pull --include "example/transformers/third_party/lib/tvm_ipu.dll"' in text


def test_resolve_origin_precedence(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    env = {"NPULAB_UPSTREAM": str(b)}
    assert sources.resolve_origin(URL, source=a, config_source=str(c), environ=env).chosen_by == (
        "--source"
    )
    got = sources.resolve_origin(URL, config_source=str(c), environ=env)
    assert (got.location, got.chosen_by) == (str(b), "NPULAB_UPSTREAM")
    assert sources.resolve_origin(URL, config_source=str(c), environ={}).location == str(c)
    assert sources.resolve_origin(URL, environ={}).location == URL
    with pytest.raises(SourceError, match="does not exist"):
        sources.resolve_origin(URL, source=tmp_path / "nope", environ={})


def test_url_origin_fetches_by_sha_and_checks_tag(tmp_path: Path, isolated_cache: Path) -> None:
    up = tmp_path / "up"
    commit = make_upstream(up)
    url = f"file://{up}"
    origin = sources.resolve_origin(url, environ={})
    assert not origin.is_local
    src = sources.ensure_source(repo_url=url, commit=commit, tag="v1.1", origin=origin)
    assert src.fetched
    assert sources.list_tree(src, ["README.md"])[0].size == len("upstream readme\n")
    (up / "README.md").write_text("changed\n")
    git(up, "commit", "-qam", "later")
    git(up, "tag", "-f", "-a", "v1.1", "-m", "moved")
    with pytest.raises(SourceError, match=r"tag v1\.1 moved"):
        sources.ensure_source(repo_url=url, commit=commit, tag="v1.1", origin=origin)


def test_lfs_content_is_taken_from_the_source_lfs_store(
    tmp_path: Path, isolated_cache: Path
) -> None:
    import hashlib

    content = b"MZ real dll bytes" * 100
    oid = hashlib.sha256(content).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n"
    up = tmp_path / "up"
    files = {"lib/real.dll": pointer, "lib/other.dll": pointer.replace(oid[:8], "0" * 8)}
    commit = make_upstream(up, files)
    store = up / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4]
    store.mkdir(parents=True)
    (store / oid).write_bytes(content)
    src = _ensure(up, commit)
    entries = sources.list_tree(src)
    assert lfs.pointer_blobs(src, entries) == ["lib/other.dll", "lib/real.dll"]
    dest = tmp_path / "stage"
    sources.checkout(src, entries, dest)
    filled = lfs.materialize_lfs(src.origin, dest, ["lib/real.dll", "lib/other.dll"])
    assert filled == ["lib/real.dll"]
    assert (dest / "lib/real.dll").read_bytes() == content
    assert lfs.pointers_in_tree(dest, ["lib/real.dll", "lib/other.dll"]) == ["lib/other.dll"]


def test_lfs_content_of_the_right_size_but_another_sha256_is_not_filled(
    tmp_path: Path, isolated_cache: Path
) -> None:
    import hashlib

    content = b"MZ real dll bytes" * 100
    oid = hashlib.sha256(content).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n"
    up = tmp_path / "up"
    commit = make_upstream(up, {"lib/real.dll": pointer})
    damaged = b"MZ real dll bytez" + content[17:]  # same size, one byte changed
    assert len(damaged) == len(content)
    store = up / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4]
    store.mkdir(parents=True)
    (store / oid).write_bytes(damaged)
    cached = isolated_cache / "lfs" / oid[:2] / oid[2:4] / oid
    cached.parent.mkdir(parents=True)
    cached.write_bytes(damaged)
    src = _ensure(up, commit)
    dest = tmp_path / "stage"
    sources.checkout(src, sources.list_tree(src), dest)
    assert lfs.materialize_lfs(src.origin, dest, ["lib/real.dll"]) == []
    assert (dest / "lib/real.dll").read_text() == pointer
    assert lfs.pointers_in_tree(dest, ["lib/real.dll"]) == ["lib/real.dll"]
