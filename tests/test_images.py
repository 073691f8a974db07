"""Decoding uploaded bytes: every odd-but-valid image decodes to RGB; every broken file gets a sentence."""
import io

import pytest

from bear_classifier.inference.images import ImageError, open_image
from corpus import bad_uploads, valid_uploads

VALID = valid_uploads()
BAD = bad_uploads()


@pytest.mark.parametrize("name,data,size", VALID, ids=[v[0] for v in VALID])
def test_valid_images_decode_to_rgb(name, data, size):
    img = open_image(data)
    assert img.mode == "RGB"
    assert img.size == size


@pytest.mark.parametrize("name,data,phrase", BAD, ids=[b[0] for b in BAD])
def test_bad_bytes_get_a_specific_human_message(name, data, phrase):
    with pytest.raises(ImageError) as err:
        open_image(data)
    message = str(err.value)
    assert phrase.lower() in message.lower()
    assert "Traceback" not in message and "Error" not in message.split(".")[0]
    assert message.endswith((".", "...)."))


def test_transparent_areas_become_white_not_black():
    from PIL import Image

    from corpus import encode

    img = open_image(encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"))
    assert img.getpixel((4, 4)) == (255, 255, 255)
    # half-transparent colours are blended with white, whatever mode carries the alpha
    for mode, colour, seen in [("RGBA", (255, 0, 0, 128), (255, 127, 127)), ("LA", (0, 128), (127, 127, 127))]:
        img = open_image(encode(Image.new(mode, (8, 8), colour), "PNG"))
        assert all(abs(a - b) <= 1 for a, b in zip(img.getpixel((4, 4)), seen)), (mode, img.getpixel((4, 4)))


def test_sixteen_bit_keeps_its_range():
    from corpus import sixteen_bit_png

    img = open_image(sixteen_bit_png())
    lo, hi = img.convert("L").getextrema()
    assert lo < 10 and hi > 245  # scaled to 8 bits, not clipped to white


def test_exif_orientation_is_applied():
    from corpus import exif_rotated_jpeg

    assert open_image(exif_rotated_jpeg()).size == (100, 200)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_sideways_photo_read_small_is_upright_too(fmt):
    # min_side reads a big photo small (a JPEG's draft, the others' reduction): the EXIF flag must survive it
    from PIL import Image

    photo = Image.new("RGB", (2000, 1000), (200, 10, 10))
    exif = photo.getexif()
    exif[0x0112] = 6  # Orientation: stored turned a quarter to the left
    data = io.BytesIO()
    photo.save(data, fmt, exif=exif.tobytes())
    assert open_image(data.getvalue(), min_side=375).size == (500, 1000)


def test_limits_are_checked_before_decoding():
    from corpus import encode, photo

    data = encode(photo((400, 300)), "PNG")
    with pytest.raises(ImageError, match="too large"):
        open_image(data, max_pixels=100_000)
    with pytest.raises(ImageError, match="too large"):
        open_image(data, max_bytes=1000)


def test_postscript_is_refused_with_a_sentence_before_any_decoder_sees_it():
    """EPS decodes through Ghostscript wherever it is installed: the page promises photos, so it is never opened."""
    from corpus import encode, photo

    for data in [encode(photo((64, 48)), "EPS"), b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"]:
        with pytest.raises(ImageError, match=r"^This file is a PostScript document, not an image\."):
            open_image(data)


@pytest.mark.parametrize("fmt", ["PCX", "TGA", "SGI", "DDS", "QOI", "IM"])
def test_formats_the_page_does_not_promise_are_refused(fmt):
    from corpus import encode, photo

    with pytest.raises(ImageError, match="not an image format I can read|not an image"):
        open_image(encode(photo((64, 48)), fmt))


def test_the_browsers_shrunk_pixels_decode():
    """A big photo the browser has shrunk arrives as PPM (photo_input.js)."""
    from corpus import encode, photo

    assert open_image(encode(photo((500, 375)), "PPM")).size == (500, 375)


def test_a_big_png_is_read_small_and_blended_on_white_as_a_whole_one_would_be():
    """A PNG can't be decoded small as a JPEG can: with `min_side` it is reduced right after decoding, strip by strip
    (Pillow reduces a transparent image through a premultiplied copy: 192 MB more for 8000×6000)."""
    import numpy as np
    from PIL import Image

    from bear_classifier.inference.images import reduce_in_strips
    from corpus import encode

    pixels = np.random.default_rng(0).integers(0, 256, (1003, 777, 4), dtype=np.uint8)
    photo = Image.fromarray(pixels, "RGBA")
    whole = photo.crop((0, 0, 775, 1000)).reduce(5)  # the rows and columns a whole factor leaves out, left out
    assert np.array_equal(np.asarray(reduce_in_strips(photo, 5, rows=64)), np.asarray(whole))

    big = Image.new("RGBA", (4000, 3000), (255, 0, 0, 128))
    img = open_image(encode(big, "PNG"), min_side=375)
    assert img.size == (500, 375) and img.mode == "RGB"  # the largest whole factor keeping both sides >= 375
    assert all(abs(a - b) <= 1 for a, b in zip(img.getpixel((250, 180)), (255, 127, 127)))
    assert open_image(encode(big, "PNG")).size == (4000, 3000)  # without min_side, the photo as it is
