"""Errors a user can cause and fix, reported as one line.

Raise a :class:`UserError` (or one of its subclasses) for anything the person running btsys can
correct: a config value out of range, a symbol that does not exist, an unreachable tracking store,
a missing S3 bucket. The entry points (``btsys`` / ``python -m btsys``, ``jobs/*.py``, the Hydra
sweep callback) turn it into one log line and a non-zero exit, without a traceback; anything else
is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` or ``btsys --debug`` shows the traceback
of user errors too.

The line reads ``<key>: <problem> (hint: <what to do>)``::

    raise ConfigError("must be < strategy.slow (50), got 60", key="strategy.fast",
                      hint="swap the two or lower strategy.fast")

Each class also derives from the built-in type callers already catch (``ValueError``,
``RuntimeError``), so raising it where a ``ValueError`` was raised before breaks no caller.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

#: Exit status of a run stopped by a :class:`UserError` (Hydra uses 1 for everything else).
USER_ERROR_EXIT = 2


class UserError(Exception):
    """An error the user can fix: a message, the config key (or file, row) it is about, a hint."""

    def __init__(self, message: str, *, key: Optional[str] = None, hint: Optional[str] = None):
        self.message = str(message)
        self.key = key
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        """The one-line form: ``key: message (hint: ...)``, secrets in URLs masked."""
        from btsys.redact import redact_text

        text = f"{self.key}: {self.message}" if self.key else self.message
        if self.hint:
            text += f" (hint: {self.hint})"
        return redact_text(" ".join(text.split()))


class ConfigError(UserError, ValueError):
    """A config value is invalid or inconsistent (names the dotted config key)."""


class DataError(UserError, ValueError):
    """Input data cannot be used as it is (names the file or row)."""


class TrackingError(UserError, RuntimeError):
    """The MLflow tracking store cannot be used (names ``mlflow.tracking_uri``)."""


def debug_enabled() -> bool:
    """True when tracebacks of user errors are wanted (``HYDRA_FULL_ERROR=1`` or ``--debug``)."""
    return os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")


def exit_on_user_error(exc: UserError, logger: Optional[logging.Logger] = None, reraise: bool = True) -> None:
    """Log ``exc`` as one ERROR line and exit with :data:`USER_ERROR_EXIT`; when debugging, re-raise
    it (``reraise=False``, for callers whose exceptions Hydra would only warn about: log it with
    its traceback and exit all the same)."""
    logger = logger or logging.getLogger("btsys")
    if debug_enabled():
        if reraise:
            raise exc
        logger.error("%s", exc.line(), exc_info=exc)
        raise SystemExit(USER_ERROR_EXIT)
    logger.error("%s", exc.line())
    raise SystemExit(USER_ERROR_EXIT)
