"""Binance data: URLs and layouts (``binance``), fetch/verify/unzip (``download``), validation
(``validate``), the seeded Binance-layout mirror (``synthetic``) and the Spark ingest job (``ingest``)."""

from btsys.data.binance import SourceFile, check_symbol, plan_files, plan_funding  # noqa: F401

__all__ = ["SourceFile", "check_symbol", "plan_files", "plan_funding"]
