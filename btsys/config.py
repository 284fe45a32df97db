"""Typed config schemas, registered in Hydra's ConfigStore.

Every group of ``conf/`` is validated against one of these frozen-by-struct dataclasses, so a
misspelt key (``strategy.fsat=5``) or a wrong type (``bars.threshold=abc``) fails at compose time
with a message that names the key. Units are in the field names or docstrings: fractions are plain
fractions (0.001 = 0.1 %), times are UTC, timestamps int64 microseconds.

Strategies have one schema per strategy (a subclass of :class:`StrategyConfig`); each
``conf/strategy/NAME.yaml`` lists its schema first in its defaults.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf


class Market(str, Enum):
    spot = "spot"
    um = "um"
    cm = "cm"


class Dataset(str, Enum):
    trades = "trades"
    aggTrades = "aggTrades"


class Stage(str, Enum):
    ingest = "ingest"
    quality = "quality"
    bars = "bars"
    backtest = "backtest"
    all = "all"


class ThresholdMode(str, Enum):
    fixed = "fixed"
    dynamic = "dynamic"


class SweepMode(str, Enum):
    hydra = "hydra"
    kernel = "kernel"
    spark = "spark"


class StorageKind(str, Enum):
    local = "local"
    s3 = "s3"


# --------------------------------------------------------------------------- data
@dataclass
class SourceConfig:
    # also file:///mirror, http://127.0.0.1:PORT, https://user:pass@host (Basic auth), s3://bucket/prefix
    base_url: str = "https://data.binance.vision"
    timeout_s: float = 30.0  # per read
    retries: int = 4  # attempts that received nothing, after the first (a dropped download resumes)
    backoff_s: float = 0.5  # first back-off; doubles each retry
    file_deadline_s: float = 3600.0  # whole download of one file, retries included; 0 = none


@dataclass
class SymbolProfile:
    """One synthetic symbol's life and size (see :func:`btsys.data.synthetic.symbol_profile`)."""

    listing: Optional[str] = None  # first UTC date with trades; null: from data.start
    delisting: Optional[str] = None  # last UTC date with trades; null: to data.end
    volume_scale: float = 1.0  # trade-size factor
    volume_trend: float = 1.0  # factor reached (geometrically) on data.end, relative to data.start


@dataclass
class SyntheticConfig:
    seed: int = 7
    ticks_per_day: int = 20_000
    markets: List[str] = field(default_factory=lambda: ["spot"])
    annual_vol: float = 0.6
    profiles: Dict[str, SymbolProfile] = field(default_factory=dict)  # symbol -> profile


@dataclass
class QualityConfig:
    """Data-quality report per symbol-day (btsys.data.quality) and the policy that excludes days."""

    gap_s: float = 300.0  # a stretch without trades longer than this is a gap
    min_coverage: float = 0.0  # exclude days whose coverage is below; 0: report only
    max_gap_s: float = math.inf  # exclude days whose longest gap is longer (seconds); inf: report only


@dataclass
class DataConfig:
    name: str = "synthetic"  # synthetic | binance
    source: SourceConfig = field(default_factory=SourceConfig)
    market: Market = Market.spot
    dataset: Dataset = Dataset.aggTrades
    symbols: List[str] = field(default_factory=lambda: ["BTCUSDT"])
    start: str = "2025-01-01"  # inclusive, UTC date
    end: str = "2025-01-03"  # inclusive, UTC date
    funding: bool = False  # also ingest monthly fundingRate (futures)
    require_complete: bool = False  # a 404 day is an error, not a recorded gap
    contract_size: Dict[str, float] = field(default_factory=lambda: {"BTC": 100.0, "default": 10.0})
    max_uncompressed_bytes: int = 64 * 1024**3  # per zip member, checked while inflating
    max_compression_ratio: float = 250.0  # inflated / compressed bytes, checked while inflating
    max_bad_row_fraction: float = 0.001  # a file with more rows that do not parse fails
    archive_raw: bool = False  # keep verified zips under storage raw/
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)


# --------------------------------------------------------------------------- bars
# One schema per kind family; the group option (conf/bars/<kind>.yaml) selects the family and sets
# ``kind``. A family has only the settings its kinds use: the others are rejected, so they can
# change neither the bars' cache key nor the logged params. btsys.bars.BarSpec validates them.
@dataclass
class TimeBarsConfig:
    """Time bars: one bar per ``interval``."""

    kind: str = "time"
    interval: str = "1h"  # pandas offset: fixed (15min, 1h) or calendar (D, W, MS)
    keep_partial: bool = False  # keep the trailing unfinished bar in backtests


@dataclass
class ThresholdBarsConfig:
    """Tick, volume and dollar bars: a bar closes when its ticks, base qty or quote notional reach
    the threshold."""

    kind: str = MISSING  # tick | volume | dollar
    threshold: float = MISSING  # ticks, base qty or quote notional per bar (dynamic: the warm-up)
    threshold_mode: ThresholdMode = ThresholdMode.fixed
    bars_per_day: float = 50.0  # dynamic: target bars per day
    lookback_days: int = 7  # dynamic: trailing days averaged (strictly before the day)
    warmup: str = "first_day"  # dynamic, no history: first_day | fixed
    keep_partial: bool = False


@dataclass
class FlowBarsConfig:
    """Imbalance and run bars (AFML 2.3.2): a bar closes when the signed flow beats its expectation."""

    kind: str = MISSING  # {tick,volume,dollar}_{imbalance,run}
    expected_ticks_init: float = 1000.0  # E0[T]
    ewma_span: int = 20  # bars, for E[T] and E[b]
    imbalance_init: Optional[float] = None  # E0 of the per-tick signed flow; null: a warm-up bar
    imbalance_span: Optional[int] = None  # bars, EWMA span of the flow; null: ewma_span
    min_ticks: int = 10
    max_ticks: int = 1_000_000
    keep_partial: bool = False


#: The bar kind families and their schemas (the kinds of each: btsys.bars.KIND_FAMILY).
BARS_SCHEMAS: Dict[str, type] = {
    "time": TimeBarsConfig,
    "threshold": ThresholdBarsConfig,
    "flow": FlowBarsConfig,
}


# --------------------------------------------------------------------------- features
@dataclass
class FeatureSpec:
    name: str = MISSING  # column name, e.g. rsi_14
    fn: str = MISSING  # feature function, e.g. rsi
    window: int = 14
    params: Dict[str, float] = field(default_factory=dict)


@dataclass
class FeaturesConfig:
    specs: List[FeatureSpec] = field(default_factory=list)


# --------------------------------------------------------------------------- strategies
@dataclass
class StrategyConfig:
    name: str = MISSING


@dataclass
class MaCrossConfig(StrategyConfig):
    name: str = "ma_cross"
    fast: int = 10
    slow: int = 50


@dataclass
class EmaCrossConfig(StrategyConfig):
    name: str = "ema_cross"
    fast: int = 12  # EMA spans in bars
    slow: int = 26


@dataclass
class RsiReversionConfig(StrategyConfig):
    name: str = "rsi_reversion"
    window: int = 14
    lower: float = 30.0  # long when RSI falls below
    upper: float = 70.0  # short when RSI rises above
    exit: float = 50.0  # leave when RSI crosses back through


@dataclass
class BollingerBreakoutConfig(StrategyConfig):
    name: str = "bollinger_breakout"
    window: int = 20
    k: float = 2.0  # band half-width in population standard deviations


@dataclass
class MomentumConfig(StrategyConfig):
    name: str = "momentum"
    lookback: int = 50  # bars of the log return
    threshold: float = 0.0  # long above +threshold, short below -threshold


@dataclass
class XsMomentumConfig(StrategyConfig):
    name: str = "xs_momentum"
    lookback: int = 100  # score: log return from t - lookback to t - skip
    skip: int = 0
    top_n: int = 1  # long the top N scores
    bottom_n: int = 0  # short the bottom N scores
    rebalance_every: int = 50  # bars


@dataclass
class RuleConfig(StrategyConfig):
    name: str = "rule"
    entry: str = MISSING  # e.g. "rsi_14 < 30 and close > sma_200"
    exit: str = MISSING
    short_entry: str = ""  # empty: no short signals
    short_exit: str = ""


class MlModel(str, Enum):
    logistic = "logistic"
    random_forest = "random_forest"
    hist_gb = "hist_gb"


class BetSizing(str, Enum):
    none = "none"  # size = None (backtest.size decides)
    prob = "prob"  # AFML 10.1: 2 * Phi((p - 0.5) / sqrt(p (1 - p))) - 1


@dataclass
class TripleBarrierConfig:
    pt: float = 1.0  # profit-taking barrier, multiple of the volatility target
    sl: float = 1.0  # stop-loss barrier, multiple of the volatility target; 0 = off
    vertical_bars: int = 20  # vertical barrier, bars after the event
    vol_span: int = 50  # EWMA span (bars) of the volatility target
    min_ret: float = 0.0  # skip events whose volatility target is below this
    zero_vertical: bool = False  # label 0 (not sign of return) when the vertical barrier is hit


@dataclass
class MlClassifierConfig(StrategyConfig):
    name: str = "ml_classifier"
    model: MlModel = MlModel.random_forest
    params: Dict[str, Any] = field(default_factory=dict)  # scikit-learn hyper-parameters
    features: List[str] = field(default_factory=list)  # empty: every feature column
    label: TripleBarrierConfig = field(default_factory=TripleBarrierConfig)
    min_train: int = 200  # bars before the first walk-forward test block
    retrain_every: int = 250  # bars per test block; a fresh model is fitted before each
    train_bars: int = 0  # rolling training window in bars; 0 = expanding
    embargo_bars: int = 5  # gap between the last training label and the test block
    cv_folds: int = 3  # purged K-fold CV of the final model; 0 = off
    threshold: float = 0.55  # long when P(up) > threshold, short when P(up) < 1 - threshold
    exit_threshold: float = 0.5  # leave long when P(up) < this (short: > 1 - this)
    bet_sizing: BetSizing = BetSizing.none
    size_step: float = 0.0  # discretise the bet size to multiples of this; 0 = continuous
    event_stride: int = 1  # sample every k-th bar as a training event
    seed: int = 0


# --------------------------------------------------------------------------- universe
@dataclass
class StaticUniverseConfig:
    """Every symbol of ``data.symbols``, all the time."""

    name: str = "static"


@dataclass
class TopNUniverseConfig:
    """The top ``n`` of ``data.symbols`` by a trailing daily measure (btsys.universe.membership)."""

    name: str = "top_n"
    n: int = 10
    lookback_days: int = 30  # whole UTC days strictly before each rebalance
    rebalance: str = "7d"  # a whole number of days; instants at UTC midnight from data.start
    min_history_days: int = 0  # days since the first trade before a symbol is eligible
    measure: str = "quote_volume"  # quote_volume | volume | trades


UNIVERSE_SCHEMAS: Dict[str, type] = {"static": StaticUniverseConfig, "top_n": TopNUniverseConfig}


# --------------------------------------------------------------------------- backtest
@dataclass
class FeesConfig:
    maker: float = 0.0002  # fraction of notional
    taker: float = 0.0005  # fraction of notional; market orders pay taker
    fixed: float = 0.0  # quote currency per order
    min_fee: float = 0.0  # quote currency per order


@dataclass
class SlippageConfig:
    bps: float = 1.0  # fixed, basis points of price, against the order
    impact: float = 0.0  # participation impact: coef * (order qty / bar volume) ** exponent
    impact_exponent: float = 0.5


@dataclass
class SizeConfig:
    mode: str = "all"  # all | qty | notional | percent | vol_target (btsys.backtest.options)
    value: float = 1.0  # qty / notional / fraction / annual vol target, by mode
    min_qty: float = 0.0
    step: float = 0.0  # quantity step; 0 = no rounding
    vol_window: int = 50  # vol_target: bars of trailing realised volatility


@dataclass
class RiskConfig:
    stop_loss: float = 0.0  # fraction from entry; 0 = off
    take_profit: float = 0.0
    trailing_stop: float = 0.0
    time_stop_bars: int = 0
    cooldown_bars: int = 0
    max_position: float = math.inf  # notional, quote currency
    max_leverage: float = math.inf
    max_drawdown: float = 0.0  # kill switch; 0 = off


@dataclass
class OrdersConfig:
    type: str = "market"  # market | limit: entries at the next open, or resting limits
    offset_bps: float = 0.0  # limit entries: distance from the signal close, basis points
    time_in_force_bars: int = 1  # limit entries: bars active, from the bar after the signal
    fill_rule: str = "through"  # through | touch: resting limits fill beyond their price, or at it


@dataclass
class SplitConfig:
    """Walk-forward windows in bars (see btsys.backtest.split)."""

    enabled: bool = False
    scheme: str = "rolling"  # rolling | expanding
    train_bars: int = 0
    test_bars: int = 0
    gap_bars: int = 0  # embargo between a training window and its test window
    step_bars: int = 0  # shift between windows; 0 = test_bars (test windows tile)
    reoptimize: bool = False  # per window: sweep.grid on the train part, its best trades the test part


@dataclass
class BacktestConfig:
    init_cash: float = 10_000.0
    fill: str = "next_open"  # next_open | close (choices: btsys.backtest.options)
    intrabar: str = "ohlc"  # ohlc | ticks: bars that reach a level are resolved from their trades
    orders: OrdersConfig = field(default_factory=OrdersConfig)
    direction: str = "long"  # long | short | both
    fees: FeesConfig = field(default_factory=FeesConfig)
    slippage: SlippageConfig = field(default_factory=SlippageConfig)
    size: SizeConfig = field(default_factory=SizeConfig)
    leverage: float = 1.0
    maintenance_margin: float = 0.005
    risk: RiskConfig = field(default_factory=RiskConfig)
    funding: bool = False  # charge funding from the ingested funding rates
    split: SplitConfig = field(default_factory=SplitConfig)


# --------------------------------------------------------------------------- infra
@dataclass
class SweepConfig:
    mode: SweepMode = SweepMode.hydra
    grid: Dict[str, Any] = field(default_factory=dict)  # kernel/spark: key -> list of values
    top_k: int = 5
    chunk_size: int = 10_000
    objective: str = "sharpe"
    direction: str = "maximize"  # maximize | minimize (the objective; best trial, failure value)


@dataclass
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "btsys"
    conf: Dict[str, str] = field(default_factory=dict)
    ship_package: bool = False  # zip btsys + conf and addPyFile it (cluster)


@dataclass
class StorageConfig:
    kind: StorageKind = StorageKind.local
    root: str = "data"  # local path or s3://bucket/prefix
    endpoint_url: Optional[str] = None
    region: str = "us-east-1"


@dataclass
class MlflowConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment_name: str = "btsys"
    enabled: bool = True
    charts: bool = True  # charts + HTML tearsheet per run
    artifact_location: Optional[str] = None  # new experiments only; None: MLflow's default (./mlruns)


@dataclass
class Config:
    data: DataConfig = MISSING
    bars: Any = MISSING  # one of BARS_SCHEMAS, chosen by the bars group option
    features: FeaturesConfig = MISSING
    strategy: Any = MISSING
    universe: Any = MISSING
    backtest: BacktestConfig = MISSING
    spark: SparkConfig = MISSING
    storage: StorageConfig = MISSING
    mlflow: MlflowConfig = MISSING
    sweep: SweepConfig = field(default_factory=SweepConfig)
    name: str = "default"  # experiment name, used as a tag
    stage: Stage = Stage.all
    force: bool = False  # recompute cached stages
    seed: int = 0


def strategy_schemas() -> Dict[str, type]:
    """``{name: schema}`` of every strategy schema (the subclasses of :class:`StrategyConfig`); the
    strategies themselves are ``btsys.signals.STRATEGIES``."""
    return {cls.name: cls for cls in StrategyConfig.__subclasses__()}


def schema_name(group: str, name: str = "default") -> str:
    """The ConfigStore name of a group's schema: ``<group>_schema`` for a group with one schema,
    ``<group>_<name>_schema`` otherwise (``bars_threshold_schema``, ``strategy_ma_cross_schema``).

    The schemas are stored at the ConfigStore's root, not in the user's groups, and each option
    file of ``conf/<group>/`` lists its schema first in its defaults
    (``- /bars_threshold_schema@_here_``): so neither ``--help``, tab completion nor any listing
    of a group's options offers them (``tests/test_cli.py`` checks the console script's
    completion)."""
    return f"{group}_schema" if name == "default" else f"{group}_{name}_schema"


def group_schemas() -> Dict[str, Dict[str, type]]:
    """``{group: {schema name: dataclass}}`` of every config group."""
    one = {
        "data": DataConfig,
        "features": FeaturesConfig,
        "backtest": BacktestConfig,
        "spark": SparkConfig,
        "storage": StorageConfig,
        "mlflow": MlflowConfig,
        "sweep": SweepConfig,
    }
    out = {g: {"default": node} for g, node in one.items()}
    out["bars"] = dict(BARS_SCHEMAS)
    out["strategy"] = strategy_schemas()
    out["universe"] = dict(UNIVERSE_SCHEMAS)
    return out


def register_configs() -> None:
    """Register the schemas (idempotent: Hydra's ConfigStore is a singleton): the primary
    ``btsys_schema`` and each group's schemas (:func:`schema_name`)."""
    cs = ConfigStore.instance()
    cs.store(name="btsys_schema", node=Config)
    for group, schemas in group_schemas().items():
        for name, node in schemas.items():
            cs.store(name=schema_name(group, name), node=node)


register_configs()


def to_plain(obj: Any) -> Any:
    """A plain, JSON-ready copy of a config node: OmegaConf nodes resolved, dataclasses as dicts,
    enums by value, containers recursively. The one way btsys turns configs into data."""
    if isinstance(obj, (DictConfig, ListConfig)):
        obj = OmegaConf.to_container(obj, resolve=True, enum_to_str=True)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def conf_dir() -> str:
    """The ``conf/`` tree: beside the package in a checkout, ``btsys/_conf`` in a shipped zip."""
    here = os.path.dirname(os.path.abspath(__file__))
    d = os.path.join(os.path.dirname(here), "conf")
    return d if os.path.isdir(d) else os.path.join(here, "_conf")


def job_config(argv: Optional[list[str]], job_name: str) -> DictConfig:
    """Config of a Spark entry point in ``jobs/``: logging set up, overrides from ``argv`` (or the
    command line), composed like ``python -m btsys`` does."""
    import sys

    from btsys.logs import setup_logging

    setup_logging()
    return compose(list(sys.argv[1:] if argv is None else argv), job_name=job_name)


def compose(overrides: list[str], job_name: str = "btsys") -> DictConfig:
    """The run's config from ``conf/`` and command-line overrides (Hydra's compose API), as
    ``python -m btsys`` would compose it; used by the Spark entry points in ``jobs/``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3", job_name=job_name):
        return hydra_compose(config_name="config", overrides=list(overrides))
