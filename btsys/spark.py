"""SparkSession from the ``spark`` config group.

``local[*]`` by default; ``spark.master`` points at any cluster (under ``spark-submit``, its
``--master`` wins). Workers run the driver's Python
(``PYSPARK_PYTHON``), the session time zone is UTC. With ``ship_package=true`` the
``btsys`` package and ``conf/`` are zipped and added with ``addPyFile`` so executors need only
Python with the dependencies.

The JVM the session launches logs through ``btsys/spark_conf/log4j2.properties`` (warnings and
errors, btsys's line layout) from its first line; the session is stopped when the Python process
exits, so a ``local-cluster`` or standalone application ends cleanly instead of its executors being
killed and relaunched while the JVM shuts down.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
import zipfile
from typing import Any, Mapping

log = logging.getLogger(__name__)

_DEFAULT_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.python.worker.reuse": "true",
}


def package_zip(dest_dir: str | None = None) -> str:
    """Zip the ``btsys`` package (and ``conf/`` inside it as ``btsys/_conf``) for executors."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    conf = os.path.join(os.path.dirname(pkg), "conf")
    dest_dir = dest_dir or tempfile.mkdtemp(prefix="btsys-pkg-")
    out = os.path.join(dest_dir, "btsys.zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for base, arc_root in [(pkg, "btsys"), (conf, "btsys/_conf")]:
            if not os.path.isdir(base):
                continue
            for dirpath, dirnames, files in os.walk(base):
                dirnames[:] = [d for d in dirnames if d != "__pycache__"]
                for fn in files:
                    if fn.endswith((".pyc",)):
                        continue
                    full = os.path.join(dirpath, fn)
                    zf.write(full, os.path.join(arc_root, os.path.relpath(full, base)))
    return out


def _with_log4j(java_options: str) -> str:
    """Driver JVM options with btsys's log4j2 config, unless they already name one."""
    from btsys.logs import LOG4J2

    if "log4j2.configurationFile" in java_options:
        return java_options
    return f"{java_options} -Dlog4j2.configurationFile=file:{LOG4J2}".strip()


def _stop(spark) -> None:
    try:
        spark.stop()
    except Exception as e:  # pragma: no cover - the JVM may already be gone
        log.debug("spark.stop() at exit failed: %s", e)


def get_spark(cfg: Mapping[str, Any] | None = None):
    """Get or create the SparkSession described by a ``spark`` config node (or dict)."""
    from pyspark.sql import SparkSession

    cfg = dict(cfg or {})
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(str(cfg.get("app_name") or "btsys"))
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        # under spark-submit the JVM already exists and its --master is the authority
        builder = builder.master(str(cfg.get("master") or "local[*]"))
    conf = dict(_DEFAULT_CONF)
    conf.update({str(k): str(v) for k, v in (cfg.get("conf") or {}).items()})
    conf["spark.driver.extraJavaOptions"] = _with_log4j(conf.get("spark.driver.extraJavaOptions", ""))
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if not getattr(spark, "_btsys_stop_registered", False):
        atexit.register(_stop, spark)
        spark._btsys_stop_registered = True
    if cfg.get("ship_package") and not getattr(spark, "_btsys_shipped", False):
        path = package_zip()
        spark.sparkContext.addPyFile(path)
        spark._btsys_shipped = True
        log.info("shipped %s to executors", path)
    return spark
