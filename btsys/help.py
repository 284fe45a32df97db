"""``btsys --help``: the experiments and every config group's real options, read from ``conf/``.

Hydra's generic page lists groups without their options or defaults. ``conf/hydra/help/btsys.yaml``
renders :func:`help_text` instead, through the ``btsys_help`` resolver (:func:`register_resolver`),
so the page follows the files in ``conf/`` (the typed schemas are registered outside the groups:
:func:`btsys.config.schema_name`).
"""

from __future__ import annotations

import os
import re

from omegaconf import OmegaConf

from btsys.config import Stage, conf_dir

STAGES = "|".join(s.value for s in Stage)

USAGE = f"""\
btsys: distributed backtests of crypto strategies (Binance ticks -> Spark bars -> numba -> MLflow)

Usage (btsys = python -m btsys)
  btsys +experiment=NAME [group=option ...] [key=value ...]    one run
  btsys -m +experiment=NAME strategy.fast=5,10 strategy.slow=50,100    a sweep (multirun)
  btsys +experiment=demo stage=bars      stop after a stage: {STAGES}
  btsys +experiment=demo --cfg job       print the composed config (--resolve to resolve it)
  btsys +experiment=demo --help          this page; add overrides to see their effect on the config
  btsys --debug ...                      show the traceback of an error (also HYDRA_FULL_ERROR=1)

Errors you can fix end in one line naming the config key and a hint (exit status 2)."""

TAIL = """\
Tab completion: eval "$(btsys -sc install=bash)" (zsh: the same; fish: -sc install=fish)
Every run lands in MLflow (mlflow.tracking_uri, default sqlite:///mlflow.db): make ui to browse."""


def _describe(path: str, width: int = 100) -> str:
    """The first sentence of a YAML file's leading comment (after ``@package``), at most ``width``
    characters."""
    words: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line.startswith("#"):
                break
            text = line.lstrip("#").strip()
            if text.startswith("@package"):
                continue
            words += text.split()
            if text.endswith((".", ":")):
                break
    desc = " ".join(words).rstrip(".:")
    return desc if len(desc) <= width else desc[: width - 3].rsplit(" ", 1)[0] + "..."


#: btsys's own settings of Hydra (this page, the log format): not choices a user makes.
HIDDEN_GROUPS = ("hydra/help", "hydra/job_logging", "hydra/hydra_logging")


def group_options(root: str | None = None) -> dict[str, list[str]]:
    """``{group: [option, ...]}`` of every config group folder under ``conf/`` (``hydra/launcher``,
    ``hydra/sweeper`` too)."""
    root = root or conf_dir()
    out: dict[str, list[str]] = {}
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        opts = sorted(f[: -len(".yaml")] for f in files if f.endswith(".yaml"))
        group = os.path.relpath(dirpath, root).replace(os.sep, "/")
        if group != "." and opts and group not in HIDDEN_GROUPS:
            out[group] = opts
    return out


def group_defaults(root: str | None = None) -> dict[str, str]:
    """``{group: default option}`` from the defaults list of ``conf/config.yaml``."""
    cfg = OmegaConf.load(os.path.join(root or conf_dir(), "config.yaml"))
    out = {}
    for item in cfg.get("defaults", []):
        if isinstance(item, str) or item is None:
            continue
        for k, v in item.items():
            out[re.sub(r"^override ", "", str(k))] = str(v)
    return out


def help_text(root: str | None = None) -> str:
    """The whole ``--help`` page except Hydra's flag list."""
    root = root or conf_dir()
    groups = group_options(root)
    defaults = group_defaults(root)
    lines = [USAGE, "", "Experiments (+experiment=NAME)"]
    for name in groups.pop("experiment", []):
        desc = _describe(os.path.join(root, "experiment", f"{name}.yaml"))
        lines.append(f"  {name:<22} {desc}".rstrip())
    lines += ["", "Config groups (group=option; * marks the default)"]
    width = max((len(g) for g in groups), default=8) + 2
    for group, opts in groups.items():
        shown = [f"{o}*" if defaults.get(group) == o else o for o in opts]
        lines.append(f"  {group:<{width}} {', '.join(shown)}")
    lines += [
        "",
        f"Top-level keys: stage={STAGES}, force=true (recompute cached stages), name=...,",
        "seed=...; any key of the config (btsys +experiment=demo --cfg job shows them all).",
        "",
        TAIL,
    ]
    return "\n".join(lines).replace("$", "$$")  # the page is a string.Template: keep literal $


def register_resolver() -> None:
    """Register ``${btsys_help:}`` (idempotent; the entry point calls it)."""
    if not OmegaConf.has_resolver("btsys_help"):
        OmegaConf.register_new_resolver("btsys_help", lambda: help_text())
