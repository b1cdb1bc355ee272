"""Digits from image files: any PNG or JPEG turned into an MNIST-style 28x28 digit.

MNIST was made (LeCun, Cortes, Burges) by scaling each NIST digit, with anti-aliasing,
to fit a 20x20 box keeping its aspect ratio, then placing it in a 28x28 field with its
centre of mass in the middle. `mnist_digit(path)` does the same to a photo, scan or
drawing of one digit: grey levels as a person sees the file (`read_grey`), ink measured
from the border's background (`ink`), cropped, scaled and centred (`center_digit`); an
MNIST digit saved as a PNG comes back almost unchanged (docs/digit-images.md).
`load_digits(paths)` gives uint8 (N,28,28) for `lenet.data.preprocess`. Every problem
with a file is an `ImageError` naming it; an image past Pillow's pixel limit against
decompression bombs is refused from its header, before it is decoded.

Tested by tests/test_images.py (each kind of file people make: transparency, palettes,
16-bit, EXIF rotation) and tests/test_cli.py (the `lenet predict` tests).
"""

import os
import warnings

import numpy as np

SIZE = 28            # side of an MNIST image
BOX = 20             # the longer side of the digit after scaling
CENTER = 14.0        # where the centre of mass goes (row and column, 0-based)
CROP_FRACTION = 0.05  # ink below this fraction of the strongest does not widen the crop
MIN_CONTRAST = 16    # strongest ink (0..255) below this: the image has no digit


class ImageError(ValueError):
    """An image file that cannot be read or holds no digit."""


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit grey PNGs open as these


def read_grey(path):
    """Grey levels float64 (H,W) in 0..255 of a PNG, JPEG or any image Pillow reads, as a
    person sees it: turned upright by its EXIF orientation (phone photos), 16-bit levels
    scaled to 0..255, transparency composited over the backdrop that shows the drawing
    (`backdrop`)."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    path = os.fspath(path)
    try:
        with warnings.catch_warnings():  # Pillow warns above its limit, raises above twice it
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(path)
            except (Image.DecompressionBombWarning, Image.DecompressionBombError):
                raise ImageError(f"{path}: too large: more than {Image.MAX_IMAGE_PIXELS:,} "
                                 "pixels (Pillow's limit against decompression bombs); "
                                 "scale it down first") from None
        with image:
            image.load()
            grey, alpha = grey_and_alpha(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read (PNG, JPEG, ...)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot read image ({e})") from e
    if grey.ndim != 2 or min(grey.shape) < 1:
        raise ImageError(f"{path}: unsupported image of shape {grey.shape}")
    if alpha is None:
        return grey
    return alpha * grey + (1.0 - alpha) * backdrop(grey, alpha)


def grey_and_alpha(image):
    """(grey float64 (H,W) in 0..255, opacity float64 (H,W) in 0..1 or None when the image
    has no transparency) of a loaded PIL image. Colour becomes ITU-R 601 luma (Pillow's
    "L"); a palette image's colours and transparency come from its palette; 16-bit grey
    is scaled by 255/65535 (Pillow's own conversions would clip it at 255)."""
    if image.mode in SIXTEEN_BIT:
        raw = np.asarray(image).astype(np.float64)
        key = image.info.get("transparency")  # a 16-bit PNG's one transparent level
        alpha = None if not isinstance(key, int) else (raw != key).astype(np.float64)
        return raw * (255.0 / 65535.0), alpha
    if image.mode == "F":
        return np.asarray(image, dtype=np.float64), None
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64) / 255.0
        grey = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.float64)
        return grey, (None if alpha.min() == 1.0 else alpha)
    return np.asarray(image.convert("L"), dtype=np.float64), None


def backdrop(grey, alpha):
    """The grey level (0 or 255) to show a partly transparent image on, from its grey
    levels and opacity (H,W). An image whose border is mostly opaque has its own
    background, and its transparent holes show white, as on a page. One whose border is
    transparent is a drawing on nothing (drawing apps, web canvases): it is shown on
    black if its ink is light (white ink) and on white if dark (black or coloured ink),
    the way its author saw it on screen. The ink's colour is that inside the strokes
    (`stroke_grey`)."""
    border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
    if np.median(border) >= 0.5 or alpha.sum() == 0:
        return 255.0
    return 0.0 if stroke_grey(grey, alpha) > 127.5 else 255.0


def stroke_grey(grey, alpha):
    """The mean grey level inside the strokes of a drawing on a transparent background:
    of the opaque pixels (alpha >= 0.5) whose four neighbours are opaque too. The edge
    pixels are left out: where only one colour is transparent (a palette's or a 16-bit
    PNG's), they are the ink blended with the paper it was drawn on. Strokes one pixel
    thin have no inside: then the mean over all pixels weighted by their opacity."""
    opaque = np.pad(alpha >= 0.5, 1)
    inside = opaque[1:-1, 1:-1] & opaque[:-2, 1:-1] & opaque[2:, 1:-1] \
        & opaque[1:-1, :-2] & opaque[1:-1, 2:]
    if inside.any():
        return float(grey[inside].mean())
    return float((alpha * grey).sum() / alpha.sum())


def ink(grey):
    """Ink intensity float64 (H,W) in 0..255 of grey levels (H,W), background 0: how far
    each pixel is from the median of the border pixels, towards the dark side on light
    paper and the light side on a dark screen, stretched so that the strongest ink is 255
    (no threshold). Zeros when the image has less than MIN_CONTRAST of ink."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    amount = background - grey if background > 127.5 else grey - background
    amount = np.clip(amount, 0.0, None)
    strongest = amount.max()
    if strongest < MIN_CONTRAST:
        return np.zeros_like(amount)
    return amount * (255.0 / strongest)


def center_digit(amount):
    """uint8 (28,28) MNIST-style digit of ink float (H,W) in 0..255 (not all zero): the
    bounding box of the ink above CROP_FRACTION of the strongest (ignoring JPEG noise and
    paper grain), its longer side scaled to BOX with Lanczos, pasted so that its centre of
    mass lands at CENTER by an integer shift (as in MNIST) that keeps all ink inside."""
    from PIL import Image
    strong = amount > CROP_FRACTION * amount.max()
    rows = np.flatnonzero(strong.any(axis=1))
    cols = np.flatnonzero(strong.any(axis=0))
    crop = amount[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_h, new_w) != (h, w):
        image = Image.fromarray(crop.astype(np.float32), mode="F")
        crop = np.asarray(image.resize((new_w, new_h), Image.Resampling.LANCZOS),
                          dtype=np.float64)
        crop = np.clip(crop, 0.0, 255.0)
    total = crop.sum()
    cy = (crop.sum(axis=1) * np.arange(new_h)).sum() / total
    cx = (crop.sum(axis=0) * np.arange(new_w)).sum() / total
    top = int(np.clip(round(CENTER - cy), 0, SIZE - new_h))
    left = int(np.clip(round(CENTER - cx), 0, SIZE - new_w))
    out = np.zeros((SIZE, SIZE), np.float64)
    out[top:top + new_h, left:left + new_w] = crop
    return np.rint(out).astype(np.uint8)


def mnist_digit(path):
    """uint8 (28,28) MNIST-style digit of the image file `path`; ImageError if none."""
    amount = ink(read_grey(path))
    if not amount.any():
        raise ImageError(f"{path}: no digit found (the image is blank: no pixel differs "
                         "enough from the background)")
    return center_digit(amount)


def load_digits(paths):
    """uint8 (N,28,28) of N image files, in order."""
    return np.stack([mnist_digit(p) for p in paths]) if paths else \
        np.zeros((0, SIZE, SIZE), np.uint8)
