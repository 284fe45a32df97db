"""Binance data: URLs, layouts and the streaming CSV reader (``binance``), streaming
fetch/verify/unzip (``download``), validation day by day (``validate``), the tick lake's layout,
day index and commit (``lake``), live progress (``progress``), the seeded Binance-layout mirror
(``synthetic``) and the Spark ingest job (``ingest``)."""

from btsys.data.binance import SourceFile, check_symbol, plan_files, plan_funding  # noqa: F401

__all__ = ["SourceFile", "check_symbol", "plan_files", "plan_funding"]
