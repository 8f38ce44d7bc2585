"""Encoded images judged by their headers before any pixel is decoded, and Pillow images of any mode
as 8-bit RGB. Shared by every path that turns bytes into pixels: the record loaders, convert,
``predict PHOTO`` and serve."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

try:   # libjpeg-turbo's header parser: the SOF dimensions without touching the scan data
    import simplejpeg
except ImportError:  # pragma: no cover - a dependency; Pillow's lazy open reads the header too
    simplejpeg = None

MAX_PIXELS = 50_000_000   # a larger image is refused before it is decoded (decompression bombs)

# Pillow modes whose samples are wider than 8 bits: convert("RGB") clips them at 255, so a 16-bit
# grey of 32768 came out white (issue 14, item 6); they are scaled to 8 bits first.
WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


def header_size(data: bytes) -> tuple[int, int]:
    """(width, height) that an encoded image's header claims, read without decoding its pixels.
    ValueError when the header cannot be read (not an image, truncated before the size)."""
    if not data:
        raise ValueError("empty image bytes")
    if simplejpeg is not None and data[:2] == b"\xff\xd8":
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        return w, h
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # the caller judges the size
        try:
            with Image.open(io.BytesIO(data)) as img:   # lazy: parses the header only
                return img.size
        except Image.DecompressionBombError as e:      # over twice Pillow's own limit
            raise ValueError(str(e)) from None
        except Exception as e:   # UnidentifiedImageError, struct/syntax errors of broken headers
            raise ValueError(f"unreadable image header ({e})") from None


def check_pixels(width: int, height: int, max_pixels: int = MAX_PIXELS) -> str | None:
    """What is wrong with an image of this size, or None."""
    if width * height > max_pixels:
        return f"image is {width}x{height}, over the limit of {max_pixels:,} pixels"
    return None


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB, samples wider than 8 bits scaled (16-bit 0..65535 and float 0..1 to 0..255)."""
    if img.mode in WIDE_MODES:
        a = np.asarray(img, dtype=np.float32)
        if img.mode == "F":
            a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
        else:   # "I" is how Pillow opens 16-bit samples of several formats; "I;16*" always are
            a = a / 257.0
        img = Image.fromarray(np.nan_to_num(a).clip(0, 255).round().astype(np.uint8), "L")
    return img.convert("RGB")
