"""What every stage is given: the run's config, its store and a Spark session made on demand."""

from __future__ import annotations

from typing import Any

from btsys.storage import make_storage


class RunContext:
    """The config (``data.symbols`` files resolved), the store of ``storage``, and a Spark session
    created only when a stage asks for it (``spark``)."""

    def __init__(self, cfg: Any):
        from btsys.universe.symbols import resolve_symbols

        resolve_symbols(cfg)  # data.symbols entries file:PATH -> the file's symbols
        self.cfg = cfg
        self.store = make_storage(cfg.storage)
        self._spark = None

    @property
    def force(self) -> bool:
        """``force=true``: recompute the cached stages."""
        return bool(self.cfg.force)

    @property
    def spark(self):
        if self._spark is None:
            from btsys.spark import get_spark

            self._spark = get_spark(self.cfg.spark)
        return self._spark
