"""A corpus of broken, odd and convertible images, generated (never downloaded)."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE = Path(__file__).parent / "data" / "fruits360-sample"


@dataclass(frozen=True)
class Case:
    key: str  # relative to the input prefix
    body: bytes
    reason: str | None  # None: must be featurized; else: a fragment of the rejection reason


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb_png(side: int = 30_000) -> bytes:
    """A valid 1-bit PNG of ``side`` x ``side`` black pixels: ~100 KB on disk, ``side``² pixels decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def bad_corpus() -> list[Case]:
    """Every kind of input the job meets in real buckets, each with its expected outcome."""
    photo_path = sorted(SAMPLE.glob("Banana/*.jpg"))[0]
    jpeg = photo_path.read_bytes()
    photo = Image.open(photo_path).convert("RGB")

    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    deep = Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    frames = [photo.rotate(angle) for angle in (0, 90, 180)]
    animated = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    long_name = "Odd Names/" + "very long name " * 55 + ".jpg"  # ~840 bytes: S3 allows 1,024

    return [
        Case("Broken/empty.jpg", b"", "empty object (0 bytes)"),
        Case("Broken/truncated.jpg", jpeg[: len(jpeg) // 2], "corrupt or truncated image data"),
        Case(
            "Broken/text.jpg", b"Dear diary, today I picked apples.\n" * 20, "not a recognised image format"
        ),
        Case("Broken/animated.jpg", animated, "animated GIF (3 frames), not a still photo"),
        Case("Broken/bomb.png", decompression_bomb_png(), "too many pixels"),
        Case("Convertible/alpha.png", _encode(rgba, "PNG"), None),
        Case("Convertible/grayscale.jpg", _encode(photo.convert("L"), "JPEG"), None),
        Case("Convertible/cmyk.jpg", _encode(photo.convert("CMYK"), "JPEG"), None),
        Case("Convertible/16-bit.png", _encode(deep, "PNG"), None),
        Case("Convertible/exif-rotated.jpg", _encode(photo, "JPEG", exif=exif.tobytes()), None),
        Case("Odd Names/a b+c%20d.JPG", jpeg, None),
        Case("Odd Names/pêche été 桃.jpeg", jpeg, None),
        Case(long_name, jpeg, None),
    ]


NOT_IMAGES = {
    "Kiwi/notes.txt": b"not an image",
    "Kiwi/metadata.json": b"{}",
    "Kiwi/": b"",
    "loose-file.jpg": b"no class folder",
}
