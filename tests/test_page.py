"""The page, for people: answer cards anyone can read, a screen reader and a keyboard, examples to try,
nothing sent to a third party. Real Voila on loopback, real Chromium, axe-core (tests/package.json)."""
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from bear_classifier.page.feedback import FeedbackStore
from bear_classifier.page.widget import PhotoInput
from conftest import missing
from browser import ROOT, WIDGET_BUTTON, card, chromium, open_app, upload_file, upload_files, voila, wait_card, wait_for
from corpus import encode, photo
from test_browser import real_photo, screenshot

AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
VERDICT = re.compile(r"^((Black|Grizzly|Teddy) bear · (>99|\d{1,2})%|Not a bear|Not sure: maybe .+ \(\d+%\), or .+ \(\d+%\))$")
NOT_A_BEAR = encode(photo(seed=3), "PNG")  # a test pattern: the model says "not a bear" (tests/test_app.py)
# Voila 0.5.13 bundles JupyterLab 4.2.5, and the ipywidgets it needs (jupyterlab_widgets 3.0.17) was built
# against 4.6: webpack says so in 15 warnings. Harmless, and only a newer Voila can end them.
UPSTREAM_WARNING = re.compile(r"^(Unsatisfied version|No satisfying version)")
PHONE = dict(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, device_scale_factor=2)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from browser import require_browser

    require_browser()
    require_axe()
    tmp = tmp_path_factory.mktemp("page")
    examples = tmp / "examples"
    examples.mkdir()
    photo(seed=3).save(examples / "pattern.png")
    photo(seed=4).save(examples / "waves.jpg")
    (examples / "notes.txt").write_text("not a photo, so not offered")
    env = {"BEAR_FEEDBACK_DB": str(tmp / "feedback.db"), "BEAR_EXAMPLES": str(examples)}
    with voila(env=env) as (url, log, _):
        yield url, log, tmp / "feedback.db"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The app as deployed from this checkout: its own examples/ folder (what the README's screenshots show)."""
    from browser import require_browser

    require_browser()
    with voila(env={"BEAR_FEEDBACK_DB": str(tmp_path_factory.mktemp("shipped") / "feedback.db")}) as started:
        yield started


def require_axe() -> None:
    """Skip where axe-core is missing (`make test` installs it with npm), except in CI, where that is a failure."""
    if not AXE.exists():
        missing("axe-core", "make test installs it; or npm ci --prefix tests")


def axe_violations(page) -> list[str]:
    """axe-core's critical and serious findings on the page as it is (WCAG 2.0-2.2 A/AA and best practice)."""
    require_axe()
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("""() => axe.run(document, { runOnly: { type: 'tag',
        values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] } })""")
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}" for v in result["violations"]
            if v["impact"] in ("critical", "serious")]


def three_cards(page) -> None:
    grizzly, _ = real_photo("grizzly")
    upload_files(page, ("grizzly.jpg", grizzly, "image/jpeg"), ("pattern.png", NOT_A_BEAR, "image/png"),
                 ("notes.txt", b"shopping list: honey", "text/plain"))
    wait_card(page, "notes.txt")
    wait_card(page, "pattern.png")
    wait_card(page, "grizzly.jpg")


def test_answer_cards_read_as_answers_and_axe_finds_nothing_serious(shipped):
    url, _, _ = shipped
    with chromium() as browser:
        page = open_app(browser, url, viewport={"width": 1280, "height": 800})
        assert page.title() == "Is it a bear?"  # the model's title, not the notebook's file name
        three_cards(page)
        grizzly = card(page, "grizzly.jpg")
        verdict = grizzly.locator(".bear-verdict").inner_text()
        assert VERDICT.match(verdict), verdict
        assert re.search(r"Prediction: \w+; Probability: 0\.\d{4}|Probability: 1\.0000", grizzly.inner_text())
        values = grizzly.locator(".bear-bar-value").all_inner_texts()
        assert len(values) == 4 and all(re.fullmatch(r"(<1|>99|\d{1,2})%", v) for v in values), values
        assert grizzly.locator("img.bear-thumb").get_attribute("alt") == "Your photo: grizzly.jpg"

        pattern = card(page, "pattern.png")
        assert pattern.locator(".bear-verdict").inner_text() == "Not a bear"
        assert "That doesn't look like a bear." in pattern.inner_text()
        assert pattern.get_by_role("button", name="Where it looked").count() == 0  # no map that means nothing...
        assert "No map for “Not a bear”" in pattern.inner_text()  # ...and the sentence says why
        assert "This file is a text file, not an image." in card(page, "notes.txt").inner_text()

        has_map = grizzly.get_by_role("button", name="Where it looked").count()
        if has_map:
            looked = grizzly.get_by_role("button", name="Where it looked")
            assert looked.get_attribute("aria-pressed") == "false" and grizzly.locator(".bear-legend").is_hidden()
            looked.click()
            assert looked.get_attribute("aria-pressed") == "true"
            assert "Bright: what made it say" in grizzly.locator(".bear-legend").inner_text()  # visible, not a tooltip
            assert grizzly.locator("img.bear-thumb").get_attribute("alt") == "Where the model looked in grizzly.jpg"
            looked.click()
        assert has_map or "Not" in verdict

        assert axe_violations(page) == []
        screenshot(page, "screenshot.png")


def test_keyboard_alone_uploads_and_reaches_every_cards_buttons_with_a_visible_ring(server):
    url, _, _ = server
    data, _ = real_photo("grizzly", 1)
    ring = """() => { const s = getComputedStyle(document.activeElement);
        const [r, g, b] = s.outlineColor.match(/\\d+/g).map(Number).map(c => c / 255)
          .map(c => c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
        return { text: document.activeElement.innerText || document.activeElement.getAttribute('aria-label') || '',
                 cls: document.activeElement.className, width: parseFloat(s.outlineWidth), style: s.outlineStyle,
                 contrast: 1.05 / (0.2126 * r + 0.7152 * g + 0.0722 * b + 0.05) }; }"""  # against the white page
    with chromium() as browser:
        page = open_app(browser, url)
        # Voila moves the rendered cells into its shell once they are all there (and the template moves
        # that into <main>): a moved button loses focus, so a keyboard starts once the page is still.
        page.wait_for_function("document.querySelector('main > .jp-LabShell .bear-upload')")
        # Playwright turns on catching file dialogs without waiting for the browser: a key pressed at
        # once can beat it (a click waits for its checks first). Turned on here, it is on well before.
        page.on("filechooser", lambda chooser: None)
        seen = []
        for _ in range(15):
            page.keyboard.press("Tab")
            seen.append(page.evaluate(ring))
            if "bear-upload" in seen[-1]["cls"]:
                break
        assert "bear-upload" in seen[-1]["cls"], seen
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Enter")
        chooser.value.set_files([{"name": "keys.jpg", "mimeType": "image/jpeg", "buffer": data}])
        wait_card(page, "keys.jpg")
        for _ in range(30):
            page.keyboard.press("Tab")
            seen.append(page.evaluate(ring))
            if seen[-1]["text"] == "That's wrong":
                break
        reached = [s["text"] for s in seen]
        assert "That's wrong" in reached and ("Where it looked" in reached or "Not" in card(page, "keys.jpg").inner_text())
        assert "Clear" in reached and any(t.startswith("Try an example") for t in reached)
        for control in seen:
            assert control["style"] != "none" and control["width"] >= 2 and control["contrast"] >= 3, control

        page.keyboard.press("Enter")  # "That's wrong": focus goes to the first answer offered
        assert page.evaluate("document.activeElement.type") == "radio"


def test_thats_wrong_offers_only_the_other_answers_and_stores_the_choice(server):
    url, _, db = server
    data, _ = real_photo("black", 2)
    before = max((r.id for r in FeedbackStore(f"sqlite:///{db}").all()), default=0)  # no file name is stored
    with chromium() as browser:
        page = open_app(browser, url)
        upload_file(page, "wrong.jpg", data, "image/jpeg")
        the_card = card(page, "wrong.jpg")
        the_card.wait_for(timeout=120_000)
        said = the_card.locator(".bear-answer").inner_text().split(";")[0].removeprefix("Prediction: ")
        the_card.get_by_role("button", name="That's wrong").click()
        group = the_card.get_by_role("group", name="What is it really?")
        offered = [r.get_attribute("value") for r in group.get_by_role("radio").all()]
        assert said not in offered and len(offered) == 3, (said, offered)
        group.get_by_role("radio").nth(0).check()
        the_card.get_by_text("Thanks! Stored as").wait_for(timeout=30_000)
        assert group.get_by_role("radio").nth(0).is_checked()
    rows = [r for r in FeedbackStore(f"sqlite:///{db}").all() if r.id > before]
    assert [r.label for r in rows] == [offered[0]] and rows[0].predicted == said


def test_thats_wrong_can_be_changed_and_undone_and_undo_removes_the_row(server):
    url, _, db = server
    data, _ = real_photo("teddy", 2)
    store = FeedbackStore(f"sqlite:///{db}")
    before = max((r.id for r in store.all()), default=0)  # no file name is stored: this card's rows come after

    def mine() -> list:
        return [r for r in store.all() if r.id > before]

    with chromium() as browser:
        page = open_app(browser, url)
        upload_file(page, "undo.jpg", data, "image/jpeg")
        the_card = card(page, "undo.jpg")
        the_card.wait_for(timeout=120_000)
        the_card.get_by_role("button", name="That's wrong").click()
        radios = the_card.get_by_role("group", name="What is it really?").get_by_role("radio")
        radios.nth(0).check()
        assert wait_for(lambda: len(mine()) == 1, 30)
        radios.nth(1).check()  # changed: still one row, now with the new answer
        second = radios.nth(1).get_attribute("value")
        assert wait_for(lambda: [r.label for r in mine()] == [second], 30)
        the_card.get_by_role("button", name="Undo").click()
        assert wait_for(lambda: not mine(), 30)
        assert wait_for(lambda: not radios.nth(1).is_checked(), 10)  # the row goes first, then the page hears of it
        said = the_card.locator(".bear-correction .bear-note:visible").all_inner_texts()
        assert said == ["Your correction was removed: nothing is stored for this photo."], said  # not "will be kept"


def test_clear_can_be_undone_then_forgets_and_hands_focus_to_the_upload_button(server):
    url, _, _ = server
    with chromium() as browser:
        page = open_app(browser, url)
        upload_files(page, ("a.png", encode(photo(seed=5), "PNG"), "image/png"),
                     ("b.png", encode(photo(seed=6), "PNG"), "image/png"))
        wait_card(page, "a.png") and wait_card(page, "b.png")
        page.get_by_role("heading", name="Your photos (2)").wait_for(timeout=30_000)
        page.get_by_role("button", name="Clear").click()
        page.get_by_text("Cleared 2 photos.").wait_for(timeout=30_000)
        assert page.locator(".bear-card").count() == 0
        assert wait_for(lambda: page.locator(".bear-status").inner_text().strip() == "", 10)  # no "Photo 2 of 2" left
        assert wait_for(lambda: page.evaluate("document.activeElement.textContent") == "Undo", 10)
        page.get_by_role("button", name="Undo").click()
        assert wait_for(lambda: page.locator(".bear-card").count() == 2, 30)
        page.get_by_role("button", name="Clear").click()
        page.get_by_text("Cleared 2 photos.").wait_for(timeout=30_000)
        page.get_by_text("Cleared 2 photos.").wait_for(state="hidden", timeout=60_000)  # the undo ran out
        # The focus moves once the gallery has gone: a moment after the sentence, on a busy machine.
        assert wait_for(lambda: page.evaluate("document.activeElement.classList.contains('bear-upload')"), 10)


def test_examples_row_classifies_a_photo_on_a_click_or_enter(server):
    url, log, _ = server
    with chromium() as browser:
        page = open_app(browser, url)
        examples = page.locator(".bear-example")
        assert [e.get_attribute("aria-label") for e in examples.all()] == [
            "Try an example: pattern.png", "Try an example: waves.jpg"]  # images only, in name order
        examples.nth(0).click()
        assert VERDICT.match(card(page, "pattern.png").locator(".bear-verdict").inner_text())
        examples.nth(1).focus()
        page.keyboard.press("Enter")
        assert VERDICT.match(card(page, "waves.jpg").locator(".bear-verdict").inner_text())


def test_the_kernel_reads_only_the_examples_it_listed(tmp_path):
    (tmp_path / "examples").mkdir()
    photo().save(tmp_path / "examples" / "ok.png")
    (tmp_path / "secret.png").write_bytes(encode(photo(seed=1), "PNG"))
    got = []
    widget = PhotoInput(examples=tmp_path / "examples")
    widget.on_photos(lambda photos: got.extend((p.name, len(p.data)) for p in photos))
    for name in ["../secret.png", str(tmp_path / "secret.png"), None, ["ok.png"], "notes.txt"]:
        widget._receive(widget, {"kind": "example", "name": name}, [])
    assert widget.wait(30) and got == []
    widget._receive(widget, {"kind": "example", "name": "ok.png"}, [])
    assert widget.wait(30) and got == [("ok.png", (tmp_path / "examples" / "ok.png").stat().st_size)]


def test_a_small_file_with_a_huge_canvas_is_shrunk_before_it_is_sent(server, tmp_path):
    url, log, _ = server
    flat = encode(Image.new("RGB", (8000, 6000), (120, 90, 60)), "PNG")
    assert len(flat) < 2**20  # under the byte threshold: only its pixel count can tell
    def received() -> list[str]:  # the kernel logs each photo's size, never its name
        return re.findall(r"classified a photo \((\d+) bytes received\)", log.read_text())

    with chromium() as browser:
        page = open_app(browser, url)
        before = len(received())
        upload_file(page, "canvas.png", flat, "image/png")
        wait_card(page, "canvas.png")
    assert wait_for(lambda: len(received()) > before, 10)
    received = received()[before]
    assert int(received) == len(b"P6\n500 375\n255\n") + 500 * 375 * 3  # shrunk to 375 px, sent as pixels


def test_a_transparent_photo_shrunk_in_the_browser_is_on_white_as_the_kernel_would_show_it(server):
    url, _, _ = server
    clear = encode(Image.new("RGBA", (8000, 6000), (0, 0, 0, 0)), "PNG")  # small in bytes: shrunk for its pixels
    with chromium() as browser:
        page = open_app(browser, url)
        upload_file(page, "clear.png", clear, "image/png")
        wait_card(page, "clear.png")
        centre = card(page, "clear.png").locator("img.bear-thumb").evaluate("""img => img.decode().then(() => {
            const c = new OffscreenCanvas(img.naturalWidth, img.naturalHeight).getContext("2d");
            c.drawImage(img, 0, 0);
            return Array.from(c.getImageData(img.naturalWidth >> 1, img.naturalHeight >> 1, 1, 1).data);
        })""")
    assert min(centre[:3]) > 240, centre  # not the black a transparent pixel stores


def test_nothing_leaves_for_a_third_party_and_the_console_is_quiet(server):
    url, _, _ = server
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        requests, console = [], []
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: console.append((m.type, m.text)))
        page.goto(url)
        page.locator(".bear-input button.bear-upload").wait_for(timeout=120_000)
        upload_file(page, "quiet.png", NOT_A_BEAR, "image/png")
        wait_card(page, "quiet.png")
        page.locator(".bear-example").first.click()
        wait_card(page, "pattern.png")
    away = [u for u in requests if not re.match(r"(http|ws)://127\.0\.0\.1:\d+/|data:|blob:", u)]
    assert requests and away == []
    noisy = [(kind, text) for kind, text in console if kind in ("warning", "error") and not UPSTREAM_WARNING.match(text)]
    assert noisy == []


def test_on_a_phone_the_verdict_comes_first_and_long_names_are_shortened(shipped):
    url, _, _ = shipped
    data, _ = real_photo("grizzly", 3)
    long_name = "IMG_20240611_142233_HDR_from_my_holiday_in_Alaska.jpg"
    with chromium() as browser:
        page = open_app(browser, url, **PHONE)
        assert "Ctrl+V" not in page.locator(".bear-input-hint").inner_text()  # a touch screen has no keyboard shortcut
        upload_file(page, long_name, data, "image/jpeg")
        the_card = page.locator(".bear-card", has=page.locator(f'.bear-card-name[title="{long_name}"]'))
        the_card.wait_for(timeout=120_000)
        name = the_card.locator(".bear-card-name")
        assert "…" in name.inner_text() and name.get_attribute("aria-label") == long_name
        verdict, thumb = the_card.locator(".bear-verdict").bounding_box(), the_card.locator("img.bear-thumb").bounding_box()
        assert verdict["y"] + verdict["height"] <= thumb["y"] + 1  # the answer before the photo
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        assert axe_violations(page) == []
        screenshot(page, "screenshot-phone.png")


def test_a_portrait_is_told_it_looks_like_a_person_and_a_teddy_stays_a_teddy(shipped):
    url, _, _ = shipped
    with chromium() as browser:
        page = open_app(browser, url)
        upload_files(page, ("me.jpg", (ROOT / "tests" / "photos" / "person.jpg").read_bytes(), "image/jpeg"),
                     ("teddy.jpg", (ROOT / "examples" / "teddy-bear.jpg").read_bytes(), "image/jpeg"))
        wait_card(page, "me.jpg")
        wait_card(page, "teddy.jpg")
        me = card(page, "me.jpg")
        assert me.locator(".bear-verdict").inner_text() == "Not a bear"
        assert me.locator(".bear-sentence").inner_text() == "That looks like a person, not a bear."
        assert card(page, "teddy.jpg").locator(".bear-verdict").inner_text().startswith("Teddy bear · ")
        assert card(page, "teddy.jpg").locator(".bear-sentence").count() == 0


def test_title_and_question_come_from_the_served_models_card(tmp_path):
    # Another model's card (its file need not load for the page to say what it tells apart).
    from browser import require_browser

    require_browser()
    card_json = json.loads((ROOT / "export.json").read_text())
    card_json["classes"] = {"title": "Cat or dog?", "question": "Give me photos of pets.", "none_label": "other",
                            "kinds": [{"label": "cat"}, {"label": "dog"}]}
    (tmp_path / "pets.json").write_text(json.dumps(card_json))
    (tmp_path / "pets.onnx").write_bytes(b"")
    with voila(env={"BEAR_MODEL": str(tmp_path / "pets.onnx"), "BEAR_FEEDBACK": "off"}) as (url, _, _), \
            chromium() as browser:
        page = browser.new_page()
        page.add_init_script(LOADING_WORDS)
        page.goto(url, wait_until="commit")
        page.locator("#bear-header").wait_for(timeout=60_000)
        assert page.locator("#bear-header h1").inner_text() == "Cat or dog?"
        assert page.locator("#bear-header").inner_text().endswith("Give me photos of pets.")
        assert page.title() == "Cat or dog?"
        page.locator(WIDGET_BUTTON).wait_for(timeout=60_000)
        assert page.evaluate("[...window.loadingWords]") == ["Getting ready…"]  # never "Executing 3 of 5"


# Every text shown under Voila's spinner while the page loads, read every few milliseconds.
LOADING_WORDS = """window.loadingWords = new Set();
const look = setInterval(() => { const el = document.getElementById('loading_text');
  if (el) { window.loadingWords.add(el.textContent); } else if (document.querySelector('.bear-input')) { clearInterval(look); } }, 2);
"""


def test_a_camera_photo_on_a_phone_is_named_by_its_time_and_its_card_scrolls_into_view(server):
    from test_browser import FAKE_CAMERA

    url, _, _ = server
    with chromium(*FAKE_CAMERA) as browser:
        page = open_app(browser, url, permissions=["camera"], **PHONE)
        for n in range(3):  # enough cards to push the next one below the fold
            upload_file(page, f"before-{n}.png", encode(photo(seed=n), "PNG"), "image/png")
            wait_card(page, f"before-{n}.png")
        page.get_by_role("button", name="Take a photo").click()
        assert wait_for(lambda: page.evaluate("document.querySelector('video.bear-video').videoWidth") > 0, 30)
        page.get_by_role("button", name="Capture").click()
        the_card = page.locator(".bear-card", has=page.locator(".bear-card-name", has_text="Camera photo, "))
        the_card.wait_for(timeout=120_000)
        assert re.fullmatch(r"Camera photo, \d\d?:\d\d( ?[AP]M)?", the_card.locator(".bear-card-name").inner_text())
        assert wait_for(lambda: 0 <= the_card.bounding_box()["y"] < 844, 10)  # in sight, without scrolling by hand


def test_the_verdict_is_in_the_classes_words_and_says_when_it_is_not_sure():
    from bear_classifier.page.card import percent, short_name, verdict
    from bear_classifier.classes import Classes, Kind
    from bear_classifier.inference.predict import Prediction, served_classes

    bears = served_classes()
    probs = {"black": 0.31, "grizzly": 0.62, "not_bear": 0.05, "teddy": 0.02}
    assert verdict(Prediction("grizzly", 0.62, probs), bears) == \
        "Not sure: maybe a grizzly bear (62%), or a black bear (31%)"
    sure = {"black": 0.01, "grizzly": 0.9871, "not_bear": 0.0029, "teddy": 0.0}
    assert verdict(Prediction("grizzly", 0.9871, sure), bears) == "Grizzly bear · 99%"
    assert verdict(Prediction("not_bear", 0.97, {"not_bear": 0.97, "black": 0.03}), bears) == "Not a bear"
    assert verdict(Prediction("other", 0.5, {"otter": 0.3, "other": 0.5}),
                   Classes(kinds=(Kind("otter"),), none_label="other")) == \
        "Not sure: maybe none of these (50%), or an otter (30%)"
    clothes = Classes(kinds=(Kind("hat"), Kind("pants"), Kind("shoes")))  # folder names, plurals among them
    assert verdict(Prediction("pants", 0.42, {"pants": 0.42, "hat": 0.33, "shoes": 0.2, "none": 0.05}), clothes) == \
        "Not sure: maybe pants (42%), or a hat (33%)"
    assert clothes.question.endswith("whether it is a hat, pants or shoes.")
    assert [percent(p) for p in (0.9999, 0.9871, 0.5, 0.004)] == [">99%", "99%", "50%", "<1%"]
    assert short_name("IMG_20240611_142233_HDR_from_my_holiday.jpg") == "IMG_20240611_142233_H…oliday.jpg"
    assert len(short_name("x" * 200)) == 32 and short_name("bear.jpg") == "bear.jpg"


def test_the_gallery_clears_with_an_undo_then_closes_the_cards():
    import ipywidgets as widgets

    from bear_classifier.page.gallery import Cards

    gallery = Cards(undo_seconds=0.5)
    cards = [widgets.HTML(str(i)) for i in range(3)]
    for c in cards:
        gallery.add(c)
    assert gallery.children == tuple(reversed(cards)) and gallery.bar.count == 3  # newest first
    gallery._receive(gallery.bar, {"kind": "clear"}, [])  # the bar's "Clear"
    assert gallery.children == () and (gallery.bar.count, gallery.bar.cleared) == (0, 3)
    gallery._receive(gallery.bar, {"kind": "undo"}, [])
    assert gallery.children == tuple(reversed(cards)) and (gallery.bar.count, gallery.bar.cleared) == (3, 0)
    gallery.clear()
    assert wait_for(lambda: gallery.bar.cleared == 0, 10, step=0.1)  # the undo ran out...
    assert all(c.comm is None for c in cards) and gallery.children == ()  # ...and the cards' widgets are closed
    gallery._receive(gallery.bar, {"kind": "undo"}, [])
    assert gallery.children == ()
