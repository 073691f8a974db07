"""Turn untrusted uploaded bytes into one RGB PIL image, or a sentence saying why not."""
from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps

try:  # HEIC/HEIF photos from iPhones; optional so the training side needs no libheif
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover
    pass

MAX_BYTES = 20 * 1024 * 1024  # a phone photo is 2-8 MB; anything far larger is not a photo upload
MAX_PIXELS = 50_000_000  # 8000x6000 fits; decompression bombs (tiny file, huge canvas) do not
# The modes of photos reduced after decoding (open_image's min_side); palette, 1-bit and 16-bit ones are converted
# whole (to_rgb), as before.
REDUCIBLE = ("RGB", "RGBA", "L", "LA", "RGBa", "La")
MIN_SIDE = 1
# The one copy of a photo that outlives its answer (its card, a "That's wrong" row): enough to relabel and retrain at
# 224 px, and never the whole photo.
KEPT_SIDE = 448
# What the page promises, and nothing else: Pillow knows dozens of formats, some through outside
# programs (EPS and PostScript run Ghostscript wherever it is installed). JPEG includes MPO (phone
# photos with a second picture); PPM: the pixels the browser sends when it has shrunk a big photo. Not ICO:
# Pillow decodes an icon's embedded PNG while opening it, before its size can be checked (88 MP from 343 KB).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF", "PPM")

# Sniffed from the first bytes so the message can name what the file really is.
_NOT_IMAGES = [
    (b"%PDF", "a PDF document"),
    (b"%!PS", "a PostScript document"),
    (b"\xc5\xd0\xd3\xc6", "a PostScript document"),
    (b"PK\x03\x04", "a ZIP archive or Office document"),
    (b"<svg", "an SVG drawing"),
    (b"<?xml", "an XML/SVG file"),
    (b"<!doctype html", "a web page (HTML)"),
    (b"<html", "a web page (HTML)"),
]
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"II*\x00", b"MM\x00*", b"BM")
_ADVICE = "Please upload a photo (JPEG, PNG, WebP, HEIC...)."
_DAMAGED = ("The image file is damaged or incomplete (it could not be fully decoded). "
            "Please try another photo or re-save this one.")


class ImageError(ValueError):
    """A bad upload; str(error) is a sentence fit to show a person, `reason` a word to count it by (metrics.REASONS)."""

    def __init__(self, sentence: str, reason: str = "not_an_image"):
        super().__init__(sentence)
        self.reason = reason


def _sniff(data: bytes) -> str | None:
    head = data[:256].lstrip().lower()
    for magic, kind in _NOT_IMAGES:
        if head.startswith(magic.lower()):
            return kind
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return None


def check_size(n_bytes: int, max_bytes: int = MAX_BYTES) -> None:
    """Refuse a file by its byte count alone, before anything reads it."""
    if n_bytes > max_bytes:
        raise ImageError(
            f"The file is too large ({n_bytes / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB). "
            "Please upload a smaller photo.", "too_large"
        )


def open_image(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
               min_side: int | None = None) -> Image.Image:
    """Decode `data` into an upright RGB image; raise ImageError with a human message otherwise.

    Limits are checked from the header, before the pixels are decoded, so a hostile file
    cannot make the process allocate gigabytes. With `min_side`, a JPEG is decoded at the
    smallest 1/2, 1/4 or 1/8 scale that keeps both sides >= min_side: a 12-megapixel phone
    photo then decodes several times faster, and a 224-pixel model loses nothing. Other formats
    (RGB, gray, with or without transparency) are decoded whole, then reduced by the largest whole
    factor that keeps both sides >= min_side.
    """
    if not data:
        raise ImageError(f"The file is empty (0 bytes). {_ADVICE}", "empty")
    check_size(len(data), max_bytes)
    Image.init()  # every plugin registered (once), so the allow-list's names all resolve
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("The image is far too large (too many pixels) to process. " + _ADVICE,
                         "too_many_pixels") from None
    except Exception:
        if data.startswith(_IMAGE_MAGIC):
            raise ImageError(_DAMAGED, "damaged") from None
        kind = _sniff(data)
        what = f"This file is {kind}, not an image." if kind else "This file is not an image format I can read."
        raise ImageError(f"{what} {_ADVICE}") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(
            f"The image is too large ({w}×{h} pixels; the limit is {max_pixels / 1e6:.0f} megapixels). "
            "Please upload a smaller photo.", "too_many_pixels"
        )
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"The image has no pixels ({w}×{h}). {_ADVICE}", "empty")
    try:
        img.verify()  # chunk checksums (PNG) and structure, without decoding pixels
        img = Image.open(io.BytesIO(data), formats=FORMATS)  # verify() leaves the image unusable: reopen
        if min_side and img.format == "JPEG":
            img.draft(img.mode if img.mode == "CMYK" else "RGB", (min_side, min_side))
        img.seek(0)  # animated GIF/WebP, multi-page TIFF: classify the first frame
        img.load()
        if min_side and img.format != "JPEG" and img.mode in REDUCIBLE and min(img.size) // min_side >= 2:
            img = reduce_in_strips(img, min(img.size) // min_side)  # a JPEG's draft did this in the decoder
        ImageOps.exif_transpose(img, in_place=True)  # phone photos are stored sideways with an EXIF flag; in place,
        # as a copy of an upright 8000×6000 photo would cost 192 MB more at the peak
        return to_rgb(img)
    except Exception:
        raise ImageError(_DAMAGED, "damaged") from None


def reduce_in_strips(img: Image.Image, factor: int, rows: int = 256) -> Image.Image:
    """`img` shrunk by a whole `factor` (box averages), a strip of rows at a time; the last factor − 1 rows and
    columns at most are left out (Image.reduce would average a partial box), and the EXIF orientation is kept.

    Formats other than JPEG can't be decoded small, so this runs on the whole decoded image, before any copy of
    it is made; strip by strip, because Pillow reduces an image with transparency through a premultiplied copy of
    it (192 MB more for an 8000×6000 PNG; measured with `python -m bench.memory`).
    """
    width, height = img.width // factor * factor, img.height // factor * factor
    out = Image.new(img.mode, (width // factor, height // factor))
    step = rows // factor * factor or factor
    for top in range(0, height, step):
        out.paste(img.crop((0, top, width, min(top + step, height))).reduce(factor), (0, top // factor))
    out.info.update(img.info)  # the EXIF block: a sideways phone photo is turned upright after this
    return out


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any mode (palette, transparency, 16-bit, CMYK, grayscale) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits, not clip
        arr = img.point(lambda v: v / 256).convert("L") if img.mode != "I" else img.convert("L")
        return arr.convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")  # palette transparency becomes alpha, handled below
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # No copy of an RGBA image, nor of its alpha band (an RGBA mask is read by its alpha): for 48 megapixels,
        # a copy, its alpha band and the canvas were 432 MB more than the decoded image; the canvas alone is 192 MB.
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))  # transparent areas on white, as viewers show them
        canvas.paste(rgba, mask=rgba)
        return canvas
    return img.convert("RGB")
