"""Image files as people make them (lenet/images.py): transparent PNGs with white, black
or coloured ink, grey with alpha, palettes with and without transparency, 16-bit grey,
EXIF-rotated JPEGs and pictures in a frame, each made with Pillow from MNIST test digits
and read as the same drawing in a plain grey PNG is; paper under a lighting gradient and
a digit cropped tight; `lenet predict` gives them its class (needs MNIST, LENET_DATA).
About 20 s in all."""

import json

import numpy as np
import pytest

from lenet import LeNet5
from lenet.train import train

# Each kind of file is made with Pillow from MNIST test digits, enlarged on a larger
# canvas as a drawing would be, and must give the 32x32 input that the same drawing as
# a plain 8-bit grey PNG gives (lenet/images.py).

DIGITS = (0, 1, 2, 3, 4, 8)    # MNIST test images 7, 2, 1, 0, 4, 5
CANVAS = (150, 130)            # (height, width) of the drawing, the digit off centre


@pytest.fixture(scope="module")
def drawings(mnist_dir):
    """Ink (0..1) of MNIST test digits DIGITS enlarged 4x onto a CANVAS, (K,150,130)."""
    from PIL import Image

    from lenet.data import load_mnist
    digits = load_mnist("test", mnist_dir)[0][list(DIGITS)]
    out = np.zeros((len(DIGITS),) + CANVAS)
    for k, d in enumerate(digits):
        big = np.asarray(Image.fromarray(d).resize((112, 112), Image.Resampling.BICUBIC))
        out[k, 20:132, 9:121] = big / 255.0
    return out


def prepared(path):
    """The network's input (1,1,32,32) for one image file."""
    from lenet.data import preprocess
    from lenet.images import mnist_digit
    return preprocess(mnist_digit(path))


def levels(x):
    return np.rint(np.clip(x, 0, 255)).astype(np.uint8)


def save(image, path, **options):
    image.save(path, **options)
    return path


def plain(ink, folder):
    """The reference: the drawing as an 8-bit grey PNG, black ink on white."""
    from PIL import Image
    return save(Image.fromarray(levels(255 * (1 - ink))), folder / "plain.png")


def rgba(ink, colour, folder, name, background=(0, 0, 0)):
    """Ink of one colour, its amount in the alpha channel, on a transparent canvas whose
    invisible pixels hold `background` (as drawing apps and canvases save them)."""
    from PIL import Image
    pixels = np.empty(ink.shape + (4,), np.uint8)
    pixels[..., :3] = np.where(ink[..., None] > 0, colour, background)
    pixels[..., 3] = levels(255 * ink)
    return save(Image.fromarray(pixels), folder / f"{name}.png")


def make_files(ink, folder, seed):
    """name -> (path, how close to the plain PNG's input it must be: 0 = identical)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    grey = levels(255 * (1 - ink))
    files = {
        "white ink on transparent": (rgba(ink, (255, 255, 255), folder, "white"), 0),
        "black ink on transparent": (rgba(ink, (0, 0, 0), folder, "black",
                                          background=(255, 255, 255)), 0),
        # coloured ink: luma 0.299 R + 0.587 G + 0.114 B of (30, 60, 200) = 66, so the
        # stretched ink agrees to rounding
        "blue ink on transparent": (rgba(ink, (30, 60, 200), folder, "blue"), 1),
    }
    la = np.stack([np.full(ink.shape, 255, np.uint8), levels(255 * ink)], axis=-1)
    files["grey with alpha (LA), white ink"] = (save(Image.fromarray(la), folder / "la.png"),
                                                0)
    # a palette that is a random permutation of the greys: reading the indices as grey
    # levels gives noise
    order = rng.permutation(256)
    index = np.argsort(order)[grey].astype(np.uint8)     # palette[index] = grey
    p = Image.fromarray(index, mode="L").convert("P")
    p.putpalette(np.repeat(order, 3).astype(np.uint8).tobytes())
    files["palette (P)"] = (save(p, folder / "palette.png"), 0)
    # a palette of white ink whose entries carry the opacity (tRNS bytes), as pngquant saves
    alpha = levels(255 * ink)
    p = Image.fromarray(np.argsort(order)[alpha].astype(np.uint8), mode="L").convert("P")
    p.putpalette(bytes([255, 255, 255]) * 256)
    files["palette with alpha entries"] = (save(p, folder / "palette_alpha.png",
                                                transparency=bytes(order.astype(np.uint8))), 0)
    # two colours, index 0 transparent (its colour black, like the ink: only the
    # transparency tells them apart); the reference is the same hard-edged digit
    hard = ink > 0.5
    p = Image.fromarray(hard.astype(np.uint8), mode="L").convert("P")
    p.putpalette(bytes([0, 0, 0, 0, 0, 0]) + bytes(254 * 3))
    files["palette with a transparent index"] = (save(p, folder / "palette_key.png",
                                                      transparency=0), ("hard", 0))
    # 16-bit grey: each 8-bit level times 257 (0..65535; clipped at 255 it would be white)
    sixteen = grey.astype(np.uint16) * np.uint16(257)
    files["16-bit grey (I;16)"] = (save(Image.fromarray(sixteen), folder / "sixteen.png"), 0)
    # ... with its white declared transparent (tRNS): the anti-aliased edges stay opaque
    files["16-bit grey, white transparent"] = (save(Image.fromarray(sixteen), folder /
                                                    "sixteen_key.png", transparency=65535), 0)
    # a scan's or a screenshot's dark edge around the paper, thicker on some sides, its
    # inner line half grey; and a light frame around light ink on a dark screen
    framed = grey.copy()
    framed[:3], framed[-2:], framed[:, :5], framed[:, -4:] = 0, 0, 0, 0
    framed[3, 5:-4], framed[3:-2, 5] = 128, 128
    files["dark frame around dark ink"] = (save(Image.fromarray(framed),
                                                folder / "framed.png"), 0)
    framed = grey.copy()  # a frame 4 pixels wide with a grey ring all round inside it
    framed[:5], framed[-5:], framed[:, :5], framed[:, -5:] = 128, 128, 128, 128
    framed[:4], framed[-4:], framed[:, :4], framed[:, -4:] = 0, 0, 0, 0
    files["dark frame with a grey ring"] = (save(Image.fromarray(framed),
                                                 folder / "framed_ring.png"), 0)
    framed = 255 - grey
    framed[:3], framed[-3:], framed[:, :3], framed[:, -3:] = 255, 255, 255, 255
    files["light frame around light ink"] = (save(Image.fromarray(framed),
                                                  folder / "framed_light.png"), 0)
    return files


MODES = {"white ink on transparent": "RGBA", "black ink on transparent": "RGBA",
         "blue ink on transparent": "RGBA", "grey with alpha (LA), white ink": "LA",
         "palette (P)": "P", "palette with alpha entries": "P",
         "palette with a transparent index": "P", "16-bit grey (I;16)": "I;16",
         "16-bit grey, white transparent": "I;16", "dark frame around dark ink": "L",
         "dark frame with a grey ring": "L", "light frame around light ink": "L"}
PIXEL = 1.275 / 255  # one grey level in the network's input


@pytest.mark.parametrize("k", range(len(DIGITS)))
def test_each_kind_of_file_reads_as_the_plain_png(drawings, tmp_path, k):
    from PIL import Image
    ink = drawings[k]
    reference = prepared(plain(ink, tmp_path))
    hard_reference = prepared(save(Image.fromarray(np.where(ink > 0.5, 0, 255).astype(
        np.uint8)), tmp_path / "hard.png"))
    files = make_files(ink, tmp_path, seed=k)
    assert set(files) == set(MODES)
    for name, (path, tolerance) in files.items():
        with Image.open(path) as image:  # the file is the kind it claims to be
            assert image.mode == MODES[name], (name, image.mode)
            see_through = image.mode in ("RGBA", "LA") or "transparency" in image.info
            assert see_through == ("transparen" in name or "alpha" in name), name
        expected = reference
        if isinstance(tolerance, tuple):
            expected, tolerance = hard_reference, tolerance[1]
        worst = np.abs(prepared(path) - expected).max()
        assert worst <= tolerance * PIXEL + 1e-6, f"{name}: off by {worst / PIXEL:.1f} levels"


# the transposition that makes a picture upright for each EXIF orientation, by the EXIF
# specification (2.32, tag 0x0112); a camera stores the inverse transposition's picture
UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
           6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}
INVERSE = {"ROTATE_270": "ROTATE_90", "ROTATE_90": "ROTATE_270"}


def exif_jpeg(ink, orientation, path):
    """A JPEG photo of the drawing (dark ink on light paper) as a phone held sideways
    stores it: the pixels turned, and the EXIF orientation that turns them back."""
    from PIL import Image
    paper, pen = np.array([235, 230, 220.0]), np.array([20, 25, 60.0])
    upright = Image.fromarray(levels(paper + ink[..., None] * (pen - paper)))
    if orientation == 1:
        return save(upright, path, quality=95)
    method = UPRIGHT[orientation]
    stored = upright.transpose(getattr(Image.Transpose, INVERSE.get(method, method)))
    exif = stored.getexif()
    exif[0x0112] = orientation
    return save(stored, path, quality=95, exif=exif)


def correlation(a, b):
    return np.corrcoef(a.ravel(), b.ravel())[0, 1]


@pytest.mark.parametrize("orientation", [3, 6, 8, 2, 5, 7])
def test_exif_rotated_jpeg_reads_upright(drawings, tmp_path, orientation):
    from PIL import Image
    ink = drawings[1]
    reference = prepared(exif_jpeg(ink, 1, tmp_path / "upright.jpg"))
    path = exif_jpeg(ink, orientation, tmp_path / f"turned{orientation}.jpg")
    got = prepared(path)
    with Image.open(path) as image:  # what a reader that ignores EXIF would get
        sideways = tmp_path / "sideways.png"
        image.save(sideways)
    assert correlation(got, reference) > 0.99, orientation
    assert correlation(prepared(sideways), reference) < 0.9  # the test can tell
    # the same JPEG pixels turned: within a few grey levels (JPEG blocks turn with them)
    assert np.abs(got - reference).mean() < 2 * PIXEL


@pytest.fixture(scope="module")
def checkpoint(mnist_dir, tmp_path_factory):
    """A checkpoint of one lecun pass over 2,000 MNIST digits (about 17% test error)."""
    from lenet.data import load_mnist, preprocess
    images, labels = load_mnist("train", mnist_dir)
    model = LeNet5(device="cpu", seed=0, init="lush")
    x, y = preprocess(images[:2000]), labels[:2000].astype(np.int64)
    train(model, (x, y), (x[:10], y[:10]), recipe="lecun", epochs=1, progress=False,
          evaluate_train=False, out=lambda line: None)
    path = tmp_path_factory.mktemp("predict") / "m.npz"
    model.save(path)
    return path


def test_predict_gives_each_kind_the_plain_png_s_class(drawings, checkpoint, tmp_path,
                                                        capsys):
    from lenet.cli import main
    names, paths = [], []
    for k in range(len(DIGITS)):
        folder = tmp_path / str(k)
        folder.mkdir()
        files = {"plain": (plain(drawings[k], folder), 0),
                 **make_files(drawings[k], folder, seed=k)}
        files["EXIF orientation 6"] = (exif_jpeg(drawings[k], 6, folder / "turned.jpg"), 0)
        del files["palette with a transparent index"]  # a thresholded digit: another input
        names += [(k, name) for name in files]
        paths += [str(p) for p, _ in files.values()]
    assert main(["predict", "--checkpoint", str(checkpoint), "--device", "cpu", "--json",
                 *paths]) == 0
    classes = {key: r["class"] for key, r in zip(names, json.loads(capsys.readouterr().out),
                                                  strict=True)}
    for (k, name), c in classes.items():
        assert c == classes[k, "plain"], (DIGITS[k], name, c, classes[k, "plain"])


def test_backdrop_of_thin_strokes_holes_and_nothing(tmp_path):
    from PIL import Image

    from lenet.images import ImageError, backdrop, mnist_digit
    alpha = np.zeros((30, 20))
    alpha[5:25, 10] = 1.0                      # a stroke one pixel thin: no inside
    alpha[24, 4:16] = 1.0
    for ink, expected in ((255.0, 0.0), (200.0, 0.0), (40.0, 255.0), (0.0, 255.0)):
        assert backdrop(np.full(alpha.shape, ink), alpha) == expected, ink
    # an opaque page with a transparent hole shows white through the hole
    page = 1.0 - alpha
    assert backdrop(np.zeros(alpha.shape), page) == 255.0
    # a thin white line on a transparent canvas is a digit; nothing drawn is blank
    pixels = np.zeros(alpha.shape + (4,), np.uint8)
    pixels[..., :3], pixels[..., 3] = 255, (255 * alpha).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "thin.png")
    assert mnist_digit(tmp_path / "thin.png").max() == 255
    pixels[..., 3] = 0
    Image.fromarray(pixels).save(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="no digit found"):
        mnist_digit(tmp_path / "empty.png")


@pytest.mark.parametrize("k", range(len(DIGITS)))
def test_lighting_gradients_and_tight_crops_read_as_the_plain_png(drawings, tmp_path, k):
    # paper lit unevenly (35 grey levels across or down, the ink darkened with it), and
    # the drawing cropped to its ink so that strokes touch every edge
    from PIL import Image
    ink = drawings[k]
    grey = 255 * (1 - ink)
    reference = prepared(plain(ink, tmp_path))
    across = np.linspace(220, 255, grey.shape[1]) / 255
    down = np.linspace(255, 220, grey.shape[0])[:, None] / 255
    for name, lit in (("across", grey * across), ("down", grey * down)):
        got = prepared(save(Image.fromarray(levels(lit)), tmp_path / f"{name}.png"))
        # where the paper's level changes, the digit's edges do: a few levels on average
        # (reading the paper as the border's median put ink in the darker half: 10 to
        # 36 levels)
        assert np.abs(got - reference).mean() <= 8 * PIXEL, name
    rows = np.flatnonzero((ink > 0.05).any(axis=1))
    cols = np.flatnonzero((ink > 0.05).any(axis=0))
    tight = grey[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    got = prepared(save(Image.fromarray(levels(tight)), tmp_path / "tight.png"))
    np.testing.assert_array_equal(got, reference)


def test_unframe_keeps_strokes_along_the_edges():
    # a bar along the top edge (a tightly cropped 7) and strokes down both sides: a frame
    # needs all four sides; a full ring goes, and so do the extra lines of one side
    from lenet.images import unframe
    rng = np.random.default_rng(3)
    amount = rng.uniform(0, 40, (37, 29))
    amount[:4] = 255
    amount[:, :2] = amount[:, -3:] = 200
    np.testing.assert_array_equal(unframe(amount), amount)
    framed = amount.copy()
    framed[-2:] = 255                     # now all four sides: two rings and two more
    expected = framed.copy()               # lines at the top, one more on the right
    expected[:4], expected[-2:], expected[:, :2], expected[:, -3:] = 0, 0, 0, 0
    np.testing.assert_array_equal(unframe(framed), expected)


def test_a_bold_digit_cropped_tight_keeps_its_colours():
    # a thick 0 (a ring of ink 20 pixels wide) cropped to its edges: its outermost
    # pixels are mostly paper, the rings of pixels further in mostly ink; the paper must
    # stay the paper in either polarity (it is not a frame)
    from lenet.images import ink
    yy, xx = np.mgrid[0:100, 0:100] - 49.5
    radius = np.hypot(yy, xx)
    stroke = (radius <= 50) & (radius >= 30)
    for paper, pen in ((255.0, 0.0), (0.0, 255.0), (230.0, 40.0)):
        amount = ink(np.where(stroke, pen, paper))
        assert amount[stroke].min() == 255 and amount[~stroke].max() == 0, (paper, pen)


def test_one_path_a_pil_image_and_what_is_neither(drawings, tmp_path):
    # load_digits of one path is that file (not its name's characters); a PIL image in
    # memory reads as its file does; anything else is a one-line TypeError
    from PIL import Image

    from lenet.images import load_digits, prepare_image
    path = plain(drawings[0], tmp_path)
    want = prepare_image(path)
    for given in (path, str(path)):
        np.testing.assert_array_equal(load_digits(given), want[None])
    with Image.open(path) as image:
        np.testing.assert_array_equal(prepare_image(image), want)
    with pytest.raises(TypeError, match="an image file's path or a PIL image, not ndarray"):
        prepare_image(np.zeros((28, 28)))
    from lenet.images import ImageError
    with pytest.raises(ImageError, match="^the image: no digit found"):
        prepare_image(Image.new("L", (28, 28), 255))
