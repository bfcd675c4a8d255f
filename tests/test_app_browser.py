"""The web app in a real headless Chromium: load the page, upload an image, ask, read the answer.

Chromium is driven over the Chrome DevTools protocol (tests/browser_support.py, no selenium).
Skipped when Chromium is missing
(``apt-get install -y chromium``). The screenshot goes to ``$UNIMEDVL_ARTIFACTS`` (default: the
test's tmp folder); with ``UNIMEDVL_UPDATE_SCREENSHOT=1`` it also replaces ``docs/app.png``.
``UNIMEDVL_APP_MODEL=DIR`` serves that checkpoint (at 64 px, the `make demo` model's size) instead of a random debug one.
"""

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser_support import CHROMIUM, Browser, artifacts_dir, have_chromium

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
VIEWPORT = (1280, 900)

if not have_chromium():
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)
pytest.importorskip("gradio")


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from unimedvl.app.presets import AppSettings
    from unimedvl.app.ui import build_app, launch
    from unimedvl.checkpoint.create import init_checkpoint
    from unimedvl.inference.api import UniMedVL

    tmp = tmp_path_factory.mktemp("browser_app")
    model_dir = os.environ.get("UNIMEDVL_APP_MODEL")
    if model_dir:  # e.g. the `make demo` model, at the 64 px it was trained at
        model = UniMedVL.from_pretrained(model_dir, vae_min_size=64, vae_max_size=64, vit_min_size=56, vit_max_size=70)
    else:
        init_checkpoint("debug", tmp / "ckpt", seed=0)
        model = UniMedVL.from_pretrained(tmp / "ckpt", vae_min_size=32, vae_max_size=64, vit_min_size=56)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = AppSettings(port=port, num_timesteps=4, image_size=64, max_new_tokens=24)
    demo = build_app(model, settings)
    _, url, _ = launch(demo, settings, prevent_thread_lock=True)
    try:
        yield url
    finally:
        demo.close()


def test_ask_in_a_real_browser(app_url, tmp_path):
    from gradio_client import Client, handle_file

    from unimedvl.app.examples import build_examples

    image = next(e.path for e in build_examples(tmp_path / "examples") if e.path.name == "medsynth_ct_lesion.png")
    question = "Which imaging modality was used for this image?"
    # The same request through the API: the page must show exactly this answer.
    _, expected, _ = Client(app_url, verbose=False).predict(
        image=handle_file(str(image)), question=question, max_new_tokens=24, api_name="/ask"
    )
    (tmp_path / "profile").mkdir()
    browser = Browser(tmp_path / "profile")
    try:
        browser.call("Page.enable")
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            width=VIEWPORT[0],
            height=VIEWPORT[1],
            deviceScaleFactor=1,
            mobile=False,
        )
        browser.call("Page.navigate", url=app_url)
        browser.wait("document.querySelector('#ask-file input[type=file]') !== null", what="the page to load")
        assert "UniMedVL" in browser.js("document.body.innerText")

        browser.set_files("#ask-file input[type=file]", [str(image)])
        browser.wait(
            "(() => { const i = document.querySelector('#ask-preview img');"
            " return i !== null && i.complete && i.naturalWidth > 0; })()",
            what="the preview",
        )
        browser.type_into("#ask-question textarea", question)
        browser.js("document.querySelector('#ask-button').click()")
        browser.wait(
            f"document.querySelector('#ask-chat').innerText.includes({json.dumps(question)})",
            what="the question in the chat",
        )
        browser.wait(
            "document.querySelector('#ask-chat').querySelectorAll('img').length > 0", what="the image in the chat"
        )
        shown = browser.wait(
            f"(() => {{ const v = document.querySelector('#ask-answer textarea').value;"
            f" return v === {json.dumps(expected)} ? 'ok' : ''; }})()",
            what=f"the answer {expected!r} in the Answer box",
        )
        assert shown == "ok"
        browser.js("document.activeElement.blur()")  # no text caret in the picture
        time.sleep(0.5)  # let the chat finish its scroll animation before the picture
        png = browser.screenshot()
        # A page error (gradio's toast) would mean the request failed.
        assert "Error" not in browser.js("document.body.innerText")
    finally:
        browser.close()
    out = artifacts_dir(tmp_path) / "app_ask.png"
    out.write_bytes(png)
    with Image.open(out) as shot:
        assert shot.size == VIEWPORT
        assert np.asarray(shot.convert("L")).std() > 5  # not a blank page
    if os.environ.get("UNIMEDVL_UPDATE_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(out, REPO / "docs" / "app.png")
