"""btsys: distributed backtesting of crypto trading strategies."""

__version__ = "0.1.0"
