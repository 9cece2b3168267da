"""A local Git LFS server double: the batch API and object downloads, for the real git-lfs client.

Serves, on loopback only, for any repository path ``/<owner>/<name>.git``:

* ``POST <repo>/info/lfs/objects/batch`` (``operation: download``): for each requested object the
  server holds, a ``download`` action whose ``href`` points back at this server; for one it does
  not hold, the per-object ``error`` with code 404, as the LFS batch API specifies.
* ``GET /objects/<oid>``: the object's bytes (``corrupt`` serves different bytes of the same
  size, to test the client side's verification).

``downloads`` counts object GETs, so a test can tell a cache hit from a download::

    with LfsServer({"payload": b"..."}) as lfs:
        url = lfs.repo_url("amd/RyzenAI-SW")  # use as remote.origin.url
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

LFS_JSON = "application/vnd.git-lfs+json"


class LfsServer:
    def __init__(self, blobs: dict[str, bytes] | None = None) -> None:
        self.objects = {hashlib.sha256(b).hexdigest(): b for b in (blobs or {}).values()}
        self.downloads = 0
        self.batches = 0
        self.corrupt: set[str] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    def repo_url(self, repo: str) -> str:
        return f"http://127.0.0.1:{self.port}/{repo}.git"

    def add(self, data: bytes) -> str:
        oid = hashlib.sha256(data).hexdigest()
        self.objects[oid] = data
        return oid

    def start(self) -> LfsServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LfsServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    owner: LfsServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.endswith("/info/lfs/objects/batch"):
            self._send(404, b'{"message": "not found"}', LFS_JSON)
            return
        self.owner.batches += 1
        base = f"http://127.0.0.1:{self.owner.port}/objects/"
        answer = []
        for obj in request.get("objects", []):
            oid, size = obj["oid"], obj["size"]
            if oid in self.owner.objects and len(self.owner.objects[oid]) == size:
                answer.append(
                    {
                        "oid": oid,
                        "size": size,
                        "authenticated": True,
                        "actions": {"download": {"href": base + oid, "expires_in": 3600}},
                    }
                )
            else:
                answer.append(
                    {"oid": oid, "size": size, "error": {"code": 404, "message": "not found"}}
                )
        body = json.dumps({"transfer": "basic", "objects": answer}).encode()
        self._send(200, body, LFS_JSON)

    def do_GET(self) -> None:
        oid = self.path.rsplit("/", 1)[-1]
        data = self.owner.objects.get(oid)
        if not self.path.startswith("/objects/") or data is None:
            self._send(404, b"not found", "text/plain")
            return
        self.owner.downloads += 1
        if oid in self.owner.corrupt:
            data = bytes(reversed(data)) if len(set(data)) > 1 else b"\0" * len(data)
        self._send(200, data, "application/octet-stream")
