"""PhotoInput: the page's own photo input, an anywidget whose JavaScript ships in this package.

Its messages come from whoever holds the page's websocket, so each is checked before anything reads
it, and the photos are handed to the app's callback on a thread of their own: the kernel's main
thread stays free to answer the page (its buttons, a batch's receipt) while a photo waits for the model.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator

import anywidget
import traitlets
from PIL import Image

from ..inference.answer import KERNEL_SHRINK_PIXELS, SHRINK_SIDE, read_photo  # noqa: F401  (tests read the limit here)
from ..inference.images import KEPT_SIDE, MAX_BYTES, ImageError, check_size
from .examples import offered

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
MAX_FILES = 20  # one batch: more than this is cut, with a sentence
SHRINK_FROM = 2**20  # photos this big are scaled down in the browser before sending
# Their short side after: the one the kernel reads photos at (inference.answer.SHRINK_SIDE).
# A photo of more pixels than this is shrunk in the browser whatever its size in bytes: the kernel decodes every pixel
# it is sent, and a flat 8000×6000 PNG is small on the wire but 144 MB once decoded.
BROWSER_SHRINK_PIXELS = 4_000_000
# Photos received but not yet answered: a client that sends faster than the model answers gets a
# sentence for the rest instead of filling the kernel's memory with them.
MAX_WAITING_BYTES = 2 * MAX_BYTES
MAX_NAME = 200
MAX_BATCH_ID, SEEN_BATCHES = 64, 64  # the page names each batch; the latest ids are kept to drop a batch sent twice
TOO_MANY = "Too many photos at once: this one was skipped. Please send it again when the others are answered."


@dataclass
class Photo:
    """One file a visitor gave: number `number` of a batch of `count`. Its pixels are decoded when first asked for."""

    name: str
    data: bytes = field(repr=False)
    size: int
    number: int = 1
    count: int = 1
    total: int = 1  # how many the visitor chose: more than `count` when the batch was cut
    refused: str = ""  # a sentence, when the file was never sent or was not kept
    arrived: float = field(default_factory=time.monotonic)  # when its message reached the kernel (metrics' latency)

    @cached_property
    def image(self) -> Image.Image:
        """The photo as the model reads it, upright RGB (inference.answer.read_photo, as the API and the command
        line read theirs); ImageError (a sentence) when it is not one."""
        if self.refused:
            raise ImageError(self.refused, "too_many_at_once" if self.refused == TOO_MANY else "too_large")
        check_size(self.size)  # as the browser reports it
        return read_photo(self.data)

    @cached_property
    def small(self) -> Image.Image:
        """A copy of at most KEPT_SIDE pixels: what a card and its "That's wrong" keep, never the whole photo."""
        small = self.image.copy()
        small.thumbnail((KEPT_SIDE, KEPT_SIDE))
        return small


class Batch:
    """The photos of one batch, each yielded as it arrives: at most `count` are sent of the `total` the visitor chose."""

    def __init__(self, source: "PhotoInput", count: int, total: int, first: dict | None = None):
        self.source, self.count, self.total, self.received, self.first = source, count, total, 0, first

    def __iter__(self) -> Iterator[Photo]:
        while self.received < self.count:
            photo = self.source._next_photo(self)
            if photo is None:  # a new batch began before this one was whole
                return
            yield photo


class PhotoInput(anywidget.AnyWidget):
    """Upload button (several files), drop and paste anywhere on the page, and the camera.

    `on_photos(callback)`: the callback gets each batch (an iterable of Photo, as they arrive), on
    the input's own thread, one batch after another.
    """

    _esm = HERE / "photo_input.js"
    _css = HERE / "app.css"  # the whole page's styles: input and cards
    max_bytes = traitlets.Int(MAX_BYTES).tag(sync=True)
    max_files = traitlets.Int(MAX_FILES).tag(sync=True)
    shrink_from = traitlets.Int(SHRINK_FROM).tag(sync=True)
    shrink_side = traitlets.Int(SHRINK_SIDE).tag(sync=True)
    shrink_pixels = traitlets.Int(BROWSER_SHRINK_PIXELS).tag(sync=True)
    examples = traitlets.List().tag(sync=True)  # [{name, thumb}]: the examples row (examples.py)

    def __init__(self, examples: Path | None = None, **kwargs):
        super().__init__(**kwargs)
        self._examples, self.examples = offered(examples)
        self._inbox: queue.Queue = queue.Queue()
        self._waiting_bytes = 0
        self._lock = threading.Lock()
        self._batch_ids: OrderedDict[str, None] = OrderedDict()  # the latest SEEN_BATCHES batch ids received
        self._skipping: str | None = None  # a batch id had before: its photos are dropped
        self.on_msg(self._receive)

    def __repr__(self) -> str:  # a widget's text/plain is put in the page's HTML: no object address there
        return "Photo input"

    def on_photos(self, callback: Callable[[Batch], None]) -> None:
        """Call `callback(photos)` for each batch, on a thread of the input's own, one batch after another."""
        threading.Thread(target=self._serve, args=(callback,), daemon=True, name="photos").start()

    def wait(self, timeout: float = 120) -> bool:
        """Whether every message received so far has been handled within `timeout` seconds (tests, benchmarks)."""
        done = threading.Event()
        threading.Thread(target=lambda: (self._inbox.join(), done.set()), daemon=True).start()
        return done.wait(timeout)

    def _receive(self, _widget, content, buffers) -> None:
        """A message from the page. Anything malformed is dropped and logged; the visitor gets nothing back
        (an exception here would go back to the page as a traceback)."""
        try:
            message = _parse(content, buffers)
        except Exception as e:
            log.info("dropped a malformed photo-input message: %s", str(e)[:200])
            return
        if message["kind"] in ("batch", "example"):
            # Said at once, on the kernel's main thread, even while a photo waits for the model: the page
            # offers to send a batch again when this doesn't come, and a batch had before is not answered twice.
            self.send({"kind": "received", "id": message["id"]})
            if self._already_had(message["id"]):
                self._skipping = message["id"]
                return
            self._skipping = None
        elif message["batch"] is not None and message["batch"] == self._skipping:
            return
        elif message["batch"] is not None and not self._already_had(message["batch"]):
            # Its batch message was lost on the way: the photo is answered as a batch of one, and acknowledged.
            self.send({"kind": "received", "id": message["batch"]})
        if message["kind"] == "example":  # only a name this input listed; then exactly as an upload
            path = self._examples.get(message["name"])
            if path is None:
                log.warning("refused an example that was not offered")
                return
            data = path.read_bytes()
            self._enqueue({"kind": "batch", "count": 1, "total": 1, "data": b""})
            message = {"kind": "photo", "name": message["name"], "size": len(data), "data": data}
        message["arrived"] = time.monotonic()
        self._enqueue(message)

    def _already_had(self, batch_id: str | None) -> bool:
        if batch_id is None:  # an older page's batch, without an id
            return False
        if batch_id in self._batch_ids:
            return True
        self._batch_ids[batch_id] = None
        if len(self._batch_ids) > SEEN_BATCHES:
            self._batch_ids.popitem(last=False)
        return False

    def _enqueue(self, message: dict) -> None:
        with self._lock:
            if self._waiting_bytes + len(message["data"]) > MAX_WAITING_BYTES:
                message.update(data=b"", refused=TOO_MANY)
            self._waiting_bytes += len(message["data"])
        self._inbox.put(message)

    def _take(self) -> dict:
        message = self._inbox.get()
        with self._lock:
            self._waiting_bytes -= len(message.get("data", b""))
        return message

    def _serve(self, callback: Callable[[Batch], None]) -> None:
        message = None
        while True:
            message = message or self._take()
            if message["kind"] == "batch":
                batch = Batch(self, message["count"], message["total"])
            else:  # a photo without its batch message: a batch of one
                batch = Batch(self, 1, 1, first=message)
            self._interrupted = None
            try:
                callback(batch)
            except Exception:
                log.exception("the photo callback failed")
            for _ in batch:  # photos the callback left are drained, so the next batch starts clean
                pass
            # Messages count as done once their photo is answered (wait() relies on it): the last photo's
            # and the batch's own are done here.
            for _ in range(min(batch.received, 1) + (message["kind"] == "batch")):
                self._inbox.task_done()
            message = self._interrupted

    def _next_photo(self, batch: Batch) -> Photo | None:
        message, batch.first = batch.first or self._take(), None
        if message["kind"] == "batch":
            self._interrupted, batch.count = message, batch.received
            return None
        if batch.received:  # the previous photo has been answered
            self._inbox.task_done()
        batch.received += 1
        refused = message.get("refused", "")
        if message["kind"] == "too_large":  # never sent: its size alone gets the sentence
            try:
                check_size(message["size"])
            except ImageError as e:
                refused = str(e)
        return Photo(message["name"], message["data"], message["size"] or len(message["data"]), batch.received,
                     batch.count, max(batch.total, batch.count), refused, message.get("arrived", time.monotonic()))


def _parse(content, buffers) -> dict:
    """The fields this input reads from a page message, checked: a dict with a known kind, bounded numbers."""
    if not isinstance(content, dict):
        raise TypeError(f"content is a {type(content).__name__}")
    kind = content.get("kind")
    if kind == "example":
        name = content.get("name")
        return {"kind": kind, "id": _batch_id(content.get("id")), "name": name if isinstance(name, str) else ""}
    if kind == "batch":
        total = _count(content.get("total", 0))
        return {"kind": kind, "id": _batch_id(content.get("id")), "data": b"",
                "count": min(_count(content.get("count", 0)), MAX_FILES, total or MAX_FILES), "total": total}
    if kind in ("photo", "too_large"):
        data = bytes(buffers[0]) if kind == "photo" and buffers else b""
        name = content.get("name")
        name = name[:MAX_NAME] if isinstance(name, str) and name.strip() else "the file"
        return {"kind": kind, "batch": _batch_id(content.get("batch")), "name": name,
                "size": _count(content.get("size", 0)), "data": data}
    raise ValueError(f"unknown kind {str(kind)[:40]!r}")


def _batch_id(value) -> str | None:
    if value is None or isinstance(value, str) and 0 < len(value) <= MAX_BATCH_ID:
        return value
    raise ValueError(f"not a batch id: {str(value)[:40]!r}")


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 2**53:
        raise ValueError(f"not a count: {str(value)[:40]!r}")
    return int(value)
