"""Reading photos, label and instance maps with the checks users need (file names in every error).

PIL, not ``tf.io.decode_*``: palette PNG labels must be read as indices (TF expands palettes to
RGB) and 16-bit instance maps kept exactly.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from spade_tf.serving_client import PNG_MAGIC

# Our own size guard (max_image_pixels) runs first and names the file; PIL's generic one is off.
Image.MAX_IMAGE_PIXELS = None


class DataError(ValueError):
    """Bad input data; the message names the file(s) and the offending value."""


def png_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk (bytes 16-24), without decoding anything, or
    None when ``data`` does not start like a PNG. PIL's lazy open reads further chunks, and a
    truncated body fails there with a decoding error before the size could be told."""
    if len(data) < 24 or data[:8] != PNG_MAGIC or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def check_pixels(width: int, height: int, name: str, max_pixels: int) -> None:
    """The size guard: a ``DataError`` naming the image and its size above ``max_pixels``."""
    if width * height > max_pixels:
        raise DataError(f"{name}: image is {width}x{height} = {width * height:,} pixels, more "
                        f"than the limit data.max_image_pixels={max_pixels:,}; raise the limit "
                        f"if it is genuine")


def open_image(source, name: str, max_pixels: int) -> Image.Image:
    """An image file (a path, a file object or bytes), decoded after its size was checked
    against ``max_pixels`` from its header; every failure a ``DataError`` naming ``name``."""
    if isinstance(source, (bytes, bytearray)) and png_dimensions(source):
        check_pixels(*png_dimensions(source), name, max_pixels)
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{name}: cannot read the image: {e}") from None
    check_pixels(*img.size, name, max_pixels)  # from the header, before any pixel is decoded
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise DataError(f"{name}: corrupt or truncated image: {e}") from None
    return img


def read_photo(source, name: str | None = None, max_pixels: int = 40_000_000) -> Image.Image:
    """A photo as an RGB PIL image (grayscale, RGBA, CMYK and palette photos are converted)."""
    name = name or str(source)
    img = open_image(source, name, max_pixels)
    if img.mode == "RGBA" or (img.mode == "P" and "transparency" in img.info):
        # Composite on black rather than letting the alpha channel be dropped arbitrarily.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def read_index_map(source, name: str | None = None, max_pixels: int = 40_000_000) -> np.ndarray:
    """A label or instance map as int32 [H, W], the stored integer values kept exactly.

    Palette ('P') PNGs hold indices and are read as such, never through RGB; 16-bit ('I;16')
    and 32-bit ('I') PNGs keep their values (Cityscapes instance ids are above 255).
    """
    name = name or str(source)
    img = open_image(source, name, max_pixels)
    if img.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
        arr = np.array(img)
    elif img.mode in ("RGB", "RGBA", "LA"):
        arr = np.array(img)
        if arr.ndim == 3:
            if not all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, min(3, arr.shape[-1]))):
                raise DataError(f"{name}: label/instance maps must be single-channel ids, got a "
                                f"colour ({img.mode}) image; convert colours to ids first")
            arr = arr[..., 0]
    else:
        raise DataError(f"{name}: unsupported mode {img.mode!r} for a label/instance map")
    return arr.astype(np.int32)


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from None
