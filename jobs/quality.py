"""Data-quality Spark job: tick lake + ingest manifests -> one row per symbol and UTC day, cached
(the ingest runs first, cached too).

Usage (plain Python or spark-submit; arguments are Hydra overrides of the repo's ``conf/``)::

    python jobs/quality.py +experiment=demo_universe
    python jobs/quality.py +experiment=btc_dollar_ma data.quality.gap_s=60 data.quality.min_coverage=0.9
    spark-submit jobs/quality.py +experiment=demo spark=cluster storage=s3

Prints the summary table (one line per symbol, totals, excluded days and why), then one JSON line:
the ingest and quality cache keys, the table's location and the counts. Same as
``python -m btsys ... stage=quality``.
"""

from __future__ import annotations

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, REPO)


def main(argv: list[str] | None = None) -> dict:
    from btsys.config import job_config
    from btsys.data.quality import format_summary, summarize
    from btsys.errors import exit_on_user_error
    from btsys.stages import ingest as ingest_stage
    from btsys.stages import quality as quality_stage
    from btsys.stages.context import RunContext

    cfg = job_config(argv, "quality")
    try:
        ctx = RunContext(cfg)
        ingest = ingest_stage.run(ctx)
        quality = quality_stage.run(ctx, ingest)
        table = quality_stage.table(ctx, quality)
    except Exception as e:  # a user error (also from a Spark task): one line, exit 2
        exit_on_user_error(e)
    print(format_summary(table))
    out = {
        "ingest_key": ingest.key,
        "quality_key": quality.key,
        "table": ctx.store.uri(quality.meta["path"]),
        "cache_hit": quality.hit,
        "summary": summarize(table),
    }
    print(json.dumps(out, sort_keys=True, default=str))
    return out


if __name__ == "__main__":
    main()
