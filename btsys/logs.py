"""One log format for everything a run prints: btsys, Hydra, MLflow, Spark's JVM and its workers.

Python lines read ``2025-01-01 12:00:00,123 INFO btsys.stages.bars: message`` and go to stderr (stdout
is left to results: ``--cfg job``, the jobs' JSON line). Hydra's job and framework logging use
:class:`Formatter` and :class:`RedactFilter` through ``conf/hydra/{job,hydra}_logging/btsys.yaml``;
scripts outside Hydra call :func:`setup_logging`. Spark's JVM logs through
``btsys/spark_conf/log4j2.properties`` (same layout, warnings and errors only; see
:func:`btsys.spark.get_spark`).

Every record passes :class:`RedactFilter`, so credentials inside URLs never reach the terminal or a
job log, whichever module logged them.
"""

from __future__ import annotations

import logging
import os
import sys

from btsys.redact import redact_text

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Third-party loggers that chatter at INFO (schema migrations, gateway traffic).
QUIET = {
    "mlflow": logging.WARNING,
    "alembic": logging.WARNING,
    "py4j": logging.WARNING,
    "botocore": logging.WARNING,
}

LOG4J2 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spark_conf", "log4j2.properties")


class Formatter(logging.Formatter):
    """The btsys line layout (:data:`LOG_FORMAT`)."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)


class RedactFilter(logging.Filter):
    """Masks credentials and query tokens in URLs of the message and its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                record.msg = record.getMessage()
            except (TypeError, ValueError):  # a malformed call: keep the raw message
                record.msg = str(record.msg)
            record.args = None
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True


def quiet_third_party() -> None:
    """Lower the chattiest libraries to warnings and let MLflow log through the root handlers."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    for name, level in QUIET.items():
        logging.getLogger(name).setLevel(level)


class StderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record is written, not when the handler
    was made (test harnesses and notebooks swap it; an entry point run in-process more than once
    would otherwise keep writing to a closed stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the current one is used
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """btsys's handler on the root logger (stderr, one format, redacted); for scripts outside Hydra.

    Idempotent: a second call replaces nothing.
    """
    root = logging.getLogger()
    if not any(getattr(h, "_btsys", False) for h in root.handlers):
        h = StderrHandler()
        h.setFormatter(Formatter())
        h.addFilter(RedactFilter())
        h._btsys = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(level)
    quiet_third_party()
