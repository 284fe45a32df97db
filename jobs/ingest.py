"""Ingest Spark job: Binance zips (public site, file:// mirror or loopback HTTP) -> tick lake.

Usage (plain Python or spark-submit; arguments are Hydra overrides of the repo's ``conf/``, the
same as ``python -m btsys``)::

    python jobs/ingest.py +experiment=demo data.symbols=[BTCUSDT,ETHUSDT]
    python jobs/ingest.py data=binance data.market=um data.symbols=[BTCUSDT] data.funding=true \
        data.start=2025-01-01 data.end=2025-02-10
    spark-submit jobs/ingest.py +experiment=btc_dollar_ma spark=cluster storage=s3

Runs only the ingest stage (:func:`btsys.pipeline.ingest_stage`: cached, a rerun is a cache hit) and
prints one JSON line: the ingest key, the listing's storage URI and the summary counts. Exits 1
(with the per-file errors on stderr) if files failed or, with ``data.require_complete=true``, were
missing (a rerun retries exactly those files), if every file asked for was missing, or on a bad
``data`` setting.
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
    from btsys.data.ingest import IngestError
    from btsys.pipeline import RunContext, ingest_stage
    from btsys.redact import redact_text

    cfg = job_config(argv, "ingest")
    ctx = RunContext(cfg)
    try:
        entry = ingest_stage(ctx)
    except (IngestError, ValueError) as e:  # messages name the file, key or URL (redacted)
        print(redact_text(str(e)), file=sys.stderr)
        raise SystemExit(1) from None
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
