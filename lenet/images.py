"""Images from image files: any PNG or JPEG turned into a 28x28 image made the way the
images of a data set were made.

MNIST was made (LeCun, Cortes, Burges) by scaling each NIST digit, with anti-aliasing,
to fit a 20x20 box keeping its aspect ratio, then placing it in a 28x28 field with its
centre of mass in the middle; QMNIST rebuilt that process. Fashion-MNIST's items and
Kuzushiji-MNIST's characters fill the frame instead, centred by their box, and EMNIST's
characters nearly do (`Layout`, `LAYOUTS`). `prepare_image(path, dataset)` does the
same to a photo, scan or drawing: grey levels as a person sees the file (`read_grey`),
ink measured from the paper's level (`paper`: a thin frame of another colour and
lighting gradients do not fool it) with a frame around the picture removed (`ink`,
`unframe`), cropped, scaled and placed (`center_digit`); an MNIST digit or a
Fashion-MNIST item saved as a PNG comes back almost unchanged (docs/digit-images.md,
tests/test_predict.py). `mnist_digit(path)` is MNIST's way; `load_digits(paths,
dataset)` gives uint8 (N,28,28) for `lenet.data.preprocess`. Every problem with a file
is an `ImageError` naming it; an image past Pillow's pixel limit against decompression
bombs is refused from its header, before it is decoded.

Tested by tests/test_images.py (each kind of file people make: transparency, palettes,
16-bit, EXIF rotation, frames, lighting gradients), tests/test_predict.py (each data
set's own way, against real Fashion-MNIST images) and tests/test_cli.py (the `lenet
predict` tests).
"""

import os
import warnings
from dataclasses import dataclass

import numpy as np

SIZE = 28            # side of an MNIST image
BOX = 20             # the longer side of the digit after scaling
CENTER = 14.0        # where the centre of mass goes (row and column, 0-based)
CROP_FRACTION = 0.05  # ink below this fraction of the strongest does not widen the crop
MIN_CONTRAST = 16    # strongest ink (0..255) below this: the image has no digit
BAND = 1 / 8         # how deep a frame may be, of the shorter side
FLAT = 32            # a flat ring: FLAT_FILL of its pixels within this of its median
FLAT_FILL = 0.9
FRAME_STEP = 64      # a frame: flat rings this far from a flat ring inside them
PAPER_BINS = 0.1     # bins of 4 levels next to the commonest, this full, are paper too
PAPER_EDGE = 2       # the paper's level: median -+ this many median distances from it
PAPER_SIDE = 1000    # larger images: the paper is seen in a sample of about this side
FRAME_INK = 0.25     # a frame's pixels: above this fraction of the strongest ink ...
FRAME_FILL = 0.9     # ... in at least this fraction of each line


class ImageError(ValueError):
    """An image file that cannot be read or holds no digit."""


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit grey PNGs open as these


def read_grey(path):
    """Grey levels float64 (H,W) in 0..255 of a PNG, JPEG or any image Pillow reads (a
    file's path, or a PIL image), as a person sees it: turned upright by its EXIF
    orientation (phone photos), 16-bit levels scaled to 0..255, transparency composited
    over the backdrop that shows the drawing (`backdrop`)."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    given = isinstance(path, Image.Image)
    if not given and not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"an image file's path or a PIL image, not {type(path).__name__} "
                        "(an array of 28x28 digits goes to lenet.data.preprocess as it is)")
    image, path = (path, "the image") if given else (None, os.fspath(path))
    try:
        with warnings.catch_warnings():  # Pillow warns above its limit, raises above twice it
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = image.copy() if given else Image.open(path)
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


def paper(grey):
    """The background grey level of grey levels (H,W): the level (`level`) of the
    outermost rings of pixels that are flat (`flat`) and alike, unless a flat ring of
    a level more than FRAME_STEP away lies inside them, at most BAND of the shorter side
    further in, whose level more of the picture has: then the outer rings are a frame of
    another colour round the paper (a scan's or a screenshot's dark edge) and that ring
    is the paper (a bold 0 cropped tight is a ring of ink too, but less of the picture
    than its paper). Strokes that reach the edge, an object that fills the frame and
    lighting gradients of a few dozen levels leave the outermost ring the paper's."""
    step = -(-min(grey.shape) // PAPER_SIDE)  # every step-th pixel of a large image
    grey = grey[::step, ::step]
    depth = max(1, int(np.ceil(min(grey.shape) * BAND)))
    first = float(np.median(ring(grey, 0)))
    rings = 0
    while rings < depth and flat(ring(grey, rings), first):
        rings += 1
    for j in range(rings, rings + depth if rings else 0):
        pixels = ring(grey, j)
        if flat(pixels) and abs(float(np.median(pixels)) - first) > FRAME_STEP:
            inside = float(np.median(pixels))  # the paper, if more of the picture is it
            if share(grey, inside) > share(grey, first):
                return level(pixels)
    return level(np.concatenate([ring(grey, j) for j in range(max(1, rings))]))


def share(grey, middle):
    """The fraction of grey's pixels within FLAT of the level `middle`."""
    return float(np.mean(np.abs(grey - middle) <= FLAT))


def flat(pixels, near=None):
    """Whether FLAT_FILL of pixels (1-D, not empty) lie within FLAT of their median, and
    that median within FLAT of `near` (when given)."""
    if pixels.size == 0:
        return False
    middle = float(np.median(pixels))
    if near is not None and abs(middle - near) > FLAT:
        return False
    return bool(np.mean(np.abs(pixels - middle) <= FLAT) >= FLAT_FILL)


def ring(grey, j):
    """The pixels of grey (H,W) j pixels in from the edge (the outermost: j = 0), 1-D."""
    h, w = grey.shape
    if 2 * j >= min(h, w):
        return grey[:0, 0]
    inner = grey[j:h - j, j:w - j]
    if min(inner.shape) <= 2:
        return inner.ravel()
    return np.concatenate([inner[0], inner[-1], inner[1:-1, 0], inner[1:-1, -1]])


def level(pixels):
    """The paper's grey level among pixels (1-D): the commonest grey (in bins of 4
    levels) and the bins next to it, on either side, that hold at least PAPER_BINS of as
    many pixels; their median moved towards the ink's side by PAPER_EDGE times their
    median distance from it, at most to the last of them: flat paper's own level, even
    with faint ink on it, and the ink-side end of a lighting gradient (evenly spread, its
    median distance is a quarter of its range), so that none of the gradient reads as
    ink."""
    bins = np.clip(pixels // 4, 0, 63).astype(np.int64)
    counts = np.bincount(bins, minlength=64)
    low = high = int(counts.argmax())
    enough = PAPER_BINS * counts[low]
    while low > 0 and counts[low - 1] >= enough:
        low -= 1
    while high < 63 and counts[high + 1] >= enough:
        high += 1
    near = pixels[(bins >= low) & (bins <= high)]
    middle = float(np.median(near))
    spread = PAPER_EDGE * float(np.median(np.abs(near - middle)))
    if middle > 127.5:
        return max(middle - spread, float(near.min()))
    return min(middle + spread, float(near.max()))


def unframe(amount):
    """Ink float (H,W) with a frame around the picture set to zero: rings of the border
    (one pixel each, at most BAND of the shorter side) whose four sides are each almost
    all ink (FRAME_FILL of their pixels above FRAME_INK of the strongest), then on each
    side the lines that still are. A digit never fills all four sides, so a tightly
    cropped one keeps its strokes; a frame on one side only is left (it cannot be told
    from a stroke along the edge)."""
    h, w = amount.shape
    depth = max(1, int(np.ceil(min(h, w) * BAND)))
    solid = FRAME_INK * amount.max()

    def full(line):
        return line.size > 0 and np.mean(line > solid) >= FRAME_FILL

    top = bottom = left = right = 0
    while max(top, bottom, left, right) < depth and top + bottom + 2 < h \
            and left + right + 2 < w:
        inner = amount[top:h - bottom, left:w - right]
        if not all(full(line) for line in (inner[0], inner[-1], inner[:, 0], inner[:, -1])):
            break
        top, bottom, left, right = top + 1, bottom + 1, left + 1, right + 1
    if top:
        for _ in range(depth - top):
            inner = amount[top:h - bottom, left:w - right]
            moved = False
            if top + bottom + 2 < h and full(inner[0]):
                top, moved = top + 1, True
            if top + bottom + 2 < h and full(inner[-1]):
                bottom, moved = bottom + 1, True
            if left + right + 2 < w and full(inner[:, 0]):
                left, moved = left + 1, True
            if left + right + 2 < w and full(inner[:, -1]):
                right, moved = right + 1, True
            if not moved:
                break
    if top or bottom or left or right:
        amount = amount.copy()
        amount[:top], amount[h - bottom:], amount[:, :left], amount[:, w - right:] = 0, 0, 0, 0
    return amount


def ink(grey):
    """Ink intensity float64 (H,W) in 0..255 of grey levels (H,W), background 0: how far
    each pixel is from the paper's grey level (`paper`), towards the dark side on light
    paper and the light side on a dark screen, a frame around the picture removed
    (`unframe`), stretched so that the strongest ink is 255 (no threshold). Zeros when
    the image has less than MIN_CONTRAST of ink."""
    background = paper(grey)
    amount = np.subtract(background, grey) if background > 127.5 else grey - background
    amount = unframe(np.clip(amount, 0.0, None, out=amount))
    strongest = amount.max()
    if strongest < MIN_CONTRAST:
        return np.zeros_like(amount)
    amount *= 255.0 / strongest
    return amount


@dataclass(frozen=True)
class Layout:
    """How a data set placed its object in the 28x28 field: the object's bounding box
    scaled (keeping its aspect ratio) so that its longer side is `box` pixels, then its
    centre of mass (`by_mass`) or the middle of its box put at the field's centre."""
    box: int
    by_mass: bool
    what: str          # in words, for notes


# MNIST (LeCun, Cortes, Burges): a 20x20 box, centre of mass at the centre. QMNIST
# (Yadav, Bottou 2019) rebuilt MNIST's own processing, so its digits are made the same.
MNIST_LAYOUT = Layout(BOX, True, "scaled into a 20-pixel box and centred by centre of "
                      "mass, as MNIST's digits were")
# Fashion-MNIST (its README, steps 2-7): edges within 5% of the corners' colour trimmed
# (here: ink below CROP_FRACTION, measured from the paper, which for its items is the
# corners' colour), the longer side resized to 28, sharpened (not done here: a file at
# 28 pixels would be sharpened twice), the shorter side extended to 28 with the image in
# the middle, negated (ink). Kuzushiji-MNIST's characters are taken to fill the frame
# the same way: no step-by-step recipe is published, and its files were not available
# here to measure; its published samples show characters touching the edges.
FILLED = Layout(SIZE, False, "scaled to fill the 28x28 frame and centred by its box")
# EMNIST (Cohen et al. 2017, Fig. 1): the character's region, blurred, centred in a
# square with a 2-pixel border at NIST's 128-pixel scale, then resized to 28x28: about
# 26 pixels for a character 60 pixels tall (not measured: EMNIST's files were not
# available here).
EMNIST_LAYOUT = Layout(26, False, "scaled to 26 pixels and centred by its box, as "
                       "EMNIST's characters were")
LAYOUTS = {"mnist": MNIST_LAYOUT, "qmnist": MNIST_LAYOUT, "emnist-digits": EMNIST_LAYOUT,
           "fashion-mnist": FILLED, "kmnist": FILLED}


def layout(dataset):
    """The Layout of the data set named `dataset` (lenet/datasets.py's names); MNIST's
    for None or a name not in LAYOUTS (the caller may say so)."""
    return LAYOUTS.get(dataset, MNIST_LAYOUT)


def center_digit(amount, place=MNIST_LAYOUT):
    """uint8 (28,28) image of ink float (H,W) in 0..255 (not all zero) placed as `place`
    says (default MNIST's): the bounding box of the ink above CROP_FRACTION of the
    strongest (ignoring JPEG noise and paper grain), its longer side scaled to place.box
    with Lanczos, pasted so that its centre of mass lands at CENTER by an integer shift
    (as in MNIST) that keeps all ink inside, or with its box in the middle (an odd
    margin's extra pixel above and to the left, as in Fashion-MNIST)."""
    from PIL import Image
    strong = amount > CROP_FRACTION * amount.max()
    rows = np.flatnonzero(strong.any(axis=1))
    cols = np.flatnonzero(strong.any(axis=0))
    crop = amount[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    scale = place.box / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_h, new_w) != (h, w):
        image = Image.fromarray(crop.astype(np.float32), mode="F")
        crop = np.asarray(image.resize((new_w, new_h), Image.Resampling.LANCZOS),
                          dtype=np.float64)
        crop = np.clip(crop, 0.0, 255.0)
    if place.by_mass:
        total = crop.sum()
        cy = (crop.sum(axis=1) * np.arange(new_h)).sum() / total
        cx = (crop.sum(axis=0) * np.arange(new_w)).sum() / total
        top = int(np.clip(round(CENTER - cy), 0, SIZE - new_h))
        left = int(np.clip(round(CENTER - cx), 0, SIZE - new_w))
    else:
        top, left = (SIZE - new_h + 1) // 2, (SIZE - new_w + 1) // 2
    out = np.zeros((SIZE, SIZE), np.float64)
    out[top:top + new_h, left:left + new_w] = crop
    return np.rint(out).astype(np.uint8)


def prepare_image(path, dataset="mnist"):
    """uint8 (28,28) image of the image file `path` (or a PIL image) made the way the
    images of the data set named `dataset` were (`layout`; MNIST's way for None);
    ImageError if none."""
    amount = ink(read_grey(path))
    if not amount.any():
        name = path if isinstance(path, (str, bytes, os.PathLike)) else "the image"
        raise ImageError(f"{name}: no digit found (the image is blank: no pixel differs "
                         "enough from the background)")
    return center_digit(amount, layout(dataset))


def mnist_digit(path):
    """uint8 (28,28) MNIST-style digit of the image file `path`; ImageError if none."""
    return prepare_image(path, "mnist")


def load_digits(paths, dataset="mnist"):
    """uint8 (N,28,28) of N image files, in order, made as `dataset`'s images were."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]     # one file, not its name's characters
    return np.stack([prepare_image(p, dataset) for p in paths]) if paths else \
        np.zeros((0, SIZE, SIZE), np.uint8)
