"""The API's core, free of any web framework: one model session for the whole server process, each image's answer
as JSON, and the turns that keep the work within the cores (the tornado routes and the MCP server both use it)."""
from __future__ import annotations

import asyncio
import base64
import io
import logging
import math
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from .. import environment, metrics
from ..inference.answer import answer_bytes
from ..inference.predict import Classifier, ModelError
from ..inference.versions import Served, models_folder
from ..inference.images import ImageError
from ..page.answers import AnswersLog
from .limits import Limits

log = logging.getLogger(__name__)

HEATMAP_SIDE = 448  # the heatmap's longest side: enough to lay over a photo, small on the wire
LOADING = "The model is still loading. Please try again in a few seconds."
BROKEN = "This server's model couldn't be loaded; its owner has been told (the server log says why)."
FAILED = "Something went wrong while classifying this image. Please try another one."
SHARE = 4  # one address may hold at most 1/SHARE of the places (turns and queue): a few can't take them all
LOG_RETRY = 60.0  # seconds before an answers log that could not be opened is tried again


class Busy(RuntimeError):
    """Every turn is taken and the queue is full, or the wait was too long: try again after `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"The server is busy classifying other images. Please try again in {retry_after} s.")
        self.retry_after = retry_after


@dataclass
class Model:
    """The served model, loading on a thread of its own from the moment the server starts; where a models folder is
    set (BEAR_MODELS), the version `models promote` serves, picked up within one request (inference.versions)."""

    path: Path | None = None  # None: what the page serves (BEAR_MODELS' served version, BEAR_MODEL, else export.onnx)
    # Threads per forward pass. One: the session runs as many forwards at once as the Service has turns (one per
    # core); two threads per forward were half as fast on the 2-core machine under load (docs/api.md).
    threads: int = 1
    loaded: Future = field(init=False)  # done once the first version has loaded, or with why it could not be
    served: Served = field(init=False)

    def __post_init__(self):
        # BEAR_MODEL: a fixed file (an export.pkl, the page's lesson path: the API serves its ONNX twin, Classifier.load)
        self.path = Path(self.path) if self.path else environment.model_path()
        models = None if self.path is not None else models_folder()
        self.served = Served(models, loader=lambda p: Classifier.load(p, threads=self.threads), path=self.path)
        self.loaded = Future()
        threading.Thread(target=self._load, daemon=True, name="the API's model").start()

    def _load(self) -> None:
        try:
            start = time.perf_counter()
            classifier = self.served.get()
            self.loaded.set_result(None)
            log.info("the API's model %s loaded in %.1f s", classifier.version, time.perf_counter() - start)
        except ModelError as e:  # says what to do
            log.error("the API's model could not be loaded: %s", e)
            self.loaded.set_exception(e)
        except Exception as e:
            log.exception("the API's model could not be loaded")
            self.loaded.set_exception(e)

    @property
    def ready(self) -> bool:
        return self.loaded.done() and self.loaded.exception() is None

    def classifier(self, latest: bool = False):
        """The served version's Classifier; Unavailable (a sentence) while it loads or where it failed. `latest`:
        the one `models promote` serves now, loaded here if it is new (so never on the event loop: on the pool's
        threads, where answers are made); else the one in hand."""
        if not self.loaded.done():
            raise Unavailable(LOADING)
        if self.loaded.exception() is not None:
            raise Unavailable(BROKEN)
        if not latest:
            return self.served.current
        try:
            return self.served.get()
        except ModelError:  # the served version went missing: the one in hand answers (Served logs why)
            log.exception("the served version could not be had")
            return self.served.current

    def version(self) -> dict:
        return version_of(self.classifier())


def version_of(classifier) -> dict:
    """A model's version: its name (`models list`), its file's sha256 (as its card vouches) and its export day."""
    return {"name": classifier.version, "sha256": classifier.sha256, "date": classifier.card.get("exported")}


class Unavailable(RuntimeError):
    """The model can't answer now; str(error) is the sentence for the caller."""


def result(pred, classes, version: dict, img=None) -> dict:
    """One image's answer as JSON: the label, the page's words for it, its probability, every class's, whether it is
    "none of these", the model's version, and (given the image read) the heatmap as a base64 PNG."""
    out = {"label": pred.label, "words": classes.name(pred.label), "probability": round(pred.probability, 6),
           "probabilities": {label: round(p, 6) for label, p in pred.probs.items()},
           "none_of_these": not pred.in_set, "model": version}
    if pred.person:  # a "none of these" photo that is mainly a person (inference/people.py): the page's sentence
        out["person"] = classes.none_person
    if img is not None and pred.heatmap is not None:
        from ..inference.heatmap import heatmap_image

        scale = HEATMAP_SIDE / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale))) if scale < 1 else img.size
        buf = io.BytesIO()
        heatmap_image(pred.heatmap, size).save(buf, format="PNG", optimize=True)
        out["heatmap_png"] = base64.b64encode(buf.getvalue()).decode("ascii")
    return out


class Service:
    """Classifies images for the API: one model session, shared by a pool of threads sized to the cores (`turns`: the
    requests at work at once, each forward on a thread of its own), at most `queue` more waiting up to `wait_seconds`
    for a turn."""

    def __init__(self, limits: Limits | None = None, model: Model | None = None, log_answers: bool = True):
        self.limits = limits or Limits.from_env()
        self.model = model or Model()
        self.executor = ThreadPoolExecutor(max_workers=self.limits.turns, thread_name_prefix="bear-api")
        self.working = self.waiting = 0
        self.admitted: Counter[str] = Counter()  # address -> its requests between admit() and leave()
        self.buffered = 0  # bytes of request bodies held by admitted requests
        self._turns: asyncio.Semaphore | None = None  # made on the server's event loop, at the first request
        self._seconds = 0.1  # a request's recent time at work (moving average): what Retry-After is made of
        self._log: AnswersLog | None = None  # the answers log (BEAR_FEEDBACK*), once open
        self.log_opened = threading.Event()  # set once the log is open, off, or given up on (a setting to mend)
        if log_answers:
            threading.Thread(target=self._open_log, daemon=True, name="the API's answers log").start()
        else:
            self.log_opened.set()

    def classify_one(self, name: str, data: bytes, heatmap: bool = False) -> dict:
        """One image's answer, or {"name", "error": sentence} for a file that is no photo. Blocking: the model runs here."""
        classifier, start = self.model.classifier(latest=True), time.monotonic()
        try:
            img, pred = answer_bytes(classifier, data)
        except ImageError as e:
            metrics.rejected(e.reason)
            return {"name": name, "error": str(e)}
        except Exception:
            log.exception("classifying an image for the API failed")
            metrics.rejected("failed")
            return {"name": name, "error": FAILED}
        version = pred.version or classifier.version
        metrics.answered(pred.label, pred.probability, version, time.monotonic() - start, not pred.in_set)
        if self._log is not None:  # the page's answers log: the monitor counts both
            self._log.answered(pred.label, pred.probability, version, source="api")
        return {"name": name, **result(pred, classifier.classes, version_of(classifier), img if heatmap else None)}

    @property
    def answers_log(self) -> AnswersLog | None:
        """The answers log the page writes too, once open (None before, and where BEAR_FEEDBACK=off)."""
        return self._log

    def _open_log(self) -> None:
        """Open the answers log on this thread, not on a request's: a database that is slow or down must cost the
        answers their row, never their time. Tried again every LOG_RETRY seconds until it opens."""
        while True:
            try:
                self._log = AnswersLog.from_env()
                return self.log_opened.set()
            except (ValueError, sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as e:  # a setting to mend, not a wait
                log.error("the API's answers are not logged: %s", e)
                return self.log_opened.set()
            except Exception as e:
                log.warning("the API's answers are not logged: their store could not be opened (%s: %s); trying again "
                            "in %d s. Check BEAR_FEEDBACK_URL / BEAR_FEEDBACK_DB, or set BEAR_FEEDBACK=off.",
                            type(e).__name__, e, LOG_RETRY)
            time.sleep(LOG_RETRY)

    def admit(self, address: str) -> bool:
        """Take a place for a request from `address` whose body is about to be read: False where the places are all
        taken (turns and queue together, the body's upload included, as a slow body holds its place), or where
        this address holds its share of them already."""
        places = self.limits.turns + self.limits.queue
        share = max(1, places // SHARE) if self.limits.per_minute else places  # no limits per address: no share
        if sum(self.admitted.values()) >= places or self.admitted[address] >= share:
            return False
        self.admitted[address] += 1
        return True

    def hold(self, n_bytes: int) -> bool:
        """Count `n_bytes` more of an admitted request's body: False (and nothing counted) past the server's budget
        for the bodies it holds at once, `buffer_bytes`."""
        if self.buffered + n_bytes > self.limits.buffer_bytes:
            return False
        self.buffered += n_bytes
        return True

    def drop(self, n_bytes: int) -> None:
        """`n_bytes` of a body counted by `hold` are free again."""
        self.buffered -= n_bytes

    def leave(self, address: str, n_bytes: int) -> None:
        """The request admitted for `address` has ended, and the `n_bytes` of its body it held are free again."""
        self.drop(n_bytes)
        self.admitted[address] -= 1
        if self.admitted[address] <= 0:
            del self.admitted[address]

    def retry_after(self) -> int:
        """Seconds until the queue has likely moved on: the work ahead of a request, shared over the turns."""
        ahead = (self.working + self.waiting + 1) * self._seconds / self.limits.turns
        return max(1, min(60, math.ceil(ahead)))

    @asynccontextmanager
    async def turn(self):
        """Wait for a turn at the model (Busy when none comes in time, or when too many wait already)."""
        if self._turns is None:
            self._turns = asyncio.Semaphore(self.limits.turns)
        if self.waiting >= self.limits.queue:
            raise Busy(self.retry_after())
        self.waiting += 1
        try:
            await asyncio.wait_for(self._turns.acquire(), self.limits.wait_seconds)
        except (asyncio.TimeoutError, TimeoutError):
            raise Busy(self.retry_after()) from None
        finally:
            self.waiting -= 1
        self.working += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self.working -= 1
            self._turns.release()
            self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - start)

    async def classify(self, images: list[tuple[str, bytes]], heatmap: bool = False) -> list[dict]:
        """Each image's answer, in order, made on the pool's threads (the event loop stays free): Busy or Unavailable."""
        self.model.classifier()  # loading or broken: said before waiting for a turn
        loop = asyncio.get_running_loop()
        async with self.turn():
            return [await loop.run_in_executor(self.executor, self.classify_one, name, data, heatmap)
                    for name, data in images]

    def info(self) -> dict:
        """GET /api/model: the classes in the page's words, the model card's figures, the version."""
        classifier = self.model.classifier()
        card, classes = classifier.card, classifier.classes
        figures = {k: {m: v for m, v in card[k].items() if m in ("n", "accuracy", "per_class", "ece")}
                   for k in ("valid_metrics", "evaluation") if isinstance(card.get(k), dict)}
        return {"title": classes.title, "question": classes.question,
                "classes": [{"label": k.label, "words": k.name} for k in classes.kinds],
                "none_of_these": {"label": classes.none_label, "words": classes.none_name,
                                  "sentence": classes.none_sentence},
                "input": {"size": list(classifier.size), "resize": "squish"},
                "limits": {"max_bytes": self.limits.max_bytes, "max_images": self.limits.max_images,
                           "per_minute": self.limits.per_minute},
                "arch": card.get("arch"), "figures": figures, "version": version_of(classifier)}
