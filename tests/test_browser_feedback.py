"""End to end in a real browser, with feedback stored: draw a digit, say the answer was wrong
and pick the digit with the keyboard (the row is in the database), swap the model through the
admin endpoint to a model fine-tuned on that correction (``digitlab.finetune``), draw again and
judge the answer: the new row names the new model, and no request failed on the way.

Same requirements as tests/test_browser.py (Playwright, /usr/bin/chromium), whose stroke tracing
and page wrapper this test uses. The server starts with a small model (an mlp100, so that the
fine-tuning takes seconds).
"""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from conftest import free_port, server_in_thread
from test_browser import Page, browser, digit_strokes  # noqa: F401 (browser: the fixture)

from digitlab.data import load_dataset
from digitlab.feedback import export_dataset, open_store
from digitlab.finetune import finetune
from digitlab.server import Settings, create_app

pytestmark = pytest.mark.browser

TOKEN = "browser-test-admin-token-42"


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_model_dir):
    import uvicorn

    tmp = tmp_path_factory.mktemp("feedback-browser")
    db = tmp / "feedback.db"
    port = free_port()
    app = create_app(small_model_dir, Settings(feedback_db=str(db), admin_token=TOKEN))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    with server_in_thread(server):
        yield {"url": f"http://127.0.0.1:{port}", "db": db, "model": small_model_dir}



def model_id(base: str) -> str:
    return httpx.get(base + "/api/model").json()["weights_sha256"]


def test_correct_then_swap_model(browser, served, mnist, tmp_path):
    base, db = served["url"], served["db"]
    view = Page(browser, base, viewport={"width": 1280, "height": 900})
    page = view.page
    bad = []
    page.on("response", lambda r: r.status >= 400 and bad.append(f"{r.status} {r.url}"))
    old_id = model_id(base)

    # Draw; the feedback panel appears with the answer and says what is stored.
    img, truth = mnist.test_images[0].numpy(), int(mnist.test_labels[0])
    view.draw(digit_strokes(img))
    shown = view.settled()
    page.wait_for_selector("#feedback:not([hidden])")
    assert "stores your drawing" in page.inner_text("#feedback-note")
    page.wait_for_function("() => document.getElementById('feedback-count').textContent"
                           ".includes('0 answers stored so far, 0 corrections')")

    # "Wrong, it is: ..." with the keyboard: the truth, or (if the small model read it right)
    # another digit, since the answer's own digit is not among the "wrong" choices.
    picked = truth if shown != str(truth) else (truth + 1) % 10
    assert page.is_hidden(f'.fb-digit[data-digit="{shown}"]') or shown == "?"
    page.focus("#fb-right" if shown != "?" else '.fb-digit[data-digit="0"]')
    for _ in range(12):
        if page.evaluate("document.activeElement.dataset.digit") == str(picked):
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == \
        f"Wrong, it is {picked}"
    page.keyboard.press("Enter")
    page.wait_for_selector("#feedback[data-state='sent']")
    status = page.inner_text("#feedback-status")
    assert status.startswith("Thank you: stored as #1, as a") and status.endswith(f" {picked}.")
    assert all(page.is_disabled(f'.fb-digit[data-digit="{d}"]') for d in range(10))
    page.wait_for_function("() => document.getElementById('feedback-count').textContent"
                           ".includes('1 answer stored so far, 1 correction.')")

    with open_store(db, create=False) as store:
        row = store.get(1)
    assert row.label == picked and row.model_id == old_id
    assert row.predicted == (None if shown == "?" else int(shown))
    original = Image.open(io.BytesIO(row.image_png))
    assert original.format == "PNG" and original.size == (280, 280)  # the canvas as predicted
    assert Image.open(io.BytesIO(row.input_png)).size == (28, 28)
    page.wait_for_timeout(300)
    page.screenshot(path=str(tmp_path / "feedback-sent.png"), full_page=True)

    # Fine-tune on what was stored, then swap the model while the page is open.
    with open_store(db, create=False) as store:
        export_dataset(store, tmp_path / "export")
    tuned = tmp_path / "tuned"
    finetune(served["model"], load_dataset(tmp_path / "export"), tuned, epochs=1, holdout=0.0,
             mnist=mnist)
    r = httpx.post(base + "/api/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"},
                   json={"model_dir": str(tuned)}, timeout=120)
    assert r.status_code == 200 and r.json()["changed"], r.text
    new_id = page.evaluate("fetch('/api/model').then(r => r.json())")["weights_sha256"]
    assert new_id == r.json()["weights_sha256"] != old_id

    # Draw again: the new model answers; judging it stores the answer under its id.
    view.clear()
    img, truth = mnist.test_images[1].numpy(), int(mnist.test_labels[1])
    view.draw(digit_strokes(img))
    shown = view.settled()
    if shown == str(truth):
        page.wait_for_selector("#fb-right:not([hidden])")
        page.click("#fb-right")
    else:  # the small model may misread it: say what it is
        page.click(f'.fb-digit[data-digit="{truth}"]')
    page.wait_for_selector("#feedback[data-state='sent']")
    assert "stored as #2" in page.inner_text("#feedback-status")
    with open_store(db, create=False) as store:
        row = store.get(2)
        assert (row.label, row.model_id) == (truth, new_id)
        assert store.stats().total == 2

    assert bad == [], bad
    assert view.errors == [], view.errors
    assert view.foreign == [], view.foreign
    view.close()


def test_feedback_on_a_phone(browser, served, mnist, tmp_path):
    view = Page(browser, served["url"], viewport={"width": 390, "height": 844},
                device_scale_factor=2, is_mobile=True, has_touch=True)
    page = view.page
    view.draw(digit_strokes(mnist.test_images[2].numpy()))
    view.settled()
    page.wait_for_selector("#feedback:not([hidden])")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    for sel in ("#fb-right", '.fb-digit[data-digit="0"]', '.fb-digit[data-digit="9"]'):
        if page.is_visible(sel):
            box = page.locator(sel).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (sel, box)
            assert box["height"] >= 32  # a finger can hit it
    page.screenshot(path=str(tmp_path / "feedback-phone.png"), full_page=True)
    assert view.errors == [], view.errors
    view.close()
