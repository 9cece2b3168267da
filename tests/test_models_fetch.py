"""model.fetch against the local hub double with huggingface_hub's real download code."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from npulab import hashing
from npulab.errors import ConfigError, SourceError, VerificationError
from npulab.model import fetch as models
from npulab.recipe import Model, ModelFile
from npulab.testing.hub_server import HubServer

REPO = "owner/tiny-npu"
WEIGHTS = hashlib.sha256(b"seed").digest() * 8192  # 256 KiB
CONFIG = b'{"model_type": "llama"}'
FILES = {"config.json": CONFIG, "model.pt": WEIGHTS}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        # huggingface_hub writes 10 MB chunks; small ones let a small file be cut and resumed.
        monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
        yield server


def pinned(revision: str, files: dict[str, bytes] = FILES) -> Model:
    return Model(
        repo_id=REPO,
        revision=revision,
        checkpoint="model.pt",
        files=tuple(
            ModelFile(path=p, sha256=hashlib.sha256(d).hexdigest(), size=len(d))
            for p, d in files.items()
        ),
    )


def gets(hub: HubServer) -> list[str | None]:
    return [r.range for r in hub.requests if r.method == "GET" and "resolve" in r.path]


def test_fresh_download_lands_verified_files_and_a_record(hub: HubServer, tmp_path: Path) -> None:
    commit = hub.add_repo(REPO, FILES, lfs={"model.pt"})
    out = models.fetch(pinned(commit), dest=tmp_path / "m")
    assert (out / "model.pt").read_bytes() == WEIGHTS
    assert (out / "config.json").read_bytes() == CONFIG
    records = hashing.load_records(out / ".npulab" / "verified.json")
    assert records["model.pt"].sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert not list((out / ".npulab" / "partial").rglob("*.incomplete"))


def test_default_directory_is_the_hub_cache_snapshot(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    commit = hub.add_repo(REPO, FILES, lfs={"model.pt"})
    out = models.fetch(pinned(commit))
    assert out == tmp_path / "hf" / "hub" / "models--owner--tiny-npu" / "snapshots" / commit
    assert (out / "model.pt").is_file()


def test_second_fetch_trusts_the_record_and_verify_rehashes(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = hub.add_repo(REPO, FILES, lfs={"model.pt"})
    model = pinned(commit)
    models.fetch(model, dest=tmp_path)
    before = len(hub.requests)
    hashed: list[Path] = []
    real = hashing.sha256_file
    monkeypatch.setattr(models, "sha256_file", lambda p: hashed.append(p) or real(p))
    models.fetch(model, dest=tmp_path)
    assert hashed == []
    assert len(hub.requests) == before  # no network either
    models.fetch(model, dest=tmp_path, verify=True)
    assert sorted(p.name for p in hashed) == ["config.json", "model.pt"]
    hashed.clear()
    # A touched file (same size, new mtime) is hashed again, not trusted.
    target = tmp_path / "model.pt"
    st = target.stat()
    import os

    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    models.fetch(model, dest=tmp_path)
    assert [p.name for p in hashed] == ["model.pt"]


def test_dropped_connection_resumes_with_a_range_request(hub: HubServer, tmp_path: Path) -> None:
    commit = hub.add_repo(REPO, FILES, lfs={"model.pt"})
    hub.drop_after("model.pt", 100_000)
    out = models.fetch(pinned(commit), dest=tmp_path)
    assert (out / "model.pt").read_bytes() == WEIGHTS
    ranges = [r for r in gets(hub) if r]
    assert len(ranges) == 1
    start = int(ranges[0].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 100_000


def test_failed_download_keeps_the_partial_and_the_next_run_resumes(
    hub: HubServer, tmp_path: Path
) -> None:
    commit = hub.add_repo(REPO, FILES, lfs={"model.pt"})
    hub.drop_after("model.pt", 50_000, times=models.ATTEMPTS * 10)
    with pytest.raises(SourceError, match=r"model\.pt: download failed") as err:
        models.fetch(pinned(commit), dest=tmp_path)
    assert "resumes" in str(err.value)
    partial = tmp_path / ".npulab" / "partial" / "model.pt.incomplete"
    have = partial.stat().st_size
    assert 0 < have < len(WEIGHTS)
    assert partial.read_bytes() == WEIGHTS[:have]
    assert not (tmp_path / "model.pt").exists()
    assert (tmp_path / "config.json").read_bytes() == CONFIG  # the good file stays
    hub.clear_faults()
    models.fetch(pinned(commit), dest=tmp_path)
    assert gets(hub)[-1] == f"bytes={have}-"
    assert (tmp_path / "model.pt").read_bytes() == WEIGHTS


def test_hash_mismatch_names_file_and_both_hashes_and_promotes_nothing(
    hub: HubServer, tmp_path: Path
) -> None:
    commit = hub.add_repo(REPO, FILES, lfs={"model.pt"})
    wrong = b"\0" + WEIGHTS[1:]
    hub.corrupt("model.pt", wrong)
    model = pinned(commit)
    with pytest.raises(VerificationError) as err:
        models.fetch(model, dest=tmp_path)
    text = str(err.value)
    assert "model.pt" in text
    assert hashlib.sha256(WEIGHTS).hexdigest() in text
    assert hashlib.sha256(wrong).hexdigest() in text
    assert not (tmp_path / "model.pt").exists()
    assert (tmp_path / "config.json").read_bytes() == CONFIG
    rejected = list((tmp_path / ".npulab" / "rejected").iterdir())
    assert [p.read_bytes() for p in rejected] == [wrong]  # kept for inspection, not resumed
    hub.clear_faults()
    models.fetch(model, dest=tmp_path)
    assert (tmp_path / "model.pt").read_bytes() == WEIGHTS


def test_tampered_file_in_place_is_set_aside_and_fetched_again(
    hub: HubServer, tmp_path: Path
) -> None:
    commit = hub.add_repo(REPO, FILES, lfs={"model.pt"})
    model = pinned(commit)
    models.fetch(model, dest=tmp_path)
    (tmp_path / "model.pt").write_bytes(b"x" * len(WEIGHTS))
    models.fetch(model, dest=tmp_path)
    assert (tmp_path / "model.pt").read_bytes() == WEIGHTS
    assert len(list((tmp_path / ".npulab" / "rejected").iterdir())) == 1


def test_nonexistent_revision_fails_with_the_pin_hint(hub: HubServer, tmp_path: Path) -> None:
    hub.add_repo(REPO, FILES, lfs={"model.pt"})
    with pytest.raises(SourceError, match="cannot resolve") as err:
        models.fetch(pinned("0" * 40), dest=tmp_path)
    assert "model.pin" in str(err.value)
    assert not list(tmp_path.glob("*.json"))


def test_offline_with_a_complete_cache_needs_no_network(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = hub.add_repo(REPO, FILES, lfs={"model.pt"})
    models.fetch(pinned(commit), dest=tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.stop()  # nothing to talk to
    assert models.fetch(pinned(commit), dest=tmp_path, verify=True) == tmp_path


def test_offline_with_an_incomplete_cache_names_the_missing_files(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = hub.add_repo(REPO, FILES, lfs={"model.pt"})
    models.fetch(pinned(commit), dest=tmp_path)
    (tmp_path / "model.pt").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.requests)
    with pytest.raises(SourceError, match=r"HF_HUB_OFFLINE is set and .* lacks: model\.pt"):
        models.fetch(pinned(commit), dest=tmp_path)
    assert len(hub.requests) == before


def test_model_without_a_revision_is_refused_with_the_pin_command() -> None:
    model = Model(repo_id=REPO, checkpoint="m.pt", files=(ModelFile(path="m.pt"),))
    with pytest.raises(ConfigError, match="no pinned revision") as err:
        models.fetch(model)
    assert "invoke model.pin" in str(err.value)


def test_plan_describes_each_file_without_network(hub: HubServer, tmp_path: Path) -> None:
    commit = hub.add_repo(REPO, FILES, lfs={"model.pt"})
    model = pinned(commit)
    partial = tmp_path / ".npulab" / "partial" / "model.pt.incomplete"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(WEIGHTS[:10])
    steps = models.plan(model, tmp_path, verify=False, is_offline=False)
    assert [(s.file.path, s.action, s.have) for s in steps] == [
        ("config.json", "download", 0),
        ("model.pt", "resume", 10),
    ]
    models.fetch(model, dest=tmp_path, dry_run=True)
    assert hub.requests == []


def test_a_second_fetch_into_a_busy_directory_is_refused_and_stale_locks_are_taken_over(
    hub: HubServer, tmp_path: Path
) -> None:
    import os
    import socket

    commit = hub.add_repo(REPO, FILES, lfs={"model.pt"})
    lock = tmp_path / ".npulab" / "fetch.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(f"{socket.gethostname()} pid {os.getpid()} since now\n")  # alive: us
    with pytest.raises(SourceError, match="in use by another fetch") as err:
        models.fetch(pinned(commit), dest=tmp_path)
    assert str(lock) in str(err.value)
    assert gets(hub) == []
    lock.write_text("other-host pid 1 since now\n")  # cannot tell from here: refuse
    with pytest.raises(SourceError, match="other-host"):
        models.fetch(pinned(commit), dest=tmp_path)
    lock.write_text(f"{socket.gethostname()} pid 999999999 since now\n")  # dead: take over
    models.fetch(pinned(commit), dest=tmp_path)
    assert (tmp_path / "model.pt").read_bytes() == WEIGHTS
    assert not lock.exists()


def test_lfs_files_follow_the_cdn_redirect_and_resume_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    with HubServer(cdn_redirect=True) as cdn_hub:
        monkeypatch.setenv("HF_ENDPOINT", cdn_hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
        commit = cdn_hub.add_repo(REPO, FILES, lfs={"model.pt"})
        cdn_hub.drop_after("model.pt", 100_000)
        out = models.fetch(pinned(commit), dest=tmp_path)
        assert (out / "model.pt").read_bytes() == WEIGHTS
        cdn = [r for r in cdn_hub.requests if r.path.startswith("/cdn/")]
        assert [r.method for r in cdn] == ["GET", "GET"]
        assert cdn[0].range is None
        resumed_at = int((cdn[1].range or "").removeprefix("bytes=").rstrip("-"))
        assert 0 < resumed_at <= 100_000  # resumed at the CDN, where the drop left it
        assert all(not r.authorization for r in cdn)  # the token is not sent to the CDN
        resolve = [r for r in cdn_hub.requests if "/resolve/" in r.path]
        assert any(r.authorization for r in resolve)


def test_nested_paths_land_and_are_set_aside_inside_the_model_directory(
    hub: HubServer, tmp_path: Path
) -> None:
    files = {"onnx/weights.bin": WEIGHTS, **FILES}
    commit = hub.add_repo(REPO, files, lfs={"onnx/weights.bin"})
    hub.corrupt("onnx/weights.bin", WEIGHTS[::-1])
    model = pinned(commit, files)
    with pytest.raises(VerificationError, match=r"onnx/weights\.bin"):
        models.fetch(model, dest=tmp_path)
    [aside] = list((tmp_path / ".npulab" / "rejected" / "onnx").iterdir())
    assert aside.read_bytes() == WEIGHTS[::-1]
    hub.clear_faults()
    models.fetch(model, dest=tmp_path)
    assert (tmp_path / "onnx" / "weights.bin").read_bytes() == WEIGHTS


def test_a_repin_to_new_content_of_the_same_size_is_fetched_not_trusted(
    hub: HubServer, tmp_path: Path
) -> None:
    first = hub.add_repo(REPO, FILES, lfs={"model.pt"})
    models.fetch(pinned(first), dest=tmp_path)
    retrained = hashlib.sha256(b"other seed").digest() * 8192  # same size, other bytes
    assert len(retrained) == len(WEIGHTS)
    second = hub.add_revision(REPO, {**FILES, "model.pt": retrained}, lfs={"model.pt"})
    models.fetch(pinned(second, {**FILES, "model.pt": retrained}), dest=tmp_path)
    assert (tmp_path / "model.pt").read_bytes() == retrained
    # The old weights were not the pinned file: set aside, never deleted.
    assert [p.read_bytes() for p in (tmp_path / ".npulab" / "rejected").iterdir()] == [WEIGHTS]


def test_content_the_hub_serves_from_another_commit_is_refused(
    hub: HubServer, tmp_path: Path
) -> None:
    commit = hub.add_repo(REPO, FILES, lfs={"model.pt"})
    # A revision name the hub resolves (a branch): it answers with the commit it resolved to.
    model = dataclasses.replace(pinned(commit), revision="main")
    with pytest.raises(VerificationError) as err:
        models.fetch(model, dest=tmp_path)
    assert f"hub answered commit {commit} for pinned main" in str(err.value)
    assert not (tmp_path / "config.json").exists()
    assert not (tmp_path / "model.pt").exists()
