"""A local Hugging Face hub double: enough of the HTTP API for huggingface_hub's real code.

Serves, on loopback only:

* ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: ``ETag`` (git blob sha1, or the sha256 for LFS
  files, like the hub), ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, ``X-Repo-Commit``,
  ``Content-Length`` and ``Range`` requests (``206`` + ``Content-Range``).
* ``GET /api/models/{repo}[/revision/{rev}]``: ``id``, ``sha``, ``siblings`` (with ``size``,
  ``blobId`` and ``lfs.sha256`` when ``blobs=true``), like ``HfApi.model_info``.
* ``POST /api/models/{repo}/paths-info/{rev}``: like ``HfApi.get_paths_info``.
* Errors with the hub's ``X-Error-Code``: ``RevisionNotFound`` (404), ``EntryNotFound`` (404),
  ``RepoNotFound`` (401).

Scriptable per test: drop the connection after N bytes of a file (``drop_after``), serve wrong
bytes while the metadata keeps the right hashes (``corrupt``), add ``latency``, redirect LFS
files to a ``/cdn/`` URL like the real hub (``HubServer(cdn_redirect=True)``), move a branch to a
new commit (``add_revision``), and read the request log (``requests``). ``add_published`` serves
the published checkpoint's real listing (names, sizes, LFS pointer; see
:mod:`npulab.model.published`).

Use it as a context manager; point huggingface_hub at ``server.endpoint`` (``HF_ENDPOINT`` or the
``endpoint=`` arguments)::

    with HubServer() as hub:
        commit = hub.add_repo("owner/model", {"config.json": b"{}"}, lfs={"model.pt"})
        ...
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

#: Files at least this big are stored as LFS unless the test says otherwise (the hub uses 10 MB).
LFS_THRESHOLD = 10 * 1024 * 1024


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class HubFile:
    data: bytes
    lfs: bool
    #: (sha256, size) of an LFS file that is listed but whose content the double does not hold
    #: (the real 11 GB checkpoint): listings and HEAD answer with these, GET with 503.
    listed: tuple[str, int] | None = None

    @property
    def sha256(self) -> str:
        return self.listed[0] if self.listed else hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return self.listed[1] if self.listed else len(self.data)

    @property
    def blob_id(self) -> str:
        """The git object id: of the pointer file for LFS files, of the content otherwise."""
        if not self.lfs:
            return git_blob_sha1(self.data)
        pointer = (
            "version https://git-lfs.github.com/spec/v1\n"
            f"oid sha256:{self.sha256}\nsize {self.size}\n"
        ).encode()
        return git_blob_sha1(pointer)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class Drop:
    """Close the connection after ``after_bytes`` of the body, ``times`` times."""

    after_bytes: int
    times: int


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    #: Whether an Authorization header came with the request (its value is never kept).
    authorization: bool = False


@dataclass
class _State:
    #: repo_id -> commit -> path -> file
    repos: dict[str, dict[str, dict[str, HubFile]]] = field(default_factory=dict)
    #: repo_id -> branch -> commit
    branches: dict[str, dict[str, str]] = field(default_factory=dict)
    drops: dict[str, Drop] = field(default_factory=dict)
    corrupt: dict[str, bytes] = field(default_factory=dict)
    latency: float = 0.0
    cdn_redirect: bool = False
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class HubServer:
    """A scriptable hub on 127.0.0.1 (a free port). See the module docstring."""

    def __init__(self, *, cdn_redirect: bool = False) -> None:
        """``cdn_redirect``: answer LFS files with a 302 to ``/cdn/...`` like the real hub."""
        self._state = _State(cdn_redirect=cdn_redirect)
        state = self._state

        class Handler(_Handler):
            hub = state

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- content --------------------------------------------------------------------------------
    def add_revision(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        branch: str = "main",
        lfs: set[str] | frozenset[str] = frozenset(),
        commit: str | None = None,
    ) -> str:
        """Add a commit holding ``files`` and point ``branch`` at it; returns the commit id.

        ``lfs`` names files stored as LFS (files >= 10 MiB always are)."""
        stored = {
            path: HubFile(data, path in lfs or len(data) >= LFS_THRESHOLD)
            for path, data in files.items()
        }
        if commit is None:
            digest = hashlib.sha1(repo_id.encode())
            for path in sorted(stored):
                digest.update(f"{path}\0{stored[path].blob_id}\0".encode())
            commit = digest.hexdigest()
        with self._state.lock:
            self._state.repos.setdefault(repo_id, {})[commit] = stored
            self._state.branches.setdefault(repo_id, {})[branch] = commit
        return commit

    add_repo = add_revision

    def add_published(
        self, *, checkpoint: bytes | None = None, files: dict[str, bytes] | None = None
    ) -> str:
        """The published repository's listing (:mod:`npulab.model.published`) at its pinned
        commit: the same names, LFS-ness and stated sizes. ``checkpoint``: stand-in bytes served
        for the LFS checkpoint (its sha256 and size then are the stand-in's); None: listed with
        the real sha256 and size, content not held. ``files``: content for plain git files;
        others get filler of the stated size (1000 bytes where no size is stated)."""
        from npulab.model import published

        stored = {}
        for entry in published.FILES:
            if entry.lfs_sha256 is not None:
                if checkpoint is None:
                    listed = (entry.lfs_sha256, int(entry.size or 0))
                    stored[entry.path] = HubFile(b"", True, listed=listed)
                else:
                    stored[entry.path] = HubFile(checkpoint, True)
                continue
            data = (files or {}).get(entry.path)
            if data is None:
                filler = f"stand-in for {entry.path}\n".encode()
                size = entry.size or 1000
                data = (filler * (size // len(filler) + 1))[:size]
            stored[entry.path] = HubFile(data, False)
        with self._state.lock:
            self._state.repos.setdefault(published.REPO_ID, {})[published.REVISION] = stored
            self._state.branches.setdefault(published.REPO_ID, {})["main"] = published.REVISION
        return published.REVISION

    def file(self, repo_id: str, commit: str, path: str) -> HubFile:
        return self._state.repos[repo_id][commit][path]

    # -- faults ---------------------------------------------------------------------------------
    def drop_after(self, path: str, after_bytes: int, *, times: int = 1) -> None:
        """The next ``times`` GETs of ``path`` (any repo) stop after ``after_bytes`` body bytes."""
        with self._state.lock:
            self._state.drops[path] = Drop(after_bytes, times)

    def corrupt(self, path: str, data: bytes) -> None:
        """Serve ``data`` for ``path`` while every header and API answer keeps the real hashes."""
        with self._state.lock:
            self._state.corrupt[path] = data

    def set_latency(self, seconds: float) -> None:
        """Sleep this long before answering each request."""
        self._state.latency = seconds

    def clear_faults(self) -> None:
        with self._state.lock:
            self._state.drops.clear()
            self._state.corrupt.clear()
            self._state.latency = 0.0

    @property
    def requests(self) -> list[Request]:
        with self._state.lock:
            return list(self._state.requests)


class _Handler(BaseHTTPRequestHandler):
    hub: _State
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read `requests` instead

    # -- plumbing -------------------------------------------------------------------------------
    def _begin(self) -> tuple[str, dict[str, list[str]]]:
        split = urlsplit(self.path)
        with self.hub.lock:
            self.hub.requests.append(
                Request(
                    self.command,
                    split.path,
                    self.headers.get("Range"),
                    authorization="Authorization" in self.headers,
                )
            )
        if self.hub.latency:
            time.sleep(self.hub.latency)
        return unquote(split.path), parse_qs(split.query)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _lookup(self, repo_id: str, rev: str) -> tuple[str, dict[str, HubFile]] | None:
        """(commit, files) for a branch name or commit id, or None after sending the error."""
        with self.hub.lock:
            commits = self.hub.repos.get(repo_id)
            branches = self.hub.branches.get(repo_id, {})
        if commits is None:
            self._error(401, "RepoNotFound", f"Repository {repo_id} not found")
            return None
        commit = branches.get(rev, rev)
        if commit not in commits:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return commit, commits[commit]

    # -- routes ---------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def do_POST(self) -> None:
        path, _ = self._begin()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        parts = path.strip("/").split("/")
        # api/models/{owner}/{name}/paths-info/{rev}
        if len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "paths-info":
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("application/json"):
                form = json.loads(raw or "{}")
                wanted = list(form.get("paths", []))
            else:
                wanted = parse_qs(raw).get("paths", [])
            found = self._lookup(f"{parts[2]}/{parts[3]}", parts[5])
            if found is None:
                return
            _, files = found
            self._json([_path_info(p, files[p]) for p in wanted if p in files])
            return
        self._error(404, "EntryNotFound", f"no route for POST {path}")

    def _route(self, *, head: bool) -> None:
        path, query = self._begin()
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = f"{parts[2]}/{parts[3]}"
            if len(parts) == 4:
                rev = "main"
            elif len(parts) == 6 and parts[4] == "revision":
                rev = parts[5]
            else:
                self._error(404, "EntryNotFound", f"no route for {path}")
                return
            found = self._lookup(repo_id, rev)
            if found is None:
                return
            commit, files = found
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            self._json(
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": commit,
                    "private": False,
                    "siblings": [_sibling(p, f, blobs=blobs) for p, f in sorted(files.items())],
                }
            )
            return
        # {owner}/{name}/resolve/{rev}/{path...}
        if len(parts) >= 5 and parts[2] == "resolve":
            found = self._lookup(f"{parts[0]}/{parts[1]}", parts[3])
            if found is None:
                return
            commit, files = found
            file_path = "/".join(parts[4:])
            if file_path not in files:
                self._error(404, "EntryNotFound", f"{file_path} does not exist at {commit}")
                return
            if files[file_path].lfs and self.hub.cdn_redirect:
                self._redirect(commit, f"{parts[0]}/{parts[1]}", file_path, files[file_path])
                return
            self._send_file(commit, file_path, files[file_path], head=head)
            return
        # cdn/{owner}/{name}/{commit}/{path...}: where LFS redirects point
        if len(parts) >= 5 and parts[0] == "cdn":
            found = self._lookup(f"{parts[1]}/{parts[2]}", parts[3])
            if found is None:
                return
            commit, files = found
            file_path = "/".join(parts[4:])
            if file_path in files:
                self._send_file(commit, file_path, files[file_path], head=head)
                return
        self._error(404, "EntryNotFound", f"no route for {path}")

    def _redirect(self, commit: str, repo_id: str, path: str, hub_file: HubFile) -> None:
        host, port = self.server.server_address[:2]  # type: ignore[index,str-unpack]
        self.send_response(302)
        self.send_header("Location", f"http://{host!s}:{port}/cdn/{repo_id}/{commit}/{path}")
        self.send_header("ETag", f'"{hub_file.blob_id}"')
        self.send_header("X-Repo-Commit", commit)
        self.send_header("X-Linked-Etag", f'"{hub_file.sha256}"')
        self.send_header("X-Linked-Size", str(hub_file.size))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_file(self, commit: str, path: str, hub_file: HubFile, *, head: bool) -> None:
        if hub_file.listed is not None and not head:
            self._error(503, "ContentNotHeld", f"{path}: listed only; the double has no content")
            return
        with self.hub.lock:
            data = self.hub.corrupt.get(path, hub_file.data)
            drop = self.hub.drops.get(path) if not head else None
            if drop is not None:
                drop.times -= 1
                if drop.times <= 0:
                    del self.hub.drops[path]
        start, end = 0, len(data) - 1
        status = 200
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            first, _, last = wanted[len("bytes=") :].partition("-")
            start = int(first) if first else 0
            end = int(last) if last else len(data) - 1
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start : end + 1]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{hub_file.blob_id if hub_file.lfs else hub_file.etag}"')
        self.send_header("X-Repo-Commit", commit)
        if hub_file.lfs:
            self.send_header("X-Linked-Etag", f'"{hub_file.sha256}"')
            self.send_header("X-Linked-Size", str(hub_file.size))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if head:
            return
        if drop is not None:
            self.wfile.write(body[: drop.after_bytes])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


def _lfs(hub_file: HubFile, oid_key: str) -> dict[str, Any] | None:
    if not hub_file.lfs:
        return None
    return {oid_key: hub_file.sha256, "size": hub_file.size, "pointerSize": 134}


def _sibling(path: str, hub_file: HubFile, *, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": path}
    entry: dict[str, Any] = {
        "rfilename": path,
        "size": hub_file.size,
        "blobId": hub_file.blob_id,
    }
    lfs = _lfs(hub_file, "sha256")
    if lfs is not None:
        entry["lfs"] = lfs
    return entry


def _path_info(path: str, hub_file: HubFile) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "file",
        "path": path,
        "size": hub_file.size,
        "oid": hub_file.blob_id,
    }
    lfs = _lfs(hub_file, "oid")
    if lfs is not None:
        entry["lfs"] = lfs
    return entry


__all__ = ["LFS_THRESHOLD", "HubFile", "HubServer", "Request", "git_blob_sha1"]
