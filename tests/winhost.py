"""A FakeHost that does what Windows does with npulab's build protocol: keeps uploaded files,
unpacks the upload the way upload-expand does, answers stamp reads, and runs step scripts from
its own copy of ``scripts\\`` (a stamped ``.cmd`` empties and writes stamps as the real one).

Values come out of the scripts with tree-sitter (their string literals), never by guessing."""

from __future__ import annotations

import hashlib
import io
import zipfile

from npulab.testing.fakehost import FakeHost, Response
from npulab.windows.steps import stamp_digest
from tests.pwsh import string_values


def _key(path: str) -> str:
    return path.lower()


class BuildHost:
    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.codes: dict[str, int] = {}
        self.ran: list[str] = []
        host.on("script:upload-state", self._state)
        host.on("script:upload-expand", self._expand)
        host.on("script:stamp-read", self._stamp_read)
        host.on("powershell.exe", self._step)
        host.on("cmd.exe", self._step)

    @property
    def files(self) -> dict[str, bytes]:
        return self.host.files

    def _state(self, argv: list[str], script: str | None) -> Response:
        assert script is not None
        root = string_values(script)[1]
        lines = []
        stamp = self.files.get(_key(root + "\\.npulab-win\\upload.sha256"))
        if stamp is not None:
            lines.append("stamp " + stamp.decode().strip())
        prefix = _key(root + "\\upload\\")
        for path, data in sorted(self.files.items()):
            if path.startswith(prefix):
                lines.append(f"part {path[len(prefix) :]} {hashlib.sha256(data).hexdigest()}")
        return Response("\r\n".join(lines) + "\r\n")

    def _expand(self, argv: list[str], script: str | None) -> Response:
        assert script is not None
        values = string_values(script)
        root, sha = values[1], values[2]
        parts = [v for v in values if v.startswith(sha[:16] + ".")]
        prefix = _key(root + "\\upload\\")
        data = b"".join(self.files[prefix + p.lower()] for p in parts)
        if hashlib.sha256(data).hexdigest() != sha:
            return Response("upload: the joined archive does not match\r\n", rc=5)
        live = [k for k in self.files if k.startswith(_key(root + "\\tree\\"))]
        live += [k for k in self.files if k.startswith(_key(root + "\\scripts\\"))]
        for k in live:
            del self.files[k]
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for name in zf.namelist():
                self.files[_key(root + "\\" + name.replace("/", "\\"))] = zf.read(name)
        for k in [k for k in self.files if k.startswith(prefix)]:
            del self.files[k]
        self.files[_key(root + "\\.npulab-win\\upload.sha256")] = sha.encode()
        return Response(f"upload: tree and scripts in place (archive {sha})\r\n")

    def _stamp_read(self, argv: list[str], script: str | None) -> Response:
        assert script is not None
        values = string_values(script)
        data = self.files.get(_key(values[1] + "\\" + values[2]))
        return Response((data or b"").decode() + "\r\n")

    def _step(self, argv: list[str], script: str | None) -> Response:
        path = argv[-1]
        name = path.rsplit("\\", 1)[-1]
        text = self.files.get(_key(path))
        if text is None:
            return Response(stderr=f"The system cannot find the file {path}.\r\n", rc=1)
        self.ran.append(name)
        body = text.decode("utf-8")
        state = path.rsplit("\\scripts\\", 1)[0] + "\\.npulab-win\\"
        for line in body.split("\r\n"):
            if line.startswith('type nul >"%NPULAB_STATE%\\'):
                self.files[_key(state + line.rsplit("\\", 1)[-1].rstrip('"'))] = b""
        rc = self.codes.get(name, 0)
        digest = stamp_digest(body)
        if rc == 0 and digest is not None:
            stamp = name.rsplit(".", 1)[0] + ".stamp"
            self.files[_key(state + stamp)] = digest.encode() + b"\r\n"
        return Response(f"ran {name}\r\n", stderr="failed\r\n" if rc else "", rc=rc)
