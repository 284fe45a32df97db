"""``backtest.intrabar=ticks`` through the pipeline: the backtest stage reads the bars' trades from
the tick lake the bars came from, logs what they changed, and stops naming the bar and the day
when a lake day is gone."""

from __future__ import annotations

import pytest
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir

from btsys import pipeline as P
from btsys.errors import TradesMissing


def _cfg(overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=["+experiment=demo", *overrides])


def test_ticks_run_through_the_pipeline(tmp_path, spark, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = [
        "data.symbols=[BTCUSDT]",
        "data.end=2025-01-03",
        "data.synthetic.ticks_per_day=4000",
        f"storage.root={tmp_path / 'store'}",
        "stage=backtest",
        "strategy.fast=3",
        "strategy.slow=8",
        "backtest.direction=both",
        "backtest.risk.stop_loss=0.002",
        "backtest.risk.take_profit=0.003",
    ]
    ohlc = P.run(_cfg(base))
    ticks = P.run(_cfg([*base, "backtest.intrabar=ticks"]))
    assert "intrabar_disagreements" not in ohlc
    assert ticks["intrabar_bars"] > 0 and 0 < ticks["intrabar_share"] < 1
    assert ticks["intrabar_pnl_diff"] == pytest.approx(ticks["final_value"] - ohlc["final_value"], abs=1e-9)
    assert ticks["bars_key"] == ohlc["bars_key"]  # the same bars, resolved another way
    store = tmp_path / "store"
    (day,) = [p for p in store.glob("lake/market=*/dataset=*/symbol=BTCUSDT/date=2025-01-02/part-0.parquet")]
    day.unlink()
    with pytest.raises(
        TradesMissing, match=r"bar \d+ \(closed 2025-01-02 .*\) of BTCUSDT: its trades on 2025-01-02"
    ):
        P.run(_cfg([*base, "backtest.intrabar=ticks", "backtest.risk.stop_loss=0.0021"]))
