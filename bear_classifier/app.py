"""The page's widgets: upload a photo, see the preview, the answer and every class's probability.

Only ipywidgets and Pillow are imported up front, so the page shows at once; torch and the
TorchScript model load in a background thread, and an upload during warm-up waits for them.
"""
from __future__ import annotations

import html
import io
import logging
import sys
import threading
import time
from pathlib import Path

import ipywidgets as widgets
from PIL import Image

from .images import MAX_BYTES, MAX_PIXELS, ImageError, check_size, open_image

log = logging.getLogger("bear_classifier")
if not log.handlers:  # the kernel's real stderr is the server log; the page never sees it
    _handler = logging.StreamHandler(sys.__stderr__)
    _handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)

PREVIEW_SIDE = 320
# The model loads in the background, but importing torch holds the GIL for seconds, which would
# slow the kernel's replies while the browser builds the page. So loading waits this long, or
# until the first upload, whichever comes first.
LOAD_DELAY = 3.0
DECODE_SIDE = PREVIEW_SIDE  # decode big JPEGs only this far: enough for the preview and the 224 px model
NICE = {"black": "black bear", "grizzly": "grizzly", "teddy": "teddy bear", "not_bear": "not a bear"}
INSTRUCTIONS = "Upload a photo of a bear: I'll tell you if it is a grizzly, a black bear or a teddy bear."
# JPEGs this big are shrunk in the browser before sending (upload.js): moving 4 MB through the
# websocket and decoding it here took longer than decoding it at 1/8 scale in the browser.
SHRINK_FROM = 2**20
UPLOAD_JS = (Path(__file__).with_name("upload.js").read_text()
             + f"({MAX_BYTES}, {SHRINK_FROM}, {DECODE_SIDE}, {MAX_PIXELS});")


def load_classifier():
    """The default Classifier from export.pt (imported here: torch is slow to import)."""
    import torch

    from .predict import Classifier

    # A kernel serves one visitor, one photo at a time: one thread per forward pass. With two, the
    # browser, the server or another visitor's kernel takes a core mid-forward and both threads wait
    # (measured on 2 cores during an upload: 20-40 ms with one thread, 33-140 ms with two).
    torch.set_num_threads(1)
    return Classifier.load()


def thumbnail(img: Image.Image, side: int = PREVIEW_SIDE) -> bytes:
    """A small JPEG of `img` for the preview, so a 12 MP photo isn't sent back to the browser."""
    small = img.copy()
    small.thumbnail((side, side))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def bars_html(probs: dict[str, float]) -> str:
    """Every class's probability as a horizontal bar, highest first."""
    rows = []
    for label, p in sorted(probs.items(), key=lambda kv: -kv[1]):
        rows.append(
            f'<div class="bear-bar"><span style="display:inline-block;width:7em">{html.escape(NICE.get(label, label))}</span>'
            f'<span style="display:inline-block;width:12em;background:#eee;vertical-align:middle">'
            f'<span style="display:block;width:{100 * p:.1f}%;height:0.9em;background:#4a7bd0"></span></span>'
            f' {p:.4f}</div>'
        )
    return "".join(rows)


class BearApp(widgets.VBox):
    """Upload button, status line, preview, answer and bars; one instance per visitor (kernel)."""

    def __init__(self, loader=load_classifier, load_delay: float = LOAD_DELAY):
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload photo")
        self.status = widgets.HTML(INSTRUCTIONS)
        self.preview = widgets.Image(format="jpeg", layout=widgets.Layout(max_width=f"{PREVIEW_SIDE}px"))
        self.preview.layout.display = "none"
        self.answer = widgets.HTML()
        self.bars = widgets.HTML()
        super().__init__([self.upload, self.status, self.preview, self.answer, self.bars])
        self.add_class("bear-app")
        self.classifier, self.load_error = None, None
        self._loaded, self._wanted = threading.Event(), threading.Event()
        self._loader = threading.Thread(target=self._load, args=(loader, load_delay), daemon=True)
        self._loader.start()
        self.upload.observe(self._on_upload, names="value")

    def _ipython_display_(self) -> None:
        from IPython.display import Javascript, display

        display(Javascript(UPLOAD_JS))
        display(self._repr_mimebundle_(), raw=True)

    def _load(self, loader, delay: float) -> None:
        self._wanted.wait(delay)
        start = time.perf_counter()
        try:
            self.classifier = loader()
            log.info("model loaded in %.1f s", time.perf_counter() - start)
        except Exception as e:  # ModelError carries a human sentence; anything else gets logged in full
            log.exception("could not load the model")
            self.load_error = str(e)
        finally:
            self._loaded.set()

    def _show_preview(self, img: Image.Image) -> None:
        self.preview.value = thumbnail(img)
        self.preview.layout.display = ""

    def _show_error(self, message: str) -> None:
        self.status.value = f'<span class="bear-error" style="color:#b00020">{html.escape(message)}</span>'
        self.answer.value = self.bars.value = ""
        self.preview.layout.display = "none"

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:  # our own reset below
            return
        try:
            self.classify(files[0], extra=len(files) - 1)
        finally:
            self.upload.value = ()  # so the same file can be uploaded again and the button stays fresh

    def classify(self, upload: dict, extra: int = 0) -> None:
        """Show the answer for one uploaded file (a dict with `name` and `content`, as FileUpload gives)."""
        name = upload.get("name", "the file")
        self.answer.value = self.bars.value = ""
        self.preview.layout.display = "none"
        self.status.value = f'<span class="bear-busy">Classifying {html.escape(name)}…</span>'
        try:
            check_size(upload.get("size") or 0)  # as the browser reports it: the content may be a placeholder
            img = open_image(bytes(upload["content"]), min_side=DECODE_SIDE)
            if not self._loaded.is_set():
                self._show_preview(img)
                self._wanted.set()
                self.status.value = '<span class="bear-busy">Classifying… (loading the model, first time only)</span>'
                self._loaded.wait()
            if self.classifier is None:
                return self._show_error(f"The model could not be loaded: {self.load_error}")
            start = time.perf_counter()
            pred = self.classifier.predict(img)
            log.info("classified %r (%d bytes received): %s %.4f in %.0f ms", name, len(upload["content"]),
                     pred.label, pred.probability, (time.perf_counter() - start) * 1000)
        except ImageError as e:
            log.info("rejected upload %r: %s", name, e)
            return self._show_error(f"{name}: {e}")
        except Exception:
            log.exception("classifying %r failed", name)
            return self._show_error(f"Something went wrong while classifying {name}. Please try another photo.")
        if self.preview.layout.display == "none":  # sent after predicting: the browser drawing it would slow the model
            self._show_preview(img)
        verdict = ("<p>This doesn't look like a bear to me. Try a photo of a grizzly, a black bear or a teddy bear.</p>"
                   if not pred.is_bear else "")
        self.answer.value = f'<p class="bear-answer"><b>{html.escape(str(pred))}</b></p>{verdict}'
        self.bars.value = bars_html(pred.probs)
        # "Done" last: the browser applies updates in order, so once it shows, the answer is on the page.
        note = f" (only the first of the {extra + 1} files was classified)" if extra else ""
        self.status.value = f"Done: {html.escape(name)}{note}. Upload another photo any time."
