"""Image bytes to model-ready pixel arrays: pure functions over Pillow and numpy."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The interpolation Keras' own `keras.utils.load_img(..., interpolation="bilinear")` uses, so
# that features match a direct Keras call on the same file.
RESAMPLE = Image.Resampling.BILINEAR


class ImageDecodeError(ValueError):
    """The bytes are not an image this job can use; the message is the reason recorded."""


def decode_image(data: bytes, size: int, max_pixels: int) -> np.ndarray:
    """Decode image bytes to a ``(size, size, 3)`` uint8 RGB array.

    The image is opened with Pillow, turned upright from its EXIF orientation, converted to
    RGB (transparent areas composited onto white, the Fruits 360 background; 16-bit and CMYK
    images scaled and converted) and resized with bilinear interpolation. Animated images are
    refused: which frame would be "the photo" is a guess.

    Args:
        data: the encoded file (JPEG, PNG, ...).
        size: the side of the square output.
        max_pixels: images with more pixels are refused before their pixels are decoded, so a
            decompression bomb cannot exhaust memory.

    Returns:
        The pixel array, dtype uint8.

    Raises:
        ImageDecodeError: with a reason a person understands.
    """
    if not data:
        raise ImageDecodeError("empty object (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        f"image is {width}x{height} pixels, over the limit of {max_pixels} "
                        "(model.max_image_pixels)"
                    )
                frames = getattr(image, "n_frames", 1)
                if frames > 1:
                    raise ImageDecodeError(
                        f"animated {image.format or 'image'} ({frames} frames), not a still photo"
                    )
                image.load()
                upright = ImageOps.exif_transpose(image)
                rgb = _to_rgb(upright)
                resized = rgb.resize((size, size), RESAMPLE)
                return np.asarray(resized, dtype=np.uint8)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"too many pixels, refused as a possible decompression bomb: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated and corrupt data as OSError (and a few codecs as
        # SyntaxError/ValueError).
        raise ImageDecodeError(f"corrupt or truncated image data: {exc}") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode == "I" or image.mode.startswith("I;16"):
        # 16-bit grayscale: Pillow's own conversion clips at 255, so scale 0..65535 to 0..255.
        wide = np.asarray(image, dtype=np.float32) / 257.0
        return Image.fromarray(np.clip(np.rint(wide), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
