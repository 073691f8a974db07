"""End to end, for real: voila app.ipynb on loopback, headless Chromium, uploads through the button."""
import io
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from browser import ROOT, chromium, free_port, open_app, require_browser, serve, upload_file, voila, wait_for
from conftest import BEARS
from corpus import PDF, encode, photo, png_bomb

SCREENSHOT = ROOT / "docs" / "screenshot.png"


@pytest.fixture(scope="module")
def server():
    require_browser()
    with voila() as (url, log, _):
        yield url, log


def real_photo(label: str = "grizzly") -> tuple[bytes, str | None]:
    """A real validation photo of `label` when the shared data is here, else a generated image (label unknown)."""
    if BEARS.is_dir():
        row = next(l for l in (ROOT / "data" / "valid.csv").read_text().splitlines() if l.endswith("," + label))
        return (BEARS / row.split(",")[0]).read_bytes(), label
    return encode(photo(seed=len(label)), "JPEG"), None


def huge_file(tmp_path):
    """60 MB: over the app's limit and over the kernel websocket's, so it must never be sent."""
    path = tmp_path / "huge.jpg"
    path.write_bytes(b"\xff\xd8\xff" + b"\0" * (60 * 2**20 - 3))
    return path


def wait_answer(page, text: str, timeout_ms: int = 120_000) -> str:
    page.get_by_text(text).first.wait_for(timeout=timeout_ms)
    return page.inner_text("body")


def test_upload_photo_then_bad_files_then_photo_again(server, tmp_path):
    url, log = server
    data, label = real_photo()
    with chromium() as browser:
        page = open_app(browser, url)
        upload_file(page, "bear.jpg", data, "image/jpeg")
        body = wait_answer(page, "Prediction:")
        assert (f"Prediction: {label}; Probability: 0." if label else "Probability: ") in body
        SCREENSHOT.parent.mkdir(exist_ok=True)
        if label:  # a shared photo is not ours to publish: blur it in the README screenshot
            page.add_style_tag(content=".bear-app img { filter: blur(10px); }")
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        for name, payload, message in [
            ("notes.pdf", PDF, "This file is a PDF document, not an image."),
            ("half.jpg", encode(photo(), "JPEG")[:2000], "damaged or incomplete"),
            ("bomb.png", png_bomb(), "far too large"),
            ("huge.jpg", huge_file(tmp_path), "huge.jpg: The file is too large (60.0 MB"),
        ]:
            upload_file(page, name, payload)
            body = wait_answer(page, message)
            assert "Traceback" not in body and "Prediction:" not in body

        upload_file(page, "again.jpg", data, "image/jpeg")
        body = wait_answer(page, "Prediction:")
        assert "Done: again.jpg" in body


def phone_photo(data: bytes, orientation: int | None = None) -> bytes:
    """`data` enlarged to 12 MP with a sensor's grain (so 3-4 MB, as a phone saves it), optionally
    stored sideways with an EXIF flag."""
    import numpy as np

    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((4000, 3000)), dtype=np.float32)
    grainy = np.clip(pixels + np.random.default_rng(0).normal(0, 8, pixels.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    return encode(Image.fromarray(grainy), "JPEG", quality=90, exif=exif.tobytes())


def test_big_photos_are_shrunk_in_the_browser_and_keep_their_answer(server):
    url, log = server
    data, label = real_photo()
    big, sideways = phone_photo(data), phone_photo(data, orientation=6)  # 6: shown turned 90° clockwise
    with chromium() as browser:
        page = open_app(browser, url)
        upload_file(page, "phone.jpg", big, "image/jpeg")
        body = wait_answer(page, "Done: phone.jpg")
        assert (f"Prediction: {label}; " if label else "Prediction: ") in body

        upload_file(page, "sideways.jpg", sideways, "image/jpeg")
        wait_answer(page, "Done: sideways.jpg")
        width, height = page.locator(".bear-app img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert height > width  # the EXIF rotation was applied before the photo was shrunk

        upload_file(page, "cut.jpg", big[: len(big) // 2], "image/jpeg")  # the browser can't decode it...
        body = wait_answer(page, "cut.jpg: The image file is damaged or incomplete")  # ...so the kernel says why
        assert "Prediction:" not in body
    received = dict(re.findall(r"classified '(phone|sideways)\.jpg' \((\d+) bytes received\)", log.read_text()))
    assert len(big) > 2 * 2**20 and len(received) == 2, (len(big), received)
    assert all(int(n) < len(big) / 4 for n in received.values()), (received, len(big))


def test_choosing_the_same_photo_twice_classifies_it_twice(server):
    # A file input keeps its last choice, and choosing the same file again fires no change event.
    # Playwright always fires one, so record what the input holds when FileUpload opens the dialog:
    # upload.js must have emptied it.
    url, log = server
    record = """const click = HTMLInputElement.prototype.click;
                window.valuesAtClick = [];
                HTMLInputElement.prototype.click = function () {
                  if (this.type === 'file') { window.valuesAtClick.push(this.value); }
                  return click.call(this);
                };"""
    data, _ = real_photo()
    with chromium() as browser:
        page = open_app(browser, url, init_script=record)
        for times in [1, 2]:
            upload_file(page, "same.jpg", data, "image/jpeg")
            assert wait_for(lambda: log.read_text().count("classified 'same.jpg'") >= times, 120, step=0.2), \
                f"upload {times} of the same photo was not classified"
        assert page.evaluate("window.valuesAtClick") == ["", ""]


def slow_page(browser, url: str, init_script: str = ""):
    """The app over a slow connection (300 ms round trips, 1 MB/s), returned as soon as navigation starts."""
    page = browser.new_page(viewport={"width": 900, "height": 900})
    page.add_init_script(init_script)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions",
             {"offline": False, "latency": 300, "downloadThroughput": 2**20, "uploadThroughput": 2**20})
    page.goto(url, wait_until="commit")
    return page


def test_the_early_button_takes_a_photo_before_voilas_javascript_has_loaded(server, tmp_path):
    # Over a slow network Voila's 2 MB of JavaScript and CSS take seconds. The template's plain button
    # works from the first paint; a photo chosen with it is answered once the FileUpload widget is up,
    # and that widget takes the next photo.
    url, log = server
    seen = """new MutationObserver((records, observer) => {
                if (document.body && document.body.innerText.includes('Got early.jpg')) {
                  window.sawWaiting = !document.querySelector('.widget-upload');
                  observer.disconnect();
                }
              }).observe(document, {subtree: true, childList: true, characterData: true});"""
    first, label = real_photo("grizzly")
    second, second_label = real_photo("teddy")
    with chromium() as browser:
        page = slow_page(browser, url, seen)
        upload_file(page, "early.jpg", first, "image/jpeg")  # the only "Upload photo" button yet: the early one
        body = wait_answer(page, "Done: early.jpg")
        assert page.evaluate("window.sawWaiting") is True  # it waited, with no widget on the page yet
        assert (f"Prediction: {label}; " if label else "Prediction: ") in body
        assert page.locator("#bear-early").count() == 0 and page.get_by_role("button", name="Upload photo").count() == 1

        upload_file(page, "next.jpg", second, "image/jpeg")
        body = wait_answer(page, "Done: next.jpg")
        assert (f"Prediction: {second_label}; " if second_label else "Prediction: ") in body

        # A file too big for the websocket, chosen early, is kept off it too (upload.js is in place first).
        page = slow_page(browser, url)
        upload_file(page, "huge.jpg", huge_file(tmp_path))
        wait_answer(page, "huge.jpg: The file is too large (60.0 MB")
    assert "classified 'early.jpg'" in log.read_text()


def test_binder_setup_serves_the_app_with_its_template(tmp_path):
    # Binder runs binder/postBuild, then Voila inside a Jupyter server at /voila/render/app.ipynb.
    require_browser()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")} | {"HOME": str(tmp_path)}
    subprocess.run(["bash", "binder/postBuild"], cwd=ROOT, env=env, check=True)
    port = free_port()
    cmd = [sys.executable, "-m", "jupyter_server", f"--port={port}", "--no-browser", "--ServerApp.ip=127.0.0.1",
           "--IdentityProvider.token=", "--allow-root"]
    with serve(cmd, port, "/api", ROOT, None, env) as (url, log, _), chromium() as browser:
        page = browser.new_page(viewport={"width": 900, "height": 900})
        page.goto(url + "/voila/render/app.ipynb", wait_until="commit")
        page.locator("#bear-early button").wait_for(timeout=60_000)  # the template is in use
        page.locator("#rendered_cells .widget-upload").wait_for(timeout=120_000)
        data, label = real_photo()
        upload_file(page, "bear.jpg", data, "image/jpeg")
        body = wait_answer(page, "Done: bear.jpg")
    assert (f"Prediction: {label}; " if label else "Prediction: ") in body


def test_a_preheated_kernel_has_the_model_loaded_before_the_first_visitor():
    # voila.json keeps one kernel with the notebook already run; its model loads with nobody on the
    # page, so the first visitor's first upload is answered without "loading the model".
    require_browser()
    watch = """new MutationObserver(() => { if (document.body.innerText.includes('loading the model'))
                                             window.sawLoading = true; })
               .observe(document, {subtree: true, childList: true, characterData: true});"""
    with voila() as (url, log, _), chromium() as browser:
        assert wait_for(lambda: "model loaded" in log.read_text(), 120), \
            f"no kernel loaded the model before a visit:\n{log.read_text()}"
        page = open_app(browser, url, init_script=watch)
        data, label = real_photo()
        upload_file(page, "bear.jpg", data, "image/jpeg")
        body = wait_answer(page, "Prediction:")
        assert page.evaluate("window.sawLoading === undefined")
    assert label is None or f"Prediction: {label}" in body
