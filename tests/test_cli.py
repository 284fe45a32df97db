"""The ``btsys`` command: one-line user errors, ``--debug``, ``--help`` from ``conf/``, completion.

Each case runs the installed console script (or ``python -m btsys``) in a subprocess from an empty
folder; the errors chosen fail before any Spark work, so each costs about the start-up time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import CONF_DIR

from btsys.config import Stage
from btsys.errors import USER_ERROR_EXIT, ConfigError, UserError
from btsys.help import group_defaults, group_options, help_text

BTSYS = shutil.which("btsys", path=os.path.dirname(sys.executable))


def run(tmp_path, *args, env=None, timeout=120):
    cmd = [BTSYS, *args] if BTSYS else [sys.executable, "-m", "btsys", *args]
    e = dict(os.environ, **(env or {}))
    e.pop("HYDRA_FULL_ERROR", None)
    e.update(env or {})
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=e)


def _error_lines(p) -> list[str]:
    return [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, key",
    [
        ("data.symbols=[btc]", "data.symbols"),
        ("data.start=2025-01-05", "data.end"),  # end 2025-01-03 is before it
        ("mlflow.tracking_uri=sqlite:////proc/btsys/mlflow.db", "mlflow.tracking_uri"),
        ("backtest.fees.taker=2", "backtest.fees.taker"),  # the options table's range check
        ("strategy.fast=60", "strategy.fast"),  # the strategy spec's constraint (slow is 50)
        ("backtest.split.enabled=true", "backtest.split.train_bars"),  # the split's checks
    ],
)
def test_user_errors_end_in_one_line_naming_the_key(tmp_path, override, key):
    p = run(tmp_path, "+experiment=demo", "data.end=2025-01-03", override)
    assert p.returncode == USER_ERROR_EXIT, p.stderr[-3000:]
    lines = _error_lines(p)  # progress lines may come first; the error is the one last line
    assert [ln for ln in lines if " ERROR " in ln] == lines[-1:], lines
    assert " ERROR btsys: " in lines[-1] and key in lines[-1] and "Traceback" not in p.stderr


@pytest.mark.slow
def test_an_ingest_where_every_file_is_missing_ends_in_one_line(tmp_path):
    p = run(
        tmp_path,
        "+experiment=demo",
        "data=binance",
        f"data.source.base_url=file://{tmp_path}/no-mirror",
        "data.end=2025-01-02",
        f"storage.root={tmp_path}/store",
        "stage=ingest",
    )
    assert p.returncode == USER_ERROR_EXIT, p.stderr[-3000:]
    lines = _error_lines(p)
    assert [ln for ln in lines if " ERROR " in ln] == lines[-1:], lines
    assert " ERROR btsys: ingest: none of the 4 files asked for exists: spot aggTrades " in lines[-1]
    assert "(hint: check data.symbols" in lines[-1] and "Traceback" not in p.stderr


@pytest.mark.slow
def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    p = run(tmp_path, "--debug", "+experiment=demo", "data.symbols=[btc]")
    assert p.returncode != 0 and "Traceback (most recent call last)" in p.stderr
    assert "ConfigError: data.symbols: invalid symbol 'btc'" in p.stderr
    q = run(tmp_path, "+experiment=demo", "data.symbols=[btc]", env={"HYDRA_FULL_ERROR": "1"})
    assert q.returncode != 0 and "Traceback (most recent call last)" in q.stderr


def test_user_error_line_format():
    e = ConfigError("must be < 50, got 60", key="strategy.fast", hint="lower strategy.fast")
    assert str(e) == "strategy.fast: must be < 50, got 60 (hint: lower strategy.fast)"
    assert isinstance(e, ValueError) and isinstance(e, UserError)
    e = UserError("cannot reach https://user:secret@host/x\n  second line")
    assert e.line() == "cannot reach https://***@host/x second line"


def test_help_lists_experiments_and_real_options_from_conf(tmp_path):
    p = run(tmp_path, "--help")
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout
    assert out == help_text().replace("$$", "$") + "\n\nHydra flags\n" + out.split("\nHydra flags\n", 1)[1]
    assert "_schema" not in out
    experiments = sorted(f[:-5] for f in os.listdir(os.path.join(CONF_DIR, "experiment")))
    for name in experiments:
        assert f"\n  {name} " in out
    defaults = group_defaults()
    for group in group_options():
        if group == "experiment":
            continue
        line = next(ln for ln in out.splitlines() if ln.startswith(f"  {group} "))
        shown = [o.strip().rstrip("*") for o in line.split(None, 1)[1].split(",")]
        assert shown == sorted(
            f[:-5] for f in os.listdir(os.path.join(CONF_DIR, group)) if f.endswith(".yaml")
        )
        assert f"{defaults[group]}*" in line if group in defaults else "*" not in line
    assert 'eval "$(btsys -sc install=bash)"' in out
    stages = "|".join(s.value for s in Stage)  # every stage the schema accepts, quality included
    assert out.count(f"stage={stages}") == 1 and f"stop after a stage: {stages}" in out


def test_console_script_is_python_m_btsys_and_completes(tmp_path):
    assert BTSYS, "the btsys console script is not installed (pip install -e .)"
    a = run(tmp_path, "+experiment=demo", "--cfg", "job")
    b = subprocess.run(
        [sys.executable, "-m", "btsys", "+experiment=demo", "--cfg", "job"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout and "fast: 10" in a.stdout
    line = "btsys +experiment=de"
    c = run(tmp_path, "-sc", "query=bash", env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
    assert set(c.stdout.split()) >= {"+experiment=demo", "+experiment=demo_ml"}
    assert os.listdir(tmp_path) == []  # --cfg and completion write nothing


def test_a_user_error_raised_in_a_spark_task_is_one_line_on_the_driver(spark):
    from btsys.errors import DataError, as_user_error, exit_on_user_error

    def _task_raising_a_data_error(_):  # defined here: pickled by value for the Python worker
        from btsys.errors import DataError

        raise DataError(
            "has 3 rows, its listing says 4", key="lake/market=um/.../part-0.parquet", hint="rerun"
        )

    with pytest.raises(Exception) as info:  # Spark's JVM error, with the worker's traceback inside
        spark.sparkContext.parallelize([1], 1).map(_task_raising_a_data_error).collect()
    assert not isinstance(info.value, UserError)
    user = as_user_error(info.value)
    assert isinstance(user, DataError)
    assert user.line() == "lake/market=um/.../part-0.parquet: has 3 rows, its listing says 4 (hint: rerun)"
    with pytest.raises(SystemExit) as ended:
        exit_on_user_error(info.value)
    assert ended.value.code == USER_ERROR_EXIT
    assert as_user_error(RuntimeError("Traceback ...\nValueError: a bug")) is None  # bugs keep theirs
    with pytest.raises(RuntimeError):
        exit_on_user_error(RuntimeError("a bug"))


def _complete(tmp_path, line: str) -> list[str]:
    c = run(tmp_path, "-sc", "query=bash", env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
    assert c.returncode == 0, c.stderr[-2000:]
    return c.stdout.split()


def _yaml_options(group: str) -> list[str]:
    return sorted(
        f"{group}={f[:-5]}" for f in os.listdir(os.path.join(CONF_DIR, group)) if f.endswith(".yaml")
    )


def test_completion_offers_the_option_files_and_no_schema(tmp_path):
    """Tab completion of the console script: the groups' options are the files of conf/ (the
    schemas are registered outside the groups), and no listing shows a schema."""
    top = _complete(tmp_path, "btsys ")
    assert {"strategy=", "bars=", "data=", "sweep=", "universe="} <= set(top)
    assert not [w for w in top if "schema" in w]
    for group in ("strategy", "bars"):
        assert _complete(tmp_path, f"btsys {group}=") == _yaml_options(group)


@pytest.mark.slow
@pytest.mark.parametrize(
    "group", ["data", "features", "universe", "backtest", "spark", "storage", "mlflow", "sweep"]
)
def test_completion_of_every_group_is_its_option_files(tmp_path, group):
    assert _complete(tmp_path, f"btsys {group}=") == _yaml_options(group)
