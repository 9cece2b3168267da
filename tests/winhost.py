"""A FakeHost that does what Windows does with npulab's build protocol: keeps uploaded files,
runs upload-state and upload-expand themselves (the PowerShell model), answers stamp reads, and
runs step scripts from its own copy of ``scripts\\`` (a stamped ``.cmd`` empties and writes
stamps as the real one).

Values come out of the scripts with tree-sitter (their string literals), never by guessing."""

from __future__ import annotations

from npulab.testing import psmodel
from npulab.testing.fakehost import FakeHost, Response
from npulab.testing.wsman_server import WSManServer
from npulab.windows.steps import stamp_digest
from tests.pwsh import string_values


def _key(path: str) -> str:
    return path.lower()


class BuildHost:
    def __init__(self, host: FakeHost, server: WSManServer | None = None) -> None:
        self.host = host
        #: The WS-Man server answering for ``host`` (tests connect their transport to it).
        self.server = server
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
        return self._powershell(script)

    def _expand(self, argv: list[str], script: str | None) -> Response:
        return self._powershell(script)

    def _powershell(self, script: str | None) -> Response:
        """The upload scripts run as they are, through the PowerShell model, on this disk."""
        assert script is not None
        ran = psmodel.run(script, psmodel.WinFS(self.files))
        return Response(ran.stdout, ran.stderr, ran.rc)

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
