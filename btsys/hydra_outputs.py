"""Hydra's own output files without secrets.

Hydra writes the composed config, its own config and the overrides of every job to
``<output dir>/.hydra/{config,hydra,overrides}.yaml`` and a sweep's ``multirun.yaml`` (plus the
sweeper's result files) before btsys code runs, so a password in ``data.source.base_url`` would be
stored there verbatim. :class:`RedactOutputs` (enabled in ``conf/config.yaml``) rewrites those
files with every URL's credentials and secret query values masked (:mod:`btsys.redact`), at the
start of each job and at the end of a multirun. Job logs are redacted as they are written
(:class:`btsys.logs.RedactFilter`).
"""

from __future__ import annotations

import glob
import os
from typing import Any

from hydra.experimental.callback import Callback

from btsys.redact import redact_text

HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def redact_file(path: str) -> bool:
    """Rewrite ``path`` with URLs redacted (atomically); True when something was masked."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return False
    clean = redact_text(text)
    if clean == text:
        return False
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(clean)
    os.replace(tmp, path)
    return True


class RedactOutputs(Callback):
    """Redacts ``.hydra/*.yaml`` of each job and the sweep directory's YAML files."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        hc = config.hydra
        if hc.output_subdir is not None:
            for name in HYDRA_FILES:
                redact_file(os.path.join(str(hc.runtime.output_dir), str(hc.output_subdir), name))
        if "MULTIRUN" in str(hc.mode):
            self._redact_sweep_dir(str(hc.sweep.dir))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        self._redact_sweep_dir(str(config.hydra.sweep.dir))

    @staticmethod
    def _redact_sweep_dir(sweep_dir: str) -> None:
        for path in glob.glob(os.path.join(sweep_dir, "*.yaml")):
            redact_file(path)
