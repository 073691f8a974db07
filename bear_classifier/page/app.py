"""The page's kernel side, in the pieces app.ipynb puts together: the photo input, the model loading in the
background (kernel.py), and the gallery of answer cards with its status line, "Clear" and "That's wrong".
One kernel per visitor.

Only ipywidgets, anywidget and Pillow are imported up front, so the page shows at once; the model
(onnxruntime) and the "That's wrong" store (SQLAlchemy: 0.2 s to import) load on threads of their
own, and a photo that comes during warm-up waits for them on the photo input's thread, never on the
kernel's main one, which keeps answering the page.
"""
from __future__ import annotations

import html
import logging
import time
from contextlib import contextmanager

import ipywidgets as widgets

from .. import metrics
from .gallery import Cards
from ..inference.images import ImageError
from .kernel import BROKEN, Background, Model, Unavailable, log_to_server
from .kernel import load_model_in_background  # noqa: F401  app.ipynb takes it, PhotoInput and Gallery from here
from .widget import Photo, PhotoInput  # noqa: F401

log = logging.getLogger("bear_classifier")

STORE_TIMEOUT = 15.0  # a card waits this long for the "That's wrong" store, then comes without the button
MAX_CARDS = 24  # older cards are closed: a visitor's kernel keeps at most this many photos
FAILED = "Something went wrong while classifying this photo. Please try another one."
TRIMMED = f"Only the {MAX_CARDS} newest answers are kept on the page; older ones were removed."
PRIVACY = {True: "Photos are classified and forgotten; of each answer, only its class and probability are counted. "
                 "A photo is kept only if you press “That's wrong” on its card "
                 "and say what it really is: then the photo (small, without its metadata or its file name) and "
                 "your answer are stored to improve the model.",
           False: "Photos are classified and forgotten: nothing you give this page is stored."}


def default_store():
    """The store the environment asks for (feedback.FeedbackStore.from_env), or None where storing is off."""
    from .feedback import FeedbackStore

    return FeedbackStore.from_env()


def page_classes():
    """The served model's classes, in the page's words; the checkout's classes.toml where its card can't be read
    (the model won't load either, and the page says so)."""
    from ..classes import Classes
    from ..inference.predict import CHECKOUT, served_classes

    try:
        return served_classes()
    except Exception:
        log.exception("could not read the served model's classes")
        return Classes.from_file(CHECKOUT / "classes.toml")


class Gallery(widgets.VBox):
    """The answers, newest first: a status line that announces each, "Clear", at most MAX_CARDS cards, what is stored."""

    def __init__(self, model: Model, store=default_store, classes=None, max_cards: int = MAX_CARDS):
        """`store`: a FeedbackStore, None, or a function returning either, called on a thread of its own."""
        log_to_server()
        self.model, self.classes, self.max_cards = model, classes or page_classes(), max_cards
        self.status = widgets.HTML(self._say(""))  # the header asks the question; this line speaks the answers
        self.status.add_class("bear-status")
        self.cards = Cards()  # with its bar: "Your photos (3)", "Clear" and its undo
        self.cards.bar.observe(self._cleared, names="cleared")
        self.trimmed, self.privacy, self.version = widgets.HTML(), widgets.HTML(), widgets.HTML()
        super().__init__([self.status, self.cards.bar, self.cards, self.trimmed, self.version, self.privacy])
        self.add_class("bear-app")
        self.store = Background(store, name="the feedback store")
        self.store.when_done(lambda s: setattr(self.privacy, "value",
                                               f'<p class="bear-note">{PRIVACY[s.value is not None]}</p>'))
        model.when_done(self._model_known)

    def __repr__(self) -> str:  # a widget's text/plain is put in the page's HTML: no object address there
        return "Answers"

    @staticmethod
    def _say(text: str, busy: bool = False) -> str:
        """The status line: one polite live region, so a screen reader announces each answer once."""
        css = "bear-busy" if busy else "bear-said"
        return f'<p class="{css}" role="status" aria-live="polite">{html.escape(text, quote=False)}</p>'

    def _model_known(self, model: Model) -> None:
        metrics.counts()  # prometheus_client's import (65 ms) here, rather than in the first answer
        if model.value is None:  # said at once, not at the first upload
            self.status.value = self._say(BROKEN)

    @contextmanager
    def answering(self, photo: Photo):
        """Answer `photo` inside this block; a file that is no photo, or any failure, becomes a card saying why."""
        waiting = not self.model.ready
        self.status.value = self._say("Loading the model (first time only)…" if waiting else
                                      f"Classifying {photo.number} of {photo.count}…", busy=True)
        try:
            yield
        except (ImageError, Unavailable) as e:
            log.info("no answer for a photo: %s", e)
            self._show(photo, self._error_card(photo.name, str(e)), f"no answer. {e}")
            metrics.rejected(getattr(e, "reason", "model_unavailable"))
        except Exception:
            log.exception("classifying a photo failed")
            self._show(photo, self._error_card(photo.name, FAILED), f"no answer. {FAILED}")
            metrics.rejected("failed")

    def add(self, photo: Photo, pred) -> None:
        """The answer card for `photo`: it keeps a copy of at most 448 px, never the photo itself."""
        from .card import AnswerCard  # imports numpy: not before the page is up

        log.info("classified a photo (%d bytes received): %s %.4f in %.0f ms", len(photo.data), pred.label,
                 pred.probability, self.model.last_ms)  # never its name: the page promises to keep none
        small = photo.small
        on_flag = self._correction(small, pred)
        card = AnswerCard(photo.name, small, pred, on_flag, self.classes)
        # The card's own words (a screen reader hears this line): "Grizzly bear, 99%.", "Not sure: maybe ...",
        # "That looks like a person, not a bear."
        said = card.sentence or card.verdict.replace(" · ", ", ") + "."
        self._show(photo, card, said)
        self._count(photo, pred)
        self._log_answer(pred)
        self._say_version()

    def _count(self, photo: Photo, pred) -> None:
        """The answer, once shown, counted for /metrics: its time from the photo's arrival in this kernel."""
        metrics.answered(pred.label, pred.probability, self._version(pred), time.monotonic() - photo.arrived,
                         not pred.in_set)

    def _version(self, pred) -> str:
        """The version that answered: the answer's own where the model names one, else the page's model's."""
        return getattr(pred, "version", "") or self.model.version

    def _log_answer(self, pred) -> None:
        """One row of the answers log: the answer, its probability and version, never the photo."""
        store = self.store.value if self.store.ready else None  # never waited for: the answer is already given
        if store is not None:
            store.answers_log.answered(pred.label, pred.probability, self._version(pred))

    def _say_version(self) -> None:
        """A quiet line once another version is served: this page keeps the one it started with until reloaded."""
        newer = self.model.newer()
        text = (f"Answers on this page come from model version {self.model.version}. A newer version ({newer}) "
                f"is now served: reload the page to use it." if newer else "")
        if self.version.value != (note := f'<p class="bear-note bear-version">{html.escape(text)}</p>' if text else ""):
            self.version.value = note

    def _correction(self, small, pred):
        try:
            store = self.store.get(STORE_TIMEOUT)
        except TimeoutError:
            log.warning("the feedback store is still not open: a card without “That's wrong”")
            return None
        if store is None:
            return None
        from .feedback import Correction

        return Correction(store, small, pred, self.classes, self.model.sha256)

    @staticmethod
    def _error_card(name: str, message: str):
        from .card import ErrorCard

        return ErrorCard(name, message)

    def _show(self, photo: Photo, card, said: str) -> None:
        self.cards.add(card)
        if self.cards.trim(self.max_cards):
            self.trimmed.value = f'<p class="bear-note">{TRIMMED}</p>'
        text = f"Photo {photo.number} of {photo.count}: {said}"
        if photo.number == photo.count:
            what = "1 photo" if photo.count == 1 else f"{photo.count} photos"
            cut = (f" Only the first {photo.count} of the {photo.total} photos are classified: give me the rest in "
                   "another batch." if photo.total > photo.count else "")
            text += f" Done: {what}.{cut} Give me more any time."
        self.status.value = self._say(text)

    def clear_cards(self) -> None:
        """"Clear", as the bar's button does it: the cards go, and come back if "Undo" is pressed in time."""
        self.cards.clear()

    def _cleared(self, change) -> None:
        """The cards were cleared (by the bar's button or `clear_cards`): nothing on the page speaks of them any more."""
        if change["new"]:
            self.status.value, self.trimmed.value = self._say(""), ""
