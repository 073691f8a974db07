"""PhotoInput: the page's own photo input, an anywidget whose JavaScript ships in this package."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import anywidget
import traitlets

from .images import MAX_BYTES

HERE = Path(__file__).parent
MAX_FILES = 20  # one batch: more than this is cut, with a sentence
SHRINK_FROM = 2**20  # photos this big are scaled down in the browser before sending
# Their short side after: more than the card's thumbnail (320) and the model's input (224), and 1/8
# of a 12 MP phone photo's (3000 or 3024), so the browser decodes those at 1/8 scale: 50 ms instead
# of 62 at 1/4 for 448 px, and a third fewer pixels to send (bench/page.py: 0.14 s to the answer, was 0.16).
SHRINK_SIDE = 375


class PhotoInput(anywidget.AnyWidget):
    """Upload button (several files), drop and paste anywhere on the page, and the camera.

    Every photo arrives as `on_photo(meta, data)`: meta is {kind, name, size, ...} with kind
    "batch" (count, total: a new batch starts), "photo" (data: its bytes) or "too_large" (never sent).
    """

    _esm = HERE / "photo_input.js"
    _css = HERE / "app.css"  # the whole page's styles: input and cards
    max_bytes = traitlets.Int(MAX_BYTES).tag(sync=True)
    max_files = traitlets.Int(MAX_FILES).tag(sync=True)
    shrink_from = traitlets.Int(SHRINK_FROM).tag(sync=True)
    shrink_side = traitlets.Int(SHRINK_SIDE).tag(sync=True)

    def __init__(self, on_photo: Callable[[dict, bytes], None], **kwargs):
        super().__init__(**kwargs)
        self._on_photo = on_photo
        self.on_msg(self._receive)

    def _receive(self, _widget, content: dict, buffers: list) -> None:
        if content.get("kind") == "ping":  # the page checks that its server is still there
            self.send({"kind": "pong"})
            return
        self._on_photo(content, bytes(buffers[0]) if buffers else b"")
