"""The command line the benchmarks share: ``--quick`` runs tiny sizes.

The test suite runs every ``bench/*.py`` with ``--quick`` (tests/test_workflows.py, through
``make bench BENCH=... BENCH_ARGS=--quick``), so a benchmark that no longer imports or runs fails
the tests; its figures are meaningless at those sizes. A size given explicitly wins over the quick
one::

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bars", type=int, default=1_000_000)
    a = parse_args(ap, argv, quick={"bars": 20_000})
"""

from __future__ import annotations

import argparse
from typing import Any, Mapping, Optional, Sequence


def parse_args(
    ap: argparse.ArgumentParser,
    argv: Optional[Sequence[str]] = None,
    quick: Optional[Mapping[str, Any]] = None,
) -> argparse.Namespace:
    """Add ``--quick`` to ``ap``, parse ``argv``; with ``--quick``, options left at their default take
    the values of ``quick`` (keyed by ``dest``)."""
    quick = dict(quick or {})
    shown = ", ".join(f"{k}={v}" for k, v in quick.items()) or "the default sizes are already small"
    ap.add_argument("--quick", action="store_true", help=f"tiny sizes for a smoke test ({shown})")
    a = ap.parse_args(argv)
    if a.quick:
        for dest, value in quick.items():
            if getattr(a, dest) == ap.get_default(dest):
                setattr(a, dest, value)
    return a
