"""Live progress of an ingest: bytes downloaded and rows parsed inside each file, rate and ETA.

Spark only reports accumulators when a task ends, which is useless for one multi-GB file. So each
task writes its own small JSON state (:class:`TaskProgress`, at most every ``interval_s`` and at
each phase change) under the run's progress prefix in the store, and the driver polls them
(:class:`IngestProgress`): on a terminal a tqdm bar redrawn in place; in logs and CI one plain
line every ``log_every_s`` seconds, and only when something moved.

Work is measured in bytes of the source zips: each file counts its size once for the download
and once for the parse (compressed bytes inflated so far), so the bar moves through both phases
and the ETA covers both. Sizes of files not started yet are estimated from those seen.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Optional

from btsys.storage import Storage

log = logging.getLogger("btsys.data.ingest")


class TaskProgress:
    """One file's progress, written to ``key`` in the store (never raises: progress is advisory)."""

    def __init__(self, store: Storage, key: str, file: str, interval_s: float = 2.0):
        self.store, self.key, self.interval_s = store, key, interval_s
        self.state = {"file": file, "phase": "checksum", "dl": 0, "size": None, "parsed": 0, "rows": 0}
        self._last = 0.0

    def update(self, **kw) -> None:
        phase_changed = "phase" in kw and kw["phase"] != self.state["phase"]
        self.state.update(kw)
        now = time.monotonic()
        if phase_changed or now - self._last >= self.interval_s:
            self._last = now
            self._write()

    def download(self, done: int, total: Optional[int]) -> None:
        self.update(dl=done, size=total if total is not None else self.state["size"])

    def _write(self) -> None:
        try:
            self.store.write_text(self.key, json.dumps(self.state))
        except Exception as e:  # noqa: BLE001 - a progress write must never fail a file
            log.debug("progress write failed: %s", e)


def _fmt_bytes(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _fmt_s(s: Optional[float]) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class IngestProgress:
    """Driver side: polls the tasks' states and shows them (tqdm on a TTY, log lines otherwise)."""

    def __init__(
        self,
        store: Storage,
        prefix: str,
        n_files: int,
        log_every_s: float = 10.0,
        tty: Optional[bool] = None,
    ):
        self.store, self.prefix, self.n_files = store, prefix, n_files
        self.log_every_s = log_every_s
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.t0 = time.monotonic()
        self._done: dict[str, dict] = {}
        self._last_line: Optional[tuple] = None
        self._last_log = self.t0
        self._bar = None
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=0, unit="B", unit_scale=True, desc="ingest", file=sys.stderr, leave=True)

    def _states(self) -> list[dict]:
        out = list(self._done.values())
        for key in self.store.list(self.prefix):
            if key in self._done:
                continue
            try:
                st = json.loads(self.store.read_text(key))
            except (FileNotFoundError, ValueError):
                continue
            if st.get("phase") == "done":
                self._done[key] = st
            out.append(st)
        return out

    def totals(self) -> dict:
        states = self._states()
        sizes = [s["size"] for s in states if s.get("size")]
        est = (sum(sizes) / len(sizes)) if sizes else 0.0
        total = sum(sizes) + est * max(self.n_files - len(sizes), 0)
        dl = sum(min(s.get("dl") or 0, s.get("size") or s.get("dl") or 0) for s in states)
        parsed = sum(s.get("parsed") or 0 for s in states)
        done = sum(1 for s in states if s.get("phase") == "done")
        work = dl + parsed
        rows = sum(int(s.get("rows") or 0) for s in states)
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = work / elapsed
        return {
            "files_done": done,
            "files": self.n_files,
            "dl": dl,
            "total": total,
            "rows": rows,
            "rows_per_s": rows / elapsed,
            "work": work,
            "work_total": 2 * total,
            "eta": (2 * total - work) / rate if rate > 0 and total else None,
        }

    def poll(self) -> None:
        t = self.totals()
        if self._bar is not None:
            self._bar.total = max(int(t["work_total"]), int(t["work"]), 1)
            self._bar.n = int(t["work"])
            self._bar.set_postfix_str(
                f"files {t['files_done']}/{t['files']}, {_fmt_bytes(t['dl'])} downloaded, {t['rows']:,} rows",
                refresh=False,
            )
            self._bar.refresh()
            return
        moved = (t["files_done"], t["dl"], t["rows"], t["work"])
        now = time.monotonic()
        if moved == self._last_line or now - self._last_log < self.log_every_s:
            return
        self._last_line, self._last_log = moved, now
        log.info("ingest progress: %s", self.line(t))

    @staticmethod
    def line(t: dict) -> str:
        return (
            f"{t['files_done']}/{t['files']} files, {_fmt_bytes(t['dl'])} of ~{_fmt_bytes(t['total'])} "
            f"downloaded, {t['rows']:,} rows parsed ({t['rows_per_s']:,.0f}/s), ETA {_fmt_s(t['eta'])}"
        )

    def close(self) -> None:
        if self._bar is not None:
            self.poll()
            self._bar.close()
