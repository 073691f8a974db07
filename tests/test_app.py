"""The page's kernel side, driven in-process with the messages the photo input sends from the browser."""
import os
import re
import threading
from io import BytesIO

import pytest
from PIL import Image

from bear_classifier.page.app import Gallery, Model, PhotoInput, default_store
from bear_classifier.page.card import AnswerCard, ErrorCard
from bear_classifier.page.feedback import FeedbackStore
from conftest import BEARS, ROOT, need_shared
from corpus import PDF, encode, exif_rotated_jpeg, photo


class Page:
    """The page's kernel side as app.ipynb builds it, driven in-process with the photo input's own messages."""

    def __init__(self, loader, store=None, load_timeout: float = 120, **gallery):
        self.model = Model(loader, delay=0, timeout=load_timeout)
        self.input, self.gallery = PhotoInput(), Gallery(self.model, store, **gallery)
        self.status, self.privacy = self.gallery.status, self.gallery.privacy

        def on_photos(photos):  # app.ipynb's callback, line for line
            for photo in photos:
                with self.gallery.answering(photo):
                    self.gallery.add(photo, self.model.predict(photo.image))

        self.input.on_photos(on_photos)

    def receive(self, meta, data: bytes = b"") -> None:
        """One message as the page's websocket delivers it to the photo input."""
        self.input._receive(self.input, meta, [data] if data else [])

    def answered(self) -> None:
        assert self.input.wait(60), "the photo input did not answer"

    @property
    def cards(self) -> tuple:
        return self.gallery.cards.children


def send(app: Page, *files: tuple[str, bytes]) -> list:
    """Send a batch as photo_input.js does: a "batch" message, then one "photo" message per file."""
    app.receive({"kind": "batch", "count": len(files), "total": len(files)})
    for name, data in files:
        app.receive({"kind": "photo", "name": name, "size": len(data)}, data)
    app.answered()
    return list(app.cards[:len(files)])


@pytest.fixture
def app(classifier):
    return Page(lambda: classifier)


def grizzly_bytes() -> bytes:
    need_shared()
    row = next(line for line in (ROOT / "data" / "valid.csv").read_text().splitlines() if line.endswith(",grizzly"))
    return (BEARS / row.split(",")[0]).read_bytes()


def test_real_photo_gets_a_card_with_label_probability_bars_and_thumbnail(app):
    [card] = send(app, ("bear.jpg", grizzly_bytes()))
    assert isinstance(card, AnswerCard)
    assert card.lesson.startswith("Prediction: grizzly; Probability: 0.") and card.name == "bear.jpg"
    assert card.verdict.startswith("Grizzly bear · ")
    assert [words for words, _, _ in card.bars][0] == "Grizzly bear" and len(card.bars) == 4
    assert card.photo[:2] == b"\xff\xd8"
    assert "Done: 1 photo." in app.status.value
    # the one polite live region: each answer in the classes' words, with a whole percentage
    said = r'<p [^>]*role="status" aria-live="polite">Photo 1 of 1: Grizzly bear, (&gt;99|\d{1,2})%\.'  # never "100%"
    assert re.search(said, app.status.value)


def test_the_status_line_says_what_the_card_says(app):
    """The line a screen reader announces carries the card's own words: the person sentence, and "Not sure"."""
    from bear_classifier.inference.predict import Prediction
    from bear_classifier.page.widget import Photo

    [card] = send(app, ("me.jpg", (ROOT / "tests" / "photos" / "person.jpg").read_bytes()))
    assert "Photo 1 of 1: That looks like a person, not a bear. Done" in app.status.value, app.status.value
    data = encode(photo(), "JPEG")
    unsure = Prediction("black", 0.55, {"black": 0.55, "grizzly": 0.45, "teddy": 0.0, "not_bear": 0.0})
    app.gallery.add(Photo("maybe.jpg", data, len(data)), unsure)  # as on_photos adds an answer
    assert "Photo 1 of 1: Not sure: maybe a black bear (55%), or a grizzly bear (45%). Done" in app.status.value


def test_a_batch_with_a_bad_file_answers_the_others_newest_first(app):
    cards = send(app, ("a.jpg", encode(photo(seed=1), "JPEG")), ("notes.pdf", PDF), ("b.png", encode(photo(seed=2), "PNG")))
    b, pdf, a = cards  # newest first
    assert isinstance(pdf, ErrorCard) and pdf.message.startswith("This file is a PDF document, not an image.")
    assert (pdf.name, b.name, a.name) == ("notes.pdf", "b.png", "a.jpg")
    assert "Photo 3 of 3: " in app.status.value and "Done: 3 photos." in app.status.value


def test_progress_counts_the_batch_and_a_cut_batch_says_so(app):
    seen = []
    app.status.observe(lambda c: seen.append(c["new"]), names="value")
    app.receive({"kind": "batch", "count": 2, "total": 25})
    for i in range(2):
        data = encode(photo(seed=i), "JPEG")
        app.receive({"kind": "photo", "name": f"{i}.jpg", "size": len(data)}, data)
    app.answered()
    assert any("Classifying 1 of 2" in s for s in seen) and any("Classifying 2 of 2" in s for s in seen)
    assert "Only the first 2 of the 25 photos are classified" in app.status.value


def test_not_a_bear_gets_a_plain_sentence(app):
    [card] = send(app, ("pattern.png", encode(photo(seed=3), "PNG")))
    assert card.lesson.startswith("Prediction: not_bear") and card.verdict == "Not a bear"
    assert card.sentence == "That doesn't look like a bear." and not card.overlay and "No map" in card.no_map


def test_exif_rotated_thumbnail_is_upright(app):
    [card] = send(app, ("phone.jpg", exif_rotated_jpeg()))
    w, h = Image.open(BytesIO(card.photo)).size
    assert h > w


def test_where_it_looked_toggles_an_overlay(app):
    [card] = send(app, ("bear.jpg", grizzly_bytes()))
    assert card.overlay != card.photo and card.overlay[:2] == b"\xff\xd8"
    assert Image.open(BytesIO(card.overlay)).size == Image.open(BytesIO(card.photo)).size
    assert "Grizzly bear" in card.legend


def test_file_too_large_to_send_gets_a_card_from_its_size(app):
    app.receive({"kind": "too_large", "name": "huge.jpg", "size": 120 * 2**20})
    app.answered()
    [card] = app.cards
    assert card.message == "The file is too large (120.0 MB; the limit is 20 MB). Please upload a smaller photo."


def test_a_tall_thin_photo_of_many_pixels_is_never_scaled_up():
    """50×240,001 pixels in a 210 KB PNG: more than KERNEL_SHRINK_PIXELS, so it is scaled to a 375 px short side; up,
    that would be 675 MP, 5 GB in the kernel. It is scaled down only, to at most KERNEL_SHRINK_PIXELS."""
    from bear_classifier.page.widget import KERNEL_SHRINK_PIXELS, Photo

    data = encode(Image.new("RGB", (50, 240_001), (90, 120, 60)), "PNG")
    img = Photo("tall.png", data, len(data)).image
    assert img.width <= 50 and img.width * img.height <= KERNEL_SHRINK_PIXELS, img.size


def test_clear_empties_the_gallery_and_undo_brings_it_back(app):
    assert "role=\"status\"" in app.status.value and app.status.value.endswith("></p>")  # said nothing yet: the header
    # asks the question, this live region speaks the answers
    send(app, ("a.jpg", encode(photo(), "JPEG")), ("b.jpg", encode(photo(seed=1), "JPEG")))
    bar = app.gallery.cards.bar
    assert bar.count == 2 and "Photo 2 of 2: " in app.gallery.status.value
    app.gallery.cards._receive(bar, {"kind": "clear"}, [])  # what the bar's "Clear" sends
    assert app.cards == () and (bar.count, bar.cleared) == (0, 2)
    assert "Photo" not in app.gallery.status.value  # no status line about photos no longer shown
    app.gallery.cards._receive(bar, {"kind": "undo"}, [])
    assert [c.name for c in app.cards] == ["b.jpg", "a.jpg"] and (bar.count, bar.cleared) == (2, 0)


def test_photo_during_warm_up_waits_then_answers(classifier):
    release = threading.Event()

    def slow_loader():
        release.wait(10)
        return classifier

    app = Page(slow_loader)
    statuses = []
    app.status.observe(lambda c: statuses.append(c["new"]), names="value")
    threading.Timer(0.3, release.set).start()
    [card] = send(app, ("photo.jpg", encode(photo(), "JPEG")))
    assert any("Loading the model" in s for s in statuses)
    assert "Prediction: " in card.lesson


def test_a_model_that_never_loads_gives_a_sentence_not_a_frozen_page():
    never = threading.Event()
    app = Page(lambda: never.wait(30), load_timeout=0.5)
    [card] = send(app, ("photo.jpg", encode(photo(), "JPEG")))
    assert card.message == "The model is taking too long to load. Please reload the page in a minute."
    never.set()


def test_a_model_that_fails_to_load_is_said_before_any_upload_and_its_details_stay_in_the_log(caplog):
    from bear_classifier.inference.predict import ModelError

    def broken():
        raise ModelError("export.onnx does not match its model card (sha256 0123456789ab…): git checkout export.onnx")

    with caplog.at_level("ERROR", logger="bear_classifier"):
        app = Page(broken)
        assert app.model.get(10) is None
    sentence = "This app's model couldn't be loaded; the site's owner has been told."
    assert sentence in app.status.value  # before any photo
    [card] = send(app, ("photo.jpg", encode(photo(), "JPEG")))
    assert card.message == sentence and "sha256" not in app.status.value
    assert "git checkout export.onnx" in caplog.text


def test_a_batch_sent_again_is_acknowledged_again_but_answered_once(app):
    """The page sends a batch again when its receipt is late; if the first copy arrives after all, one card."""
    said = []
    app.input.send = said.append
    data = encode(photo(), "JPEG")
    for _ in range(2):
        app.receive({"kind": "batch", "id": "late", "count": 1, "total": 1})
        app.receive({"kind": "photo", "batch": "late", "name": "twice.jpg", "size": len(data)}, data)
    app.answered()
    assert said == [{"kind": "received", "id": "late"}] * 2
    assert len(app.cards) == 1
    send(app, ("next.jpg", data))  # and the next batch is answered as usual
    assert len(app.cards) == 2


def test_a_photo_during_warm_up_never_holds_the_kernels_main_thread(classifier):
    """The main thread hands the photo over and returns at once; each batch's receipt is said meanwhile."""
    release = threading.Event()
    app = Page(lambda: release.wait(30) and classifier)
    said = []
    app.input.send = said.append  # what the widget sends back to the page
    data = encode(photo(), "JPEG")
    app.receive({"kind": "batch", "id": "b1", "count": 1, "total": 1})
    app.receive({"kind": "photo", "batch": "b1", "name": "early.jpg", "size": len(data)}, data)
    app.receive({"kind": "batch", "id": "b2", "count": 0, "total": 0})
    assert said == [{"kind": "received", "id": "b1"}, {"kind": "received", "id": "b2"}] and app.cards == ()
    from browser import wait_for

    assert wait_for(lambda: "Loading the model" in app.status.value, 10, step=0.05)
    release.set()
    app.answered()
    [card] = app.cards
    assert "Prediction: " in card.lesson


def test_unexpected_errors_are_logged_not_shown(caplog):
    class Exploding:
        def predict(self, img):
            raise RuntimeError("secret internals")

    app = Page(lambda: Exploding())
    with caplog.at_level("ERROR", logger="bear_classifier"):
        [card] = send(app, ("photo.jpg", encode(photo(), "JPEG")))
    assert card.message == "Something went wrong while classifying this photo. Please try another one."
    assert "secret internals" in caplog.text


def test_thats_wrong_stores_one_row_without_exif_or_file_name(classifier, tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    app = Page(lambda: classifier, store)
    exif = Image.Exif()
    exif[0x8825] = {2: (48.0, 51.0, 24.0), 1: "N"}  # a GPS position, as phones write it
    exif[0x010F] = "PhoneMaker"
    [card] = send(app, ("garden.jpg", encode(photo((400, 300)), "JPEG", exif=exif)))
    other = next(label for label in ("teddy", "black") if label != card_label(card))
    assert other in [label for label, _ in card.choices] and card_label(card) not in [l for l, _ in card.choices]
    card._receive(card, {"kind": "flag", "label": other}, [])  # what the card sends when the visitor chooses
    assert f"Stored as “{app.gallery.classes.name(other)}”" in card.reply and card.chosen == other
    [row] = store.all()
    assert (row.label, row.model_sha256) == (other, classifier.sha256)
    assert "garden" not in str(row) and not hasattr(row, "name")
    assert row.predicted == classifier.predict(Image.open(BytesIO(encode(photo((400, 300)), "JPEG")))).label
    stored = Image.open(BytesIO(row.photo))
    assert stored.size == (400, 300) and not stored.getexif() and "exif" not in stored.info


def card_label(card) -> str:
    return re.search(r"Prediction: (\w+);", card.lesson).group(1)


def test_one_card_stores_one_correction_whatever_the_visitor_sends(classifier, tmp_path):
    """Changing the answer 8 times and pressing the button 5 more times: one row, the last answer; undo removes it."""
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}", per_minute=None)
    app = Page(lambda: classifier, store)
    [card] = send(app, ("a.jpg", encode(photo(), "JPEG")))
    flag = app.gallery._correction(photo(), classifier.predict(photo()))  # the card's callback, as a card gets it
    said = card_label(card)
    others = [label for label in app.gallery.classes.vocab if label != said]
    for i in range(8):
        assert flag(others[i % len(others)]).startswith("Thanks! Stored as")
    [row] = store.all()
    assert row.label == others[7 % len(others)]
    assert "what the model said" in flag(said) and "isn't one of the answers" in flag("honey")
    assert "isn't one of the answers" in flag("<script>")
    assert [r.label for r in store.all()] == [row.label]
    assert "removed" in flag(None) and store.all() == []
    assert flag(others[0]).startswith("Thanks!") and len(store.all()) == 1


def test_a_visitor_has_a_rate_and_a_share_so_others_still_find_room(classifier, tmp_path):
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    store = FeedbackStore(url, max_mb=40, per_minute=10)
    pred = classifier.predict(photo())
    other = next(label for label in ("teddy", "black") if label != pred.label)
    from bear_classifier.classes import Classes
    from bear_classifier.page.feedback import Correction

    classes = Classes.from_file(ROOT / "classes.toml")
    replies = [Correction(store, photo((448, 448), seed=i), pred, classes, "abc")(other) for i in range(12)]
    assert all(r.startswith("Thanks!") for r in replies[:10])
    assert all("a lot of changes in a minute" in r for r in replies[10:])  # the 11th and 12th within the minute
    store.per_minute = None
    replies = [Correction(store, photo((448, 448), seed=i), pred, classes, "abc")(other) for i in range(40)]
    assert "as many photos as one visitor may" in replies[-1]
    mine = sum(len(r.photo) for r in store.all())
    assert mine <= 0.05 * 40 * 2**20
    visitor = FeedbackStore(url, max_mb=40)  # another visitor's kernel: there is room for them
    assert Correction(visitor, photo(seed=99), pred, classes, "abc")(other).startswith("Thanks!")


def test_with_storing_disabled_there_is_no_button_and_nothing_is_written(classifier, tmp_path, monkeypatch):
    monkeypatch.setenv("BEAR_FEEDBACK", "off")
    monkeypatch.setenv("BEAR_FEEDBACK_DB", str(tmp_path / "feedback.db"))
    app = Page(lambda: classifier, store=default_store)
    [card] = send(app, ("a.jpg", encode(photo(), "JPEG")))
    assert card.choices == [] and "nothing you give this page is stored" in app.privacy.value
    assert not (tmp_path / "feedback.db").exists()


def test_a_store_that_cannot_be_opened_keeps_nothing_and_the_page_still_answers(classifier, monkeypatch, caplog):
    """A PostgreSQL server that isn't there: no "That's wrong" button, the note says nothing is kept, answers go on."""
    from browser import free_port

    monkeypatch.setenv("BEAR_FEEDBACK_URL", f"postgresql+psycopg://bear@127.0.0.1:{free_port()}/bear")
    app = Page(lambda: classifier, store=default_store)
    [card] = send(app, ("a.jpg", grizzly_bytes()))
    assert card.lesson.startswith("Prediction: grizzly") and card.choices == []
    assert "nothing you give this page is stored" in app.privacy.value
    assert "loading the feedback store failed" in caplog.text


def test_every_corpus_kind_gets_an_answer_or_a_sentence_and_memory_stays_flat(app):
    """The hardening corpus through the real callback: 29 kinds, then a normal photo still works."""
    import gc

    import psutil

    from bear_classifier.inference.answer import MIN_SIDE
    from corpus import bad_uploads, valid_uploads

    proc = psutil.Process()
    send(app, ("warm-up.jpg", encode(photo(), "JPEG")))  # first prediction allocates the model's buffers
    gc.collect()
    before = proc.memory_info().rss
    for name, data, size in valid_uploads():
        [card] = send(app, (name, data))
        if min(size) < MIN_SIDE:  # it decodes, but shows too little to tell
            assert isinstance(card, ErrorCard) and "too small to tell" in card.message, (name, card)
        else:
            assert isinstance(card, AnswerCard), (name, getattr(card, "message", ""))
    for name, data, phrase in bad_uploads():
        [card] = send(app, (name, data))
        assert isinstance(card, ErrorCard) and phrase.lower() in card.message.lower(), (name, card)
        assert "Traceback" not in card.message
    app.gallery.clear_cards()
    [card] = send(app, ("after.jpg", encode(photo(seed=5), "JPEG")))
    assert "Prediction: " in card.lesson
    gc.collect()
    grown = (proc.memory_info().rss - before) / 2**20
    print(f"RSS after the corpus: {grown:+.1f} MiB")  # reported in the README (Robustness)
    assert grown < 150, f"RSS grew by {grown:.0f} MiB"


def test_the_lessons_own_code_path_gives_the_same_answer(classifier, monkeypatch):
    """BEAR_MODEL=export.pkl: load_learner + learn.predict, the course's code, behind the same page."""
    from bear_classifier.page.kernel import load_classifier

    monkeypatch.setenv("BEAR_MODEL", str(ROOT / "export.pkl"))
    lesson = load_classifier()
    app = Page(lambda: lesson)
    img = photo((500, 280), seed=4)
    [card] = send(app, ("lesson.png", encode(img, "PNG")))
    served = classifier.predict(open_image_bytes(encode(img, "PNG")))
    assert f"Prediction: {served.label}; Probability: " in card.lesson
    shown = float(re.search(r"Probability: ([0-9.]+)", card.lesson).group(1))
    assert abs(shown - served.probability) < 2e-4  # learn.predict and ONNX Runtime agree
    assert lesson.predict(img).heatmap.shape == served.heatmap.shape


def open_image_bytes(data: bytes):
    from bear_classifier.inference.images import open_image

    return open_image(data)


def test_clear_closes_the_cards_widgets_so_their_photos_are_freed(app):
    import ipywidgets as widgets

    [card] = send(app, ("a.jpg", encode(photo(), "JPEG")))
    assert card.model_id in widgets.Widget.widgets
    app.gallery.clear_cards()
    assert app.cards == () and app.gallery.cards.bar.cleared == 1  # "Undo" is offered for a few seconds
    app.gallery.cards.forget()  # what the undo's timer does when it runs out
    assert card.comm is None


def test_the_gallery_keeps_at_most_its_newest_cards_and_says_so(classifier):
    app = Page(lambda: classifier, max_cards=3)
    first = send(app, ("first.jpg", encode(photo(seed=1), "JPEG")))[0]
    for i in range(4):
        send(app, (f"p{i}.jpg", encode(photo(seed=i), "JPEG")))
    assert [c.name for c in app.cards][:1] == ["p3.jpg"] and len(app.cards) == 3
    assert first.comm is None  # closed: its photo is freed
    assert "newest answers are kept" in app.gallery.trimmed.value


def test_a_card_keeps_a_small_copy_never_the_photo(classifier, tmp_path):
    """What outlives the answer (the card and its "That's wrong") holds at most 448 px of a 6000×4000 photo."""
    import gc

    from PIL import Image as PILImage

    app = Page(lambda: classifier, store=FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}"))
    gc.collect()
    earlier = {id(o) for o in gc.get_objects() if isinstance(o, PILImage.Image)}
    [card] = send(app, ("big.png", encode(PILImage.new("RGB", (6000, 4000), (90, 120, 60)), "PNG")))
    assert isinstance(card, AnswerCard) and card.choices
    gc.collect()
    sides = [max(o.size) for o in gc.get_objects() if isinstance(o, PILImage.Image) and id(o) not in earlier]
    assert sides and max(sides) <= 448, sorted(sides)[-3:]


def test_app_ipynb_runs_top_to_bottom_and_classifies_a_photo(tmp_path):
    """The lesson's notebook, executed as Voila executes it; then a photo through the objects it defines."""
    import nbformat

    from conftest import execute_notebook

    nb = nbformat.read(ROOT / "app.ipynb", as_version=4)
    data = encode(photo(seed=2), "JPEG")
    nb.cells.append(nbformat.v4.new_code_cell(
        "photo_input._receive(photo_input, {'kind': 'batch', 'count': 1, 'total': 1}, [])\n"
        f"photo_input._receive(photo_input, {{'kind': 'photo', 'name': 'nb.jpg', 'size': {len(data)}}}, [{data!r}])\n"
        "assert photo_input.wait(120)\n"
        "[card] = gallery.cards.children\n"
        "print(card.lesson, card.name)"))
    nb = execute_notebook(nb, ROOT, cell_timeout=180, deadline=400, env={**os.environ, "BEAR_FEEDBACK": "off"})
    out = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert "Prediction: " in out and "nb.jpg" in out


def test_photos_sent_faster_than_they_are_answered_are_refused_with_a_sentence_not_kept(classifier):
    """A client that sends 15 MB photos while the model loads: what waits is bounded (40 MB), the rest is refused."""
    release = threading.Event()
    app = Page(lambda: release.wait(30) and classifier)
    junk = b"\xff\xd8\xff" + bytes(15 * 2**20)
    app.receive({"kind": "batch", "count": 5, "total": 5})
    for i in range(5):
        app.receive({"kind": "photo", "name": f"{i}.jpg", "size": len(junk)}, junk)
    assert app.input._waiting_bytes <= 40 * 2**20
    release.set()
    app.answered()
    messages = [card.message for card in reversed(app.cards)]
    assert [m.startswith("Too many photos at once") for m in messages] == [False, False, True, True, True], messages


def test_a_photo_whose_batch_message_was_lost_is_answered_and_acknowledged_once(app):
    said = []
    app.input.send = said.append
    data = encode(photo(), "JPEG")
    app.receive({"kind": "photo", "batch": "lost", "name": "alone.jpg", "size": len(data)}, data)
    app.answered()
    app.receive({"kind": "batch", "id": "lost", "count": 1, "total": 1})  # the page sends it again: no second card
    app.receive({"kind": "photo", "batch": "lost", "name": "alone.jpg", "size": len(data)}, data)
    app.answered()
    assert said == [{"kind": "received", "id": "lost"}] * 2 and len(app.cards) == 1
