"""Render a tearsheet in headless Chromium and check the screenshot is not blank.

    python bench/tearsheet_screenshot.py [TEARSHEET.html] [--out shot.png]

Without a path it backtests a seeded MA cross (120 days of hourly bars on a 0.01 price grid, with a
buy-and-hold benchmark set on the result), writes its tearsheet to a temporary directory and
screenshots that. Needs Debian's ``chromium`` (``apt-get install -y
chromium``). Prints the screenshot's size, the share of non-white pixels and the render time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from _common import parse_args  # noqa: E402  (bench/ is the script folder)

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
HERE = os.path.dirname(os.path.abspath(__file__))


def chromium_flags(user_data_dir: str, out_png: str, width: int = 1280, height: int = 2000) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_data_dir}",
        f"--screenshot={out_png}",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
    ]


def screenshot(html_path: str, out_png: str, chromium: str = CHROMIUM, timeout: float = 120.0) -> dict:
    """Screenshot ``html_path`` (file://) into ``out_png``; returns stats of the image.

    Raises RuntimeError when Chromium fails or writes no image.
    """
    import matplotlib.image as mpimg

    if not os.path.exists(chromium):
        raise RuntimeError(f"chromium not found at {chromium} (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="btsys-chromium-") as udd:
        t0 = time.perf_counter()
        p = subprocess.run(
            [chromium, *chromium_flags(udd, out_png), "file://" + os.path.abspath(html_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        secs = time.perf_counter() - t0
    if not os.path.exists(out_png):
        raise RuntimeError(f"chromium wrote no screenshot (exit {p.returncode}): {p.stderr[-2000:]}")
    img = mpimg.imread(out_png)[..., :3]
    non_white = float(np.mean(np.any(img < 0.95, axis=-1)))
    colourful = float(np.mean(img.max(axis=-1) - img.min(axis=-1) > 0.2))
    return {
        "width": img.shape[1],
        "height": img.shape[0],
        "non_white": non_white,
        "colourful": colourful,
        "std": float(img.std()),
        "seconds": secs,
    }


def demo_tearsheet(dest_dir: str) -> str:
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    sys.path.insert(0, os.path.dirname(HERE))
    from test_report_helpers import make_result, prices

    from btsys.report.charts import render_charts
    from btsys.report.tearsheet import render_tearsheet

    n = 24 * 120
    ts, close = prices(n, 1, tick=0.01)
    r = make_result(10, 50, n=n, seed=1, tick=0.01)  # simulate's result: benchmark included
    px = {"BTCUSDT": (ts, close)}
    page = render_tearsheet(
        r,
        render_charts(r, "MA cross 10/50", prices=px),
        title="btsys demo tearsheet",
        params={"strategy.fast": 10, "strategy.slow": 50},
        prices=px,
    )
    path = os.path.join(dest_dir, "tearsheet.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("html", nargs="?")
    ap.add_argument("--out", default="tearsheet_screenshot.png")
    a = parse_args(ap)
    tmp = tempfile.mkdtemp(prefix="btsys-tearsheet-")
    try:
        html = a.html or demo_tearsheet(tmp)
        s = screenshot(html, a.out)
        print(
            f"screenshot {a.out}: {s['width']}x{s['height']} px, non-white {s['non_white']:.1%}, "
            f"coloured {s['colourful']:.1%}, pixel std {s['std']:.3f}, chromium {s['seconds']:.1f} s"
        )
        ok = s["non_white"] > 0.05 and s["colourful"] > 0.01
        print("OK: not blank" if ok else "FAIL: the screenshot looks blank")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
