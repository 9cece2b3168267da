"""Shared glue between Invoke and the npulab package."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit

F = TypeVar("F", bound=Callable[..., Any])


def fails_cleanly(func: F) -> F:
    """Turn an NpulabError into a one-message exit with its exit code (traceback only with
    NPULAB_DEBUG=1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from npulab import oserror, paths
        from npulab.errors import CommandError, NpulabError

        try:
            return func(*args, **kwargs)
        except (NpulabError, OSError) as exc:
            if os.environ.get("NPULAB_DEBUG"):
                raise
            if isinstance(exc, OSError):
                exc = oserror.as_npulab_error(exc)
            elif isinstance(exc, CommandError):
                exc = oserror.explain_command_error(exc, [paths.build_root(), paths.cache_root()])
            msg = f"error: {exc}"
            raise Exit(msg, code=exc.exit_code) from None
        except KeyboardInterrupt:
            msg = "interrupted"
            raise Exit(msg, code=130) from None

    return wrapper  # type: ignore[return-value]


def is_dry_run(c: Context, flag: bool = False) -> bool:
    """``--dry-run`` on the task, or ``invoke --dry`` / ``run.dry: true`` in invoke.yaml."""
    return bool(flag or c.config.run.dry)


def config_value(c: Context, key: str, default: Any = None) -> Any:
    """A value from the ``npulab:`` section of invoke.yaml (or INVOKE_NPULAB_* env vars)."""
    section = c.config.get("npulab", {}) or {}
    return section.get(key, default)


def seconds(value: str, option: str) -> float:
    """A duration option: taken as text so ``invoke --help`` shows ``--option=STRING`` (invoke
    prints no value placeholder for a float default), then checked here."""
    from npulab.errors import ConfigError

    if not value:
        return 0.0
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number < 0:
        msg = f"{option}: expected seconds (a number >= 0), got {value!r}"
        raise ConfigError(msg)
    return number
