"""The patch series engine against temporary upstream repos and temporary series."""

from __future__ import annotations

from pathlib import Path

import pytest

from npulab.errors import PatchError
from npulab.source import patches, sources
from tests.gitrepo import make_patch, make_upstream, write_series

URL = "https://example.invalid/amd/RyzenAI-SW.git"
MODELING = "example/transformers/models/llama2/modeling_llama_amd.py"
SETUP = "example/transformers/setup.bat"


@pytest.fixture
def upstream(tmp_path: Path, isolated_cache: Path) -> tuple[Path, sources.Source]:
    up = tmp_path / "up"
    commit = make_upstream(up)
    origin = sources.resolve_origin(URL, source=up, environ={})
    src = sources.ensure_source(repo_url=URL, commit=commit, tag="v1.1", origin=origin)
    return up, src


def _series(tmp_path: Path, up: Path, commit: str) -> patches.Series:
    p1 = make_patch(up, commit, MODELING, "line 5\n", "line five\n", "Name line five")
    p2 = make_patch(up, commit, SETUP, "set DEVICE=phx\r\n", "set DEVICE=phx\r\nchcp 65001\r\n")
    write_series(tmp_path / "series", {"0001-five.patch": p1, "0002-chcp.patch": p2})
    return patches.load_series(tmp_path / "series")


@pytest.mark.integration
def test_clean_apply_is_promoted(tmp_path: Path, upstream: tuple[Path, sources.Source]) -> None:
    up, src = upstream
    series = _series(tmp_path, up, src.commit)
    assert series.files == (MODELING, SETUP)
    patches.check_series(series, src)
    dest = tmp_path / "build" / "tree"
    patches.stage_patched(series, src, dest, ("example/transformers",))
    assert "line five\n" in (dest / MODELING).read_text()
    assert (dest / SETUP).read_bytes().endswith(b"chcp 65001\r\n")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tree"]  # no scratch left


@pytest.mark.integration
def test_failing_hunk_leaves_previous_result_intact(
    tmp_path: Path, upstream: tuple[Path, sources.Source]
) -> None:
    up, src = upstream
    series = _series(tmp_path, up, src.commit)
    dest = tmp_path / "build" / "tree"
    patches.stage_patched(series, src, dest, ("example/transformers",))
    before = (dest / MODELING).read_text()
    # Break the second patch's context: its hunk no longer matches the pinned file.
    bad = series.patches[1].path
    bad.write_bytes(bad.read_bytes().replace(b" set PWD=%~dp0", b" set PWD=elsewhere"))
    series = patches.load_series(tmp_path / "series")
    with pytest.raises(PatchError) as info:
        patches.stage_patched(series, src, dest, ("example/transformers",))
    text = str(info.value)
    assert "0002-chcp.patch" in text
    assert SETUP in text
    assert src.commit in text
    assert "invoke patches.refresh --patch 0002-chcp.patch" in text
    assert (dest / MODELING).read_text() == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tree"]
    with pytest.raises(PatchError, match=r"0002-chcp\.patch"):
        patches.check_series(series, src)


@pytest.mark.integration
def test_refresh_round_trip(tmp_path: Path, upstream: tuple[Path, sources.Source]) -> None:
    up, src = upstream
    series = _series(tmp_path, up, src.commit)
    dest = tmp_path / "tree"
    patches.stage_patched(series, src, dest, ("example/transformers",))
    originals = {p.name: p.path.read_bytes() for p in series.patches}
    # Unchanged: byte-for-byte reproduction.
    for p in series.patches:
        assert patches.refresh_patch(series, p.name, dest, src) is False
        assert p.path.read_bytes() == originals[p.name]
    # Edited: the header stays, the diff follows the edit, and it applies again.
    target = dest / MODELING
    target.write_bytes(target.read_bytes().replace(b"line 30\n", b"line thirty\n"))
    assert patches.refresh_patch(series, "0001-five", dest, src) is True
    refreshed = patches.load_series(tmp_path / "series")
    first = refreshed.patches[0]
    assert first.header == series.patches[0].header
    assert "+line thirty" in first.diff
    assert "+line five" in first.diff
    patches.check_series(refreshed, src)


@pytest.mark.integration
def test_refresh_adds_new_file(tmp_path: Path, upstream: tuple[Path, sources.Source]) -> None:
    up, src = upstream
    series = _series(tmp_path, up, src.commit)
    dest = tmp_path / "tree"
    patches.stage_patched(series, src, dest, ("example/transformers",))
    (dest / "example/transformers/run.cmd").write_text("chcp 65001 >nul\r\n")
    patches.refresh_patch(series, "0002-chcp.patch", dest, src, ("example/transformers/run.cmd",))
    refreshed = patches.load_series(tmp_path / "series")
    assert refreshed.patches[1].files == ("example/transformers/run.cmd", SETUP)  # git sorts
    assert "new file mode 100644" in refreshed.patches[1].diff
    patches.check_series(refreshed, src)


GOOD = (
    "Subject: s\nUpstream-Status: Pending\nFixes: f\n\nd\n---\n"
    "diff --git a/x b/x\nindex 0..1 100644\n"
)


@pytest.mark.parametrize(
    ("files", "series", "expected"),
    [
        ({"0001-a.patch": GOOD}, "0001-a.patch\n0001-a.patch\n", "listed twice"),
        ({}, "0001-a.patch\n", "does not exist"),
        ({"0001-a.patch": GOOD, "0002-b.patch": GOOD}, "0001-a.patch\n", "not listed"),
        ({"a.patch": GOOD}, "a.patch\n", "not a patch name"),
        ({"0001-a.patch": GOOD.replace("Fixes: f\n", "")}, "0001-a.patch\n", "'Fixes' is missing"),
        (
            {"0001-a.patch": GOOD.replace("Pending", "Maybe")},
            "0001-a.patch\n",
            "Upstream-Status must start with one of",
        ),
        ({"0001-a.patch": GOOD.replace("---\n", "")}, "0001-a.patch\n", "'---' line"),
        (
            {"0001-a.patch": GOOD.replace("diff --git", "+++ b")},
            "0001-a.patch\n",
            "must start with 'diff --git'",
        ),
    ],
)
def test_series_metadata_errors(
    tmp_path: Path, files: dict[str, str], series: str, expected: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "series").write_text(series)
    with pytest.raises(PatchError, match=expected):
        patches.load_series(tmp_path)


def test_series_comments_and_lookup(tmp_path: Path) -> None:
    (tmp_path / "0001-a.patch").write_text(GOOD)
    (tmp_path / "series").write_text("# comment\n\n0001-a.patch  # trailing\n")
    series = patches.load_series(tmp_path)
    assert [p.name for p in series.patches] == ["0001-a.patch"]
    assert series.patches[0].files == ("x",)
    assert series.get("0001-a").subject == "s"
    with pytest.raises(PatchError, match="no patch named"):
        series.get("0002-b")
    with pytest.raises(PatchError, match="series not found"):
        patches.load_series(tmp_path / "nope")
