"""The tearsheet renders in a real browser (headless Chromium); skipped without /usr/bin/chromium."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import TESTS

sys.path.insert(0, os.path.join(os.path.dirname(TESTS), "bench"))

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="needs /usr/bin/chromium")


@pytest.mark.slow
def test_tearsheet_screenshot_is_not_blank(tmp_path):
    from tearsheet_screenshot import demo_tearsheet, screenshot

    html = demo_tearsheet(str(tmp_path))
    s = screenshot(html, str(tmp_path / "shot.png"))
    assert (s["width"], s["height"]) == (1280, 2000)
    assert s["non_white"] > 0.05  # text, tables and charts cover the page
    assert s["colourful"] > 0.01  # the charts' colours are drawn (images decoded from data: URIs)


def test_blank_page_is_detected_as_blank(tmp_path):
    # the check itself can fail: an empty page gives an all-white screenshot
    from tearsheet_screenshot import screenshot

    p = tmp_path / "blank.html"
    p.write_text("<!DOCTYPE html><html><body></body></html>")
    s = screenshot(str(p), str(tmp_path / "blank.png"))
    assert s["non_white"] < 0.001 and s["colourful"] == 0.0
