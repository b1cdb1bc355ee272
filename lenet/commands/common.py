"""What several `lenet` commands share: UserError (a user's mistake, printed as one line
with exit status 2), the data, device and checkpoint options, loading a split and a model
(from a checkpoint or the shipped weights), and the first N images of a split."""

import os
import sys


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit 2."""


def add_device_option(p):
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="auto",
                   help="where to run: the compiled CPU code, the CUDA kernels, or the GPU "
                   "when one is present (default: auto)")


def add_data_options(p, default="mnist, or the checkpoint's data set"):
    from lenet.datasets import DATASETS
    p.add_argument("--dataset", choices=list(DATASETS), metavar="NAME",
                   help=f"a data set by name ({', '.join(DATASETS)}): its official files, "
                   "checked by SHA-256, from --data DIR or its default directory "
                   "(~/.cache/lenet/NAME; for mnist $LENET_DATA if set; for fashion-mnist "
                   "also Debian's /usr/share/datasets/fashion-mnist); missing files are "
                   f"downloaded when the internet can be reached. Default: {default}")
    p.add_argument("--data", metavar="DIR",
                   help="the data set's directory, which must exist (missing files of a "
                   "named data set are downloaded into it); without --dataset, any directory of "
                   "MNIST-format IDX files under MNIST's names (train-images-idx3-ubyte, "
                   "train-labels-idx1-ubyte, t10k-..., raw or .gz), read as they are: "
                   "their structure is checked, no checksum, nothing downloaded")


def load_data(split, args, default="mnist"):
    """One split as a lenet.data.Split (uint8 images, labels, data set), or a UserError
    (files of no images too). --dataset names the data set; --data alone is a plain
    directory; neither: `default`."""
    from lenet.data import MNISTError, read_split
    from lenet.datasets import DATASETS
    default = default if default in DATASETS else "mnist"  # a checkpoint's may be unknown
    name = args.dataset or (None if args.data is not None else default)
    if args.data is not None and not os.path.isdir(args.data):
        # a mistyped --data must not become a new directory and a download
        raise UserError(f"no such directory: {args.data} (give the directory that holds the "
                        "data set's files, or leave --data out to use its default directory)")
    try:
        data = read_split(split, name, args.data)
    except MNISTError as e:
        raise UserError(one_line(e)) from e
    if len(data.labels) == 0:
        raise UserError(f"{data.directory}: the {split} files hold no images")
    return data


def mtime(path):
    """path's modification time in ns, None where nothing is (a file a run may write)."""
    return os.stat(path).st_mtime_ns if os.path.exists(path) else None


CHECKPOINT_HELP = ("a .npz written by `lenet train` (default: the trained weights shipped "
                   "with the package, lenet/weights/lenet5-mnist.npz, trained on MNIST; "
                   "how they were made: LeNet5.pretrained().provenance, and the source's "
                   "docs/reproduction.md)")


def add_checkpoint_option(p, help=CHECKPOINT_HELP):
    p.add_argument("--checkpoint", metavar="FILE", help=help)


def load_model(args, device=None):
    """The model of --checkpoint, or of the shipped weights when none was given
    (args.checkpoint is then set to their path, which messages name), on `device`
    (default: --device); UserError for no shipped weights, a file that is not a
    checkpoint, or a device it cannot use."""
    from lenet.checkpoint import CheckpointError
    from lenet.model import PRETRAINED, LeNet5
    if args.checkpoint is None:
        if not os.path.isfile(PRETRAINED):
            raise UserError(f"no --checkpoint given and no trained weights in this "
                            f"installation ({PRETRAINED} is missing); give --checkpoint FILE")
        args.checkpoint = PRETRAINED
    device = device or args.device
    try:
        return LeNet5.load(args.checkpoint, device=device)
    except CheckpointError as e:
        raise UserError(str(e)) from e
    except (NotImplementedError, ValueError) as e:  # no GPU backend, bad dtype for it
        raise UserError(f"cannot use device {device!r}: {e}") from e


def model_and_split(args, split_name):
    """The model of --checkpoint (default: the shipped weights) and one split of its data
    set, or of the one given (split_of)."""
    model = load_model(args)
    return model, split_of(model, args, split_name)


def split_of(model, args, split_name):
    """One split of the model's data set, or of the one given (a note on stderr when they
    differ)."""
    split = load_data(split_name, args, default=model.dataset)
    if model.dataset and split.dataset and model.dataset != split.dataset.name:
        print(f"note: {args.checkpoint} was trained on {model.dataset}; these are "
              f"{split.dataset.title}'s images", file=sys.stderr)
    return split


def one_line(error):
    """The message of `error` on one line. MNISTError explains itself over several
    lines, with indented lists (mirrors and reasons, file names): list items are
    joined with ", ", sentences with " ", and a list ends with "; "."""
    text, last_indented = "", False
    for line in str(error).splitlines():
        if not line.strip():
            continue
        indented = line[:1].isspace()
        if text:
            text += ", " if indented and last_indented else "; " if last_indented else " "
        text += line.strip()
        last_indented = indented
    return text


def first_images(split, n, option):
    """(preprocessed images, labels as read) of the first n of a Split; all when n is None."""
    from lenet.data import preprocess
    total = len(split.labels)
    if n is not None and not 1 <= n <= total:
        raise UserError(f"{option} must lie in 1..{total}, not {n}")
    n = total if n is None else n
    return preprocess(split.images[:n]), split.labels[:n]
