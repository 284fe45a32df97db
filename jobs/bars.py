"""Bars Spark job: tick lake -> bar tables, cached (ingest runs first, cached too).

Usage (plain Python or spark-submit; arguments are Hydra overrides of the repo's ``conf/``)::

    python jobs/bars.py +experiment=demo bars=dollar
    python jobs/bars.py data=binance data.symbols=[BTCUSDT] bars=dollar_imbalance bars.ewma_span=50
    spark-submit jobs/bars.py +experiment=demo spark=cluster storage=s3

Prints one JSON line: the ingest and bars cache keys, the bars entry prefix and per-symbol meta.
The data-quality stage runs first (cached), so the days its policy excludes are left out exactly as
in ``python -m btsys`` (same bars key).
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
    from btsys.data.quality import excluded_days
    from btsys.errors import exit_on_user_error
    from btsys.stages import bars as bars_stage
    from btsys.stages import ingest as ingest_stage
    from btsys.stages import quality as quality_stage
    from btsys.stages.context import RunContext

    cfg = job_config(argv, "bars")
    try:
        ctx = RunContext(cfg)
        ingest = ingest_stage.run(ctx)
        quality = quality_stage.run(ctx, ingest)
        bars = bars_stage.run(ctx, ingest, excluded_days(quality_stage.table(ctx, quality)))
    except Exception as e:  # a user error (also from a Spark task): one line, exit 2
        exit_on_user_error(e)
    out = {
        "ingest_key": ingest.key,
        "quality_key": quality.key,
        "bars_key": bars.key,
        "bars_prefix": ctx.store.uri(bars.prefix),
        "cache_hit": bars.hit,
        "symbols": bars.meta.get("symbols", {}),
    }
    print(json.dumps(out, sort_keys=True, default=str))
    return out


if __name__ == "__main__":
    main()
