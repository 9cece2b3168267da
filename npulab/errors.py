"""One error hierarchy for npulab.

Every error says what failed, where, and the command that mends it. Each class owns an exit code,
so the task boundary (``invoke_tasks._common``) maps any of them to ``sys.exit`` without a
traceback. Build messages as ``msg = f"..."`` then ``raise X(msg)``.
"""

from __future__ import annotations

from collections.abc import Sequence


class NpulabError(Exception):
    """Base of every error npulab raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  fix: {self.hint}"
        return self.message


class ConfigError(NpulabError):
    """A recipe, inventory, matrix or config file is invalid (file, key path, expectation)."""

    exit_code = 2


class SourceError(NpulabError):
    """A pinned source cannot be fetched or does not verify (moved tag, missing commit, LFS)."""

    exit_code = 3


class PatchError(NpulabError):
    """A patch in a series does not apply exactly, or the series metadata is wrong."""

    exit_code = 4


class CommandError(NpulabError):
    """A local or remote command failed. Carries the command, exit code and captured output."""

    exit_code = 5

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str] | str,
        returncode: int | None,
        stdout: str = "",
        stderr: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.command = command
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def __str__(self) -> str:
        text = super().__str__()
        tail = (self.stderr or self.stdout).strip().splitlines()[-15:]
        if tail:
            text += "\n  output (last lines):\n" + "\n".join(f"    {line}" for line in tail)
        return text


class TransportError(NpulabError):
    """A remote host could not be reached, authenticated or kept talking to."""

    exit_code = 6


class VerificationError(NpulabError):
    """Content does not match its pin (sha256, size, commit, tree, hub revision)."""

    exit_code = 7


class BuildStepError(NpulabError):
    """A build step failed; names the step, its log file and the exit code."""

    exit_code = 8


class SmokeFailure(NpulabError):
    """The smoke test ran but its verdict is FAIL."""

    exit_code = 9


class DriftError(NpulabError):
    """An upstream pin (tag, hub revision, installer, action) no longer matches what we pinned."""

    exit_code = 10


class SystemFailure(NpulabError):
    """The operating system refused a file operation (disk full, permission, missing path)."""

    exit_code = 11
