"""The `lenet` command (also `python -m lenet`): train, evaluate, predict, draw, time.

    lenet train     train LeNet-5 on an MNIST-format data set, write a checkpoint and a
                    JSON-lines log
    lenet sweep     many runs of the paper's per-pattern recipe side by side (one GPU
                    block each), a checkpoint and a log per run
    lenet eval      error rate of a checkpoint on a test (or training) set
    lenet predict   classes of PNG/JPEG files or of IDX entries (lenet/images.py)
    lenet show      pictures: feature maps, RBF prototypes, curves, errors (lenet/show.py)
    lenet export    the network as an ONNX file (lenet/export.py)
    lenet demo      a local web page: draw a digit, watch every layer (lenet/demo/)

Data: `--dataset NAME` (mnist, fashion-mnist, kmnist, emnist-digits, qmnist: official
files, checked and downloaded, lenet/data.py) and `--data DIR` (that data set's
directory; alone, any directory of MNIST-format files, read as it is).

Each subcommand has an `add_<name>` function that declares its options and a
`run_<name>` function that does the work. A user's mistake (a missing data
directory, a file that is not a checkpoint, an unreadable image) is reported
as one line `lenet <command>: error: ...` on stderr with exit status 2, never
as a traceback; output cut short by a closed pipe (`| head`) ends quietly.
Tested end to end by tests/test_cli.py.
"""

import argparse
import json
import math
import os
import signal
import sys

import numpy as np

from kernels.reference import MAP_J


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit 2."""


DEVICES = ["cpu", "gpu", "auto"]


def add_data_options(p):
    from lenet.datasets import DATASETS
    p.add_argument("--dataset", choices=list(DATASETS), metavar="NAME",
                   help=f"a data set by name ({', '.join(DATASETS)}): its official files, "
                   "checked by SHA-256, from --data DIR or its default directory "
                   "(~/.cache/lenet/NAME; for mnist $LENET_DATA if set; for fashion-mnist "
                   "also Debian's /usr/share/datasets/fashion-mnist); missing files are "
                   "downloaded when the internet can be reached. Default: mnist, or the "
                   "checkpoint's data set")
    p.add_argument("--data", metavar="DIR",
                   help="the data set's directory; without --dataset, any directory of "
                   "MNIST-format IDX files under MNIST's names (train-images-idx3-ubyte, "
                   "train-labels-idx1-ubyte, t10k-..., raw or .gz), read as they are: "
                   "their structure is checked, no checksum, nothing downloaded")


def _device_help():
    return ("where to run: NumPy on the CPU, the CUDA kernels, or the GPU when one "
            "is present (default: auto)")


def load_data(split, args, default="mnist"):
    """One split as a lenet.data.Split (uint8 images, labels, data set), or a UserError.
    --dataset names the data set; --data alone is a plain directory; neither: `default`."""
    from lenet.data import MNISTError, read_split
    from lenet.datasets import DATASETS
    default = default if default in DATASETS else "mnist"  # a checkpoint's may be unknown
    name = args.dataset or (None if args.data is not None else default)
    if args.data is not None and not os.path.isdir(args.data):
        # a mistyped --data must not become a new directory and a download
        raise UserError(f"no such directory: {args.data} (give the directory that holds the "
                        "data set's files, or leave --data out to use its default directory)")
    try:
        return read_split(split, name, args.data)
    except MNISTError as e:
        raise UserError(_one_line(e)) from e


def _labels(split):
    return split.labels.astype(np.int64)


CHECKPOINT_HELP = ("a .npz written by `lenet train` (default: the trained weights shipped "
                   "with the package, lenet/weights/lenet5-mnist.npz, trained on MNIST; "
                   "their errors and how they were chosen: docs/reproduction.md)")


def _checkpoint(args):
    """args.checkpoint, or the shipped weights when none was given (args.checkpoint is
    set to their path, which the messages then name)."""
    from lenet.model import PRETRAINED
    if args.checkpoint is None:
        if not os.path.isfile(PRETRAINED):
            raise UserError(f"no --checkpoint given and no trained weights in this "
                            f"installation ({PRETRAINED} is missing); give --checkpoint FILE")
        args.checkpoint = PRETRAINED
    return args.checkpoint


def load_model(path, device):
    from lenet.checkpoint import CheckpointError
    from lenet.model import LeNet5
    try:
        return LeNet5.load(path, device=device)
    except CheckpointError as e:
        raise UserError(str(e)) from e
    except (NotImplementedError, ValueError) as e:  # no GPU backend, bad dtype for it
        raise UserError(f"cannot use device {device!r}: {e}") from e


def _one_line(error):
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


# ------------------------------------------------------------------- train

def add_train(sub):
    from lenet import train as t
    from lenet.model import INITS
    p = sub.add_parser("train", help="train LeNet-5 and write a checkpoint",
                       description="Train LeNet-5 on the training set of an MNIST-format "
                       "data set (default: the 60,000 MNIST digits), printing train and "
                       "test error after every pass and saving the checkpoint after each "
                       "one (Ctrl-C keeps the last complete one).")
    add_data_options(p)
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="auto",
                   help="where to train: NumPy on the CPU, the CUDA kernels, or the GPU "
                   "when one is present (default: auto)")
    p.add_argument("--recipe", choices=t.RECIPES, default="lecun",
                   help="lecun (the default) reproduces the paper; paper: per-pattern "
                   "stochastic diagonal Levenberg-Marquardt as published (20 passes; with "
                   "the paper's mu and initialisation it diverges here); lecun: the same as "
                   "LeCun's own code starts it, Lush's "
                   f"initialisation (--init lush), with the {t.LECUN_LOSS.upper()} loss, mu "
                   f"{t.LECUN_MU:g} and schedule {t.LECUN_SCHEDULE}: the paper's figures "
                   "(docs/reproduction.md: the default, 20 passes); sdlm-batch: "
                   "the same on mini-batches with 0.1 sqrt(batch) times the paper's steps; "
                   "sgd: mini-batch SGD with momentum")
    p.add_argument("--epochs", type=int, help="passes over the training set "
                   "(default: 20 for paper, lecun and sdlm-batch, 10 for sgd)")
    p.add_argument("--batch-size", type=int, help="patterns per update (default: 1 for "
                   "paper and lecun, 16 for sdlm-batch, 32 for sgd)")
    p.add_argument("--lr", type=float, help="sgd's step size (default 2e-3); the SDLM "
                   "recipes follow the paper's schedule and refuse --lr")
    p.add_argument("--momentum", type=float, default=0.9, help="sgd momentum, in [0, 1) "
                   "(default 0.9)")
    p.add_argument("--mu", type=float, help="SDLM's mu in eta / (mu + h) (default: the "
                   f"paper's {t.SDLM_MU:g}, which diverges here; lecun: {t.LECUN_MU:g}; see "
                   "docs/reproduction.md)")
    p.add_argument("--schedule", choices=list(t.SCHEDULES), help="the SDLM recipes' eta per "
                   "pass: paper (5e-4 for 2 passes, 2e-4 for 3, 1e-4 for 3, 5e-5 for 4, then "
                   "1e-5) or paper-floor (the same, but 5e-5 from pass 9 on); default: "
                   f"paper (lecun: {t.LECUN_SCHEDULE})")
    p.add_argument("--ordered", action="store_true", help="show the patterns in the "
                   "training set's order every pass (default: shuffled anew each pass)")
    p.add_argument("--hessian-sample", choices=t.HESSIAN_SAMPLES, default="random",
                   help="the SDLM recipes' curvature patterns before each pass: 500 drawn at "
                   "random (default) or the 500 the pass shows first (consecutive, as "
                   "Lush's compute-diaghessian reads them)")
    p.add_argument("--distort", action="store_true", help="the paper's random affine "
                   "distortions (translation, scaling, squeezing, horizontal shearing), drawn "
                   "anew for every pattern of every pass, 10%% left undistorted; ranges in "
                   "kernels/distort.py, examples: lenet show distortions")
    p.add_argument("--loss", choices=["mse", "map"],
                   help="mse: paper eq. 8, the correct class's penalty (the default); map: "
                   f"paper eq. 9, which also pushes wrong classes up (j = {MAP_J:g}; the "
                   "lecun recipe's default)")
    p.add_argument("--init", choices=INITS,
                   help="initial weights uniform in 2.4/F (fan-in: the paper's letter, "
                   "default), 2.4/sqrt(F) (sqrt-fan-in: what the paper's stated reason "
                   "for the range asks for) or 1/sqrt(F) with biases 0 and subsampling "
                   "coefficients 0.5 (lush: LeCun's Lush and EBLearn code, the lecun "
                   "recipe's default); F is a unit's fan-in")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and "
                   "shuffling, 0 or more: the same seed on the same device repeats a run "
                   "bit for bit (on the GPU for batches of up to 4096 images)")
    p.add_argument("--train-size", type=int, help="use only the first N training images")
    p.add_argument("--test-size", type=int, help="report the test error on only the first N "
                   "test images (default: all)")
    p.add_argument("--validation", type=int, metavar="N", help="hold out the last N training "
                   "images (of the first --train-size) as a validation set: train on the others, "
                   "record the validation error after every pass, and leave the test set "
                   "unread, so that settings are chosen without looking at it")
    p.add_argument("--out", default="lenet5.npz", help="checkpoint to write (default "
                   "lenet5.npz); an existing file is overwritten only if it is a LeNet-5 "
                   "checkpoint, and only once the first pass has completed")
    p.add_argument("--log", help="the run's log, one JSON line per pass (default: the "
                   "checkpoint's name with .log.jsonl); an older log there is replaced once "
                   "the first pass has completed (not before), and a file that is not a "
                   "training log is never overwritten")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--fast", action="store_true", help="skip the full training-set error "
                   "after each pass (print the running error of the pass instead)")
    return p


def _check_numbers(args):
    """UserError for a nonsensical number or combination among the training options."""
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, not {args.epochs}")
    if args.recipe == "sgd" and (args.schedule or args.hessian_sample != "random"):
        raise UserError("--schedule and --hessian-sample belong to the SDLM recipes, not sgd")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise UserError(f"--lr must be a positive number, not {args.lr}")
    if not (math.isfinite(args.momentum) and 0 <= args.momentum < 1):
        raise UserError(f"--momentum must lie in [0, 1), not {args.momentum}")
    if args.mu is not None and not (math.isfinite(args.mu) and args.mu > 0):
        raise UserError(f"--mu must be a positive number, not {args.mu}")
    if args.seed < 0:
        raise UserError(f"--seed must be 0 or more, not {args.seed}")
    for option, value in (("--train-size", args.train_size), ("--test-size", args.test_size),
                          ("--validation", args.validation)):
        if value is not None and value < 1:
            raise UserError(f"{option} must be at least 1, not {value}")


def run_train(args):
    from lenet.logs import check_outputs
    from lenet.model import LeNet5
    from lenet.train import default_settings, train
    _check_numbers(args)
    if args.lr is not None and args.recipe != "sgd":
        raise UserError(f"--lr is sgd's step size; the {args.recipe} recipe follows the "
                        "paper's schedule of eta (see --help)")
    if args.recipe in ("paper", "lecun") and args.batch_size not in (None, 1):
        raise UserError(f"the {args.recipe} recipe updates after every pattern; use --recipe "
                        "sdlm-batch for mini-batches")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UserError(f"cannot write {args.out}: directory {out_dir} does not exist")
    log = args.log or os.path.splitext(args.out)[0] + ".log.jsonl"
    try:
        check_outputs(args.out, log)
    except ValueError as e:
        raise UserError(f"{e} (--out {args.out}, --log {log})") from e
    train_split = load_data("train", args)
    train_set = _first(train_split, args.train_size, "--train-size")
    train_set, validation_set = _hold_out(train_set, args.validation)
    if validation_set is None:
        test_set = _first(load_data("test", args), args.test_size, "--test-size")
        print(f"data: {train_split.title} from {train_split.directory} "
              f"({len(train_set[1]):,} training, {len(test_set[1]):,} test images)")
    else:
        test_set = None
        print(f"data: {train_split.title} from {train_split.directory} "
              f"({len(train_set[1]):,} training, the last {len(validation_set[1]):,} held out "
              "for validation; the test set is not read)")
    try:
        model = LeNet5(device=args.device, seed=args.seed,
                       init=args.init or default_settings(args.recipe)["init"])
    except NotImplementedError as e:
        raise UserError(str(e)) from e
    model.classes = train_split.classes
    model.dataset = train_split.dataset.name if train_split.dataset else None
    mu = default_settings(args.recipe)["mu"] if args.mu is None else args.mu
    if args.recipe == "paper" and mu < 0.1:
        print(f"note: with mu = {mu:g} the paper's recipe has diverged in our MNIST runs; "
              "--recipe lecun reproduces the paper's figures (docs/reproduction.md)",
              file=sys.stderr)
    before = _mtime(args.out)
    try:
        train(model, train_set, test_set, recipe=args.recipe, epochs=args.epochs,
              batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
              loss=args.loss, seed=args.seed, mu=args.mu, checkpoint=args.out, log=log,
              progress=not args.no_progress, evaluate_train=not args.fast,
              schedule=args.schedule, shuffle=not args.ordered,
              hessian_sample=args.hessian_sample, distort=args.distort,
              validation_set=validation_set)
    except KeyboardInterrupt:
        saved = _mtime(args.out) not in (None, before)  # written by this run
        kept = (f"the last complete pass is in {args.out}, its log in {log}" if saved
                else f"no pass was completed; {args.out} and {log} were not changed")
        print(f"\ninterrupted; {kept}", file=sys.stderr)
        return 130
    print(f"checkpoint: {args.out}\nlog: {log}")
    return 0


def _first(split, n, option):
    """(preprocessed images, int64 labels) of the first n of a Split; all when n is None."""
    from lenet.data import preprocess
    total = len(split.labels)
    if n is not None and not 1 <= n <= total:
        raise UserError(f"{option} must lie in 1..{total}, not {n}")
    if total == 0:
        raise UserError(f"{split.directory}: the {split.title} files hold no images")
    n = total if n is None else n
    return preprocess(split.images[:n]), _labels(split)[:n]


def _hold_out(train_set, n):
    """(training set, validation set): the last n of `train_set` held out (None: all
    kept, no validation set)."""
    if n is None:
        return train_set, None
    images, labels = train_set
    if n >= len(labels):
        raise UserError(f"--validation {n} would hold out all {len(labels)} training images; "
                        "give fewer")
    return (images[:-n], labels[:-n]), (images[-n:], labels[-n:])


def _mtime(path):
    return os.stat(path).st_mtime_ns if os.path.exists(path) else None


# ------------------------------------------------------------------- sweep

SWEEP_EXAMPLE = ('{"base": {"recipe": "lecun"}, "grid": {"mu": [0.5, 1], "seed": [0, 1, 2]}}')


def add_sweep(sub):
    from lenet.sweep import SWEEP_KEYS
    p = sub.add_parser("sweep", help="many runs of the paper's per-pattern recipe at once",
                       description="Train many independent runs of the paper's per-pattern "
                       "SDLM recipe side by side: on a GPU one block each in one kernel "
                       "launch, so dozens of runs take about as long as one; on the CPU one "
                       "after another. Each run is exactly what `lenet train` does with its "
                       "settings; its checkpoint NAME.npz and log NAME.log.jsonl (lenet "
                       "train's format) go to --out after every pass.")
    p.add_argument("runs", help="the runs: a JSON file, or JSON text, holding a list of "
                   f"runs (objects with any of: {', '.join(SWEEP_KEYS)}; recipe paper or "
                   "lecun, default lecun) or an object {\"base\": {...}, \"grid\": {key: "
                   f"[values]}}}}: every combination, e.g. '{SWEEP_EXAMPLE}'")
    add_data_options(p)
    p.add_argument("--device", choices=DEVICES, default="auto", help=_device_help())
    p.add_argument("--epochs", type=int, help="passes over the training set (default 20)")
    p.add_argument("--train-size", type=int, help="use only the first N training images")
    p.add_argument("--test-size", type=int, help="report the test error on only the first N "
                   "test images (default: all)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for every run's "
                   "checkpoint and log (made if missing; existing files of those names are "
                   "replaced only if they are checkpoints and logs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--fast", action="store_true", help="skip the full training-set error "
                   "after each pass (print the running error of the pass instead)")
    return p


def _no_repeated_keys(pairs):
    """A JSON object as a dict; ValueError for a key given twice (JSON keeps the last
    silently: a run with two "mu" would run with one the user did not mean)."""
    keys = [k for k, _ in pairs]
    twice = [k for k in keys if keys.count(k) > 1]
    if twice:
        raise ValueError(f"sweep: the runs give {twice[0]!r} twice in one object")
    return dict(pairs)


# a sweep run's settings that are `lenet train` options (shuffle and distort are flags)
SWEEP_TRAIN_OPTIONS = {"recipe": "--recipe", "seed": "--seed", "init": "--init",
                       "mu": "--mu", "loss": "--loss", "schedule": "--schedule",
                       "hessian_sample": "--hessian-sample"}


def _check_as_train(run):
    """UserError unless `lenet train` takes this sweep run's settings: they go through
    train's own parser (types, choices) and _check_numbers (ranges), so a sweep is
    refused whatever train refuses, in train's words, naming the run."""
    parser = add_train(argparse.ArgumentParser(prog="lenet").add_subparsers())

    def refuse(message):
        raise UserError(message)

    parser.error = refuse   # argparse's usage-and-exit becomes one line
    argv = [f"{option}={run[key]}" for key, option in SWEEP_TRAIN_OPTIONS.items()
            if run.get(key) is not None]
    argv += ["--ordered"] * (run.get("shuffle") is False) + ["--distort"] * bool(
        run.get("distort"))
    try:
        _check_numbers(parser.parse_args(argv))
    except UserError as e:
        raise UserError(f"sweep: run {run['name']}: {e}") from None


def run_sweep(args):
    from lenet.sweep import sweep, sweep_runs
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, not {args.epochs}")
    for option, value in (("--train-size", args.train_size), ("--test-size", args.test_size)):
        if value is not None and value < 1:
            raise UserError(f"{option} must be at least 1, not {value}")
    text = args.runs
    if not text.lstrip().startswith(("[", "{")):
        try:
            with open(text) as f:
                text = f.read()
        except OSError as e:
            raise UserError(f"cannot read the runs from {args.runs}: {e.strerror}") from e
    try:
        runs = sweep_runs(json.loads(text, object_pairs_hook=_no_repeated_keys))
    except json.JSONDecodeError as e:
        raise UserError(f"the runs are not valid JSON: {e}") from e
    except ValueError as e:
        raise UserError(str(e)) from e
    for run in runs:
        _check_as_train(run)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out}: not a directory")
    train_split, test_split = load_data("train", args), load_data("test", args)
    train_set = _first(train_split, args.train_size, "--train-size")
    test_set = _first(test_split, args.test_size, "--test-size")
    print(f"data: {train_split.title} from {train_split.directory} "
          f"({len(train_set[1]):,} training, {len(test_set[1]):,} test images)")
    device = args.device
    if device == "auto":
        from lenet.model import gpu_available
        device = "gpu" if gpu_available() else "cpu"
    try:
        sweep(runs, train_set, test_set, epochs=args.epochs, device=device, out_dir=args.out,
              progress=not args.no_progress, evaluate_train=not args.fast,
              classes=train_split.classes,
              dataset=train_split.dataset.name if train_split.dataset else None)
    except NotImplementedError as e:
        raise UserError(str(e)) from e
    except ValueError as e:   # files in --out that are not ours to replace
        raise UserError(str(e)) from e
    except KeyboardInterrupt:
        print(f"\ninterrupted; every run's last complete pass is in {args.out}",
              file=sys.stderr)
        return 130
    print(f"checkpoints and logs: {args.out}")
    return 0


# -------------------------------------------------------------------- eval

def add_eval(sub):
    p = sub.add_parser("eval", help="error rate of a checkpoint on a test set",
                       description="Print the error rate of a checkpoint on the test set "
                       "(or the training set) of its data set, or of the one given.")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    add_data_options(p)
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="auto",
                   help="where to run (default: auto)")
    p.add_argument("--split", choices=["test", "train"], default="test",
                   help="which set (default: test)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _note_other_data(model, split, checkpoint):
    if model.dataset and split.dataset and model.dataset != split.dataset.name:
        print(f"note: {checkpoint} was trained on {model.dataset}; these are "
              f"{split.dataset.title}'s images", file=sys.stderr)


def run_eval(args):
    from lenet.data import preprocess
    from lenet.progress import Progress
    from lenet.train import error_rate
    model = load_model(_checkpoint(args), args.device)
    split = load_data(args.split, args, default=model.dataset)
    _note_other_data(model, split, args.checkpoint)
    labels = _labels(split)
    if len(labels) == 0:
        raise UserError(f"{split.directory}: the {args.split} files hold no images")
    bar = Progress(len(labels), f"{args.split} error", enabled=not args.no_progress)
    rate = error_rate(model, preprocess(split.images), labels, bar)
    bar.close(keep=False)
    errors = round(rate * len(labels))
    print(f"{args.split} error: {100 * rate:.2f}% ({errors} of {len(labels)}) "
          f"[{args.checkpoint}, {model.device}, {split.title}]")
    return 0


# ----------------------------------------------------------------- predict

def add_predict(sub):
    p = sub.add_parser("predict", help="the class of each PNG/JPEG file (or IDX entry)",
                       description="Predict the class (the digit, for MNIST) of each image "
                       "file. Any size, colour or grey, dark ink on light paper or light on "
                       "dark, transparent PNGs of either ink colour (as drawing apps save "
                       "them), palette and 16-bit PNGs, photos turned by their EXIF "
                       "orientation: each image is turned into a centred 28x28 image the way "
                       "MNIST was made (see lenet/images.py). Prints the class, its name from "
                       "the checkpoint's data set, and the ten RBF penalties (smaller is "
                       "better) per image.")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="PNG or JPEG files, one "
                   "digit each")
    p.add_argument("--checkpoint", metavar="FILE", help=CHECKPOINT_HELP)
    p.add_argument("--idx", metavar="FILE", help="an IDX image file (e.g. MNIST's "
                   "t10k-images-idx3-ubyte.gz) to take images from, with --index")
    p.add_argument("--index", nargs="+", type=int, metavar="K", help="which images of "
                   "--idx (0-based)")
    p.add_argument("--device", choices=DEVICES, default="auto", help=_device_help())
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
        raise UserError(_one_line(e)) from e
    name = os.path.basename(path).removesuffix(".gz")
    if any(f.name.removesuffix(".gz") == name for ds in DATASETS.values() if ds.transposed
           for f in ds.files.values()):
        images = images.transpose(0, 2, 1)
    bad = [k for k in indices if not 0 <= k < len(images)]
    if bad:
        raise UserError(f"--index {bad[0]} is out of range: {path} holds {len(images)} "
                        f"images (0..{len(images) - 1})")
    return images[indices]


def run_predict(args):
    from lenet.data import preprocess
    from lenet.images import ImageError, load_digits
    if not args.images and args.idx is None:
        raise UserError("give IMAGE files, or --idx FILE --index K")
    if (args.idx is None) != (args.index is None):
        raise UserError("--idx and --index go together")
    model = load_model(_checkpoint(args), args.device)
    try:
        digits = load_digits(args.images)
    except ImageError as e:
        raise UserError(str(e)) from e
    names = [{"file": path} for path in args.images]
    if args.idx is not None:
        digits = np.concatenate([digits, _idx_digits(args.idx, args.index)])
        names += [{"file": args.idx, "index": k} for k in args.index]
    penalties = np.asarray(model.forward(preprocess(digits)))
    digits_only = tuple(model.classes) == tuple(str(d) for d in range(10))
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


# -------------------------------------------------------------------- show

def add_show(sub):
    p = sub.add_parser("show", help="draw PNG pictures: feature maps, RBF prototypes, "
                       "training curves, test errors",
                       description="Draw one picture and write it as a PNG into --out "
                       "(fixed size, see lenet/show.py); prints its path.")
    modes = p.add_subparsers(dest="mode", metavar="MODE", required=True)

    def mode(name, help, description):
        m = modes.add_parser(name, help=help, description=description)
        m.add_argument("--out", default=".", metavar="DIR", help="directory for the PNG "
                       f"(created if needed; default: .); the file is DIR/{name}.png")
        return m

    m = mode("maps", "the output of every layer for one digit",
             "The activations of every layer for one digit: input, C1, S2, C3, S4, C5 "
             "(120 as a 20x6 grid), F6 (84 as the 7x12 grid the RBF compares with its "
             "bitmaps, beside the winner's bitmap) and the ten RBF penalties, the winner "
             "highlighted. 1400x700 pixels.")
    m.add_argument("--checkpoint", metavar="FILE", help=CHECKPOINT_HELP)
    which = m.add_mutually_exclusive_group(required=True)
    which.add_argument("--image", metavar="FILE", help="a PNG or JPEG of one digit")
    which.add_argument("--index", type=int, metavar="K", help="test image K (0-based) of "
                       "the checkpoint's data set, or of the one given")
    add_data_options(m)
    m.add_argument("--device", choices=DEVICES, default="auto", help=_device_help())

    mode("prototypes", "the ten 7x12 RBF bitmaps (no checkpoint needed)",
         "The ten fixed 7x12 bitmaps that the output layer's RBF units compare F6 "
         "with (+1 ink, -1 background). 1000x250 pixels.")

    m = mode("curves", "training curves from the log of `lenet train`",
             "Train and test error per pass (log scale) and the training loss, from the "
             "JSON-lines log that `lenet train` writes beside its checkpoint. "
             "1000x400 pixels.")
    m.add_argument("--log", required=True, metavar="FILE", help="a .log.jsonl written by "
                   "`lenet train`")

    m = mode("errors", "confusion matrix and the worst mistakes on the test set",
             "The 10x10 confusion matrix of a checkpoint on the test set of its data set "
             "(or of the one given) and the misclassified images it was most sure of "
             "(largest margin between the smallest and second smallest penalty). "
             "1400x650 pixels.")
    m.add_argument("--checkpoint", metavar="FILE", help=CHECKPOINT_HELP)
    add_data_options(m)
    m.add_argument("--device", choices=DEVICES, default="auto", help=_device_help())
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.add_argument("--count", type=int, default=24, help="how many mistakes to draw, "
                   "at most 24 (default 24)")

    m = mode("distortions", "random affine distortions of training digits (train --distort)",
             "Ten training images, one of each class, as they are and under "
             f"{DISTORTION_COLUMNS} random affine distortions drawn as `lenet train "
             "--distort` draws them (kernels/distort.py: translation, scaling, squeezing, "
             "horizontal shearing; some rows are left undistorted, as in training). "
             "1300x1150 pixels.")
    add_data_options(m)
    m.add_argument("--seed", type=int, default=0, help="seed of the distortions (default 0)")
    return p


def _out_file(directory, name):
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UserError(f"--out {directory}: not a directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {directory}: cannot create it ({e.strerror})") from e
    return os.path.join(directory, name + ".png")


def _show_maps(args, show):
    from lenet.data import preprocess
    from lenet.images import ImageError, mnist_digit
    model = load_model(_checkpoint(args), args.device)
    if args.image is not None:
        try:
            digit = mnist_digit(args.image)
        except ImageError as e:
            raise UserError(str(e)) from e
        caption = os.path.basename(args.image)
    else:
        split = load_data("test", args, default=model.dataset)
        _note_other_data(model, split, args.checkpoint)
        n = len(split.labels)
        if not 0 <= args.index < n:
            raise UserError(f"--index {args.index} is out of range: the {split.title} test "
                            f"set holds {n} images" + (f" (0..{n - 1})" if n else ""))
        digit = split.images[args.index]
        label = int(split.labels[args.index])
        named = split.classes[label] if split.classes[label] != str(label) else ""
        caption = (f"{split.title} test {split.dataset.noun if split.dataset else 'image'} "
                   f"#{args.index} (label {label}{' ' + named if named else ''})")
    activations = model.forward_all(model.prepare_images(preprocess(digit)))
    return show.draw_maps(_out_file(args.out, "maps"),
                          [model.ops.to_host(a) for a in activations], caption,
                          classes=model.classes)


def _show_errors(args, show):
    from lenet.data import preprocess
    if not 1 <= args.count <= show.MAX_ERRORS:
        raise UserError(f"--count must lie in 1..{show.MAX_ERRORS}, not {args.count}")
    from lenet.progress import Progress
    from lenet.train import penalties
    model = load_model(_checkpoint(args), args.device)
    split = load_data("test", args, default=model.dataset)
    _note_other_data(model, split, args.checkpoint)
    if len(split.labels) == 0:
        raise UserError(f"{split.directory}: the test files hold no images")
    bar = Progress(len(split.labels), "test set", enabled=not args.no_progress)
    y = penalties(model, preprocess(split.images), bar)
    bar.close(keep=False)
    noun = split.dataset.noun if split.dataset else "image"
    return show.draw_errors(_out_file(args.out, "errors"), split.images, _labels(split), y,
                            count=args.count, caption=os.path.basename(args.checkpoint),
                            classes=split.classes, data=f"{split.title} test {noun}s")


DISTORTION_COLUMNS = 11


def _show_distortions(args, show):
    from kernels.distort import distort_cpu, draw_distortions
    from lenet.data import preprocess
    split = load_data("train", args)
    images, labels = split.images, split.labels
    first = [int(np.flatnonzero(labels == d)[0]) for d in range(10)]
    x = preprocess(images[first])
    shown = np.repeat(x, DISTORTION_COLUMNS, axis=0)
    params = draw_distortions(np.random.default_rng(args.seed), len(shown))
    out = np.empty_like(shown)
    distort_cpu(out, shown, params)
    return show.draw_distortions(_out_file(args.out, "distortions"), x,
                                 out.reshape(10, DISTORTION_COLUMNS, 32, 32),
                                 caption=f"seed {args.seed}")


def _show_curves(args, show):
    try:
        records = show.read_log(args.log)
    except show.LogError as e:
        raise UserError(str(e)) from e
    return show.draw_curves(_out_file(args.out, "curves"), records,
                            caption=os.path.basename(args.log))


def run_show(args):
    from lenet import show
    if args.mode == "maps":
        path = _show_maps(args, show)
    elif args.mode == "errors":
        path = _show_errors(args, show)
    elif args.mode == "curves":
        path = _show_curves(args, show)
    elif args.mode == "distortions":
        path = _show_distortions(args, show)
    else:
        path = show.draw_prototypes(_out_file(args.out, "prototypes"))
    print(path)
    return 0


# ------------------------------------------------------------------ export

def add_export(sub):
    p = sub.add_parser("export", help="write the network as ONNX",
                       description="Write a trained LeNet-5 as an ONNX graph (lenet/export.py): "
                       "input images (N,1,32,32) as lenet.data.preprocess makes them, outputs "
                       "the ten RBF penalties (N,10) and the class (N,) of the smallest; C3 "
                       "as a masked convolution, the trainable subsampling, the scaled tanh "
                       "and the RBF layer as they are. Needs the onnx package "
                       "(pip install 'lenet5-cuda[onnx]').")
    p.add_argument("--format", default="onnx", metavar="FORMAT",
                   help="the file format: onnx (the only one, and the default)")
    p.add_argument("--checkpoint", metavar="FILE", help="a .npz written by `lenet train` "
                   "(default: the weights shipped with the package, where this version has "
                   "them)")
    p.add_argument("--out", metavar="FILE", help="the file to write (default: the "
                   "checkpoint's name with .onnx, or lenet5.onnx); an existing file is "
                   "replaced only with --force")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    return p


def _export_model(checkpoint):
    """The model to export: the checkpoint's, or the shipped weights."""
    from lenet.model import LeNet5
    if checkpoint is not None:
        return load_model(checkpoint, "cpu")
    pretrained = getattr(LeNet5, "pretrained", None)
    if pretrained is None:
        raise UserError("give --checkpoint FILE (a .npz written by `lenet train`): this "
                        "version ships no trained weights")
    return pretrained()


def run_export(args):
    from lenet import export
    if args.format not in export.FORMATS:
        raise UserError(f"unknown format {args.format!r} (known: {', '.join(export.FORMATS)})")
    try:
        export._onnx()
    except ImportError as e:
        raise UserError(str(e)) from e
    out = args.out or (os.path.splitext(args.checkpoint)[0] + ".onnx" if args.checkpoint
                       else "lenet5.onnx")
    if os.path.isdir(out):
        raise UserError(f"--out {out} is a directory; give a file name")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise UserError(f"cannot write {out}: directory {out_dir} does not exist")
    if args.checkpoint and os.path.exists(out) and os.path.samefile(out, args.checkpoint):
        raise UserError(f"--out {out} is the checkpoint itself; give another name")
    if os.path.lexists(out) and not args.force:
        raise UserError(f"{out} exists; refusing to overwrite it (give --force to replace "
                        "it, or another --out)")
    model = _export_model(args.checkpoint)
    try:
        export.to_onnx(model, out, overwrite=args.force)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from e
    print(f"{out}: ONNX (opset {export.OPSET}), {export.INPUT} (N,1,32,32) -> "
          f"{export.PENALTIES} (N,10), {export.CLASS} (N,)")
    return 0


# -------------------------------------------------------------------- demo

def add_demo(sub):
    p = sub.add_parser("demo", help="a web page: draw a digit and watch every layer",
                       description="Start a local web server and print its address. Its "
                       "page: a pad to draw a digit on and, on every stroke, the network's "
                       "input 32x32, C1, S2, C3, S4, C5, F6 beside the nearest RBF bitmap, "
                       "the ten penalties and the answer; and a view that steps through "
                       "the test set's mistakes (as `lenet show errors` finds them) and the "
                       "paper's random distortions of an image. The model runs on the "
                       "server; the drawing is prepared as `lenet predict` prepares a file.")
    p.add_argument("--checkpoint", metavar="FILE", help="a .npz written by `lenet train` "
                   "(default: the trained weights shipped with the package)")
    add_data_options(p)
    p.add_argument("--device", choices=DEVICES, default="auto", help=_device_help())
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default "
                   "127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="the port (default 8000; 0: any "
                   "free one)")
    return p


def _shipped_model(device):
    """LeNet5.pretrained(device), or a UserError when no weights ship with the package."""
    from lenet.model import LeNet5
    pretrained = getattr(LeNet5, "pretrained", None)
    try:
        if pretrained is None:
            raise FileNotFoundError
        return pretrained(device=device)
    except FileNotFoundError:
        raise UserError("no trained weights ship with this installation: give --checkpoint "
                        "FILE (a .npz written by `lenet train`)") from None
    except (NotImplementedError, ValueError) as e:
        raise UserError(f"cannot use device {device!r}: {e}") from e


def run_demo(args):
    import threading

    from lenet.demo.compute import Demo
    from lenet.demo.server import DemoServer
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must lie in 0..65535, not {args.port}")
    model = (load_model(args.checkpoint, args.device) if args.checkpoint is not None
             else _shipped_model(args.device))

    def load_test():  # in the background: the page is up while the test set runs
        split = load_data("test", args, default=model.dataset)
        return split.images, split.labels, split.title

    demo = Demo(model, load_test)
    try:
        server = DemoServer(demo, args.host, args.port)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host} port {args.port}: "
                        f"{e.strerror or e}") from e
    threading.Thread(target=demo.find_mistakes, daemon=True).start()
    print(f"LeNet-5 demo ({model.device}): {server.url}  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


# -------------------------------------------------------------------- main

COMMANDS = {"train": (add_train, run_train), "sweep": (add_sweep, run_sweep),
            "eval": (add_eval, run_eval),
            "predict": (add_predict, run_predict), "show": (add_show, run_show),
            "export": (add_export, run_export), "demo": (add_demo, run_demo)}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="lenet", description="LeNet-5 (LeCun et al. 1998) on hand-written CUDA "
        "kernels, with a NumPy reference on the CPU. `lenet COMMAND --help` tells more.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv=None):
    # Ctrl-C (and a time limit's SIGINT) must stop a command cleanly even when the parent
    # started it with SIGINT ignored (a background job of a script), which Python keeps
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = COMMANDS[args.command][1](args) or 0
        sys.stdout.flush()  # here, so that a closed pipe is caught below
        return status
    except UserError as e:
        print(f"lenet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`lenet predict ... | head -1`): stop quietly, as Unix
        # tools do, with the status of a process ended by SIGPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13
