"""Decoding uploaded bytes: every odd-but-valid image decodes to RGB; every broken file gets a sentence."""
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


def test_sixteen_bit_keeps_its_range():
    from corpus import sixteen_bit_png

    img = open_image(sixteen_bit_png())
    lo, hi = img.convert("L").getextrema()
    assert lo < 10 and hi > 245  # scaled to 8 bits, not clipped to white


def test_exif_orientation_is_applied():
    from corpus import exif_rotated_jpeg

    assert open_image(exif_rotated_jpeg()).size == (100, 200)


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
