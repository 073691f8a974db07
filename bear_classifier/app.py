"""The page's kernel side, in the pieces app.ipynb puts together: the model loading in the background, and
the gallery of answer cards with its status line, "Clear" and "That's wrong". One kernel per visitor.

Only ipywidgets, anywidget and Pillow are imported up front, so the page shows at once; the model
(onnxruntime) and the "That's wrong" store (SQLAlchemy: 0.2 s to import) load on threads of their
own, and a photo that comes during warm-up waits for them on the photo input's thread, never on the
kernel's main one, which keeps answering the page.
"""
from __future__ import annotations

import gc
import html
import io
import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import ipywidgets as widgets

from .images import ImageError
from .widget import Photo, PhotoInput  # noqa: F401  PhotoInput: the notebook takes both from here

log = logging.getLogger("bear_classifier")

# Loading holds Python's lock for a moment, which would slow the kernel's replies while the browser
# builds the page: loading waits this long, or until the first photo, whichever comes first.
LOAD_DELAY = 3.0
LOAD_TIMEOUT = 120.0  # a photo waits this long for a model still loading, then gets a sentence
STORE_TIMEOUT = 15.0  # a card waits this long for the "That's wrong" store, then comes without the button
MAX_CARDS = 24  # older cards are closed: a visitor's kernel keeps at most this many photos
BROKEN = "This app's model couldn't be loaded; the site's owner has been told."
TOO_SLOW = "The model is taking too long to load. Please reload the page in a minute."
FAILED = "Something went wrong while classifying this photo. Please try another one."
TRIMMED = f"Only the {MAX_CARDS} newest answers are kept on the page; older ones were removed."
PRIVACY = {True: "Photos are classified and forgotten. One is kept only if you press “That's wrong” on its card "
                 "and say what it really is: then the photo (small, without its metadata or its file name) and "
                 "your answer are stored to improve the model.",
           False: "Photos are classified and forgotten: nothing you give this page is stored."}


def log_to_server() -> None:
    """Send every log line of the kernel (the app's, ipykernel's, ipywidgets') to the server's log, never to the page.

    In a kernel, sys.stderr and file descriptor 2 go to the page as output; a logger without a handler
    writes there too, so a malformed comm message used to come back to the visitor as a traceback.
    ipykernel keeps the descriptor 2 was before as `_original_stdstream_copy`: that is the server's log.
    """
    root = logging.getLogger()
    if any(getattr(h, "bear_server_log", False) for h in root.handlers):
        return
    original = getattr(sys.stderr, "_original_stdstream_copy", None)
    stream = io.TextIOWrapper(io.FileIO(os.dup(original), "w"), line_buffering=True) if original else sys.__stderr__
    handler = logging.StreamHandler(stream)
    handler.bear_server_log = True
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    log.setLevel(logging.INFO)
    _tracebacks_to_the_log()


def _tracebacks_to_the_log() -> None:
    """ipywidgets shows an exception raised while handling a widget message (a malformed one from a hostile client:
    a missing "method", a wrong type for a trait) with the shell's showtraceback, which sends it to the page with
    file paths and source lines. In this kernel, the shell logs it instead."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    shell = get_ipython()
    if shell is not None:
        shell.showtraceback = lambda *args, **kwargs: logging.getLogger("bear_classifier.kernel").error(
            "an exception while handling a message from the page", exc_info=True)


def free_big_blocks_at_once() -> None:
    """Give a photo's pixels back to the system as soon as they are freed.

    An 8000×6000 photo decodes to 192 MB in 16 MB blocks (Pillow's). glibc serves blocks that large
    with mmap, until the first is freed: then it raises its threshold above them, and later photos
    come from heaps it rarely returns (three such PNGs grew a kernel by 339 MiB, for good). A fixed
    threshold keeps every block of 1 MiB or more mmapped, so it is unmapped when freed.
    """
    import ctypes
    import ctypes.util

    m_mmap_threshold = -3  # malloc.h
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).mallopt(m_mmap_threshold, 2**20)
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl): their allocators return big blocks anyway
        pass


class Unavailable(RuntimeError):
    """The model can't answer; str(error) is the sentence for the visitor."""


class Background:
    """A value made on a thread of its own (after `delay` seconds, or sooner when asked for), then kept."""

    def __init__(self, make, delay: float = 0.0, name: str = "background"):
        self.value, self.failed = None, False
        self._done, self._wanted, self._listeners = threading.Event(), threading.Event(), []
        self._lock = threading.Lock()
        threading.Thread(target=self._run, args=(make, delay), daemon=True, name=name).start()

    def _run(self, make, delay: float) -> None:
        self._wanted.wait(delay)
        try:
            self.value = make() if callable(make) else make
        except Exception:  # details in the server log; the page says what it means for the visitor
            log.exception("loading %s failed", threading.current_thread().name)
            self.failed = True
        while True:  # listeners first, so whoever sees it done also sees what they did
            with self._lock:
                listeners, self._listeners = self._listeners, []
                if not listeners:
                    self._done.set()
                    return
            for listener in listeners:
                listener(self)

    @property
    def ready(self) -> bool:
        return self._done.is_set()

    def get(self, timeout: float):
        """The value, once made; TimeoutError if that takes over `timeout` seconds; None if making it failed."""
        self._wanted.set()
        if not self._done.wait(timeout):
            raise TimeoutError
        return self.value

    def when_done(self, listener) -> None:
        """Call `listener(self)` once the value is made (at once if it already is), on whichever thread made it."""
        with self._lock:
            if not self._done.is_set():  # also while earlier listeners run: it is called in the same loop
                self._listeners.append(listener)
                return
        listener(self)


def load_classifier():
    """The Classifier for export.onnx; or, where BEAR_MODEL names a .pkl file, the lesson's load_learner + learn.predict.

    One thread per forward pass (Classifier.load's default): a kernel serves one visitor, one photo at
    a time, and with two the browser or another visitor's kernel takes a core mid-forward (measured on
    2 cores: 20-40 ms with one thread, 33-140 ms with two).
    """
    from .predict import Classifier, LessonClassifier

    model = os.environ.get("BEAR_MODEL")
    if model and model.endswith(".pkl"):
        return LessonClassifier.load(Path(model))
    return Classifier.load(Path(model)) if model else Classifier.load()


class Model(Background):
    """The model, loading in the background; `predict` waits for it (on the photo input's thread)."""

    def __init__(self, loader=load_classifier, delay: float = LOAD_DELAY, timeout: float = LOAD_TIMEOUT):
        super().__init__(self._timed(loader), delay, name="the model")
        self.timeout, self.last_ms = timeout, 0.0

    @staticmethod
    def _timed(loader):
        def load():
            start = time.perf_counter()
            classifier = loader()
            log.info("model loaded in %.1f s", time.perf_counter() - start)
            return classifier
        return load

    def predict(self, img):
        try:
            classifier = self.get(self.timeout)
        except TimeoutError:
            raise Unavailable(TOO_SLOW) from None
        if classifier is None:
            raise Unavailable(BROKEN)
        start = time.perf_counter()
        pred = classifier.predict(img)
        self.last_ms = (time.perf_counter() - start) * 1000
        return pred

    @property
    def sha256(self) -> str:
        return getattr(self.value, "sha256", "")


def load_model_in_background(loader=load_classifier, delay: float = LOAD_DELAY) -> Model:
    """The served model (BEAR_MODEL, or export.onnx): `load_learner` for a .pkl, the ONNX classifier otherwise."""
    log_to_server()
    free_big_blocks_at_once()
    return Model(loader, delay)


def default_store():
    """The store the environment asks for (feedback.FeedbackStore.from_env), or None where storing is off."""
    from .feedback import FeedbackStore

    return FeedbackStore.from_env()


def page_classes():
    """The served model's classes, in the page's words; the checkout's classes.toml where its card can't be read
    (the model won't load either, and the page says so)."""
    from .classes import Classes
    from .predict import ROOT, served_classes

    try:
        return served_classes()
    except Exception:
        log.exception("could not read the served model's classes")
        return Classes.from_file(ROOT / "classes.toml")


class Gallery(widgets.VBox):
    """The answers, newest first: a status line that announces each, "Clear", at most MAX_CARDS cards, what is stored."""

    def __init__(self, model: Model, store=default_store, classes=None, max_cards: int = MAX_CARDS):
        """`store`: a FeedbackStore, None, or a function returning either, called on a thread of its own."""
        log_to_server()
        self.model, self.classes, self.max_cards = model, classes or page_classes(), max_cards
        self.status = widgets.HTML(self._say(self.classes.question))
        self.status.add_class("bear-status")
        self.clear = widgets.Button(description="Clear", tooltip="Remove every card", layout=widgets.Layout(display="none"))
        self.clear.on_click(lambda _: self.clear_cards())
        self.cards = widgets.VBox()
        self.cards.add_class("bear-gallery")
        self.trimmed, self.privacy = widgets.HTML(), widgets.HTML()
        super().__init__([self.status, self.clear, self.cards, self.trimmed, self.privacy])
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
        except Exception:
            log.exception("classifying a photo failed")
            self._show(photo, self._error_card(photo.name, FAILED), f"no answer. {FAILED}")

    def add(self, photo: Photo, pred) -> None:
        """The answer card for `photo`: it keeps a copy of at most 448 px, never the photo itself."""
        from .card import AnswerCard  # imports numpy: not before the page is up

        log.info("classified a photo (%d bytes received): %s %.4f in %.0f ms", len(photo.data), pred.label,
                 pred.probability, self.model.last_ms)  # never its name: the page promises to keep none
        small = photo.small
        on_flag = self._correction(small, pred)
        card = AnswerCard(photo.name, small, pred, on_flag)
        self._show(photo, card, f"{self.classes.name(pred.label)}, {round(100 * pred.probability)}%.")

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
        kept, dropped = (card, *self.cards.children[:self.max_cards - 1]), self.cards.children[self.max_cards - 1:]
        self.cards.children = kept  # newest first
        for old in dropped:
            old.close_all()
        if dropped:
            self.trimmed.value = f'<p class="bear-note">{TRIMMED}</p>'
        self.clear.layout.display = ""
        text = f"Photo {photo.number} of {photo.count}: {said}"
        if photo.number == photo.count:
            what = "1 photo" if photo.count == 1 else f"{photo.count} photos"
            cut = (f" Only the first {photo.count} of the {photo.total} photos are classified: give me the rest in "
                   "another batch." if photo.total > photo.count else "")
            text += f" Done: {what}.{cut} Give me more any time."
        self.status.value = self._say(text)

    def clear_cards(self) -> None:
        cards, self.cards.children = self.cards.children, ()
        for card in cards:
            card.close_all()  # ipywidgets keeps every widget until it is closed: the cards' photos with them
        gc.collect()  # the cards' widgets hold each other in cycles: give their memory back now, not later
        self.clear.layout.display, self.trimmed.value = "none", ""
        self.status.value = self._say(self.classes.question)
