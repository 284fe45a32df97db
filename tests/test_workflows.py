"""What a new user runs: the README's shell blocks, the Makefile's targets, the benchmarks.

Everything runs for real in one scratch workspace (symlinks to the checkout's ``.venv``, ``btsys``,
``conf``, ``jobs``, ``bench``, ``Makefile`` ...), in file order, so later steps reuse the caches of
earlier ones as a user's second command would:

* every ``bash`` block of README.md, as written (see :func:`readme_blocks` for what is left out);
* ``make demo``, ``make demo-ml`` (small ``ARGS``), ``make ui`` (answers HTTP; headless Chromium
  finds the demo's runs table), ``make bench`` for each script with ``--quick``, ``make clean``.

``make`` runs with ``-o .venv/.installed``: the suite already runs inside the installed venv, so
no target may reinstall it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass

import pytest
from conftest import TESTS

pytestmark = [pytest.mark.slow, pytest.mark.spark]

ROOT = os.path.dirname(TESTS)
LINKED = (".venv", "btsys", "conf", "jobs", "bench", "tests", "Makefile", "pyproject.toml", "README.md")
SKIP_RE = re.compile(r"^<!-- readme-test: skip, (.+) -->$")
CHROMIUM = "/usr/bin/chromium"


@dataclass
class Block:
    line: int  # README line of the opening fence
    section: str
    text: str
    skip: str  # reason, or "" to run it

    @property
    def id(self) -> str:
        return f"L{self.line}-" + re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")


def readme_blocks(path: str = os.path.join(ROOT, "README.md")) -> list[Block]:
    """The ``bash`` blocks of the README, with the reason a block is left out: a
    ``<!-- readme-test: skip, REASON -->`` line right before its fence."""
    blocks, section, lines = [], "", open(path, encoding="utf-8").read().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i][3:]
        if lines[i].strip() == "```bash":
            start, body = i + 1, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            m = SKIP_RE.match(lines[start - 2].strip()) if start >= 2 else None
            blocks.append(Block(start, section, "\n".join(body), m.group(1) if m else ""))
        i += 1
    return blocks


def commands(text: str) -> list[str]:
    """Logical lines (``\\`` continuations joined), without those that need the internet."""
    out, cur = [], ""
    for line in text.splitlines():
        cur += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            if cur.strip() and "needs the internet" not in cur:
                out.append(cur)
            cur = ""
    return out


def transcript(text: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines and the output lines shown under each."""
    steps: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif line.strip() and steps:
            steps[-1][1].append(line)
    return steps


def shows(output: str, expected: str) -> bool:
    """``expected`` (``...`` = anything) appears in ``output``."""
    pattern = ".*?".join(re.escape(part.strip()) for part in expected.split("..."))
    return re.search(pattern, output, re.DOTALL) is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("workspace")
    for name in LINKED:
        os.symlink(os.path.join(ROOT, name), ws / name)
    return ws


def sh(ws, script: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """``script`` under ``bash -e`` in the workspace, in its own process group (killed afterwards, so
    a background server of the block never outlives it)."""
    e = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "SPARK_CONF_DIR")}
    e.update(env or {})
    p = subprocess.Popen(
        ["bash", "-e", "-c", script],
        cwd=ws,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def make(ws, *args, timeout: float = 900) -> subprocess.CompletedProcess:
    return sh(ws, "make -o .venv/.installed " + " ".join(args), timeout=timeout)


# --------------------------------------------------------------------------- README
def test_readme_blocks_are_found_and_skips_say_why():
    blocks = readme_blocks()
    assert len(blocks) >= 8 and all(b.text.strip() for b in blocks)
    run = [b for b in blocks if not b.skip]
    assert any("spark-submit --master 'local-cluster" in b.text for b in run)  # the cluster block runs
    assert any("create_bucket" in b.text for b in run)  # S3 with the bucket step runs
    internet = [c for b in blocks for c in b.text.splitlines() if "btc_dollar_ma" in c and not b.skip]
    assert internet and all("needs the internet" in c for c in internet)
    assert commands("a \\\n  b   # x\nc   # (needs the internet)\n\nd") == ["a    b   # x", "d"]
    assert shows("2025-01-01 ERROR btsys: data.symbols: bad (hint: x)", "... ERROR btsys: data.symbols: ...")
    assert not shows("ERROR btsys: data.end: bad", "... ERROR btsys: data.symbols: ...")


@pytest.mark.parametrize("block", [b for b in readme_blocks() if not b.skip], ids=lambda b: b.id)
def test_readme_block_runs_as_written(workspace, block):
    env = {"S3_PORT": str(free_port())}
    steps = transcript(block.text)
    if steps:  # a transcript: each command's output shows what the README shows
        for cmd, expected in steps:
            p = sh(workspace, cmd, timeout=300, env=env)
            for line in expected:
                assert shows(p.stdout + p.stderr, line), f"{cmd}\nexpected: {line}\ngot: {p.stderr[-2000:]}"
        return
    p = sh(workspace, "\n".join(commands(block.text)), env=env)
    assert p.returncode == 0, f"README line {block.line}:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    noise = [ln for ln in p.stderr.splitlines() if re.match(r"\d\d/\d\d/\d\d \d\d:\d\d:\d\d ", ln)]
    assert noise == [], noise[:5]  # no line in Spark's default log layout, no shutdown errors
    assert "Exception" not in p.stderr, p.stderr[-3000:]


# --------------------------------------------------------------------------- Makefile
def test_make_demo_and_demo_ml(workspace):
    p = make(workspace, "demo")
    assert p.returncode == 0, p.stderr[-3000:]
    assert re.search(r"INFO btsys: demo: total_return [-+]\d", p.stderr), p.stderr[-2000:]
    args = "ARGS='data.symbols=[BTCUSDT] strategy.params.n_estimators=10'"
    p = make(workspace, "demo-ml", args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert re.search(r"INFO btsys: demo_ml: total_return [-+]\d", p.stderr), p.stderr[-2000:]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def test_make_ui_answers_and_shows_the_demo_runs_table(workspace, tmp_path):
    if not (workspace / "mlflow.db").exists():
        assert make(workspace, "demo").returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        ["make", "-o", ".venv/.installed", "ui", f"UI_PORT={port}"],
        cwd=workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert _wait_http(f"{base}/health", proc) == 200
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{workspace}/mlflow.db")
        exp = client.get_experiment_by_name("demo")
        assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
        with urllib.request.urlopen(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=demo"
        ) as r:
            assert b"custom_model_development" in r.read()  # the server reports the kind tag
        run = client.search_runs([exp.experiment_id], "tags.`btsys.run_kind` = 'trial'")[0]
        if not os.path.exists(CHROMIUM):
            pytest.skip("the runs table check needs /usr/bin/chromium (apt-get install -y chromium)")
        from btsys.report.tracking import ui_url

        url = ui_url("sqlite:///mlflow.db", exp.experiment_id).replace("http://127.0.0.1:5000", base)
        dom = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--virtual-time-budget=30000",
                "--window-size=1400,1000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        ).stdout
        assert "Run Name" in dom and run.info.run_name in dom, dom[-2000:]  # the runs table, with the run
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)


BENCHES = sorted(
    f for f in os.listdir(os.path.join(ROOT, "bench")) if f.endswith(".py") and f != "_common.py"
)


@pytest.mark.parametrize("script", BENCHES)
def test_make_bench_quick(workspace, script):
    if script == "tearsheet_screenshot.py" and not os.path.exists(CHROMIUM):
        pytest.skip("needs /usr/bin/chromium")
    p = make(workspace, "bench", f"BENCH=bench/{script}", "BENCH_ARGS=--quick")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert f"== bench/{script}" in p.stdout and len(p.stdout.splitlines()) > 1


def test_make_clean_removes_what_runs_wrote(workspace):
    wrote = ["data", "outputs", "multirun", "mlflow.db", "mlflow.db.lock", "mlruns"]
    for name in ("multirun", "mlruns"):  # whatever earlier steps left, these exist now
        (workspace / name).mkdir(exist_ok=True)
    assert make(workspace, "clean").returncode == 0
    assert not [n for n in wrote if (workspace / n).exists()]
    assert all((workspace / n).exists() for n in LINKED)  # the checkout is untouched
