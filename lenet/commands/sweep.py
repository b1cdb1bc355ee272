"""`lenet sweep`: read the runs (a JSON file or JSON text; a key given twice in one
object is refused), check each run's settings as `lenet train` checks its options (its
own parser and ranges), and train them side by side with lenet.sweep.sweep."""

import argparse
import json
import os
import sys

from lenet.commands import train as train_command
from lenet.commands.common import (
    UserError,
    add_data_options,
    add_device_option,
    first_images,
    load_data,
    mtime,
)
from lenet.commands.train import (
    add_pass_options,
    add_size_options,
    check_counts,
    check_numbers,
)

SWEEP_EXAMPLE = ('{"base": {"recipe": "lecun"}, "grid": {"mu": [0.5, 1], "seed": [0, 1, 2]}}')


def add(sub):
    from lenet.sweep import SWEEP_KEYS
    p = sub.add_parser("sweep", help="many runs of the paper's per-pattern recipe at once",
                       description="Train many independent runs of the paper's per-pattern "
                       "SDLM recipe side by side: on a GPU one block each in one kernel "
                       "launch; on the CPU one run per core at once. Each run is exactly "
                       "what `lenet train` does with its "
                       "settings; its checkpoint NAME.npz and log NAME.log.jsonl (lenet "
                       "train's format) go to --out after every pass.")
    p.add_argument("runs", help="the runs: a JSON file, or JSON text, holding a list of "
                   f"runs (objects with any of: {', '.join(SWEEP_KEYS)}; recipe paper or "
                   "lecun, default lecun) or an object {\"base\": {...}, \"grid\": {key: "
                   f"[values]}}}}: every combination, e.g. '{SWEEP_EXAMPLE}'")
    add_data_options(p, default="mnist")
    add_device_option(p)
    p.add_argument("--epochs", type=int, help="passes over the training set (default 20)")
    add_size_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="directory for every run's "
                   "checkpoint and log (made if missing; existing files of those names are "
                   "replaced only if they are checkpoints and logs)")
    add_pass_options(p)
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
    train's own parser (types, choices) and check_numbers (ranges), so a sweep is
    refused whatever train refuses, in train's words, naming the run."""
    parser = train_command.add(argparse.ArgumentParser(prog="lenet").add_subparsers())

    def refuse(message):
        raise UserError(message)

    parser.error = refuse   # argparse's usage-and-exit becomes one line
    argv = [f"{option}={run[key]}" for key, option in SWEEP_TRAIN_OPTIONS.items()
            if run.get(key) is not None]
    argv += ["--ordered"] * (run.get("shuffle") is False) + ["--distort"] * bool(
        run.get("distort"))
    try:
        check_numbers(parser.parse_args(argv))
    except UserError as e:
        raise UserError(f"sweep: run {run['name']}: {e}") from None


def run(args):
    from lenet.sweep import sweep, sweep_runs
    from lenet.train import check_epochs
    check_counts(args, "--epochs", "--train-size", "--test-size")
    text = args.runs
    if not text.lstrip().startswith(("[", "{")):
        try:
            with open(text, encoding="utf-8") as f:   # JSON's encoding (RFC 8259)
                text = f.read()
        except OSError as e:
            raise UserError(f"cannot read the runs from {args.runs}: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise UserError(f"the runs in {args.runs} are not UTF-8 text ({e.reason} at "
                            f"byte {e.start})") from e
    try:
        runs = sweep_runs(json.loads(text, object_pairs_hook=_no_repeated_keys))
    except json.JSONDecodeError as e:
        raise UserError(f"the runs are not valid JSON: {e}") from e
    except RecursionError:
        raise UserError("the runs are not valid JSON: nested too deeply") from None
    except ValueError as e:
        raise UserError(str(e)) from e
    for run in runs:
        _check_as_train(run)
    if not args.out:
        raise UserError("--out must name a directory, not be empty")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out}: not a directory")
    before = {run["name"]: mtime(os.path.join(args.out, run["name"] + ".npz"))
              for run in runs}
    train_split, test_split = load_data("train", args), load_data("test", args)
    train_set = first_images(train_split, args.train_size, "--train-size")
    test_set = first_images(test_split, args.test_size, "--test-size")
    print(f"data: {train_split.title} from {train_split.directory} "
          f"({len(train_set[1]):,} training, {len(test_set[1]):,} test images)")
    try:
        records = sweep(runs, train_set, test_set, epochs=args.epochs, device=args.device,
                        out_dir=args.out, progress=not args.no_progress,
                        evaluate_train=not args.fast, classes=train_split.classes,
                        dataset=train_split.dataset.name if train_split.dataset else None)
    except (NotImplementedError, ValueError) as e:  # no GPU; files in --out not ours to replace
        raise UserError(str(e)) from e
    except KeyboardInterrupt:
        saved = [name for name, t in before.items()
                 if mtime(os.path.join(args.out, name + ".npz")) not in (None, t)]
        kept = ("every run's last complete pass is in " + args.out if len(saved) == len(runs)
                else f"no pass was completed; nothing in {args.out} was changed" if not saved
                else f"the last complete passes of {', '.join(saved)} are in {args.out}; the "
                "other runs completed none and their files were not changed")
        print(f"\ninterrupted; {kept}", file=sys.stderr)
        return 130
    epochs = check_epochs(args.epochs, runs[0]["recipe"])
    short = [f"{name} (its files keep pass {len(done)})" if done else
             f"{name} (in pass 1: {'its files are not' if before[name] else 'no file is'} "
             "from this sweep)" for name, done in records.items() if len(done) < epochs]
    print(f"checkpoints and logs: {args.out}" + (f"; diverged: {', '.join(short)}"
                                                  if short else ""))
    return 0
