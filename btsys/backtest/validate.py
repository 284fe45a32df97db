"""Check a run's config, a kernel sweep's grid and a Hydra multirun's overrides before anything is
computed (before Spark or numba starts). Messages name the key.

* :func:`validate_config` — one run (``python -m btsys``): the strategy's parameters and
  constraints (``btsys.signals.specs``), every backtest option (``btsys.backtest.options``), the
  walk-forward split, and with ``sweep.mode=kernel|spark`` (or a re-optimising split) every
  combination of ``sweep.grid`` and the objective.
* :func:`check_axes` — a config and lists of values for some of its keys: each value alone, then
  every combination (strategy constraints, sizing); what a multirun's sweep overrides ask for.
* :func:`validate_multirun` — the Hydra sweeper's config (``on_multirun_start``): its sweep
  overrides (command line and ``hydra.sweeper.params``) as axes, per combination of config-group
  choices (``strategy=ma_cross,momentum``).
"""

from __future__ import annotations

import copy
import itertools
import os
from typing import Any, Dict, List, Mapping

from btsys.backtest.options import BY_KEY, _get, check_combination, config_values
from btsys.errors import ConfigError
from btsys.signals.specs import SPECS, check_grid, check_value


def _mode(cfg: Any) -> str:
    return str(_get(cfg, "sweep.mode", "hydra"))


def validate_config(cfg: Any) -> None:
    """Raise on anything wrong with a run's config that can be known before the data is read."""
    check_axes(cfg, {})
    split = _get(cfg, "backtest.split", None)
    reoptimize = (
        split is not None and bool(_get(split, "enabled", False)) and bool(_get(split, "reoptimize", False))
    )
    if split is not None and bool(_get(split, "enabled", False)):
        from btsys.backtest.split import check_split

        _, _, test, _, step = check_split(split)
        if reoptimize and step < test:
            raise ConfigError(
                f"backtest.split.step_bars={step} < test_bars={test}: re-optimised out-of-sample windows "
                "must not overlap (0 or >= test_bars)"
            )
        if reoptimize and _mode(cfg) != "hydra":
            raise ConfigError(
                "backtest.split.reoptimize=true sweeps sweep.grid in every window itself: use it with "
                f"sweep.mode=hydra (got sweep.mode={_mode(cfg)})"
            )
    if _mode(cfg) in ("kernel", "spark") or reoptimize:
        from btsys.backtest.grid import check_objective, grid_of
        from btsys.backtest.sweep import plan_from_config

        plan_from_config(cfg, grid_of(cfg))
        check_objective(cfg)


def check_axes(cfg: Any, axes: Mapping[str, List[Any]], where: str = "") -> None:
    """Check ``cfg`` with each key of ``axes`` taking each of its values, and every combination
    of them (strategy constraints, backtest sizing)."""
    from btsys.signals import strategy_params
    from btsys.signals.strategies import check_symbols

    _check_types(cfg, axes, where)
    p = strategy_params(_get(cfg, "strategy", None))
    spec = SPECS.get(p["name"])
    if spec is not None and "strategy.name" not in axes:
        values = {
            k: [check_value(spec, k, v, where) for v in axes.get(f"strategy.{k}", [p[k]])]
            for k in spec.param_names
        }
        check_grid(spec, values, where)
        n = len(_get(cfg, "data.symbols", None) or [])
        if spec.code < 0 and n:
            check_symbols({k: max(values[k]) for k in ("top_n", "bottom_n")}, n, None, where)
    base = config_values(_get(cfg, "backtest", None) or {})
    opt_axes = {k: [BY_KEY[k].check(v, where) for v in vs] for k, vs in axes.items() if k in BY_KEY}
    keys = list(opt_axes)
    for combo in itertools.product(*opt_axes.values()):
        check_combination({**base, **dict(zip(keys, combo, strict=True))}, where)


def _check_types(cfg: Any, axes: Mapping[str, List[Any]], where: str) -> None:
    """Each value of each key set on a copy of the (typed) config: unknown keys and wrong types."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not axes or not OmegaConf.is_config(cfg):
        return
    for key, vals in axes.items():
        for v in vals:
            trial = cfg.copy()
            try:
                OmegaConf.update(trial, key, v, merge=True)
            except OmegaConfBaseException as e:
                msg = str(e).splitlines()[0]
                raise ConfigError(f"{where}{key}={v!r}: {msg}") from None


# --------------------------------------------------------------------------- hydra multiruns
def _element(v: Any) -> Any:
    from hydra.core.override_parser.types import QuotedString

    return v.text if isinstance(v, QuotedString) else v


def multirun_overrides(config: Any) -> List[str]:
    """The overrides a Hydra sweeper expands: ``hydra.sweeper.params`` then the command line's
    (which win)."""
    from omegaconf import OmegaConf

    node = config.hydra.sweeper.get("params")
    params = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else {}
    return [f"{k}={v}" for k, v in params.items()] + [str(o) for o in (config.hydra.overrides.task or [])]


def sweep_values(overrides: List[str]) -> Dict[str, str]:
    """``{key: value as written}`` of the sweep overrides (``strategy.fast`` -> ``"5,10"``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {
        o.key_or_group: o.input_line.split("=", 1)[1]
        for o in OverridesParser.create().parse_overrides(overrides)
        if o.is_sweep_override() and not o.is_hydra_override()
    }


def sweep_axes(overrides: List[str]) -> Dict[str, List[Any]]:
    """``{key: values}`` of the sweep overrides among ``overrides`` (``a=1,2``, ``range(..)``,
    ``choice(..)``; an ``interval(lo, hi)`` gives its two ends)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out: Dict[str, List[Any]] = {}
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.is_sweep_override() or o.is_hydra_override():
            continue
        if o.is_interval_sweep():
            iv = o.value()
            out[o.key_or_group] = [iv.start, iv.end]
        else:
            out[o.key_or_group] = [_element(v) for v in o.sweep_iterator()]
    return out


def validate_multirun(config: Any) -> None:
    """Check every job of a Hydra multirun before any is launched (called by the sweep callback).

    ``config`` is the sweeper's config (with ``hydra``): its sweep overrides come from
    ``hydra.overrides.task`` and ``hydra.sweeper.params``."""
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from btsys.config import conf_dir

    task = [str(o) for o in (config.hydra.overrides.task or [])]
    axes = sweep_axes(multirun_overrides(config))
    if not axes:
        return
    groups = {k: v for k, v in axes.items() if "." not in k and os.path.isdir(os.path.join(conf_dir(), k))}
    values = {k: v for k, v in axes.items() if k not in groups}
    fixed = [o for o in task if o.split("=", 1)[0].lstrip("+~") not in axes]
    for choice in itertools.product(*groups.values()):
        chosen = dict(zip(groups, choice, strict=True))
        if chosen:
            loader = GlobalHydra.instance().config_loader()
            job = loader.load_sweep_config(config, fixed + [f"{k}={v}" for k, v in chosen.items()])
        else:
            job = config
        job = copy.deepcopy(job)  # typed and struct, as the job will be composed
        with open_dict(job):
            job.pop("hydra", None)
        where = "multirun" + ("".join(f" {k}={v}" for k, v in chosen.items())) + ": "
        check_axes(job, values, where)
        if _mode(job) in ("kernel", "spark"):
            validate_config(job)
