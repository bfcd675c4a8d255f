"""The HTML report as a reader sees it: headless Chromium at 1400 px, no sideways page scroll.

Six checkpoints on one split make the results table wider than the window: it must scroll inside
its own box while the page does not. Sample images show at one size whatever their pixels. The
screenshot is kept (``$UNIMEDVL_ARTIFACTS``, default the test's tmp folder) and its path printed.
"""

import base64

import pytest

from browser_support import CHROMIUM, Browser, artifacts_dir, have_chromium
from report_fixtures import make_eval_tree
from unimedvl.eval.report.writer import write_report
from unimedvl.eval.statistics.stats_csv import load_statistics

pytestmark = pytest.mark.browser
WIDTH, HEIGHT = 1400, 900

if not have_chromium():
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)


def test_report_fits_1400_px_and_wide_tables_scroll_in_their_box(tmp_path):
    root = make_eval_tree(tmp_path / "eval", steps=(100, 200, 300, 400, 500, 600), splits=("test",))
    entries, _ = load_statistics([root])
    page = write_report(
        entries, tmp_path / "out" / "summary.csv", html_path=tmp_path / "out" / "report.html", out=lambda _: None
    )["html"]
    (tmp_path / "profile").mkdir()
    browser = Browser(tmp_path / "profile")
    try:
        browser.call("Page.enable")
        browser.call(
            "Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False
        )
        browser.call("Page.navigate", url=page.resolve().as_uri())
        browser.wait(
            "document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)",
            what="the report to load",
        )
        page_width = browser.js("document.scrollingElement.scrollWidth")
        sticking_out = browser.js(
            "Array.from(document.querySelectorAll('body *')).filter(e => !e.closest('.table-box'))"
            f".filter(e => e.getBoundingClientRect().right > {WIDTH} + 0.5).map(e => e.tagName).slice(0, 5)"
        )
        scrolling_boxes = browser.js(
            "Array.from(document.querySelectorAll('.table-box')).filter(b => b.scrollWidth > b.clientWidth).length"
        )
        sizes = browser.js(
            "Array.from(document.querySelectorAll('img.sample-img'))"
            ".map(i => [Math.round(i.getBoundingClientRect().width), Math.round(i.getBoundingClientRect().height)])"
        )
        full_height = min(browser.js("document.scrollingElement.scrollHeight"), 6000)
        shot = browser.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": WIDTH, "height": full_height, "scale": 1},
        )
    finally:
        browser.close()
    out = artifacts_dir(tmp_path) / "report_1400px.png"
    out.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {out}")
    assert page_width <= WIDTH, f"the page scrolls sideways: {page_width} px wide ({sticking_out})"
    assert not sticking_out
    assert scrolling_boxes >= 1  # the six-checkpoint table scrolls inside its box
    assert len(sizes) >= 9 and {tuple(s) for s in sizes} == {(200, 200)}  # input / GT / prediction, one size
