"""`lenet show MODE`: one PNG picture, drawn by lenet.show: a digit's feature maps, the
RBF prototypes, training curves from a log, a checkpoint's test errors, or the paper's
random distortions. A file of another program under the picture's name is replaced only
with --force."""

import os
import sys

import numpy as np

from lenet.commands.common import (
    UserError,
    add_checkpoint_option,
    add_data_options,
    add_device_option,
    load_data,
    load_model,
    model_and_split,
)


def add(sub):
    p = sub.add_parser("show", help="draw PNG pictures: feature maps, RBF prototypes, "
                       "training curves, test errors",
                       description="Draw one picture and write it as a PNG into --out "
                       "(fixed size, see lenet/show.py); prints its path.")
    modes = p.add_subparsers(dest="mode", metavar="MODE", required=True)

    def mode(name, help, description):
        m = modes.add_parser(name, help=help, description=description)
        m.add_argument("--out", default=".", metavar="DIR", help="directory for the PNG "
                       f"(created if needed; default: .); the file is DIR/{name}.png, which "
                       "replaces a picture lenet show drew there, any other file only "
                       "with --force")
        m.add_argument("--force", action="store_true", help=f"replace DIR/{name}.png "
                       "whatever it is")
        return m

    m = mode("maps", "the output of every layer for one digit",
             "The activations of every layer for one digit: input, C1, S2, C3, S4, C5 "
             "(120 as a 20x6 grid), F6 (84 as the 7x12 grid the RBF compares with its "
             "bitmaps, beside the winner's bitmap) and the ten RBF penalties, the winner "
             "highlighted. 1400x700 pixels.")
    add_checkpoint_option(m)
    which = m.add_mutually_exclusive_group(required=True)
    which.add_argument("--image", metavar="FILE", help="a PNG or JPEG of one digit")
    which.add_argument("--index", type=int, metavar="K", help="test image K (0-based) of "
                       "the checkpoint's data set, or of the one given")
    add_data_options(m)
    add_device_option(m)

    mode("prototypes", "the ten 7x12 RBF bitmaps (no checkpoint needed)",
         "The ten fixed 7x12 bitmaps that the output layer's RBF units compare F6 "
         "with (+1 ink, -1 background). 1000x250 pixels.")

    m = mode("curves", "training curves from the log of `lenet train`",
             "Training, test and validation error per pass (those the log holds; log "
             "scale, a 0 as a triangle on the bottom edge) and the training loss, from "
             "the JSON-lines log that `lenet train` writes beside its checkpoint. "
             "1000x400 pixels.")
    m.add_argument("--log", required=True, metavar="FILE", help="a .log.jsonl written by "
                   "`lenet train`")

    m = mode("errors", "confusion matrix and the worst mistakes on the test set",
             "The 10x10 confusion matrix of a checkpoint on the test set of its data set "
             "(or of the one given) and the misclassified images it was most sure of "
             "(largest margin between the smallest and second smallest penalty). "
             "1400x650 pixels.")
    add_checkpoint_option(m)
    add_data_options(m)
    add_device_option(m)
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.add_argument("--count", type=int, default=24, help="how many mistakes to draw, "
                   "at most 24 (default 24)")

    m = mode("distortions", "random affine distortions of training digits (train --distort)",
             "Ten training images, one of each class (a class the data lacks leaves "
             "its row empty), as they are and under "
             f"{DISTORTION_COLUMNS} random affine distortions drawn as `lenet train "
             "--distort` draws them (kernels/distort.py: translation, scaling, squeezing, "
             "horizontal shearing; some rows are left undistorted, as in training). "
             "1300x1150 pixels.")
    add_data_options(m, default="mnist")
    m.add_argument("--seed", type=int, default=0, help="seed of the distortions (default 0)")
    return p


def _out_file(args, name):
    """DIR/name.png, DIR created if needed; a UserError if DIR or the file cannot be, or
    if a file there that lenet show did not draw would be replaced without --force."""
    from lenet.show import drew
    directory = args.out
    if not directory:
        raise UserError("--out must name a directory, not an empty string")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UserError(f"--out {directory}: not a directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {directory}: cannot create it ({e.strerror})") from e
    path = os.path.join(directory, name + ".png")
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory; refusing to write the picture over it")
    if os.path.lexists(path) and not args.force and not drew(path):
        raise UserError(f"{path} exists and is not a picture drawn by lenet show; refusing "
                        "to replace it (give --force to replace it, or another --out)")
    return path


def _show_maps(args, show):
    from lenet.data import preprocess
    from lenet.images import ImageError, prepare_image
    if args.image is not None:
        model = load_model(args)
        try:
            digit = prepare_image(args.image, model.dataset)
        except ImageError as e:
            raise UserError(str(e)) from e
        caption = os.path.basename(args.image)
    else:
        model, split = model_and_split(args, "test")
        n = len(split.labels)
        if not 0 <= args.index < n:
            raise UserError(f"--index {args.index} is out of range: the {split.title} test "
                            f"set holds {n} images" + (f" (0..{n - 1})" if n else ""))
        digit = split.images[args.index]
        label = int(split.labels[args.index])
        named = split.classes[label] if split.classes[label] != str(label) else ""
        caption = (f"{split.title} test {split.dataset.noun if split.dataset else 'image'} "
                   f"#{args.index} (label {label}{' ' + named if named else ''})")
    activations = model.forward_all(preprocess(digit))
    return show.draw_maps(_out_file(args, "maps"),
                          [model.ops.to_host(a) for a in activations], caption,
                          classes=model.classes)


def _show_errors(args, show):
    from lenet.data import preprocess
    if not 1 <= args.count <= show.MAX_ERRORS:
        raise UserError(f"--count must lie in 1..{show.MAX_ERRORS}, not {args.count}")
    from lenet.progress import Progress
    from lenet.train import penalties
    model, split = model_and_split(args, "test")
    bar = Progress(len(split.labels), "test set", enabled=not args.no_progress)
    y = penalties(model, preprocess(split.images), bar)
    bar.close(keep=False)
    noun = split.dataset.noun if split.dataset else "image"
    return show.draw_errors(_out_file(args, "errors"), split.images, split.labels, y,
                            count=args.count, caption=os.path.basename(args.checkpoint),
                            classes=split.classes, data=f"{split.title} test {noun}s")


DISTORTION_COLUMNS = 11


def _show_distortions(args, show):
    from lenet.data import preprocess
    from lenet.kernels.distort import distort_cpu, draw_distortions
    if args.seed < 0:
        raise UserError(f"--seed must be 0 or more, not {args.seed}")
    split = load_data("train", args)
    present = [d for d in range(10) if np.any(split.labels == d)]
    missing = [d for d in range(10) if d not in present]
    if missing:
        print(f"note: the training images hold no {', '.join(split.classes[d] for d in missing)}"
              "; their rows are left empty", file=sys.stderr)
    first = [int(np.flatnonzero(split.labels == d)[0]) for d in present]
    x = preprocess(split.images[first])
    # the distortions of all ten rows are drawn, those of the missing classes unused: a
    # class's row is the same whichever other classes the data lacks
    params = draw_distortions(np.random.default_rng(args.seed), 10 * DISTORTION_COLUMNS)
    params = params.reshape(10, DISTORTION_COLUMNS, -1)[present].reshape(-1, params.shape[-1])
    shown = np.repeat(x, DISTORTION_COLUMNS, axis=0)
    out = np.empty_like(shown)
    distort_cpu(out, shown, params)
    return show.draw_distortions(_out_file(args, "distortions"), x,
                                 out.reshape(len(present), DISTORTION_COLUMNS, 32, 32),
                                 caption=f"seed {args.seed}", classes=split.classes,
                                 missing=missing)


def _show_curves(args, show):
    try:
        records = show.read_log(args.log)
    except show.LogError as e:
        raise UserError(str(e)) from e
    return show.draw_curves(_out_file(args, "curves"), records,
                            caption=os.path.basename(args.log))


def _show_prototypes(args, show):
    return show.draw_prototypes(_out_file(args, "prototypes"))


def run(args):
    from lenet import show
    draw = {"maps": _show_maps, "errors": _show_errors, "curves": _show_curves,
            "distortions": _show_distortions, "prototypes": _show_prototypes}[args.mode]
    print(draw(args, show))
    return 0
