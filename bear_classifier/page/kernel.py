"""What a visitor's kernel needs before the page's widgets: its logs and tracebacks kept in the server's log,
big photos' memory given back when freed, and the model loading on a thread of its own.

A Voila kernel serves one visitor. Whatever it writes to stderr, and every traceback ipywidgets shows,
goes to that visitor's page over the websocket; here they go to the server's log instead.
"""
from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING

from .. import environment

if TYPE_CHECKING:
    from PIL import Image

    from ..inference.predict import Prediction

log = logging.getLogger("bear_classifier")

# Loading holds Python's lock for a moment, which would slow the kernel's replies while the browser
# builds the page: loading waits this long, or until the first photo, whichever comes first.
LOAD_DELAY = 3.0
LOAD_TIMEOUT = 120.0  # a photo waits this long for a model still loading, then gets a sentence
BROKEN = "This app's model couldn't be loaded; the site's owner has been told."
TOO_SLOW = "The model is taking too long to load. Please reload the page in a minute."


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
    # ipywidgets' control comm is closed by the kernel once the page has every widget's state, and then by the
    # page too: ipykernel's "No such comm" for that second close, once per visitor, is no problem of anyone's.
    logging.getLogger("Comm").setLevel(logging.ERROR)
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
        self.value = None  # None also when making it failed: the reason is in the server log
        self._done, self._wanted, self._listeners = threading.Event(), threading.Event(), []
        self._lock = threading.Lock()
        threading.Thread(target=self._run, args=(make, delay), daemon=True, name=name).start()

    def _run(self, make, delay: float) -> None:
        self._wanted.wait(delay)
        try:
            self.value = make() if callable(make) else make
        except Exception:  # details in the server log; the page says what it means for the visitor
            log.exception("loading %s failed", threading.current_thread().name)
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
    a time, and with two the browser or another visitor's kernel takes a core mid-forward, which made the
    forward slower and less even on two cores (docs/performance.md).
    """
    from ..inference.predict import Classifier

    model = environment.model_path()
    if model is not None and model.suffix == ".pkl":
        from ..model.learner import LessonClassifier  # torch and fastai: requirements.txt

        return LessonClassifier.load(model)
    return Classifier.load(model)


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

    def predict(self, img: "Image.Image") -> "Prediction":
        """The model's answer for `img`, once it has loaded; Unavailable (a sentence) if it can't answer."""
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


