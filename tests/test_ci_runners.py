"""`invoke ci.runner-status` against a local fake of the GitHub runners API (http.server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from npulab.ci import runners
from npulab.errors import ConfigError, TransportError, VerificationError

TOKEN = "ghs_test-token-never-printed"


def runner(name: str, status: str, *labels: str, busy: bool = False) -> dict[str, Any]:
    names = ["self-hosted", "Windows", "X64", *labels]
    return {
        "id": abs(hash(name)) % 10_000,
        "name": name,
        "os": "Windows",
        "status": status,
        "busy": busy,
        "labels": [{"id": i, "name": n, "type": "custom"} for i, n in enumerate(names)],
    }


class FakeGitHub:
    def __init__(self, runners_list: list[dict[str, Any]], *, per_page_cap: int = 100) -> None:
        self.runners = runners_list
        self.cap = per_page_cap
        self.seen: list[tuple[str, str | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                fake.seen.append((self.path, self.headers.get("Authorization")))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self.send_response(401)
                    self.end_headers()
                    return
                if url.path != "/repos/lab/npulab/actions/runners":
                    self.send_response(404)
                    self.end_headers()
                    return
                query = parse_qs(url.query)
                per_page = min(int(query["per_page"][0]), fake.cap)
                page = int(query.get("page", ["1"])[0])
                chunk = fake.runners[(page - 1) * per_page : page * per_page]
                body = json.dumps({"total_count": len(fake.runners), "runners": chunk}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(
        [
            runner("phx-01", "online", "npu", "phx", "7940hs", busy=True),
            runner("phx-02", "offline", "npu", "phx", "7940hs"),
            runner("hpt-01", "offline", "npu", "phx", "8845hs"),
            runner("old-box", "online", "gpu"),
        ],
        per_page_cap=2,  # forces a second page
    )
    fake.thread.start()
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_API_URL", fake.api)
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


@pytest.fixture
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("NPULAB_ROOT", str(Path(__file__).resolve().parent.parent))
    path = tmp_path / "hosts.yml"
    path.write_text(
        "all:\n  children:\n    npu_lab:\n      children:\n"
        "        phx:\n          hosts:\n            phx-01: {npulab_chip: 7940HS}\n"
        "            phx-02: {npulab_chip: 7940HS}\n"
        "        hpt:\n          hosts:\n            hpt-01: {npulab_chip: 8845HS}\n"
        "            hpt-02: {npulab_chip: 8845HS}\n"
    )
    return str(path)


def test_kind_without_online_runner_is_named(
    github: FakeGitHub, inventory: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(VerificationError) as failure:
        runners.run_status("lab/npulab", None, inventory=inventory)
    assert "no online runner for machine kind(s): hpt-8845hs" in str(failure.value)
    assert "labels npu,phx,8845hs" in str(failure.value)
    out = capsys.readouterr().out
    assert "phx-7940hs        1/2" in out
    assert "phx-01 (online, busy), phx-02 (offline)" in out
    assert "hpt-8845hs        0/1" in out
    assert "runner old-box serves no machine kind" in out
    assert "inventory host hpt-02 has no runner registered under its name" in out
    assert TOKEN not in out
    # Both pages were read, with the token in the header only.
    assert [p for p, _ in github.seen] == [
        "/repos/lab/npulab/actions/runners?per_page=100&page=1",
        "/repos/lab/npulab/actions/runners?per_page=100&page=2",
    ]


def test_all_kinds_covered(github: FakeGitHub, inventory: str) -> None:
    github.runners[2]["status"] = "online"
    result = runners.run_status("lab/npulab", github.api, inventory=inventory)
    assert result.uncovered == []
    assert [r.name for r in result.serving["hpt-8845hs"]] == ["hpt-01"]


def test_bad_token_and_missing_settings(
    github: FakeGitHub, inventory: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "wrong")
    with pytest.raises(TransportError, match=r"HTTP 401 .*token lacks access") as failure:
        runners.run_status("lab/npulab", None, inventory=inventory)
    assert "wrong" not in str(failure.value)
    monkeypatch.delenv("GITHUB_TOKEN")
    with pytest.raises(ConfigError, match="GITHUB_TOKEN is not set"):
        runners.run_status("lab/npulab", None, inventory=inventory)
    with pytest.raises(ConfigError, match="no repository"):
        runners.run_status(None, None, inventory=inventory)
