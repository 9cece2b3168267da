"""WinRM credentials: from the environment or a secrets file outside the repository, never logged.

Lookup order for a host named ``lab-phx-01`` (upper-cased, non-alphanumerics -> ``_``):

1. ``NPULAB_WINRM_USER_LAB_PHX_01`` / ``NPULAB_WINRM_PASSWORD_LAB_PHX_01``
2. ``NPULAB_WINRM_USER`` / ``NPULAB_WINRM_PASSWORD``
3. the secrets file (``NPULAB_SECRETS_FILE`` or ``~/.config/npulab/secrets.yaml``)::

       default: {user: labadmin, password: "..."}
       hosts:
         lab-phx-01: {password: "..."}

   It must be readable by its owner only (``chmod 600``) and must not live inside the project.
4. for the user name only: a literal ``ansible_user`` from the inventory (a name is not a secret).

The password is a :class:`Secret`: its ``repr``/``str`` are masked, it refuses to be pickled,
and :func:`redact` scrubs it from any text before that text is shown.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from npulab.errors import ConfigError
from npulab.schema import load_yaml

MASK = "********"
DEFAULT_SECRETS_FILE = Path("~/.config/npulab/secrets.yaml")


class Secret:
    """A string that does not show itself; :meth:`reveal` only where it is handed to pywinrm."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:
        msg = "a Secret cannot be pickled or copied out of the process"
        raise TypeError(msg)


@dataclass(frozen=True)
class Credentials:
    user: str
    password: Secret
    source: str  # where they came from, e.g. "env NPULAB_WINRM_PASSWORD" (never the value)


def env_suffix(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", host).upper()


def redact(text: str, secrets: Iterable[Secret | None]) -> str:
    """Replace every secret value in ``text`` with the mask."""
    for secret in secrets:
        if secret is not None and secret.reveal():
            text = text.replace(secret.reveal(), MASK)
    return text


def secrets_file_path(env: Mapping[str, str]) -> Path:
    raw = env.get("NPULAB_SECRETS_FILE")
    return Path(raw).expanduser() if raw else DEFAULT_SECRETS_FILE.expanduser()


def _read_secrets_file(path: Path, project: Path | None) -> dict[str, Any]:
    if not path.is_file():
        return {}
    resolved = path.resolve()
    if project is not None and resolved.is_relative_to(project.resolve()):
        msg = f"{path}: the secrets file is inside the project tree; credentials never live in it"
        raise ConfigError(msg, hint=f"move it to {DEFAULT_SECRETS_FILE} (chmod 600)")
    if sys.platform != "win32":
        mode = resolved.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            msg = f"{path}: readable by others (mode {stat.filemode(mode)})"
            raise ConfigError(msg, hint=f"chmod 600 {path}")
    data = load_yaml(resolved) or {}
    if not isinstance(data, dict):
        msg = f"{path}: expected a mapping with 'default' and/or 'hosts'"
        raise ConfigError(msg)
    unknown = set(data) - {"default", "hosts"}
    if unknown:
        msg = f"{path}: unknown keys {sorted(unknown)}; known keys: default, hosts"
        raise ConfigError(msg)
    return data


def _entry(data: Mapping[str, Any], path: Path, key: str, *sub: str) -> dict[str, str]:
    node: Any = data
    for part in sub:
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return {}
    if not isinstance(node, dict) or not all(
        k in ("user", "password") and isinstance(v, str) for k, v in node.items()
    ):
        msg = f"{path}: {key}: expected a mapping with string 'user' and/or 'password'"
        raise ConfigError(msg)
    return node


def resolve(
    host: str,
    *,
    inventory_user: str | None = None,
    env: Mapping[str, str] | None = None,
    project: Path | None = None,
) -> Credentials:
    """The credentials for ``host``; ConfigError (naming where to put them) when there are none."""
    env = os.environ if env is None else env
    suffix = env_suffix(host)
    path = secrets_file_path(env)
    data = _read_secrets_file(path, project)
    per_host = _entry(data, path, f"hosts.{host}", "hosts", host)
    default = _entry(data, path, "default", "default")

    user_candidates = [
        (env.get(f"NPULAB_WINRM_USER_{suffix}"), f"env NPULAB_WINRM_USER_{suffix}"),
        (env.get("NPULAB_WINRM_USER"), "env NPULAB_WINRM_USER"),
        (per_host.get("user"), f"{path} hosts.{host}.user"),
        (default.get("user"), f"{path} default.user"),
        (inventory_user, "inventory ansible_user"),
    ]
    password_candidates = [
        (env.get(f"NPULAB_WINRM_PASSWORD_{suffix}"), f"env NPULAB_WINRM_PASSWORD_{suffix}"),
        (env.get("NPULAB_WINRM_PASSWORD"), "env NPULAB_WINRM_PASSWORD"),
        (per_host.get("password"), f"{path} hosts.{host}.password"),
        (default.get("password"), f"{path} default.password"),
    ]
    user = next(((v, s) for v, s in user_candidates if v), None)
    password = next(((v, s) for v, s in password_candidates if v is not None), None)
    if user is None or password is None:
        missing = "user" if user is None else "password"
        msg = f"no WinRM {missing} for host {host!r}"
        if env.get("NPULAB_SECRETS_FILE") and not path.is_file():
            # The user pointed at a file that is not there: that is the news, not the missing user.
            msg += f" (NPULAB_SECRETS_FILE={env['NPULAB_SECRETS_FILE']}: no such file)"
        raise ConfigError(
            msg,
            hint=(
                f"export NPULAB_WINRM_USER and NPULAB_WINRM_PASSWORD (or ..._{suffix} for this "
                f"host only), or write them to {DEFAULT_SECRETS_FILE} (chmod 600)"
            ),
        )
    return Credentials(user=user[0], password=Secret(password[0]), source=password[1])
