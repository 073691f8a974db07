"""End to end, for real: voila app.ipynb on loopback, headless Chromium, photos through every way in."""
import io
import os
import re
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from browser import (ROOT, card, chromium, drop_files, open_app, paste_file, require_browser, upload_file, upload_files,
                     voila, wait_card, wait_for)
from conftest import BEARS, need_shared
from corpus import PDF, encode, photo, png_bomb

def screenshot(page, name: str) -> Path:
    """Screenshots go to a temporary folder (printed); BEAR_REFRESH_SCREENSHOTS=1 writes the README's instead."""
    folder = ROOT / "docs" if os.environ.get("BEAR_REFRESH_SCREENSHOTS") else Path(tempfile.gettempdir()) / "bear-shots"
    folder.mkdir(exist_ok=True)
    blur_shared_photos(page)
    page.screenshot(path=str(folder / name), full_page=True)
    print(f"screenshot: {folder / name}")
    return folder / name
FAKE_CAMERA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    db = tmp_path_factory.mktemp("feedback") / "feedback.db"
    with voila(env={"BEAR_FEEDBACK_DB": str(db)}) as (url, log, _):
        yield url, log, db


def real_photo(label: str = "grizzly", nth: int = 0) -> tuple[bytes, str | None]:
    """A real validation photo of `label` when the shared data is here, else a generated image (label unknown)."""
    if BEARS.is_dir():
        rows = [l for l in (ROOT / "data" / "valid.csv").read_text().splitlines() if l.endswith("," + label)]
        return (BEARS / rows[nth].split(",")[0]).read_bytes(), label
    return encode(photo(seed=len(label) + nth), "JPEG"), None


def expect(label: str | None) -> str:
    return f"Prediction: {label}; Probability: 0." if label else "Prediction: "


def huge_file(tmp_path):
    """60 MB: over the app's limit and over the kernel websocket's, so it must never be sent."""
    path = tmp_path / "huge.jpg"
    path.write_bytes(b"\xff\xd8\xff" + b"\0" * (60 * 2**20 - 3))
    return path


def blur_shared_photos(page) -> None:
    """The shared photos are not ours to publish: blur them in screenshots."""
    if BEARS.is_dir():
        page.add_style_tag(content=".bear-thumb { filter: blur(8px); }")


def test_three_files_at_once_then_bad_files_then_the_same_photo_again(server, tmp_path):
    url, log, _ = server
    grizzly, g_label = real_photo("grizzly")
    teddy, t_label = real_photo("teddy")
    with chromium() as browser:
        page = open_app(browser, url)
        upload_files(page, ("grizzly.jpg", grizzly, "image/jpeg"), ("teddy.jpg", teddy, "image/jpeg"),
                     ("notes.txt", b"shopping list: honey", "text/plain"))
        assert expect(g_label) in wait_card(page, "grizzly.jpg")
        assert expect(t_label) in wait_card(page, "teddy.jpg")
        assert "This file is a text file, not an image." in wait_card(page, "notes.txt")
        page.get_by_text("Done: 3 photos.").wait_for(timeout=60_000)
        names = page.locator(".bear-card-name").all_inner_texts()
        assert names == ["notes.txt", "teddy.jpg", "grizzly.jpg"]  # newest first

        for name, payload, message in [
            ("notes.pdf", PDF, "This file is a PDF document, not an image."),
            ("half.jpg", encode(photo(), "JPEG")[:2000], "damaged or incomplete"),
            ("bomb.png", png_bomb(), "far too large"),
            ("huge.jpg", huge_file(tmp_path), "The file is too large (60.0 MB"),
        ]:
            upload_file(page, name, payload)
            text = wait_card(page, name)
            assert message in text and "Traceback" not in text and "Prediction:" not in text

        upload_file(page, "grizzly.jpg", grizzly, "image/jpeg")
        assert wait_for(lambda: page.locator(".bear-card-name", has_text="grizzly.jpg").count() == 2, 60)
        page.get_by_role("button", name="Clear").click()
        assert wait_for(lambda: page.locator(".bear-card").count() == 0, 30)
    assert "huge.jpg" not in re.sub(r"rejected upload 'huge.jpg'.*", "", log.read_text())  # never crossed the websocket


def test_drop_photos_anywhere_and_paste_one(server):
    url, _, _ = server
    black, b_label = real_photo("black")
    teddy, t_label = real_photo("teddy", 1)
    grizzly, g_label = real_photo("grizzly", 1)
    with chromium() as browser:
        page = open_app(browser, url)
        drop_files(page, ("dropped-black.jpg", black, "image/jpeg"), ("dropped-teddy.jpg", teddy, "image/jpeg"))
        assert expect(b_label) in wait_card(page, "dropped-black.jpg")
        assert expect(t_label) in wait_card(page, "dropped-teddy.jpg")
        assert not page.evaluate("document.body.classList.contains('bear-dropping')")  # the highlight goes away
        paste_file(page, "pasted.jpg", grizzly, "image/jpeg")
        assert expect(g_label) in wait_card(page, "pasted.jpg")


def test_camera_capture_gets_an_answer(server):
    """Chromium's fake camera shows a test pattern: captured, it gets a card that says it is not a bear."""
    url, _, _ = server
    with chromium(*FAKE_CAMERA) as browser:
        page = open_app(browser, url, permissions=["camera"])
        page.get_by_role("button", name="Take a photo").click()
        page.locator("video.bear-video").wait_for(state="visible", timeout=30_000)
        assert wait_for(lambda: page.evaluate("document.querySelector('video.bear-video').videoWidth") > 0, 30)
        page.get_by_role("button", name="Capture").click()
        text = wait_card(page, "Camera photo, ")  # and the time, in the visitor's own clock
        assert re.search(r"Camera photo, \d\d?:\d\d", text)
        assert "Prediction: not_bear" in text and "Not a bear" in text
        page.get_by_role("button", name="Close camera").click()
        assert page.locator("video.bear-video").is_hidden()


def test_camera_without_permission_says_why(server):
    url, _, _ = server
    with chromium("--use-fake-device-for-media-stream") as browser:  # a camera, but the permission is not given
        page = open_app(browser, url)
        page.get_by_role("button", name="Take a photo").click()
        page.get_by_text("Camera permission was denied.").wait_for(timeout=30_000)
        assert page.locator("video.bear-video").is_hidden()


def test_where_it_looked_and_thats_wrong(server):
    need_shared()  # a real bear: a generated image is "not a bear", whose card has no map
    url, log, db = server
    data, _ = real_photo("black", 2)
    with chromium() as browser:
        page = open_app(browser, url)
        upload_file(page, "flag-me.jpg", data, "image/jpeg")
        the_card = card(page, "flag-me.jpg")
        the_card.wait_for(timeout=120_000)
        img = the_card.locator("img.bear-thumb")
        before = img.get_attribute("src")
        the_card.get_by_role("button", name="Where it looked").click()
        assert wait_for(lambda: img.get_attribute("src") != before, 30)  # the overlay replaces the photo
        the_card.get_by_role("button", name="That's wrong").click()
        the_card.get_by_role("radio", name="Teddy bear").click()  # the card sets its radios from the kernel's state: one arriving just after the click can briefly undo it, which .check() took for a failure
        the_card.get_by_text("Thanks! Stored as “Teddy bear”.").wait_for(timeout=30_000)
    from bear_classifier.page.feedback import FeedbackStore

    [row] = [r for r in FeedbackStore(f"sqlite:///{db}").all() if r.label == "teddy"]
    assert Image.open(io.BytesIO(row.photo)).size[0] > 0


def test_phone_sized_page_stacks_cards_with_large_buttons(server):
    url, _, _ = server
    data, label = real_photo("grizzly", 3)
    with chromium() as browser:
        page = open_app(browser, url, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                        device_scale_factor=2)
        upload_file(page, "phone.jpg", data, "image/jpeg")
        assert expect(label) in wait_card(page, "phone.jpg")
        for name in ["Upload photos", "Take a photo"]:
            box = page.get_by_role("button", name=name).first.bounding_box()
            assert box["height"] >= 44 and box["x"] + box["width"] <= 390  # a thumb hits it; nothing off-screen
        thumb, answer = card(page, "phone.jpg").locator("img.bear-thumb"), card(page, "phone.jpg").locator(".bear-answer")
        assert answer.bounding_box()["y"] > thumb.bounding_box()["y"] + thumb.bounding_box()["height"] - 1  # stacked
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling


def phone_photo(data: bytes, orientation: int | None = None, fmt: str = "JPEG") -> bytes:
    """`data` enlarged to 12 MP with a sensor's grain (so 3-4 MB, as a phone saves it), optionally
    stored sideways with an EXIF flag."""
    import numpy as np

    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((4000, 3000)), dtype=np.float32)
    grainy = np.clip(pixels + np.random.default_rng(0).normal(0, 8, pixels.shape), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    return encode(Image.fromarray(grainy), fmt, quality=90, exif=exif.tobytes())


def test_big_photos_of_any_format_are_shrunk_in_the_browser_and_keep_their_answer(server):
    url, log, _ = server
    start = len(log.read_text())
    data, label = real_photo()
    big, sideways, webp = phone_photo(data), phone_photo(data, orientation=6), phone_photo(data, fmt="WEBP")
    with chromium() as browser:
        page = open_app(browser, url)
        upload_files(page, ("phone.jpg", big, "image/jpeg"), ("phone.webp", webp, "image/webp"))
        assert expect(label) in wait_card(page, "phone.jpg") and expect(label) in wait_card(page, "phone.webp")

        upload_file(page, "sideways.jpg", sideways, "image/jpeg")
        wait_card(page, "sideways.jpg")
        width, height = card(page, "sideways.jpg").locator("img.bear-thumb").evaluate(
            "img => [img.naturalWidth, img.naturalHeight]")
        assert height > width  # the EXIF rotation was applied before the photo was shrunk

        upload_file(page, "cut.jpg", big[: len(big) // 2], "image/jpeg")  # the browser can't decode it...
        text = wait_card(page, "cut.jpg")  # ...so it is sent as is, and the kernel says why
        assert "The image file is damaged or incomplete" in text and "Prediction:" not in text
    received = re.findall(r"classified a photo \((\d+) bytes received\)", log.read_text()[start:])
    assert len(big) > 2 * 2**20 and len(received) == 3, (len(big), received)
    assert all(int(n) < len(big) / 4 for n in received), (received, len(big))


def test_choosing_the_same_photo_twice_classifies_it_twice(server):
    # A file input keeps its last choice, and choosing the same file again fires no change event.
    # Playwright always fires one, so record what the input holds when its dialog opens: empty.
    url, log, _ = server
    record = """window.valuesAtClick = [];
                document.addEventListener('click', e => { if (e.target.type === 'file') window.valuesAtClick.push(e.target.value); }, true);"""
    data, _ = real_photo()
    with chromium() as browser:
        page = open_app(browser, url, init_script=record)
        for times in [1, 2]:
            upload_file(page, "same.jpg", data, "image/jpeg")
            assert wait_for(lambda: page.locator(".bear-card-name", has_text="same.jpg").count() >= times, 120, step=0.2), \
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


def test_the_early_button_takes_photos_before_voilas_javascript_has_loaded(server, tmp_path):
    # Over a slow network Voila's 2 MB of JavaScript and CSS take seconds. The template's plain button
    # works from the first paint; photos chosen with it are answered once the photo input is up.
    url, log, _ = server
    seen = """new MutationObserver((records, observer) => {
                if (document.body && document.body.innerText.includes('Got 2 photos')) {
                  window.sawWaiting = !document.querySelector('.bear-input');
                  observer.disconnect();
                }
              }).observe(document, {subtree: true, childList: true, characterData: true});"""
    first, label = real_photo("grizzly", 4)
    second, second_label = real_photo("teddy", 4)
    with chromium() as browser:
        page = slow_page(browser, url, seen)
        upload_files(page, ("early.jpg", first, "image/jpeg"), ("early2.jpg", second, "image/jpeg"),
                     button="#bear-early button")
        assert expect(label) in wait_card(page, "early.jpg") and expect(second_label) in wait_card(page, "early2.jpg")
        assert page.evaluate("window.sawWaiting") is True  # it waited, with no widget on the page yet
        assert page.locator("#bear-early").is_hidden()

        # A file too big for the websocket, chosen early, is kept off it too.
        page = slow_page(browser, url)
        upload_file(page, "huge.jpg", huge_file(tmp_path), button="#bear-early button")
        assert "The file is too large (60.0 MB" in wait_card(page, "huge.jpg")


def test_a_preheated_kernel_has_the_model_loaded_before_the_first_visitor():
    # voila.json keeps one kernel with the notebook already run; its model loads with nobody on the
    # page, so the first visitor's first photo is answered without "Loading the model".
    require_browser()
    watch = """new MutationObserver(() => { if (document.body.innerText.includes('Loading the model'))
                                             window.sawLoading = true; })
               .observe(document, {subtree: true, childList: true, characterData: true});"""
    with voila() as (url, log, _), chromium() as browser:
        assert wait_for(lambda: "model loaded" in log.read_text(), 120), \
            f"no kernel loaded the model before a visit:\n{log.read_text()}"
        page = open_app(browser, url, init_script=watch)
        data, label = real_photo()
        upload_file(page, "bear.jpg", data, "image/jpeg")
        assert expect(label) in wait_card(page, "bear.jpg")
        assert page.evaluate("window.sawLoading === undefined")
