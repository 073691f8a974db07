"""Examples to try: the photos in an `examples/` folder beside app.ipynb, offered on the page as a row of thumbnails.

The folder is the deployer's to fill (examples/README.md lists each photo and its licence); BEAR_EXAMPLES
names another one. The kernel reads only the files it listed itself, never a path a client sends.
"""
from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

from .. import environment

log = logging.getLogger(__name__)
FOLDER = "examples"  # relative to where Voila starts the kernel: the notebook's folder
TYPES = {".jpg", ".jpeg", ".png", ".webp"}
MAX_EXAMPLES = 8
THUMB = 144  # px: shown at 72 CSS px, sharp on a phone's 2x screen


def example_files(folder: Path | None = None) -> dict[str, Path]:
    """{name: path} of the example photos, sorted by name: what the page offers and all the kernel will read."""
    folder = Path(folder or environment.examples_folder() or FOLDER)
    if not folder.is_dir():
        return {}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in TYPES and p.is_file())
    return {p.name: p for p in files[:MAX_EXAMPLES]}


def example_thumb(path: Path) -> str | None:
    """A small JPEG of the photo as a data: URL (no request leaves the page for it), or None if unreadable."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            small = ImageOps.exif_transpose(img).convert("RGB")
            small.thumbnail((THUMB, THUMB))
    except Exception:
        log.warning("example %s could not be read: left out", path.name)
        return None
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def offered(folder: Path | None = None) -> tuple[dict[str, Path], list[dict]]:
    """({name: path}, [{name, thumb}]) of the examples that could be read: what the kernel keeps, what the page shows."""
    files = example_files(folder)
    thumbs = {name: example_thumb(path) for name, path in files.items()}
    files = {name: path for name, path in files.items() if thumbs[name]}
    return files, [{"name": name, "thumb": thumbs[name]} for name in files]
