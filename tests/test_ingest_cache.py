"""The ingest cache never serves a listing whose lake files were replaced by another source."""

from __future__ import annotations

from conftest import CONF_DIR
from hydra import compose, initialize_config_dir

from btsys.data.ingest import read_ticks
from btsys.stages import ingest
from btsys.stages.context import RunContext


def _cfg(root, seed):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "+experiment=demo",
                "data.symbols=[BTCUSDT]",
                "data.end=2025-01-01",
                "data.synthetic.ticks_per_day=2000",
                f"data.synthetic.seed={seed}",
                f"storage.root={root}",
            ],
        )


def _prices(ctx, entry):
    return read_ticks(ctx.store, [p["path"] for p in entry.meta["partitions"]])["price"].to_numpy()


def test_listing_of_a_replaced_source_is_not_trusted(spark, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    a = RunContext(_cfg(tmp_path / "store", 1))
    first = ingest.run(a)
    prices_a = _prices(a, first)
    b = RunContext(_cfg(tmp_path / "store", 2))
    second = ingest.run(b)  # same file names, other content: parts replaced
    assert second.key != first.key and not second.hit
    assert not (_prices(b, second) == prices_a).all()
    with caplog.at_level("WARNING", logger="btsys.stages.ingest"):
        again = ingest.run(RunContext(_cfg(tmp_path / "store", 1)))
    assert not again.hit and "lake days changed" in caplog.text
    assert (_prices(a, again) == prices_a).all()  # seed 1's ticks again, not seed 2's
    assert ingest.run(RunContext(_cfg(tmp_path / "store", 1))).hit  # and now a plain hit
