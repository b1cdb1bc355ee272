"""The `lenet` command (also `python -m lenet`): train, evaluate, predict, draw.

Each subcommand has an `add_<name>` function that declares its options and a
`run_<name>` function that does the work. A user's mistake (a missing data
directory, a file that is not a checkpoint) is reported as one line on stderr
with exit status 2, never as a traceback.
"""

import argparse
import os
import sys

import numpy as np

from kernels.reference import MAP_J


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit 2."""


def _data_help():
    return ("directory with the four MNIST IDX files (.gz or raw); default: $LENET_DATA, "
            "else ~/.cache/lenet/mnist. Missing files are downloaded when the internet "
            "can be reached")


def load_split(split, directory):
    """(preprocessed images, int64 labels) of one MNIST split, or a UserError."""
    from lenet.data import MNISTError, load_mnist, preprocess
    try:
        images, labels = load_mnist(split, directory)
    except MNISTError as e:
        raise UserError(str(e)) from e
    return preprocess(images), labels.astype(np.int64)


def load_model(path, device):
    from lenet.model import CheckpointError, LeNet5
    try:
        return LeNet5.load(path, device=device)
    except CheckpointError as e:
        raise UserError(str(e)) from e


# ------------------------------------------------------------------- train

def add_train(sub):
    from lenet.train import RECIPES
    p = sub.add_parser("train", help="train LeNet-5 on MNIST and write a checkpoint",
                       description="Train LeNet-5 on the 60,000 MNIST training digits, "
                       "printing train and test error after every pass and saving the "
                       "checkpoint after each one (Ctrl-C keeps the last complete one).")
    p.add_argument("--data", help=_data_help())
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="auto",
                   help="where to train: NumPy on the CPU, the CUDA kernels, or the GPU "
                   "when one is present (default: auto)")
    p.add_argument("--recipe", choices=RECIPES, default="sgd",
                   help="paper: per-pattern stochastic diagonal Levenberg-Marquardt "
                   "(20 passes); sdlm-batch: the same on mini-batches; sgd: mini-batch SGD "
                   "with momentum (default)")
    p.add_argument("--epochs", type=int, help="passes over the training set "
                   "(default: 20 for paper and sdlm-batch, 10 for sgd)")
    p.add_argument("--batch-size", type=int, help="patterns per update (default: 1 for "
                   "paper, 16 for sdlm-batch, 32 for sgd)")
    p.add_argument("--lr", type=float, help="sgd step size (default 2e-3); the SDLM "
                   "recipes follow the paper's schedule")
    p.add_argument("--momentum", type=float, default=0.9, help="sgd momentum (default 0.9)")
    p.add_argument("--loss", choices=["mse", "map"], default="mse",
                   help="mse: paper eq. 8, the correct class's penalty; map: paper eq. 9, "
                   f"which also pushes wrong classes up (j = {MAP_J:g})")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and "
                   "shuffling: the same seed on the same device repeats a run")
    p.add_argument("--train-size", type=int, help="use only the first N training digits")
    p.add_argument("--out", default="lenet5.npz", help="checkpoint to write (default "
                   "lenet5.npz)")
    p.add_argument("--log", help="append one JSON line per pass to this file (default: "
                   "the checkpoint's name with .log.jsonl)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--fast", action="store_true", help="skip the full training-set error "
                   "after each pass (print the running error of the pass instead)")
    return p


def run_train(args):
    from lenet.model import LeNet5
    from lenet.train import train
    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, not {args.epochs}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.recipe == "paper" and args.batch_size not in (None, 1):
        raise UserError("the paper's recipe updates after every pattern; use --recipe "
                        "sdlm-batch for mini-batches")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UserError(f"cannot write {args.out}: directory {out_dir} does not exist")
    train_set = load_split("train", args.data)
    if args.train_size:
        train_set = (train_set[0][:args.train_size], train_set[1][:args.train_size])
    test_set = load_split("test", args.data)
    try:
        model = LeNet5(device=args.device, seed=args.seed)
    except NotImplementedError as e:
        raise UserError(str(e)) from e
    log = args.log or os.path.splitext(args.out)[0] + ".log.jsonl"
    if os.path.exists(log):
        os.remove(log)
    try:
        train(model, train_set, test_set, recipe=args.recipe, epochs=args.epochs,
              batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
              loss=args.loss, seed=args.seed, checkpoint=args.out, log=log,
              progress=not args.no_progress, evaluate_train=not args.fast)
    except KeyboardInterrupt:
        kept = (f"the last complete pass is in {args.out}" if os.path.exists(args.out)
                else "no pass was completed, nothing saved")
        print(f"\ninterrupted; {kept}", file=sys.stderr)
        return 130
    print(f"checkpoint: {args.out}\nlog: {log}")
    return 0


# -------------------------------------------------------------------- eval

def add_eval(sub):
    p = sub.add_parser("eval", help="test error of a checkpoint on the MNIST test set",
                       description="Print the error rate of a checkpoint on the 10,000 MNIST "
                       "test digits (or the training set).")
    p.add_argument("--checkpoint", required=True, help="a .npz written by `lenet train`")
    p.add_argument("--data", help=_data_help())
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="auto",
                   help="where to run (default: auto)")
    p.add_argument("--split", choices=["test", "train"], default="test",
                   help="which MNIST set (default: test)")
    return p


def run_eval(args):
    model = load_model(args.checkpoint, args.device)
    images, labels = load_split(args.split, args.data)
    predicted = np.asarray(model.predict(images))
    errors = int(np.count_nonzero(predicted != labels))
    print(f"{args.split} error: {100 * errors / len(labels):.2f}% ({errors} of {len(labels)}) "
          f"[{args.checkpoint}, {model.device}]")
    return 0


# -------------------------------------------------------------------- main

COMMANDS = {"train": (add_train, run_train), "eval": (add_eval, run_eval)}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="lenet", description="LeNet-5 (LeCun et al. 1998) on hand-written CUDA "
        "kernels, with a NumPy reference on the CPU.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args) or 0
    except UserError as e:
        print(f"lenet {args.command}: error: {e}", file=sys.stderr)
        return 2
