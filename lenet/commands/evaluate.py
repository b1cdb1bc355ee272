"""`lenet eval`: the error rate of a checkpoint (by default the shipped weights) on the
test or training set of its data set, or of the one given."""

from lenet.commands.common import (
    add_checkpoint_option,
    add_data_options,
    add_device_option,
    model_and_split,
)


def add(sub):
    p = sub.add_parser("eval", help="error rate of a checkpoint on a test set",
                       description="Print the error rate of a checkpoint on the test set "
                       "(or the training set) of its data set, or of the one given.")
    add_checkpoint_option(p)
    add_data_options(p)
    add_device_option(p)
    p.add_argument("--split", choices=["test", "train"], default="test",
                   help="which set (default: test)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args):
    from lenet.data import preprocess
    from lenet.train import evaluate
    model, split = model_and_split(args, args.split)
    labels = split.labels
    rate = evaluate(model, preprocess(split.images), labels, args.split, not args.no_progress)
    errors = round(rate * len(labels))
    print(f"{args.split} error: {100 * rate:.2f}% ({errors} of {len(labels)}) "
          f"[{args.checkpoint}, {model.device}, {split.title}]")
    return 0
