"""btsys: distributed backtesting of crypto trading strategies.

``btsys.load(...)`` returns the bars, features and backtest of a cached or logged run
(:mod:`btsys.loader`); it is imported on first use, so ``import btsys`` stays light.
"""

__version__ = "0.1.0"

__all__ = ["load"]


def __getattr__(name: str):
    if name == "load":
        from btsys.loader import load

        return load
    raise AttributeError(f"module 'btsys' has no attribute {name!r}")
