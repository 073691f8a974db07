"""The page's widget callback, driven in-process the way FileUpload drives it in the browser."""
import threading
from datetime import datetime, timezone

import pytest

from bear_classifier.app import BearApp
from conftest import BEARS, ROOT, need_shared
from corpus import PDF, encode, exif_rotated_jpeg, photo

NOW = datetime.now(timezone.utc)


def upload(app: BearApp, name: str, data: bytes) -> None:
    """Set the FileUpload value exactly as ipywidgets 8 does after a browser upload."""
    app.upload.value = ({"name": name, "type": "", "size": len(data), "content": memoryview(data),
                         "last_modified": NOW},)


@pytest.fixture
def app(classifier):
    return BearApp(loader=lambda: classifier)


def grizzly_bytes() -> bytes:
    need_shared()
    row = next(line for line in (ROOT / "data" / "valid.csv").read_text().splitlines() if line.endswith(",grizzly"))
    return (BEARS / row.split(",")[0]).read_bytes()


def test_real_photo_shows_label_probability_bars_and_preview(app):
    upload(app, "bear.jpg", grizzly_bytes())
    assert "Prediction: grizzly; Probability: 0." in app.answer.value
    assert app.bars.value.count('class="bear-bar"') == 4 and "grizzly" in app.bars.value
    assert app.preview.layout.display == "" and app.preview.value[:2] == b"\xff\xd8"
    assert "Done: bear.jpg" in app.status.value
    assert app.upload.value == ()  # cleared, ready for the next photo


def test_bad_file_gets_a_message_then_the_next_photo_works(app):
    upload(app, "notes.pdf", PDF)
    assert "notes.pdf: This file is a PDF document, not an image." in app.status.value
    assert "bear-error" in app.status.value and app.answer.value == "" and app.preview.layout.display == "none"
    upload(app, "photo.jpg", encode(photo(), "JPEG"))
    assert "Prediction: " in app.answer.value and "bear-error" not in app.status.value


def test_not_a_bear_gets_a_plain_sentence(app):
    upload(app, "pattern.png", encode(photo(seed=3), "PNG"))
    assert "Prediction: not_bear" in app.answer.value
    assert "doesn't look like a bear" in app.answer.value


def test_exif_rotated_preview_is_upright(app):
    from io import BytesIO

    from PIL import Image

    upload(app, "phone.jpg", exif_rotated_jpeg())
    w, h = Image.open(BytesIO(app.preview.value)).size
    assert h > w


def test_upload_during_warm_up_waits_then_answers(classifier):
    release = threading.Event()

    def slow_loader():
        release.wait(10)
        return classifier

    app = BearApp(loader=slow_loader)
    statuses = []
    app.status.observe(lambda c: statuses.append(c["new"]), names="value")
    threading.Timer(0.3, release.set).start()
    upload(app, "photo.jpg", encode(photo(), "JPEG"))
    assert any("loading the model" in s for s in statuses)
    assert "Prediction: " in app.answer.value


def test_model_that_fails_to_load_is_explained_on_the_page():
    from bear_classifier.predict import ModelError

    def broken():
        raise ModelError("export.pt does not match its model card")

    app = BearApp(loader=broken)
    upload(app, "photo.jpg", encode(photo(), "JPEG"))
    assert "The model could not be loaded: export.pt does not match its model card" in app.status.value


def test_unexpected_errors_are_logged_not_shown(caplog):
    class Exploding:
        def predict(self, img):
            raise RuntimeError("secret internals")

    app = BearApp(loader=lambda: Exploding())
    with caplog.at_level("ERROR", logger="bear_classifier"):
        upload(app, "photo.jpg", encode(photo(), "JPEG"))
    assert "Something went wrong while classifying photo.jpg" in app.status.value
    assert "secret internals" not in app.status.value + app.answer.value
    assert "secret internals" in caplog.text


def test_two_files_at_once_classifies_the_first_and_says_so(app):
    data = encode(photo(), "JPEG")
    app.upload.value = tuple({"name": f"{i}.jpg", "type": "", "size": len(data), "content": memoryview(data),
                              "last_modified": NOW} for i in range(2))
    assert "only the first of the 2 files" in app.status.value


def test_every_corpus_kind_gets_an_answer_or_a_message_and_memory_stays_flat(app):
    """The hardening corpus through the real callback: 29 kinds, then a normal photo still works."""
    import gc

    import psutil

    from corpus import bad_uploads, valid_uploads

    proc = psutil.Process()
    upload(app, "warm-up.jpg", encode(photo(), "JPEG"))  # first prediction allocates the model's buffers
    gc.collect()
    before = proc.memory_info().rss
    for name, data, _ in valid_uploads():
        upload(app, name, data)
        assert "Prediction: " in app.answer.value, (name, app.status.value)
        assert "bear-error" not in app.status.value
    for name, data, phrase in bad_uploads():
        upload(app, name, data)
        assert phrase.lower() in app.status.value.lower(), (name, app.status.value)
        assert app.answer.value == "" and "Traceback" not in app.status.value
    upload(app, "after.jpg", encode(photo(seed=5), "JPEG"))
    assert "Prediction: " in app.answer.value
    gc.collect()
    grown = (proc.memory_info().rss - before) / 2**20
    print(f"RSS after the corpus: {grown:+.1f} MiB")  # reported in the README (Hardening)
    assert grown < 150, f"RSS grew by {grown:.0f} MiB"


def test_size_reported_by_the_browser_is_enforced_before_reading(app):
    """Files over the limit arrive as a placeholder (see upload.js) with their real size."""
    app.upload.value = ({"name": "huge.jpg", "type": "image/jpeg", "size": 120 * 2**20,
                         "content": memoryview(b"too large"), "last_modified": NOW},)
    assert "huge.jpg: The file is too large (120.0 MB; the limit is 20 MB)." in app.status.value
