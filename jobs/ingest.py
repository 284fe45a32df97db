"""Ingest Spark job: Binance zips (public site, file:// mirror or loopback HTTP) -> tick lake.

Usage (plain Python or spark-submit; arguments are Hydra overrides of the repo's ``conf/``, the
same as ``python -m btsys``)::

    python jobs/ingest.py +experiment=demo data.symbols=[BTCUSDT,ETHUSDT]
    python jobs/ingest.py data=binance data.market=um data.symbols=[BTCUSDT] data.funding=true \
        data.start=2025-01-01 data.end=2025-02-10
    spark-submit jobs/ingest.py +experiment=btc_dollar_ma spark=cluster storage=s3

Runs only the ingest stage (:func:`btsys.stages.ingest.run`: cached, a rerun is a cache hit) and
prints one JSON line: the ingest key, the listing's storage URI and the summary counts. Exits 2
with one log line naming the files (:class:`btsys.errors.UserError`) if files failed or, with
``data.require_complete=true``, were missing (a rerun retries exactly those files), if every file
asked for was missing, or on a bad ``data`` setting (naming the key).
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
    from btsys.errors import exit_on_user_error
    from btsys.stages import ingest as ingest_stage
    from btsys.stages.context import RunContext

    cfg = job_config(argv, "ingest")
    try:
        ctx = RunContext(cfg)
        entry = ingest_stage.run(ctx)
    except Exception as e:  # a user error (also from a Spark task): one line, exit 2
        exit_on_user_error(e)
    out = {
        "ingest_key": entry.key,
        "listing": ctx.store.uri(f"{entry.prefix}/listing.json"),
        "cache_hit": entry.hit,
        "summary": {
            k: v
            for k, v in entry.meta.get("summary", {}).items()
            if not isinstance(v, (list, dict)) or k == "dropped"
        },
    }
    print(json.dumps(out, sort_keys=True, default=str))
    return out


if __name__ == "__main__":
    main()
