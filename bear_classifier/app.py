"""The page: a photo input, then a gallery of answer cards, newest first; one BearApp per visitor (kernel).

Only ipywidgets, anywidget and Pillow are imported up front, so the page shows at once; the
"That's wrong" store (SQLAlchemy: 0.2 s to import), onnxruntime and the model load in a background
thread, and a photo that comes during warm-up waits for them (at most LOAD_TIMEOUT seconds).
"""
from __future__ import annotations

import html
import logging
import os
import sys
import threading
import time
from pathlib import Path

import ipywidgets as widgets

from .images import ImageError, check_size, open_image
from .widget import SHRINK_SIDE, PhotoInput

log = logging.getLogger("bear_classifier")
if not log.handlers:  # the kernel's real stderr is the server log; the page never sees it
    _handler = logging.StreamHandler(sys.__stderr__)
    _handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)

# The model loads in the background, but loading holds Python's lock for a moment, which would slow
# the kernel's replies while the browser builds the page. So loading waits this long, or until the
# first photo, whichever comes first.
LOAD_DELAY = 3.0
LOAD_TIMEOUT = 120.0  # a photo waits this long for a model that is still loading, then gets a sentence
INSTRUCTIONS = "Give me photos of bears: I'll tell you for each whether it is a grizzly, a black bear or a teddy bear."
PRIVACY = {True: "Photos are classified and forgotten. One is kept only if you press “That's wrong” on its card "
                 "and say what it really is: then the photo (without its metadata) and your answer are stored to "
                 "improve the model.",
           False: "Photos are classified and forgotten: nothing you give this page is stored."}


def load_classifier():
    """The Classifier for export.onnx; or, where BEAR_MODEL names a .pkl file, the lesson's load_learner + learn.predict.

    A kernel serves one visitor, one photo at a time: one thread per forward pass (Classifier.load's
    default). With two, the browser, the server or another visitor's kernel takes a core mid-forward
    and both threads wait (measured on 2 cores during an upload: 20-40 ms with one thread, 33-140 ms with two).
    """
    from .predict import Classifier, LessonClassifier

    model = os.environ.get("BEAR_MODEL")
    if model and model.endswith(".pkl"):
        return LessonClassifier.load(Path(model))
    return Classifier.load(Path(model)) if model else Classifier.load()


def default_store():
    """The store the environment asks for (feedback.FeedbackStore.from_env), or None where storing is off."""
    from .feedback import FeedbackStore

    return FeedbackStore.from_env()


class BearApp(widgets.VBox):
    """Photo input, progress line, gallery of answer cards with "Clear", and what is stored."""

    def __init__(self, loader=load_classifier, load_delay: float = LOAD_DELAY, store=default_store,
                 load_timeout: float = LOAD_TIMEOUT):
        """`store`: a FeedbackStore, None, or a function returning either, called in the background."""
        self.input = PhotoInput(self.receive)
        self.status = widgets.HTML(INSTRUCTIONS)
        self.status.add_class("bear-status")
        self.clear = widgets.Button(description="Clear", tooltip="Remove every card", layout=widgets.Layout(display="none"))
        self.clear.on_click(lambda _: self.clear_gallery())
        self.gallery = widgets.VBox()
        self.gallery.add_class("bear-gallery")
        self.privacy = widgets.HTML()
        super().__init__([self.input, self.status, self.clear, self.gallery, self.privacy])
        self.add_class("bear-app")
        self.store, self.classifier, self.load_error, self.load_timeout = None, None, None, load_timeout
        self.batch = dict(count=0, total=0, done=0)
        self._loaded, self._wanted = threading.Event(), threading.Event()
        threading.Thread(target=self._load, args=(loader, load_delay, store), daemon=True).start()

    def _open_store(self, store) -> None:
        """Open the "That's wrong" store and say on the page what is kept. A store that can't be
        opened (a database down) keeps nothing, rather than taking the page down with it."""
        try:
            self.store = store() if callable(store) else store
        except Exception:
            log.exception("could not open the feedback store: nothing will be stored")
        self.privacy.value = f'<p class="bear-note">{PRIVACY[self.store is not None]}</p>'

    def _load(self, loader, delay: float, store) -> None:
        self._open_store(store)  # at once: the page's note says what is kept
        self._wanted.wait(delay)
        start = time.perf_counter()
        try:
            from . import card  # noqa: F401  numpy and the card's code, before the first photo needs them
            self.classifier = loader()
            log.info("model loaded in %.1f s", time.perf_counter() - start)
        except Exception as e:  # ModelError carries a human sentence; anything else gets logged in full
            log.exception("could not load the model")
            self.load_error = str(e)
        finally:
            self._loaded.set()

    def receive(self, meta: dict, data: bytes) -> None:
        """One message from the photo input: a new batch, a photo, or a file too large to send."""
        kind, name = meta.get("kind"), str(meta.get("name") or "the file")
        if kind == "batch":
            self.batch = dict(count=int(meta.get("count", 0)), total=int(meta.get("total", 0)), done=0)
            self._progress()
            return
        if kind in ("photo", "too_large"):  # a file too large was never sent: its size alone gets the sentence
            self._add(self.classify(name, data, meta.get("size") or len(data)))
        self.batch["done"] += 1
        self._progress()

    def classify(self, name: str, data: bytes, size: int = 0) -> widgets.Box:
        """The card for one file: an answer, or the sentence that says why there is none."""
        from .card import AnswerCard, ErrorCard  # imports numpy: not before the page is up (the loader warms it)

        self._wanted.set()
        try:
            check_size(size)  # as the browser reports it
            img = open_image(data, min_side=SHRINK_SIDE)
            if not self._loaded.is_set():
                self.status.value = '<span class="bear-busy">Loading the model (first time only)…</span>'
                if not self._loaded.wait(self.load_timeout):
                    return ErrorCard(name, "The model is taking too long to load. Please reload the page in a minute.")
            if self.classifier is None:
                return ErrorCard(name, f"The model could not be loaded: {self.load_error}")
            start = time.perf_counter()
            pred = self.classifier.predict(img)
            log.info("classified %r (%d bytes received): %s %.4f in %.0f ms", name, len(data), pred.label,
                     pred.probability, (time.perf_counter() - start) * 1000)
        except ImageError as e:
            log.info("rejected upload %r: %s", name, e)
            return ErrorCard(name, str(e))
        except Exception:
            log.exception("classifying %r failed", name)
            return ErrorCard(name, "Something went wrong while classifying this photo. Please try another one.")
        on_flag = (lambda label: self.flag(img, name, pred, label)) if self.store is not None else None
        return AnswerCard(name, img, pred, on_flag)

    def flag(self, img, name: str, pred, label: str) -> str:
        """Store a "That's wrong" answer; the sentence to show on the card."""
        from .feedback import FeedbackError

        try:
            self.store.add(img, name, pred.label, pred.probability, label, getattr(self.classifier, "sha256", ""))
        except FeedbackError as e:
            return str(e)
        log.info("flagged %r: model said %s, visitor says %s", name, pred.label, label)
        return f"Thanks! Stored as “{label.replace('_', ' ')}”."

    def _add(self, card: widgets.Box) -> None:
        self.gallery.children = (card, *self.gallery.children)  # newest first
        self.clear.layout.display = ""

    def _progress(self) -> None:
        count, total, done = self.batch["count"], self.batch["total"], self.batch["done"]
        cut = (f" Only the first {count} of the {total} photos are classified: give me the rest in another batch."
               if total > count else "")
        if done < count:
            self.status.value = f'<span class="bear-busy">Classifying {done + 1} of {count}…</span>{html.escape(cut)}'
        else:
            what = "1 photo" if count == 1 else f"{count} photos"
            self.status.value = f"Done: {what}.{html.escape(cut)} Give me more any time."

    def clear_gallery(self) -> None:
        cards, self.gallery.children = self.gallery.children, ()
        for card in cards:
            card.close_all()  # ipywidgets keeps every widget until it is closed: the cards' photos with them
        self.clear.layout.display = "none"
        self.status.value = INSTRUCTIONS
