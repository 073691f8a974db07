"""The page's kernel side, driven in-process with the messages the photo input sends from the browser."""
import re
import threading
from io import BytesIO

import pytest
from PIL import Image

from bear_classifier.app import BearApp
from bear_classifier.card import AnswerCard, ErrorCard
from bear_classifier.feedback import FeedbackStore
from conftest import BEARS, ROOT, need_shared
from corpus import PDF, encode, exif_rotated_jpeg, photo


def send(app: BearApp, *files: tuple[str, bytes]) -> list:
    """Send a batch as photo_input.js does: a "batch" message, then one "photo" message per file."""
    app.receive({"kind": "batch", "count": len(files), "total": len(files)}, b"")
    for name, data in files:
        app.receive({"kind": "photo", "name": name, "size": len(data)}, data)
    return list(app.gallery.children[:len(files)])


@pytest.fixture
def app(classifier):
    return BearApp(loader=lambda: classifier, store=None)


def grizzly_bytes() -> bytes:
    need_shared()
    row = next(line for line in (ROOT / "data" / "valid.csv").read_text().splitlines() if line.endswith(",grizzly"))
    return (BEARS / row.split(",")[0]).read_bytes()


def test_real_photo_gets_a_card_with_label_probability_bars_and_thumbnail(app):
    [card] = send(app, ("bear.jpg", grizzly_bytes()))
    assert isinstance(card, AnswerCard)
    assert card.lesson.startswith("Prediction: grizzly; Probability: 0.") and card.name == "bear.jpg"
    assert re.fullmatch(r"Grizzly bear · (>99|\d\d)%", card.verdict)
    assert [words for words, _, _ in card.bars][0] == "Grizzly bear" and len(card.bars) == 4
    assert card.photo[:2] == b"\xff\xd8"
    assert "Done: 1 photo." in app.status.value


def test_a_batch_with_a_bad_file_answers_the_others_newest_first(app):
    cards = send(app, ("a.jpg", encode(photo(seed=1), "JPEG")), ("notes.pdf", PDF), ("b.png", encode(photo(seed=2), "PNG")))
    b, pdf, a = cards  # newest first
    assert isinstance(pdf, ErrorCard) and pdf.message.startswith("This file is a PDF document, not an image.")
    assert (pdf.name, b.name, a.name) == ("notes.pdf", "b.png", "a.jpg")
    assert "Done: 3 photos." in app.status.value


def test_progress_counts_the_batch_and_a_cut_batch_says_so(app):
    seen = []
    app.status.observe(lambda c: seen.append(c["new"]), names="value")
    app.receive({"kind": "batch", "count": 2, "total": 25}, b"")
    for i in range(2):
        data = encode(photo(seed=i), "JPEG")
        app.receive({"kind": "photo", "name": f"{i}.jpg", "size": len(data)}, data)
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
    app.receive({"kind": "too_large", "name": "huge.jpg", "size": 120 * 2**20}, b"")
    [card] = app.gallery.children
    assert card.message == "The file is too large (120.0 MB; the limit is 20 MB). Please upload a smaller photo."


def test_clear_empties_the_gallery(app):
    send(app, ("a.jpg", encode(photo(), "JPEG")))
    assert app.clear.layout.display == ""
    app.clear.click()
    assert app.gallery.children == () and app.clear.layout.display == "none"


def test_photo_during_warm_up_waits_then_answers(classifier):
    release = threading.Event()

    def slow_loader():
        release.wait(10)
        return classifier

    app = BearApp(loader=slow_loader, store=None)
    statuses = []
    app.status.observe(lambda c: statuses.append(c["new"]), names="value")
    threading.Timer(0.3, release.set).start()
    [card] = send(app, ("photo.jpg", encode(photo(), "JPEG")))
    assert any("Loading the model" in s for s in statuses)
    assert "Prediction: " in card.lesson


def test_a_model_that_never_loads_gives_a_sentence_not_a_frozen_page():
    never = threading.Event()
    app = BearApp(loader=lambda: never.wait(30), store=None, load_timeout=0.5)
    [card] = send(app, ("photo.jpg", encode(photo(), "JPEG")))
    assert card.message == "The model is taking too long to load. Please reload the page in a minute."
    never.set()


def test_model_that_fails_to_load_is_explained_on_the_card():
    from bear_classifier.predict import ModelError

    def broken():
        raise ModelError("export.onnx does not match its model card")

    app = BearApp(loader=broken, store=None)
    [card] = send(app, ("photo.jpg", encode(photo(), "JPEG")))
    assert card.message == "The model could not be loaded: export.onnx does not match its model card"


def test_unexpected_errors_are_logged_not_shown(caplog):
    class Exploding:
        def predict(self, img):
            raise RuntimeError("secret internals")

    app = BearApp(loader=lambda: Exploding(), store=None)
    with caplog.at_level("ERROR", logger="bear_classifier"):
        [card] = send(app, ("photo.jpg", encode(photo(), "JPEG")))
    assert card.message == "Something went wrong while classifying this photo. Please try another one."
    assert "secret internals" in caplog.text


def test_thats_wrong_stores_one_row_without_exif(classifier, tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    app = BearApp(loader=lambda: classifier, store=store)
    exif = Image.Exif()
    exif[0x8825] = {2: (48.0, 51.0, 24.0), 1: "N"}  # a GPS position, as phones write it
    exif[0x010F] = "PhoneMaker"
    [card] = send(app, ("garden.jpg", encode(photo((400, 300)), "JPEG", exif=exif)))
    assert "teddy" in [label for label, _ in card.choices]
    card._receive(card, {"kind": "flag", "label": "teddy"}, [])  # what the card sends when "Teddy bear" is chosen
    assert "Stored as" in card.reply and card.chosen == "teddy"
    [row] = store.all()
    assert (row.name, row.label, row.model_sha256) == ("garden.jpg", "teddy", classifier.sha256)
    assert row.predicted == classifier.predict(Image.open(BytesIO(encode(photo((400, 300)), "JPEG")))).label
    stored = Image.open(BytesIO(row.photo))
    assert stored.size == (400, 300) and not stored.getexif() and "exif" not in stored.info


def test_with_storing_disabled_there_is_no_button_and_nothing_is_written(classifier, tmp_path, monkeypatch):
    monkeypatch.setenv("BEAR_FEEDBACK", "off")
    monkeypatch.setenv("BEAR_FEEDBACK_DB", str(tmp_path / "feedback.db"))
    app = BearApp(loader=lambda: classifier)
    [card] = send(app, ("a.jpg", encode(photo(), "JPEG")))
    assert card.choices == [] and "nothing you give this page is stored" in app.children[-1].value
    assert not (tmp_path / "feedback.db").exists()


def test_a_store_that_cannot_be_opened_keeps_nothing_and_the_page_still_answers(classifier, monkeypatch, caplog):
    """A PostgreSQL server that isn't there: no "That's wrong" button, the note says nothing is kept, answers go on."""
    from browser import free_port

    monkeypatch.setenv("BEAR_FEEDBACK_URL", f"postgresql+psycopg://bear@127.0.0.1:{free_port()}/bear")
    app = BearApp(loader=lambda: classifier)
    [card] = send(app, ("a.jpg", grizzly_bytes()))
    assert "Prediction: grizzly" in card.lesson and card.choices == []
    assert "nothing you give this page is stored" in app.privacy.value
    assert "could not open the feedback store" in caplog.text


def test_every_corpus_kind_gets_an_answer_or_a_sentence_and_memory_stays_flat(app):
    """The hardening corpus through the real callback: 29 kinds, then a normal photo still works."""
    import gc

    import psutil

    from corpus import bad_uploads, valid_uploads

    proc = psutil.Process()
    send(app, ("warm-up.jpg", encode(photo(), "JPEG")))  # first prediction allocates the model's buffers
    gc.collect()
    before = proc.memory_info().rss
    for name, data, _ in valid_uploads():
        [card] = send(app, (name, data))
        assert isinstance(card, AnswerCard), (name, getattr(card, "message", ""))
    for name, data, phrase in bad_uploads():
        [card] = send(app, (name, data))
        assert isinstance(card, ErrorCard) and phrase.lower() in card.message.lower(), (name, card)
        assert "Traceback" not in card.message
    app.clear_gallery()
    [card] = send(app, ("after.jpg", encode(photo(seed=5), "JPEG")))
    assert "Prediction: " in card.lesson
    gc.collect()
    grown = (proc.memory_info().rss - before) / 2**20
    print(f"RSS after the corpus: {grown:+.1f} MiB")  # reported in the README (Robustness)
    assert grown < 150, f"RSS grew by {grown:.0f} MiB"


def test_the_lessons_own_code_path_gives_the_same_answer(classifier, monkeypatch):
    """BEAR_MODEL=export.pkl: load_learner + learn.predict, the course's code, behind the same page."""
    from bear_classifier.app import load_classifier

    monkeypatch.setenv("BEAR_MODEL", str(ROOT / "export.pkl"))
    lesson = load_classifier()
    app = BearApp(loader=lambda: lesson, store=None)
    img = photo((500, 280), seed=4)
    [card] = send(app, ("lesson.png", encode(img, "PNG")))
    served = classifier.predict(open_image_bytes(encode(img, "PNG")))
    assert f"Prediction: {served.label}; Probability: " in card.lesson
    shown = float(re.search(r"Probability: ([0-9.]+)", card.lesson).group(1))
    assert abs(shown - served.probability) < 2e-4  # learn.predict and ONNX Runtime agree
    assert lesson.predict(img).heatmap.shape == served.heatmap.shape


def open_image_bytes(data: bytes):
    from bear_classifier.images import open_image

    return open_image(data)


def test_clear_closes_the_cards_widgets_so_their_photos_are_freed(app):
    import ipywidgets as widgets

    [card] = send(app, ("a.jpg", encode(photo(), "JPEG")))
    assert card.model_id in widgets.Widget.widgets
    app.clear_gallery()
    assert card.comm is None
