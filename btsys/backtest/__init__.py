"""Backtest engine: numba event loop (``_nb``), ``simulate``, portfolios, metrics and sweeps."""

from btsys.backtest.engine import BacktestResult, simulate, simulate_from_config

__all__ = ["BacktestResult", "simulate", "simulate_from_config"]
