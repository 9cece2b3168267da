"""The hub double against huggingface_hub's real client code."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.utils import EntryNotFoundError, RevisionNotFoundError

from npulab.testing.hub_server import HubServer

REPO = "owner/tiny"
BIG = bytes(range(256)) * 64


@pytest.fixture
def hub() -> HubServer:
    with HubServer() as server:
        yield server


def test_hf_hub_download_at_pinned_revision(hub: HubServer, tmp_path: Path) -> None:
    commit = hub.add_repo(REPO, {"config.json": b'{"a": 1}', "model.pt": BIG}, lfs={"model.pt"})
    got = hf_hub_download(
        REPO, "model.pt", revision=commit, cache_dir=tmp_path, endpoint=hub.endpoint
    )
    assert Path(got).read_bytes() == BIG
    assert commit in got
    meta = get_hf_file_metadata(
        hf_hub_url(REPO, "model.pt", revision=commit, endpoint=hub.endpoint)
    )
    assert meta.commit_hash == commit
    assert meta.etag == hub.file(REPO, commit, "model.pt").sha256
    assert meta.size == len(BIG)


def test_model_info_and_paths_info_carry_lfs_sha256(hub: HubServer) -> None:
    commit = hub.add_repo(REPO, {"config.json": b"{}", "model.pt": BIG}, lfs={"model.pt"})
    api = HfApi(endpoint=hub.endpoint)
    info = api.model_info(REPO, revision="main", files_metadata=True)
    assert info.sha == commit
    by_name = {s.rfilename: s for s in info.siblings or []}
    assert by_name["model.pt"].lfs is not None
    assert by_name["model.pt"].lfs.sha256 == hub.file(REPO, commit, "model.pt").sha256
    assert by_name["config.json"].lfs is None
    assert by_name["config.json"].size == 2
    infos = api.get_paths_info(REPO, ["model.pt", "config.json"], revision=commit)
    assert {i.path for i in infos} == {"model.pt", "config.json"}
    lfs = next(i for i in infos if i.path == "model.pt").lfs
    assert lfs is not None
    assert lfs.sha256 == hub.file(REPO, commit, "model.pt").sha256


def test_errors_carry_the_hub_error_codes(hub: HubServer, tmp_path: Path) -> None:
    hub.add_repo(REPO, {"config.json": b"{}"})
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            REPO, "config.json", revision="0" * 40, cache_dir=tmp_path, endpoint=hub.endpoint
        )
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(
            REPO, "nope.json", revision="main", cache_dir=tmp_path, endpoint=hub.endpoint
        )


def test_range_and_drop_and_corrupt(hub: HubServer) -> None:
    import requests

    commit = hub.add_repo(REPO, {"model.pt": BIG}, lfs={"model.pt"})
    url = f"{hub.endpoint}/{REPO}/resolve/{commit}/model.pt"
    r = requests.get(url, headers={"Range": "bytes=100-"}, timeout=5)
    assert r.status_code == 206
    assert r.content == BIG[100:]
    assert r.headers["Content-Range"] == f"bytes 100-{len(BIG) - 1}/{len(BIG)}"
    hub.drop_after("model.pt", 1000)
    with pytest.raises(requests.RequestException):
        requests.get(url, timeout=5).content  # noqa: B018
    assert requests.get(url, timeout=5).content == BIG  # only once
    hub.corrupt("model.pt", b"x" * len(BIG))
    assert requests.get(url, timeout=5).content == b"x" * len(BIG)
    assert [r.range for r in hub.requests][:1] == ["bytes=100-"]


def test_latency_delays_every_answer(hub: HubServer) -> None:
    import time

    import requests

    hub.add_repo(REPO, {"config.json": b"{}"})
    hub.set_latency(0.2)
    start = time.perf_counter()
    requests.get(f"{hub.endpoint}/api/models/{REPO}", timeout=5).raise_for_status()
    assert time.perf_counter() - start >= 0.2
    hub.clear_faults()
    start = time.perf_counter()
    requests.get(f"{hub.endpoint}/api/models/{REPO}", timeout=5).raise_for_status()
    assert time.perf_counter() - start < 0.2
