"""Drift checks against local git repositories, the hub test server and a local HTTP server."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from npulab.ci import drift
from npulab.errors import DriftError, TransportError
from npulab.recipe import find_recipe
from npulab.testing.hub_server import HubServer
from tests.gitrepo import git

pytestmark = pytest.mark.integration

REPO_ID = "lab/tiny-npu-model"
FILES = {
    "model.pt": b"\x80pickled weights" * 64,
    "config.json": b'{"model_type": "llama"}',
}


def make_repo(path: Path, tag: str) -> str:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("v1\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    git(path, "tag", "-a", tag, "-m", tag)  # annotated: ls-remote must peel it
    return git(path, "rev-parse", "HEAD")


def move_tag(path: Path, tag: str) -> str:
    (path / "README.md").write_text("v2\n")
    git(path, "commit", "-q", "-am", "second")
    git(path, "tag", "-f", "-a", tag, "-m", tag)
    return git(path, "rev-parse", "HEAD")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[HubServer, str]]:
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        commit = server.add_revision(REPO_ID, FILES, lfs={"model.pt"})
        yield server, commit


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: tuple[HubServer, str],
    http_files: tuple[str, Path],
) -> dict[str, Any]:  # fmt: skip
    """A project tree: recipe pinned to a local upstream + the hub double, a workflow pinned to
    local action repos, and Ansible vars pinning an installer on a local HTTP server."""
    _, revision = hub
    base_url, www = http_files
    upstream = tmp_path / "upstream"
    commit = make_repo(upstream, "v1.1")
    actions = tmp_path / "gh"
    checkout_sha = make_repo(actions / "actions" / "checkout", "v4.2.2")

    root = tmp_path / "project"
    data = yaml.safe_load(find_recipe("ryzenai-sw-1.1-llama3.1").read_text())
    data["upstream"].update(repo_url=f"file://{upstream}", commit=commit)
    data["upstream"].pop("tree")
    data["model"] = {
        "repo_id": REPO_ID,
        "revision": revision,
        "checkpoint": "model.pt",
        "files": [
            {"path": p, "sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
            for p, b in FILES.items()
        ],
    }
    (root / "recipes").mkdir(parents=True)
    recipe = root / "recipes" / "test.yaml"
    recipe.write_text(yaml.safe_dump(data))

    (root / ".github" / "workflows").mkdir(parents=True)
    (root / ".github" / "workflows" / "w.yml").write_text(
        f"jobs:\n  a:\n    steps:\n      - uses: actions/checkout@{checkout_sha} # v4.2.2\n"
    )
    (www / "Miniconda3.exe").write_bytes(b"MZ" + b"\0" * 98)
    group_vars = root / "ansible" / "inventories" / "lab" / "group_vars" / "all"
    group_vars.mkdir(parents=True)
    (group_vars / "installers.yml").write_text(
        yaml.safe_dump(
            {
                "npulab_installers": {
                    "miniconda": {"url": f"{base_url}/Miniconda3.exe", "sha256": "ab" * 32,
                                  "size": 100},
                    "share": {"url": "\\\\lab\\share\\git.exe", "sha256": "cd" * 32},
                    "templated": {"url": "{{ mirror }}/x.exe", "sha256": "ef" * 32},
                }
            }
        )
    )  # fmt: skip
    monkeypatch.setenv("NPULAB_ROOT", str(root))
    return {
        "recipe": str(recipe),
        "upstream": upstream,
        "actions_url": str(actions),
        "actions": actions,
        "www": www,
        "options": drift.DriftOptions(actions_url=str(actions)),
    }


def test_all_pins_hold(project: dict[str, Any]) -> None:
    assert drift.run_drift(project["recipe"], project["options"]) == []


def test_moved_upstream_tag_names_both_commits(project: dict[str, Any]) -> None:
    pinned = git(project["upstream"], "rev-parse", "HEAD")
    moved = move_tag(project["upstream"], "v1.1")
    with pytest.raises(DriftError) as failure:
        drift.run_drift(project["recipe"], project["options"])
    text = str(failure.value)
    assert "1 pin(s) drifted" in text
    url = f"file://{project['upstream']}"
    assert f"[upstream] tag v1.1 of {url}: pinned {pinned}, now {moved}" in text


def test_deleted_upstream_tag(project: dict[str, Any]) -> None:
    git(project["upstream"], "tag", "-d", "v1.1")
    with pytest.raises(DriftError, match=r"\[upstream\] tag v1.1 .*now the tag is gone"):
        drift.run_drift(project["recipe"], project["options"])


def test_moved_action_tag(project: dict[str, Any]) -> None:
    repo = project["actions"] / "actions" / "checkout"
    pinned = git(repo, "rev-parse", "HEAD")
    moved = move_tag(repo, "v4.2.2")
    with pytest.raises(DriftError) as failure:
        drift.run_drift(project["recipe"], project["options"])
    assert f"[actions] actions/checkout@v4.2.2 (w.yml): pinned {pinned}, now {moved}" in str(
        failure.value
    )


def test_missing_installer_and_changed_size(project: dict[str, Any]) -> None:
    (project["www"] / "Miniconda3.exe").write_bytes(b"MZ" * 70)
    with pytest.raises(DriftError, match=r"\[installers\] npulab_installers.miniconda .*: "
                       r"pinned size 100, now size 140"):  # fmt: skip
        drift.run_drift(project["recipe"], project["options"])
    (project["www"] / "Miniconda3.exe").unlink()
    with pytest.raises(DriftError, match=r"Miniconda3.exe, now HTTP 404"):
        drift.run_drift(project["recipe"], project["options"])


def test_hub_revision_gone_or_hashes_changed(
    project: dict[str, Any], hub: tuple[HubServer, str]
) -> None:
    server, revision = hub
    recipe = Path(project["recipe"])
    text = recipe.read_text()
    # The recipe says other bytes than the hub serves at the pinned revision.
    wrong = hashlib.sha256(b"other").hexdigest()
    recipe.write_text(text.replace(hashlib.sha256(FILES["config.json"]).hexdigest(), wrong))
    with pytest.raises(DriftError) as failure:
        drift.run_drift(project["recipe"], project["options"])
    good = hashlib.sha256(FILES["config.json"]).hexdigest()
    assert (
        f"[hub] {REPO_ID}@{revision} config.json: pinned sha256 {wrong} size 23, "
        f"now sha256 {good} size 23"
    ) in str(failure.value)
    # A pinned revision the hub does not have.
    recipe.write_text(text.replace(revision, "f" * 40))
    with pytest.raises(DriftError, match=rf"\[hub\] {REPO_ID}@f{{40}}: .*revision not found"):
        drift.run_drift(project["recipe"], project["options"])
    # New commits on main do not matter: the pin is a commit.
    server.add_revision(REPO_ID, {**FILES, "config.json": b"{}"})
    recipe.write_text(text)
    assert drift.run_drift(project["recipe"], project["options"]) == []


def test_unpinned_model_is_reported(project: dict[str, Any]) -> None:
    recipe = Path(project["recipe"])
    data = yaml.safe_load(recipe.read_text())
    data["model"].pop("revision")
    recipe.write_text(yaml.safe_dump(data))
    only_hub = frozenset({"upstream", "installers", "actions"})
    with pytest.raises(DriftError, match=r"\[hub\] lab/tiny-npu-model: .*not pinned yet"):
        drift.run_drift(project["recipe"], drift.DriftOptions(skip=only_hub))


def test_unreachable_remote_is_not_drift(project: dict[str, Any], tmp_path: Path) -> None:
    options = drift.DriftOptions(
        upstream_url=str(tmp_path / "nowhere"), skip=frozenset({"hub", "installers", "actions"})
    )
    with pytest.raises(TransportError, match="cannot list tags of"):
        drift.run_drift(project["recipe"], options)


def test_installers_are_found_defensively(project: dict[str, Any]) -> None:
    root = Path(project["recipe"]).parent.parent / "ansible"
    (root / "roles" / "x" / "defaults").mkdir(parents=True)
    (root / "roles" / "x" / "defaults" / "main.yml").write_text("x_url: [unclosed\n")
    found = drift.find_installers(root)
    assert [(i.key, i.size) for i in found] == [("npulab_installers.miniconda", 100)]


@pytest.mark.upstream
def test_real_upstream_tag_still_points_at_the_pin() -> None:
    import os

    from npulab.recipe import load_recipe

    mirror = os.environ.get("NPULAB_UPSTREAM")
    if not mirror:
        pytest.skip("NPULAB_UPSTREAM is unset (point it at a checkout or mirror of amd/RyzenAI-SW)")
    if not git(Path.cwd(), "ls-remote", "--tags", mirror):
        pytest.skip(f"{mirror} holds no tags (a shallow checkout at the commit)")
    recipe = load_recipe(find_recipe("ryzenai-sw-1.1-llama3.1"))
    assert drift.check_upstream(recipe, mirror) == []


def test_a_runner_pin_below_the_enforced_minimum_is_drift() -> None:
    """The shipped pin holds; a pin below min_version is flagged, offline."""
    from npulab import paths

    shipped = drift.find_installers(paths.project_root() / "ansible")
    runner = next(i for i in shipped if i.key == "npulab_installers.actions_runner")
    assert runner.min_version
    assert drift._version(runner.version or "") >= drift._version(runner.min_version)
    assert drift.check_minimums(shipped) == []
    old = dataclasses.replace(runner, version="2.321.0")
    (found,) = drift.check_minimums([old])
    assert found.expected == "version 2.321.0"
    assert f"below the enforced minimum {runner.min_version}" in found.actual
