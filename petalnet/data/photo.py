"""One photo (a path, file object or bytes of any common format) as the model's uint8 CHW square, at a
memory cost known before its pixels are decoded: ``predict PHOTO`` and serve.

The full-size image is the only large thing made: a JPEG is decoded at reduced scale (libjpeg's DCT
scaling, ``draft``) when the model's input size allows; the centre crop and resize run in the decoded
mode, and the mode conversion (16-bit and float samples to 8 bits, grey to RGB) on the small result.
Before, a 7000x7000 16-bit grey PNG cost ~800 MB per request in float32 copies of the full image
(issue 30, item 5); now its 98 MB decode."""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import ExifTags, Image, UnidentifiedImageError

from petalnet.data.images import MAX_PIXELS, check_pixels, to_rgb
from petalnet.errors import PetalnetError

# bytes per pixel of Pillow's in-memory modes (RGB is stored in 4 bytes); any other mode: 4
PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# modes resized as decoded; others are converted to RGB at full size first (palette images would be
# resized nearest-neighbour, CMYK/alpha modes as today's RGB conversion): that copy is counted
RESIZED_AS_DECODED = {"L", "RGB", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
# decoders that fill a buffer of their own and copy it into the image: twice the pixels (Pillow's WebP
# and AVIF plugins hand over the decoded frame as bytes)
COPYING_DECODERS = {"WEBP": 2, "AVIF": 2}
# a JPEG is decoded at the largest DCT scale that leaves its short side at least DRAFT_GAP x the model's
# input size: 20 petals-mini photos upscaled to 3000x2400 and resized to 192 px differ from the full decode
# by 0.17/255 per pixel at 2 (3.3/255 at most at 1, where 1/8 scale leaves 300 px)
DRAFT_GAP = 2
# EXIF orientation -> the transpose that displays it upright (ImageOps.exif_transpose's table)
ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


class ImageTooLarge(PetalnetError):
    """The image is over the pixel limit or (``decode_limit``) the memory limit (serve answers 413)."""

    def __init__(self, message: str, decode_limit: bool = False):
        super().__init__(message)
        self.decode_limit = decode_limit


def decode_bytes(img: Image.Image) -> int:
    """Bytes that decoding the opened (not yet loaded) ``img`` and converting it for ``small_square``
    allocate at full size."""
    pixels = img.width * img.height
    need = pixels * PIXEL_BYTES.get(img.mode, 4) * COPYING_DECODERS.get(img.format or "", 1)
    if img.mode == "1":
        need += pixels   # to 8-bit grey first: Pillow resizes "1" nearest-neighbour
    elif img.mode not in RESIZED_AS_DECODED:
        need += pixels * 4
    return need


def small_square(img: Image.Image, size: int) -> Image.Image:
    """The decoded ``img`` centre-cropped to a square, resized to ``size`` and as 8-bit RGB, upright by
    its EXIF orientation; no float or RGB copy of the full image."""
    orientation = img.getexif().get(ExifTags.Base.Orientation)
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode not in RESIZED_AS_DECODED:
        img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    # reducing_gap as data.writer.square; Pillow's reduce() has no 16-bit modes (ValueError)
    gap = None if img.mode.startswith("I;16") else 3.0
    small = img.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=gap)
    if orientation in ORIENTATIONS:   # a square: transposing after the crop and resize is the same picture
        small = small.transpose(ORIENTATIONS[orientation])
    return to_rgb(small)


def _open_checked(source, image_size: int, name: str, max_pixels: int, max_decode_bytes: int | None):
    """The lazily opened image, drafted to reduced scale where the format allows, once its size passes."""
    img = Image.open(source)
    if (problem := check_pixels(img.width, img.height, max_pixels)) is not None:
        img.close()
        raise ImageTooLarge(f"{name}: {problem}")
    full = img.size
    # JPEG: DCT scaling (1/2, 1/4, 1/8) by DRAFT_GAP; other formats decode at full size
    img.draft(None, (image_size * DRAFT_GAP, image_size * DRAFT_GAP))
    need = decode_bytes(img)
    if max_decode_bytes is not None and need > max_decode_bytes:
        img.close()
        scaled = f" (decoded at {img.width}x{img.height})" if img.size != full else ""
        raise ImageTooLarge(f"{name}: decoding this {full[0]}x{full[1]} {img.mode} image{scaled} takes "
                            f"{need:,} bytes, over the limit of {max_decode_bytes:,} bytes per image", decode_limit=True)
    return img


def load_photo(source, image_size: int, name: str | None = None, max_pixels: int = MAX_PIXELS,
               max_decode_bytes: int | None = None) -> torch.Tensor:
    """A path, file object or bytes of any common image format as a uint8 CHW square (EXIF orientation
    applied, centre-cropped, resized). Raises PetalnetError naming ``name`` (or the path); ImageTooLarge
    when it is over ``max_pixels`` or decoding it takes over ``max_decode_bytes``."""
    name = name or str(source)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise PetalnetError(f"{name}: empty file")
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open_checked(source, image_size, name, max_pixels, max_decode_bytes) as img:
                img.load()
                small = small_square(img, image_size)
    except FileNotFoundError:
        raise PetalnetError(f"{name}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"{name}: image too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise PetalnetError(f"{name}: not a readable image (not a format Pillow knows)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise PetalnetError(f"{name}: not a readable image ({e})") from None
    return torch.from_numpy(np.asarray(small).copy()).permute(2, 0, 1).contiguous()
