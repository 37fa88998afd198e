from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fruits_features.features.decoding import ImageDecodeError, decode_image

SAMPLE = Path(__file__).parent / "data" / "fruits360-sample"
A_JPEG = next(SAMPLE.glob("Apple Braeburn/*.jpg"))
LIMIT = 50_000_000


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_sample_jpeg_decodes_to_a_square_rgb_uint8_array() -> None:
    pixels = decode_image(A_JPEG.read_bytes(), 224, LIMIT)
    assert pixels.shape == (224, 224, 3)
    assert pixels.dtype == np.uint8
    assert pixels.mean() > 100  # a fruit on a white background, not a black frame


def test_decoding_matches_keras_load_img_with_bilinear_resize() -> None:
    from keras.utils import img_to_array, load_img

    expected = img_to_array(load_img(A_JPEG, target_size=(224, 224), interpolation="bilinear"))
    np.testing.assert_array_equal(decode_image(A_JPEG.read_bytes(), 224, LIMIT), expected.astype(np.uint8))


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = Image.new("L", (50, 40), 77)
    pixels = decode_image(encode(gray, "JPEG"), 32, LIMIT)
    assert pixels.shape == (32, 32, 3)
    assert np.all(pixels[..., 0] == pixels[..., 1])
    assert np.all(pixels[..., 1] == pixels[..., 2])


def test_transparent_png_is_composited_onto_white() -> None:
    clear = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    pixels = decode_image(encode(clear, "PNG"), 16, LIMIT)
    assert np.all(pixels == 255)


def test_exif_rotation_is_applied() -> None:
    wide = Image.new("RGB", (60, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    data = encode(wide, "JPEG", exif=exif.tobytes())
    # The square output hides the rotation, so check it through Pillow's view of the same bytes.
    from PIL import ImageOps

    with Image.open(io.BytesIO(data)) as raw:
        assert ImageOps.exif_transpose(raw).size == (20, 60)
    assert decode_image(data, 8, LIMIT).shape == (8, 8, 3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty object (0 bytes)"),
        (b"this is a text file, not a photo", "not a recognised image format"),
        (A_JPEG.read_bytes()[:600], "corrupt or truncated image data"),
    ],
)
def test_undecodable_bytes_raise_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=re.escape(reason)):
        decode_image(data, 224, LIMIT)


def test_images_over_the_pixel_limit_are_refused_before_decoding() -> None:
    big = encode(Image.new("RGB", (400, 300)), "PNG")
    with pytest.raises(ImageDecodeError, match=r"400x300 pixels, over the limit of 100000"):
        decode_image(big, 224, 100_000)
