"""PhotoInput: the page's own photo input, an anywidget whose JavaScript ships in this package."""
from __future__ import annotations

import base64
import io
import logging
import os
from pathlib import Path
from typing import Callable

import anywidget
import traitlets

from .images import MAX_BYTES

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
MAX_FILES = 20  # one batch: more than this is cut, with a sentence
SHRINK_FROM = 2**20  # photos this big are scaled down in the browser before sending
# Their short side after: more than the card's thumbnail (320) and the model's input (224), and 1/8
# of a 12 MP phone photo's (3000 or 3024), so the browser decodes those at 1/8 scale: 50 ms instead
# of 62 at 1/4 for 448 px, and a third fewer pixels to send (bench/page.py: 0.14 s to the answer, was 0.16).
SHRINK_SIDE = 375
# Examples to try: photos in this folder (beside app.ipynb, where Voila starts the kernel) are offered
# as a row of thumbnails; BEAR_EXAMPLES names another folder. See examples/README.md.
EXAMPLES = "examples"
EXAMPLE_TYPES = {".jpg", ".jpeg", ".png", ".webp"}
MAX_EXAMPLES = 8
EXAMPLE_THUMB = 144  # px: shown at 72 CSS px, sharp on a phone's 2x screen


def example_files(folder: Path | None = None) -> dict[str, Path]:
    """{name: path} of the example photos, sorted by name: what the page offers and all the kernel will read."""
    folder = Path(folder or os.environ.get("BEAR_EXAMPLES") or EXAMPLES)
    if not folder.is_dir():
        return {}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXAMPLE_TYPES and p.is_file())
    return {p.name: p for p in files[:MAX_EXAMPLES]}


def example_thumb(path: Path) -> str | None:
    """A small JPEG of the photo as a data: URL (no request leaves the page for it), or None if unreadable."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            small = ImageOps.exif_transpose(img).convert("RGB")
            small.thumbnail((EXAMPLE_THUMB, EXAMPLE_THUMB))
    except Exception:
        log.warning("example %s could not be read: left out", path.name)
        return None
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


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
    examples = traitlets.List().tag(sync=True)  # [{name, thumb}]: the examples row

    def __init__(self, on_photo: Callable[[dict, bytes], None], examples: Path | None = None, **kwargs):
        super().__init__(**kwargs)
        self._on_photo = on_photo
        self._examples = example_files(examples)
        thumbs = {name: example_thumb(path) for name, path in self._examples.items()}
        self._examples = {name: path for name, path in self._examples.items() if thumbs[name]}
        self.examples = [{"name": name, "thumb": thumbs[name]} for name in self._examples]
        self.on_msg(self._receive)

    def _example(self, name) -> None:
        """An example chosen on the page: only a name this widget listed, read here, then exactly as an upload."""
        path = self._examples.get(name) if isinstance(name, str) else None
        if path is None:
            log.warning("refused an example that was not offered")
            return
        data = path.read_bytes()
        self._on_photo({"kind": "batch", "count": 1, "total": 1}, b"")
        self._on_photo({"kind": "photo", "name": name, "size": len(data)}, data)

    def _receive(self, _widget, content: dict, buffers: list) -> None:
        if content.get("kind") == "ping":  # the page checks that its server is still there
            self.send({"kind": "pong"})
            return
        if content.get("kind") == "example":
            self._example(content.get("name"))
            return
        self._on_photo(content, bytes(buffers[0]) if buffers else b"")
