"""`lenet predict`: the class, its name and the ten RBF penalties of each image file
(prepared the way the checkpoint's data set made its images: lenet.images) or of
entries of an IDX file."""

import json
import os
import sys

import numpy as np

from lenet.commands.common import (
    UserError,
    add_checkpoint_option,
    add_device_option,
    load_model,
    one_line,
)
from lenet.progress import note_if_slow


def add(sub):
    p = sub.add_parser("predict", help="the class of each PNG/JPEG file (or IDX entry)",
                       description="Predict the class (the digit, for MNIST) of each image "
                       "file. Any size, colour or grey, dark ink on light paper or light on "
                       "dark, transparent PNGs of either ink colour (as drawing apps save "
                       "them), palette and 16-bit PNGs, photos turned by their EXIF "
                       "orientation, a thin frame around the picture: each image is turned into "
                       "a 28x28 image the way the checkpoint's data set made its images (MNIST, "
                       "QMNIST: a 20-pixel box centred by centre of mass; Fashion-MNIST, "
                       "Kuzushiji-MNIST: filling the frame; EMNIST: a 26-pixel box; see "
                       "lenet/images.py), MNIST's way for a checkpoint that names none. Prints "
                       "the class, its name from the checkpoint's data set, and the ten RBF "
                       "penalties (smaller is better) per image.")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="PNG or JPEG files, one "
                   "digit (or item, character) each")
    add_checkpoint_option(p)
    p.add_argument("--idx", metavar="FILE", help="an IDX image file (e.g. MNIST's "
                   "t10k-images-idx3-ubyte.gz) to take images from, with --index")
    p.add_argument("--index", nargs="+", type=int, metavar="K", help="which images of "
                   "--idx (0-based)")
    add_device_option(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of {\"file\", "
                   "\"class\" (0..9), \"name\", \"penalties\"}; IDX entries also have "
                   "\"index\"; for digit data sets \"digit\" repeats the class")
    return p


def _idx_digits(path, indices):
    """uint8 (K,28,28) entries `indices` of the IDX image file `path` (upright: a file
    under an EMNIST name is transposed back)."""
    from lenet.data import MNISTError, read_idx
    from lenet.datasets import DATASETS
    try:
        images = read_idx(path, "images")
    except MNISTError as e:
        raise UserError(one_line(e)) from e
    name = os.path.basename(path).removesuffix(".gz")
    if any(f.name.removesuffix(".gz") == name for ds in DATASETS.values() if ds.transposed
           for f in ds.files.values()):
        images = images.transpose(0, 2, 1)
    bad = [k for k in indices if not 0 <= k < len(images)]
    if bad:
        raise UserError(f"--index {bad[0]} is out of range: {path} holds {len(images)} "
                        "images" + (f" (0..{len(images) - 1})" if len(images) else ""))
    return images[indices]


def run(args):
    from lenet.data import preprocess
    from lenet.datasets import DIGITS
    from lenet.images import LAYOUTS, MNIST_LAYOUT, ImageError, load_digits
    if not args.images and args.idx is None:
        raise UserError("give IMAGE files, or --idx FILE --index K")
    if (args.idx is None) != (args.index is None):
        raise UserError("--idx and --index go together")
    model = load_model(args)
    try:
        digits = load_digits(args.images, model.dataset)
    except ImageError as e:
        raise UserError(str(e)) from e
    if args.images and model.dataset not in LAYOUTS:  # after errors: those are one line
        which = "names no data set" if model.dataset is None else \
            f"names data set {model.dataset!r}, whose images lenet does not know how to make"
        print(f"note: the checkpoint {which}: each image is {MNIST_LAYOUT.what}",
              file=sys.stderr)
    names = [{"file": path} for path in args.images]
    if args.idx is not None:
        digits = np.concatenate([digits, _idx_digits(args.idx, args.index)])
        names += [{"file": args.idx, "index": k} for k in args.index]
    with note_if_slow():   # the first run after installing compiles the CPU code
        penalties = np.asarray(model.forward(preprocess(digits)))
    digits_only = tuple(model.classes) == DIGITS
    results = []
    for name, y in zip(names, penalties, strict=True):
        k = int(y.argmin())
        result = dict(name, **{"class": k, "name": model.classes[k]})
        if digits_only:
            result["digit"] = k
        results.append(dict(result, penalties=[float(v) for v in y]))
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    labels = [r["file"] + (f"[{r['index']}]" if "index" in r else "") for r in results]
    width = max(len(label) for label in labels)
    names_width = 0 if digits_only else max(len(c) for c in model.classes) + 1
    head = "digit" if digits_only else "class"
    print(f"{'image':<{width}}  {head}{'':<{names_width}}  penalties of classes 0..9 "
          "(smaller is better)")
    for label, r in zip(labels, results, strict=True):
        values = " ".join(f"{v:7.2f}" for v in r["penalties"])
        name = "" if digits_only else f" {r['name']:<{names_width - 1}}"
        print(f"{label:<{width}}  {r['class']:5d}{name}  {values}")
    return 0
