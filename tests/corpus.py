"""Test images generated on the fly: every kind of upload the app may meet, good and bad."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def photo(size=(320, 240), seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image (gradients plus noise), different per seed."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(xx * 6 + seed), np.cos(yy * 5 + seed), np.sin((xx + yy) * 4)], -1)
    arr = (base * 90 + 128 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def exif_rotated_jpeg() -> bytes:
    """A landscape 200x100 image stored with EXIF orientation 6 (display rotated 90°: 100x200)."""
    img = photo((200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", exif=exif)


def png_bad_crc() -> bytes:
    data = bytearray(encode(photo((64, 64)), "PNG"))
    i = data.index(b"IDAT")
    length = struct.unpack(">I", data[i - 4:i])[0]
    data[i + 4 + length] ^= 0xFF  # corrupt the IDAT checksum
    return bytes(data)


def png_bomb(side: int = 60000) -> bytes:
    """A tiny PNG whose header claims side x side pixels (3.6 gigapixels)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    row = b"\x00" + b"\x00" * (side // 8)
    idat = zlib.compress(row * 16, 9)  # a few rows are enough; the header does the damage
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def animated(fmt: str) -> bytes:
    frames = [photo((96, 96), seed=s) for s in range(3)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def multipage_tiff() -> bytes:
    frames = [photo((96, 96), seed=s) for s in range(3)]
    return encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def heic() -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    return encode(photo((128, 96)), "HEIF", quality=80)


def sixteen_bit_png() -> bytes:
    arr = (np.linspace(0, 65535, 128 * 96).reshape(96, 128)).astype(np.uint16)
    return encode(Image.fromarray(arr), "PNG")  # uint16 → mode I;16


def palette_with_transparency() -> bytes:
    img = photo((96, 96)).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return encode(img, "PNG", transparency=0)


# Valid images in odd formats: (name, bytes, expected size after decoding).
def valid_uploads() -> list[tuple[str, bytes, tuple[int, int]]]:
    p = photo((160, 120))
    return [
        ("jpeg", encode(p, "JPEG"), (160, 120)),
        ("png_rgba", encode(p.convert("RGBA"), "PNG"), (160, 120)),
        ("palette_transparency", palette_with_transparency(), (96, 96)),
        ("grayscale", encode(p.convert("L"), "JPEG"), (160, 120)),
        ("la", encode(p.convert("LA"), "PNG"), (160, 120)),
        ("cmyk_jpeg", encode(p.convert("CMYK"), "JPEG"), (160, 120)),
        ("png_16bit", sixteen_bit_png(), (128, 96)),
        ("webp", encode(p, "WEBP"), (160, 120)),
        ("avif", encode(p, "AVIF"), (160, 120)),
        ("gif_animated", animated("GIF"), (96, 96)),
        ("webp_animated", animated("WEBP"), (96, 96)),
        ("tiff_multipage", multipage_tiff(), (96, 96)),
        ("bmp", encode(p, "BMP"), (160, 120)),
        ("heic", heic(), (128, 96)),
        ("exif_rotated", exif_rotated_jpeg(), (100, 200)),
        ("one_pixel", encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), (1, 1)),
        ("large_8000x6000", encode(Image.new("RGB", (8000, 6000), (90, 120, 60)), "JPEG", quality=50), (8000, 6000)),
    ]


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
HTML = b"<!DOCTYPE html><html><body><h1>Not a photo</h1></body></html>"


# Broken uploads: (name, bytes, a phrase the message must contain).
def bad_uploads() -> list[tuple[str, bytes, str]]:
    jpeg = encode(photo((320, 240)), "JPEG")
    return [
        ("empty", b"", "empty"),
        ("text", b"just some notes about bears\n", "text file"),
        ("html", HTML, "web page"),
        ("pdf", PDF, "PDF"),
        ("svg", SVG, "SVG"),
        ("jpg_that_is_zip", b"PK\x03\x04" + b"\x00" * 200, "ZIP"),
        ("ico", encode(photo((160, 120)), "ICO", sizes=[(64, 64)]), "not an image format I can read"),
        ("random_bytes", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not an image"),
        ("truncated_jpeg", jpeg[: len(jpeg) // 2], "damaged"),
        ("png_bad_crc", png_bad_crc(), "damaged"),
        ("bomb", png_bomb(), "too large"),
        ("too_many_bytes", b"\xff\xd8\xff" + b"\x00" * (21 * 2**20), "too large"),
    ]
