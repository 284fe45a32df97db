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

import importlib
import logging
import os
import re
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


class TradesMissing(DataError):
    """The trades of a bar are not where the bar says (``intrabar=ticks``): names the bar and day."""


class TrackingError(UserError, RuntimeError):
    """The MLflow tracking store cannot be used (names ``mlflow.tracking_uri``)."""


#: The last ``module.Class: message`` line of a Python traceback (a Spark task's, inside the JVM error).
_TASK_ERROR_RE = re.compile(r"^(btsys(?:\.\w+)+)\.(\w+): (.+)$", re.M)


def as_user_error(exc: BaseException) -> Optional[UserError]:
    """``exc`` itself when it is a :class:`UserError`; the user error a Spark task raised when
    ``exc`` is the driver's report of that failed task (Spark wraps the worker's traceback in a
    JVM error); else None (a bug: keep the traceback).

    The task's error keeps its class and its one-line text (which already names the key or file).
    """
    if isinstance(exc, UserError):
        return exc
    text = str(exc)
    if "Traceback" not in text:
        return None
    found = None
    for module, name, message in _TASK_ERROR_RE.findall(text):
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(cls, type) and issubclass(cls, UserError):
            found = (cls, message)  # the last one: the error that ended the task
    if found is None:
        return None
    cls, message = found
    err = cls.__new__(cls)
    UserError.__init__(err, message.strip())
    return err


def debug_enabled() -> bool:
    """True when tracebacks of user errors are wanted (``HYDRA_FULL_ERROR=1`` or ``--debug``)."""
    return os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")


def exit_on_user_error(
    exc: BaseException, logger: Optional[logging.Logger] = None, reraise: bool = True
) -> None:
    """Log ``exc`` as one ERROR line and exit with :data:`USER_ERROR_EXIT` when it is a user error
    (also one raised inside a Spark task, see :func:`as_user_error`); re-raise anything else (a bug
    keeps its traceback). When debugging, re-raise the user error too (``reraise=False``, for callers
    whose exceptions Hydra would only warn about: log it with its traceback and exit all the same).

    Call it from an ``except Exception`` block of an entry point."""
    user = as_user_error(exc)
    if user is None:
        raise exc
    logger = logger or logging.getLogger("btsys")
    if debug_enabled():
        if reraise:
            raise user
        logger.error("%s", user.line(), exc_info=exc)
        raise SystemExit(USER_ERROR_EXIT)
    logger.error("%s", user.line())
    raise SystemExit(USER_ERROR_EXIT)
