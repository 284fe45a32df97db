"""Fault injection: a misbehaving loopback server, corrupt archives and CSVs, kills at every ingest
and bars phase, concurrent runs on one store.

Every case runs the real entry point (``jobs/ingest.py`` / ``jobs/bars.py``, Spark) and asserts the
exact lake (rows per day, no duplicate (ts, trade_id)), the exit code and the message.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import zipfile

import pytest
from conftest import CONF_DIR
from faultserver import FaultServer
from hydra import compose, initialize_config_dir
from lakecheck import lake_files, lake_rows, member, rewrite

from btsys.bars.lake import load_bars
from btsys.data import binance as bn
from btsys.data.synthetic import generate_mirror
from btsys.errors import USER_ERROR_EXIT
from btsys.stages import bars as bars_stage
from btsys.stages import ingest as ingest_stage
from btsys.stages import quality as quality_stage
from btsys.stages.context import RunContext
from btsys.storage import LocalStorage

REPO = os.path.dirname(CONF_DIR)
DAY1 = bn.source_file("spot", "aggTrades", "BTCUSDT", "daily", "2025-01-01")
DAY2 = bn.source_file("spot", "aggTrades", "BTCUSDT", "daily", "2025-01-02")
TICKS = 300


def _job(name):
    spec = importlib.util.spec_from_file_location(f"jobs_{name}", os.path.join(REPO, "jobs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def lake(root) -> dict:
    """Rows per date of the one dataset these tests ingest (no trade id twice)."""
    return {date: n for (_, date), n in lake_rows(root).items()}


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    generate_mirror(str(root), markets=["spot"], start="2025-01-01", end="2025-01-02", ticks_per_day=TICKS)
    return root


def args(base_url, store, *extra):
    return [
        "data=binance",
        "data.market=spot",
        "data.dataset=aggTrades",
        "data.symbols=[BTCUSDT]",
        "data.start=2025-01-01",
        "data.end=2025-01-02",
        f"data.source.base_url={base_url}",
        "data.source.retries=2",
        "data.source.backoff_s=0.01",
        "data.source.timeout_s=2",
        f"storage.root={store}",
        *extra,
    ]


def run_job(spark, capsys, argv) -> tuple[int, str]:
    """jobs/ingest.py in this process (the shared Spark session): (exit code, stderr)."""
    capsys.readouterr()
    try:
        _job("ingest").main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------- a misbehaving server
@pytest.mark.parametrize(
    "faults,check",
    [
        (["503", "503"], lambda srv, man: srv.hits["/" + DAY2.rel] == 3),
        (["429"], lambda srv, man: srv.hits["/" + DAY2.rel] == 2),
        (["hang"], lambda srv, man: man["attempts"] == 2),
        (["drop"], lambda srv, man: man["resumed"] == 1 and srv.ranges[0][0] == "/" + DAY2.rel),
        (["drop", "norange"], lambda srv, man: man["resumed"] == 0 and man["attempts"] == 2),
        (["short"], lambda srv, man: man["attempts"] == 2 and srv.ranges[0][0] == "/" + DAY2.rel),
    ],
    ids=["5xx-twice", "429", "hang", "drop-resumes-with-range", "range-ignored", "short-body"],
)
def test_recoverable_server_faults_give_the_full_lake(spark, capsys, tmp_path, site, faults, check):
    srv = FaultServer(str(site), hang_s=4)
    try:
        srv.faults["/" + DAY2.rel] = list(faults)
        code, err = run_job(spark, capsys, args(srv.url, tmp_path / "store"))
        assert code == 0, err
        assert lake(tmp_path / "store") == {"2025-01-01": TICKS, "2025-01-02": TICKS}
        man = json.loads(
            (tmp_path / "store/lake/_manifest/spot/BTCUSDT/aggTrades" / f"{DAY2.name}.json").read_text()
        )
        assert man["status"] == "ok" and check(srv, man), man
    finally:
        srv.close()


def test_a_server_that_fails_forever_gives_exit_2_naming_the_file(spark, capsys, tmp_path, site):
    srv = FaultServer(str(site))
    try:
        srv.faults["/" + DAY2.rel] = ["500"] * 20
        code, err = run_job(spark, capsys, args(srv.url, tmp_path / "store"))
        assert code == USER_ERROR_EXIT
        assert f"{DAY2.name}: failed: giving up on {srv.url}/{DAY2.rel} after 3 attempts: HTTP 500" in err
        assert lake(tmp_path / "store") == {"2025-01-01": TICKS}
        srv.faults.clear()  # the server recovers: the rerun fetches only that file
        hits = dict(srv.hits)
        code, err = run_job(spark, capsys, args(srv.url, tmp_path / "store"))
        assert code == 0 and lake(tmp_path / "store") == {"2025-01-01": TICKS, "2025-01-02": TICKS}
        assert srv.hits["/" + DAY1.rel] == hits["/" + DAY1.rel]  # day 1 reused, not downloaded again
    finally:
        srv.close()


def test_a_trickling_server_hits_the_per_file_deadline(spark, capsys, tmp_path, site):
    srv = FaultServer(str(site), trickle_bps=256)
    try:
        srv.faults["/" + DAY2.rel] = ["trickle"] * 5
        t0 = time.monotonic()
        code, err = run_job(spark, capsys, args(srv.url, tmp_path / "store", "data.source.file_deadline_s=2"))
        assert time.monotonic() - t0 < 60  # not the minutes a 256 B/s file would take
        assert code == USER_ERROR_EXIT
        assert f"{DAY2.name}: failed: {srv.url}/{DAY2.rel}: download not finished after " in err
        assert "data.source.file_deadline_s=2s" in err
        assert lake(tmp_path / "store") == {"2025-01-01": TICKS}
    finally:
        srv.close()


def test_404_then_published_is_fetched_by_the_next_run(spark, capsys, tmp_path, site):
    srv = FaultServer(str(site))
    try:
        srv.faults["/" + DAY2.rel + ".CHECKSUM"] = ["404"]
        srv.faults["/" + DAY2.rel] = ["404"]
        code, err = run_job(spark, capsys, args(srv.url, tmp_path / "store"))
        assert code == 0 and lake(tmp_path / "store") == {"2025-01-01": TICKS}
        code, err = run_job(spark, capsys, args(srv.url, tmp_path / "store"))  # the day is published now
        assert code == 0 and lake(tmp_path / "store") == {"2025-01-01": TICKS, "2025-01-02": TICKS}
    finally:
        srv.close()


def test_every_file_missing_fails_in_one_line(spark, capsys, tmp_path, site):
    srv = FaultServer(str(site))
    try:
        code, err = run_job(spark, capsys, args(srv.url, tmp_path / "store", "data.symbols=[NOSUCHCOIN]"))
        assert code == USER_ERROR_EXIT
        line = [ln for ln in err.splitlines() if ln.strip()][-1]  # the one-line error, last
        assert " ERROR btsys: ingest: none of the 2 files asked for exists: spot aggTrades NOSUCHCOIN" in line
        assert (
            f"first tried {srv.url}/data/spot/daily/aggTrades/NOSUCHCOIN/NOSUCHCOIN-aggTrades-2025-01-01.zip"
            in line
        )
        assert "data.source.base_url" in line and lake(tmp_path / "store") == {}
        assert not (tmp_path / "store" / "cache" / "ingest").exists() or not list(
            (tmp_path / "store" / "cache" / "ingest").rglob("_COMMITTED")
        )
    finally:
        srv.close()


# --------------------------------------------------------------------------- corrupt archives and CSVs
def _with_ts(good: bytes, change) -> bytes:
    rows = [ln.split(b",") for ln in good.splitlines()]
    change(rows)
    return b"".join(b",".join(f) + b"\n" for f in rows)


def _ms(rows):
    for f in rows:
        f[5] = str(int(f[5]) // 1000).encode()


def _one_ms(rows):
    rows[-1][5] = str(int(rows[-1][5]) // 1000).encode()


def _flip_deflate_byte(path: pathlib.Path) -> bytes:
    info = zipfile.ZipFile(path).infolist()[0]
    raw = bytearray(path.read_bytes())
    raw[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0x55
    return bytes(raw)


CORRUPTIONS = {
    "truncated": lambda p, good, name: rewrite(p, raw=p.read_bytes()[: p.stat().st_size // 2]),
    "crc": lambda p, good, name: rewrite(p, raw=_flip_deflate_byte(p)),
    "two_members": lambda p, good, name: rewrite(p, members=[(name, good), ("other.csv", good)]),
    "path": lambda p, good, name: rewrite(p, members=[("../../" + name, good)]),
    "bomb": lambda p, good, name: rewrite(p, members=[(name, b"0" * (16 << 20))]),
    "bom": lambda p, good, name: rewrite(p, b"\xef\xbb\xbf" + good),
    "extra_column": lambda p, good, name: rewrite(p, b"".join(ln + b",1\n" for ln in good.splitlines())),
    "crlf": lambda p, good, name: rewrite(p, good.replace(b"\n", b"\r\n")),
    "ms": lambda p, good, name: rewrite(p, _with_ts(good, _ms)),
    "mixed_units": lambda p, good, name: rewrite(p, _with_ts(good, _one_ms)),
}


def _corrupt(kind: str, path: pathlib.Path) -> None:
    CORRUPTIONS[kind](path, member(path), path.name[:-4] + ".csv")


@pytest.mark.parametrize(
    "kind,message",
    [
        ("truncated", "not a zip file (or truncated"),
        ("crc", "corrupt"),
        ("two_members", "expected exactly one member, found 2"),
        ("path", "is not a plain file name"),
        ("bomb", "data.max_compression_ratio=250"),
        ("extra_column", "do not parse"),
        ("mixed_units", "timestamps mix milliseconds and microseconds"),
        ("bom", None),
        ("crlf", None),
        ("ms", None),
    ],
)
def test_corrupt_archives_and_csvs(spark, capsys, tmp_path, site, kind, message):
    _corrupt(kind, site / DAY2.rel)
    code, err = run_job(spark, capsys, args(site.as_uri(), tmp_path / "store"))
    if message is None:  # harmless variants: the same lake as the clean file gives
        assert code == 0, err
        assert lake(tmp_path / "store") == {"2025-01-01": TICKS, "2025-01-02": TICKS}
        return
    assert code == USER_ERROR_EXIT
    assert f"{DAY2.name}: failed: " in err and message in err, err
    assert lake(tmp_path / "store") == {"2025-01-01": TICKS}  # nothing of the bad file
    assert (tmp_path / "store" / "quarantine" / DAY2.rel).exists()


# --------------------------------------------------------------------------- kills at every phase
def _kill_site(tmp_path) -> pathlib.Path:
    """Three USD-M days where day 2 repeats 20 ids of day 1 (so the commit has a dedupe to do)."""
    root = tmp_path / "ksite"
    generate_mirror(str(root), markets=["um"], start="2025-01-01", end="2025-01-03", ticks_per_day=200)
    d1 = bn.source_file("um", "aggTrades", "BTCUSDT", "daily", "2025-01-01")
    d2 = bn.source_file("um", "aggTrades", "BTCUSDT", "daily", "2025-01-02")
    rows1, lines2 = member(root / d1.rel).splitlines()[1:], member(root / d2.rel).splitlines()
    t0 = lines2[1].split(b",")[5]
    extra = [b",".join([r.split(b",")[0], b"100.0", b"1.0", b"1", b"1", t0, b"true"]) for r in rows1[-20:]]
    rewrite(root / d2.rel, b"\n".join([lines2[0], *extra, *lines2[1:]]) + b"\n")
    return root


def _kill_args(site_root, store):
    return [
        "data=binance",
        "data.market=um",
        "data.symbols=[BTCUSDT]",
        "data.start=2025-01-01",
        "data.end=2025-01-03",
        f"data.source.base_url={site_root.as_uri()}",
        "bars=tick",
        "bars.threshold=40",
        f"storage.root={store}",
    ]


def _compose(argv):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(argv))


def _rerun(store, site_root):
    """The stages jobs/bars.py runs: ingest, quality (its policy's excluded days), bars."""
    from btsys.data.quality import excluded_days

    ctx = RunContext(_compose(_kill_args(site_root, store)))
    ingest = ingest_stage.run(ctx)
    excluded = excluded_days(quality_stage.table(ctx, quality_stage.run(ctx, ingest)))
    bars = bars_stage.run(ctx, ingest, excluded)
    return load_bars(ctx.store, bars, "BTCUSDT", keep_partial=True)


DRIVER_POINTS = [
    "ingest.commit.start",
    "ingest.commit.pending",
    "ingest.commit.rename",
    "ingest.commit.manifests",
    "ingest.listing",
    "ingest.marker",
    "quality.marker",
    "bars.marker",
]
TASK_POINTS = [
    "ingest.task.checksum",
    "ingest.task.downloaded",
    "ingest.stage.day",
    "quality.task.read",
    "bars.task.read",
    "bars.task.write",
]


@pytest.fixture(scope="module")
def kill_case(spark, tmp_path_factory):
    """The kill tests' source and the lake and bars a clean run gives."""
    tmp = tmp_path_factory.mktemp("kill")
    site_root = _kill_site(tmp)
    clean_bars = _rerun(tmp / "clean", site_root)
    assert lake(tmp / "clean") == {"2025-01-01": 200, "2025-01-02": 200, "2025-01-03": 200}
    return site_root, lake_files(tmp / "clean"), clean_bars


@pytest.mark.slow
def test_kill_at_every_driver_phase_then_rerun_gives_the_clean_lake(spark, tmp_path, kill_case):
    """``jobs/bars.py`` in subprocesses, each SIGKILLed (process group: JVM and workers too) when it
    reaches one phase; the rerun gives the lake and bars of a clean run."""
    site_root, clean, clean_bars = kill_case
    procs = {}
    for point in DRIVER_POINTS:  # all at once: each waits at its point until killed
        store = tmp_path / f"k-{point}"
        env = dict(
            os.environ,
            BTSYS_FAILPOINT=point,
            BTSYS_FAILPOINT_MARKER=str(tmp_path / f"{point}.marker"),
            PYSPARK_PYTHON=sys.executable,
        )
        cmd = [sys.executable, os.path.join(REPO, "jobs", "bars.py"), *_kill_args(site_root, store)]
        cmd.append("spark.master='local[1]'")
        procs[point] = subprocess.Popen(
            cmd,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    try:
        deadline = time.monotonic() + 400
        for point, proc in procs.items():
            marker = tmp_path / f"{point}.marker"
            while not marker.exists():
                assert proc.poll() is None, (
                    f"{point}: exited {proc.returncode} before the marker: {proc.stderr.read()[-2000:]}"
                )
                assert time.monotonic() < deadline, f"{point}: marker never reached"
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            assert proc.returncode == -signal.SIGKILL
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for point in DRIVER_POINTS:
        store = tmp_path / f"k-{point}"
        lake(store)  # what the kill left: never a trade twice for a direct reader
        index = store / "lake/_index/um/aggTrades/BTCUSDT.json"
        mid_commit = point in ("ingest.commit.pending", "ingest.commit.rename", "ingest.commit.manifests")
        assert mid_commit == bool(index.exists() and json.loads(index.read_text())["pending"]), point
        bars = _rerun(store, site_root)
        assert lake_files(store) == clean, point
        assert bars.equals(clean_bars), point


@pytest.mark.parametrize("point", TASK_POINTS)
def test_kill_of_a_worker_at_every_task_phase_then_rerun_gives_the_clean_lake(
    spark, tmp_path, kill_case, point
):
    """A Spark Python worker SIGKILLed at one phase of its task fails the job; the rerun gives
    the lake and bars of a clean run."""
    site_root, clean, clean_bars = kill_case
    marker = tmp_path / "worker.marker"
    sc = spark.sparkContext
    sc.environment.update(BTSYS_FAILPOINT=point, BTSYS_FAILPOINT_MARKER=str(marker))
    import threading

    def kill_when_marked():
        while not marker.exists():
            time.sleep(0.05)
        pid = int(marker.read_text().split()[1])
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_marked, daemon=True)
    killer.start()
    try:
        with pytest.raises(Exception, match="(?i)python worker|exited|crash|killed|EOF"):
            _rerun(tmp_path / "store", site_root)
    finally:
        sc.environment.pop("BTSYS_FAILPOINT", None)
        sc.environment.pop("BTSYS_FAILPOINT_MARKER", None)
    killer.join(timeout=30)
    lake(tmp_path / "store")
    bars = _rerun(tmp_path / "store", site_root)
    assert lake_files(tmp_path / "store") == clean
    assert bars.equals(clean_bars)


# --------------------------------------------------------------------------- concurrent runs
@pytest.mark.slow
def test_concurrent_overlapping_runs_on_one_store(spark, tmp_path):
    """Two ``jobs/ingest.py`` at once on one store (days 1-3 and 2-4): both exit 0 and the lake is
    the one a clean run of days 1-4 gives."""
    root = tmp_path / "site"
    generate_mirror(str(root), markets=["um"], start="2025-01-01", end="2025-01-04", ticks_per_day=200)
    store = tmp_path / "store"

    def argv(start, end, s=store):
        return [
            "data=binance",
            "data.market=um",
            "data.symbols=[BTCUSDT]",
            f"data.start={start}",
            f"data.end={end}",
            f"data.source.base_url={root.as_uri()}",
            f"storage.root={s}",
            "spark.master='local[1]'",
        ]

    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    runs = [
        argv("2025-01-01", "2025-01-03"),
        argv("2025-01-02", "2025-01-04"),
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(REPO, "jobs", "ingest.py"), *a],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in runs
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert lake(store) == {f"2025-01-0{d}": 200 for d in range(1, 5)}
    _job("ingest").main(argv("2025-01-01", "2025-01-04", tmp_path / "clean")[:-1])
    assert lake_files(store) == lake_files(tmp_path / "clean")
    listing = json.loads([ln for ln in outs[0][0].splitlines() if ln.startswith("{")][-1])["listing"]
    assert LocalStorage(str(store)).exists(listing.split(str(store) + "/", 1)[1])
