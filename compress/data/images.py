"""Bounded decoding of a user's image file: a header that declares more than MAX_PIXELS is refused in one
line before any pixel is decoded, and an image larger than WORK_PIXELS is reduced (a JPEG while it is
decoded, at 1/2, 1/4 or 1/8 scale; any other format right after) before it becomes RGB, so the float
copies made from it stay small. Memory per image is bounded by about 4 bytes x MAX_PIXELS."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from kdforge.compress.errors import UserError

MAX_PIXELS = 89_478_485  # Pillow's default MAX_IMAGE_PIXELS (a 9459 x 9459 image); ~360 MB decoded
WORK_PIXELS = 2048 * 2048  # larger images are reduced to about this before conversion
REDUCIBLE = ("L", "LA", "RGB", "RGBA", "I", "F")  # modes Image.reduce accepts


def open_rgb(path: str | Path, at_least: tuple[int, int] = (1, 1)) -> Any:
    """The image file `path` as an RGB PIL image, reduced to about WORK_PIXELS when larger (never below
    `at_least` = (width, height)); a UserError, one line, for an unreadable file or one too large."""
    from PIL import Image, UnidentifiedImageError

    name = repr(str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS decides, below
            image = Image.open(path)
        with image:
            if image.format == "JPEG" and image.width * image.height > WORK_PIXELS:
                scale = math.sqrt(WORK_PIXELS / (image.width * image.height))
                image.draft(
                    None,
                    (max(at_least[0], int(image.width * scale)), max(at_least[1], int(image.height * scale))),
                )
            if image.width * image.height > MAX_PIXELS:
                raise UserError(_too_large(name, f"is {image.width} x {image.height} pixels"))
            image.load()
            factor = _factor(image.size, at_least)
            if factor > 1:
                reducible = image if image.mode in REDUCIBLE else image.convert("RGB")
                image = reducible.reduce(factor)
            return image.convert("RGB")
    except Image.DecompressionBombError:
        raise UserError(_too_large(name, "declares a decompression bomb's size")) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        raise UserError(f"{name} is not a readable image file") from None


def _too_large(name: str, what: str) -> str:
    return f"image {name} {what}, over the {MAX_PIXELS:,}-pixel limit; downscale it first"


def _factor(size: tuple[int, int], at_least: tuple[int, int]) -> int:
    """The integer reduction that brings `size` to about WORK_PIXELS, keeping it at least `at_least`."""
    width, height = size
    if width * height <= WORK_PIXELS:
        return 1
    factor = math.ceil(math.sqrt(width * height / WORK_PIXELS))
    return max(1, min(factor, width // max(1, at_least[0]), height // max(1, at_least[1])))


def load_rgb(path: str) -> Any:
    """`open_rgb` as a torchvision dataset loader (a top-level function, so DataLoader workers pickle it)."""
    return open_rgb(path)
