"""File transfer over WinRM: stdin chunks with a sha256 check, temp name then rename."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from npulab import log
from npulab.errors import TransportError, VerificationError
from npulab.transport import psscripts


class RemoteFiles:
    """put_file/get_file for a transport that can run the upload receiver and fetch script."""

    @property
    def host(self) -> str:  # pragma: no cover - provided by the transport
        raise NotImplementedError

    def _execute_upload(self, argv: Sequence[str], lines: Sequence[bytes]) -> tuple[int, str, str]:
        raise NotImplementedError  # pragma: no cover

    def _fetch_text(self, script: str) -> str:
        raise NotImplementedError  # pragma: no cover

    def put_file(self, local: Path, remote: str, *, dry_run: bool = False) -> None:
        """Copy ``local`` to ``remote``: streamed over stdin, hashed on arrival, renamed into place
        only when the sha256 matches."""
        data = Path(local).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        log.command(
            f"put {local} -> {remote} ({len(data)} bytes, sha256 {sha[:12]})",
            where=self.host,
            dry_run=dry_run,
        )
        if dry_run:
            return
        argv = psscripts.encoded_command(psscripts.upload_receiver(remote, sha))
        rc, out, err = self._execute_upload(argv, psscripts.b64_lines(data))
        if rc == psscripts.EXIT_UPLOAD_HASH:
            msg = f"{self.host}: {remote}: the upload arrived damaged (sha256 mismatch); not kept"
            raise VerificationError(msg, hint="re-run the command; the old file is unchanged")
        if rc != 0 or out.strip().lower() != sha:
            msg = f"{self.host}: upload to {remote} failed (exit {rc}): {err.strip()[-300:]}"
            raise TransportError(msg, hint="check the remote path and free disk space")

    def get_file(self, remote: str, local: Path) -> None:
        """Copy ``remote`` to ``local`` (verified against the host's sha256; temp then rename)."""
        log.command(f"get {remote} -> {local}", where=self.host)
        text = self._fetch_text(psscripts.fetch_script(remote))
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines or not lines[-1].startswith("sha256:"):
            msg = f"{self.host}: fetching {remote} returned no checksum line"
            raise TransportError(msg)
        try:
            data = b"".join(base64.b64decode(line, validate=True) for line in lines[:-1])
        except binascii.Error:
            msg = f"{self.host}: fetching {remote} returned damaged base64"
            raise VerificationError(msg) from None
        expected = lines[-1].removeprefix("sha256:").lower()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            msg = f"{self.host}: {remote}: sha256 {actual} does not match the host's {expected}"
            raise VerificationError(msg, hint="re-run the fetch")
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            Path(tmp).replace(local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
