"""Named points where a test can stop the process, to check what a kill there leaves behind.

``failpoint("ingest.commit.rename")`` does nothing unless the environment variable
``BTSYS_FAILPOINT`` names that point. Then it writes the name to the file named by
``BTSYS_FAILPOINT_MARKER`` (when set) and waits: the test that set the variable sees the marker
and kills the process tree with SIGKILL at exactly that point. The check costs one environment
lookup, and the points sit between phases (never in per-row loops).
"""

from __future__ import annotations

import os
import time


def failpoint(name: str) -> None:
    if os.environ.get("BTSYS_FAILPOINT") != name:
        return
    marker = os.environ.get("BTSYS_FAILPOINT_MARKER")
    if marker:
        tmp = f"{marker}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{name} {os.getpid()}\n")
        os.replace(tmp, marker)
    while True:  # until killed
        time.sleep(1.0)
